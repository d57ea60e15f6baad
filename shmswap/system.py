"""One swap device and everything a process needs to act on it.

``SwapSystem.create(cfg)`` is the owner's side: create the segments and swapon.  ``attach`` is
every other process's side.  ``handle(task)`` builds the per-process objects the allocator works
through (``SwapInfo`` with its slab, RCU, folio and variant objects).  Closing the owner unlinks
the segments; a ``with`` block guarantees it on every exit path.
"""

from __future__ import annotations

from .config import Config
from .device import SwapInfo, swapon
from .folio import Folios
from .handoff import HandoffRing
from .rcu import Rcu
from .slab import TableSlab
from .state import SwapShm
from .task import MigrationPolicy, Task
from .variants import Variant

__all__ = ["SwapSystem"]


class SwapSystem:
    """The shared state of one run plus this process's handle on it."""

    shm: SwapShm | None = None

    def __init__(self, cfg: Config, shm: SwapShm) -> None:
        self.cfg = cfg
        self.shm = shm
        self.variant = Variant.from_config(cfg)
        self.rcu = Rcu(shm, broken=cfg.rcu == "none")
        self.slab = TableSlab(shm, self.rcu, cfg.atomic_fail, cfg.sleep_fail, seed=cfg.seed,
                              sleep_latency_us=cfg.sleep_latency_us)
        self.folios = Folios(shm)
        self.si = SwapInfo(shm, self.variant, self.slab, self.rcu, self.folios)
        self.handoff = HandoffRing(shm)

    @classmethod
    def create(cls, cfg: Config, n_workers: int | None = None) -> SwapSystem:
        """Create the segments and swapon (the owner)."""
        shm = SwapShm.create(cfg, n_workers)
        try:
            system = cls(cfg, shm)
            system.slab.init_empty()
            swapon(shm, system.slab)
        except BaseException:
            shm.close()
            shm.unlink()
            raise
        return system

    @classmethod
    def attach(cls, cfg: Config, n_workers: int, names: dict[str, str]) -> SwapSystem:
        return cls(cfg, SwapShm.attach(cfg, n_workers, names))

    def task(self, wid: int, seed: int | None = None) -> Task:
        """A task for worker ``wid`` with the configured migration policy, made current."""
        cfg = self.cfg
        policy = MigrationPolicy(cfg.cpus, cfg.migrate, cfg.migrate_to,
                                 seed=(cfg.seed if seed is None else seed) * 7919 + wid)
        task = Task(wid, migration=policy)
        self.si.switch_to(task)
        self.slab.rng.seed((cfg.seed if seed is None else seed) * 104729 + wid)   # its own failslab stream
        return task

    def close(self) -> None:
        if self.shm is not None:
            shm, self.shm = self.shm, None
            self.si = None
            self.slab = None
            shm.close()
            shm.unlink()

    def __enter__(self) -> SwapSystem:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
