"""The swap devices and everything a process needs to act on them.

``SwapSystem.create(cfg)`` is the owner's side: create the segments and swapon.  ``attach`` is
every other process's side.  The constructor builds this process's objects once, each handed its
collaborators: the observers, ``current`` (task.py), RCU, the table slab, the folios, the device
handle ``si`` and the hand-off ring.  ``task(wid)`` makes a task for a worker and
``switch_to(task)`` makes it current (lock ownership, lockstat block, RCU reader record,
statistics).  Closing the owner unlinks the segments; a ``with`` block guarantees it on every
exit path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from ..config import Config
from ..substrate import _prim
from ..substrate.handoff import HandoffRing
from ..substrate.layout import DEVICE
from ..substrate.locks import N_CLASSES
from ..substrate.observe import Observer, Observers
from ..substrate.state import WORKER, SwapShm
from .device import SleepAlloc, SwapInfo
from .folio import Folios
from .rcu import Rcu, ReaderSupervisor
from .slab import TableSlab
from .swapon import enable_swap_info, swapon
from .task import Current, MigrationPolicy, Task
from .variants import Variant
from .vmscan import direct_reclaim
from .work import run_pending_work

__all__ = ["SwapSystem", "SleepingAllocator"]


class SleepingAllocator:
    """The sleeping table allocation served in this process: the configured latency, then the slab."""

    def __init__(self, slab: TableSlab, latency_us: int) -> None:
        self.slab = slab
        self.latency_s = latency_us / 1e6

    def __call__(self, ci: int) -> int:
        if self.latency_s:
            time.sleep(self.latency_s)
        return self.slab.alloc_sleeping(ci)


class SwapSystem:
    """The shared state of one run plus this process's handle on it."""

    shm: SwapShm | None = None

    def __init__(self, cfg: Config, shm: SwapShm, observers: Iterable[Observer] = (),
                 sleep_alloc: SleepAlloc | None = None, supervisor: ReaderSupervisor | None = None,
                 sleep_allocs: Callable[[int], SleepAlloc] | None = None) -> None:
        self.cfg = cfg
        self.shm = shm
        # Each device's kmem_cache_zalloc(GFP_KERNEL) by swap type (a worker's mailbox to the
        # manager); None: served in this process by the device's own slab.
        self.sleep_allocs = sleep_allocs
        self.variant = Variant.from_config(cfg)
        self.observers = Observers(observers)
        self.cur = Current(shm, self.observers)
        self.rcu = Rcu(shm, self.observers, broken=cfg.rcu == "none", supervisor=supervisor)
        self.slab = TableSlab(shm, self.rcu, self.observers, cfg.atomic_fail, cfg.sleep_fail, seed=cfg.seed,
                              cur=self.cur)
        self.folios = Folios(shm)
        self.si = SwapInfo(shm, self.variant, self.slab, self.rcu, self.folios, self.cur, self.observers,
                           direct_reclaim(sleep_alloc or self._sleep_alloc_for(0, self.slab, cfg), self.cur,
                                          cfg.sleep_reclaim))
        self.handoff = HandoffRing(shm)
        # swap_info[]: every device by type; type 0 is ``si``.  Further devices are added by
        # ``add_device`` (their own device, cluster, map, slab and table segments).
        self.devices: list[SwapInfo] = [self.si]
        self.si.devs = self.devices
        self.device_shms: list[SwapShm] = [shm]
        self.slabs: list[TableSlab] = [self.slab]
        self.prios: list[int] = []

    def add_device(self, dcfg: Config, shm: SwapShm) -> SwapInfo:
        """A further device's handle on its segments ``shm`` (swap type ``len(devices)``)."""
        slab = TableSlab(shm, self.rcu, self.observers, dcfg.atomic_fail, dcfg.sleep_fail, seed=dcfg.seed + shm.type,
                         cur=self.cur)
        si = SwapInfo(shm, self.variant, slab, self.rcu, self.folios, self.cur, self.observers,
                      direct_reclaim(self._sleep_alloc_for(shm.type, slab, dcfg), self.cur, self.cfg.sleep_reclaim))
        si.devs = self.devices
        self.devices.append(si)
        self.device_shms.append(shm)
        self.slabs.append(slab)
        return si

    @classmethod
    def create(cls, cfg: Config, n_workers: int | None = None, **kw) -> SwapSystem:
        """Create the segments and swapon (the owner)."""
        shm = SwapShm.create(cfg, n_workers)
        system = None
        try:
            system = cls(cfg, shm, **kw)
            shm.dev["least_priority"] = -1          # mm/swapfile.c: static int least_priority = -1
            for i, (dcfg, prio) in enumerate(cfg.device_configs()):
                si = system.si if i == 0 else system.add_device(dcfg, SwapShm.create_device(dcfg, shm, i))
                si.slab.init_empty()
                swapon(si.shm, si.slab)
                enable_swap_info(si, prio)
        except BaseException:
            if system is not None:
                for extra in system.device_shms[1:]:
                    extra.close()
                    extra.unlink()
            shm.close()
            shm.unlink()
            raise
        return system

    def _sleep_alloc_for(self, type: int, slab: TableSlab, dcfg: Config) -> SleepAlloc:  # noqa: A002 - si->type
        """Device ``type``'s sleeping table allocation: the given one, else served in this process."""
        if self.sleep_allocs is not None:
            return self.sleep_allocs(type)
        return SleepingAllocator(slab, dcfg.sleep_latency_us)

    @classmethod
    def attach(cls, cfg: Config, n_workers: int, names: dict[str, str] | list[dict[str, str]],
               **kw) -> SwapSystem:
        """Attach to every device the owner created: ``names`` is the owner's ``names()``, one dict
        per device in swap-type order (a single dict: device 0 alone)."""
        per_device = [names] if isinstance(names, dict) else list(names)
        shm = SwapShm.attach(cfg, n_workers, per_device[0])
        system = None
        try:
            system = cls(cfg, shm, **kw)
            configs = cfg.device_configs()
            for t, dnames in enumerate(per_device[1:], 1):
                dcfg = configs[t][0]
                system.add_device(dcfg, SwapShm.attach_device(dcfg, shm, t, dnames))
        except BaseException:
            for d in system.device_shms[1:] if system is not None else ():
                d.close()
            shm.close()
            raise
        return system

    def names(self) -> list[dict[str, str]]:
        """Every device's segment names, in swap-type order (what ``attach`` takes)."""
        return [d.names() for d in self.device_shms]

    def detach(self) -> None:
        """Unmap every device's segments without unlinking them (a process that attached)."""
        for d in reversed(self.device_shms):
            d.close()

    # -- tasks ------------------------------------------------------------------------------------------
    def task(self, wid: int, seed: int | None = None) -> Task:
        """A task for worker ``wid`` with the configured migration policy, made current."""
        cfg = self.cfg
        seed = cfg.seed if seed is None else seed
        policy = MigrationPolicy(cfg.cpus, cfg.migrate, cfg.migrate_to, seed=seed * 7919 + wid)
        task = Task(wid, migration=policy)
        self.switch_to(task)
        self.slab.rng.seed(seed * 104729 + wid)   # its own failslab stream
        return task

    def switch_to(self, task: Task) -> None:
        """Make ``task`` current in this process: lock ownership, lockstat and counters are its."""
        shm = self.shm
        self.cur.set_task(task)
        _prim.set_worker(task.wid)
        if self.cfg.lockstat:
            _prim.set_stats(shm.wr, (task.wid * WORKER.size + WORKER.lockstat) * 8, N_CLASSES)
        else:
            _prim.set_stats(None)
        _prim.set_abort(shm.devr, 8 * DEVICE.abort)
        self.rcu.set_worker(task.wid)

    @property
    def current(self) -> Task | None:
        return self.cur.task

    def run_pending_work(self, grace_period: bool | None = None) -> None:
        """The manager's duties: the scheduled work items, then grace periods and RCU callbacks."""
        for si in self.devices:
            run_pending_work(si, si.slab, self.rcu, grace_period)

    def close(self) -> None:
        if self.shm is not None:
            shm, self.shm = self.shm, None
            self.observers.clear()
            self.si = None
            self.slab = None
            extra, self.device_shms = self.device_shms[1:], []
            self.devices, self.slabs = [], []
            for d in extra:
                d.close()
                d.unlink()
            shm.close()
            shm.unlink()

    def __enter__(self) -> SwapSystem:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
