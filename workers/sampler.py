"""Time series (``--sample-ms N``): the manager reads the shared state every N ms from its loop.

A sample is read without taking any lock (a monitor's view, as /proc would give it): the live
swap tables (the slab header), each cluster list's length (the device's list heads), and, summed
over the CPU workers, operations, table sleeps and migrations, and lockstat's total wait per lock
class.  Throughput is the operations since the previous sample over the time since it.

The series is bounded: past ``MAX_SAMPLES`` every other sample is dropped and the interval
doubles, so a long run keeps an even series of at most ``MAX_SAMPLES`` points.  Nothing here runs
in the allocator or in the workers.
"""

from __future__ import annotations

import time

from shmswap.substrate.layout import LIST_NAMES, nr_lists
from shmswap.substrate.locks import LOCKSTAT_FIELDS, LockClass
from shmswap.substrate.stats import Stat

__all__ = ["Sampler", "MAX_SAMPLES", "SAMPLE_FIELDS"]

MAX_SAMPLES = 10_000
SAMPLE_FIELDS = ("t", "tables_live", "lists", "ops", "ops_per_s", "sleeps", "migrated", "lock_wait_ns")
_WAIT = LOCKSTAT_FIELDS.index("wait_ns_total")


class Sampler:
    """Samples ``system``'s shared state every ``interval_ms`` (``tick`` from the manager's loop)."""

    def __init__(self, system, interval_ms: int, ncpu: int, max_samples: int = MAX_SAMPLES) -> None:
        self.shm = system.shm
        self.ncpu = ncpu
        self.requested_ms = interval_ms
        self.interval_s = interval_ms / 1000.0
        self.max_samples = max_samples
        self.names = LIST_NAMES(system.cfg.nr_orders)
        self.nrl = nr_lists(system.cfg.nr_orders)
        self.samples: list[dict] = []
        self.decimations = 0
        self.start = time.monotonic()
        self.next_at = self.start
        self._last: tuple[float, int] | None = None

    def tick(self, now: float | None = None, force: bool = False) -> dict | None:
        """Take a sample if one is due (or ``force``); returns it, or None."""
        now = time.monotonic() if now is None else now
        if not force and now < self.next_at:
            return None
        self.next_at = now + self.interval_s
        s = self.sample(now)
        self.samples.append(s)
        if len(self.samples) > self.max_samples:
            self.samples = self.samples[::2]
            self.interval_s *= 2
            self.decimations += 1
        return s

    def sample(self, now: float) -> dict:
        shm = self.shm
        stats = shm.workers["stats"][: self.ncpu]
        ops = int(stats[:, Stat.OPS].sum())
        heads = shm.dev["heads"]
        lockstat = shm.workers["lockstat"]
        waits = lockstat.reshape(len(lockstat), len(LockClass), len(LOCKSTAT_FIELDS))[:, :, _WAIT].sum(axis=0)
        t = now - self.start
        if self._last is None or t <= self._last[0]:
            rate = 0.0
        else:
            rate = (ops - self._last[1]) / (t - self._last[0])
        self._last = (t, ops)
        return {"t": round(t, 6), "tables_live": int(shm.slab_hdr["live"]),
                "lists": {self.names[i]: int(heads[i][2]) for i in range(self.nrl)},
                "ops": ops, "ops_per_s": round(rate, 1),
                "sleeps": int(stats[:, Stat.SLEEPS].sum()), "migrated": int(stats[:, Stat.MIGRATED].sum()),
                "lock_wait_ns": {c.label: int(waits[c]) for c in LockClass}}

    def summary(self) -> dict:
        return {"requested_ms": self.requested_ms, "interval_ms": round(self.interval_s * 1000, 3),
                "count": len(self.samples), "decimations": self.decimations, "max_samples": self.max_samples,
                "fields": list(SAMPLE_FIELDS)}
