"""The performance targets, in one table.  A benchmark prints each figure beside its target (met or
not met) and never fails on speed: only a WARN from the model or a crash makes it exit non-zero."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """Met when the figure is at most ``limit``; ``stretch`` is the tighter figure aimed for."""

    limit: float
    stretch: float | None = None

    def verdict(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.stretch is not None and value <= self.stretch:
            return "met (stretch)"
        return "met" if value <= self.limit else "NOT MET"

    def __str__(self) -> str:
        return f"<= {self.limit:g}" + ("" if self.stretch is None else f" ({self.stretch:g})")


TARGETS: dict[str, Target] = {
    "alloc_free_pair_us": Target(8.0, stretch=6.0),
    "det_point_us": Target(50.0),          # 20k scheduling points per second (issue 10)
    "shmswap_lock_pair_ns": Target(300.0),
    "swapon_1t_s": Target(2.0),
    "swapon_1t_shm_mib": Target(400.0),
}
