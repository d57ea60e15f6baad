"""The public model API: drive the allocator step by step in one process.

    from shmswap import Config, Model

    with Model(Config(size="1M", slots_per_cluster=8, cpus=2, orders="0:1", seconds=1)) as m:
        a = m.alloc(cpu=0)                 # a folio's slot on CPU 0, written back (a shadow stays)
        b = m.alloc(cpu=1, order=2, state="cache_only")
        m.free(a)                          # the PTE goes: the slot is freed
        m.lookup(cpu=0, entry=b.entry)     # a lockless swap-cache lookup: the folio id, or None
        m.run_pending_work()               # the manager: discard, reclaim, grace periods
        print(m.snapshot().to_json())      # clusters, lists, per-CPU caches, counters
        print(m.check().ok)                # every invariant of reference §9
        m.swapoff()

Every call runs the real code: the allocator of mm/ on shared memory through the C locks, both
``swap_cluster_alloc_table`` variants, the slab and RCU.  CPU *i* is worker *i* (DESIGN §1); the
manager's work runs as one more worker.  Observers (tracing, fault plans, the deterministic
scheduler) come in through the constructor or ``add_observer``; the RCU oracles are installed by
default.  The single-process runner, the tests and the teaching mode use this API; the manager and
CPU worker processes use it too, attaching to a model another process created.

This module also holds the slot life's steps that are not the allocator's (writeback, release),
so the workload and the API share one copy of each.

Public and changed with care: see the README's "Model API" section and CHANGELOG.md.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .checks.checker import CheckResult, check
from .checks.faults import lose_cluster
from .checks.lockdep import Lockdep
from .checks.oracles import ReaderOracle
from .config import Config
from .mm.allocator import folio_alloc_swap
from .mm.cluster import CI_BYTES, CI_LOCK
from .mm.device import SleepAlloc, swap_usage_in_pages
from .mm.rcu import ReaderSupervisor
from .mm.reclaim import free_swap_and_cache_nr, swap_reclaim_work
from .mm.swap import FLAG_NAMES, SWAP_USAGE_COUNTER_MASK, SWP_TYPE_SHIFT
from .mm.swap_cache import __swap_cache_del_folio as _del_folio_locked  # no mangling inside the class
from .mm.swap_cache import swap_cache_del_folio, swap_cache_get_folio
from .mm.swap_free import swap_duplicate, swap_entries_put_cache
from .mm.swapon import swapoff
from .mm.system import SwapSystem
from .mm.task import Task
from .mm.vmscan import bind_swap_out, settle
from .mm.work import swap_discard_work
from .substrate.layout import LIST_NAMES, nr_lists
from .substrate.observe import Observer

__all__ = ["Model", "Allocation", "Snapshot", "SWAPPED", "CACHE_ONLY", "CACHED", "RAW", "SWP_TYPE_SHIFT",
           "writeback_folio", "release_allocation"]

# What an allocation leaves held (``Model.alloc``'s ``state``).
SWAPPED = "swapped"        # the workload's usual ending: 1 map count, a shadow in the table, the folio gone
CACHE_ONLY = "cache_only"  # SWAP_HAS_CACHE only (no map count), the folio in the swap cache, unlocked
CACHED = "cached"          # SWAP_HAS_CACHE | 1 map count, the folio in the swap cache, unlocked
RAW = "raw"                # straight out of folio_alloc_swap: HAS_CACHE, folio in the cache and locked
STATES = (SWAPPED, CACHE_ONLY, CACHED, RAW)


@dataclass(frozen=True)
class Allocation:
    """Slots held after ``Model.alloc``: the first entry, the order, the folio (-1 once written
    back), what is held (``state``) and the worker that holds it."""

    entry: int
    order: int
    folio: int
    state: str
    wid: int
    type: int = 0          # the device (si->type): swp_entry_t is (type, entry)

    @property
    def nr(self) -> int:
        return 1 << self.order

    @property
    def swp(self) -> int:
        """The key ``Model.held`` uses: ``entry`` on device 0, ``(type << 48) | entry`` beyond."""
        return (self.type << SWP_TYPE_SHIFT) | self.entry


# -- the slot life's steps outside the allocator ----------------------------------------------------

def writeback_folio(si, folio: int, entry: int, shadow: int) -> None:
    """Writeback done (vmscan's path): the locked folio leaves the swap cache, a shadow stays,
    SWAP_HAS_CACHE is dropped, and the folio goes with the cache's and the owner's references."""
    folios = si.folios
    nr = 1 << folios.order(folio)
    ci = entry >> si.spc_shift
    si.cr.lock(ci * CI_BYTES, CI_LOCK)
    _del_folio_locked(si, ci, folio, entry, shadow)
    si.cr.unlock(ci * CI_BYTES, CI_LOCK)
    swap_entries_put_cache(si, entry, nr)              # put_swap_folio(), with nr known here
    folios.folio_unlock(folio)
    folios.folio_put(folio, nr + 1)


def release_allocation(si, entry: int, order: int, folio: int, state: str) -> None:
    """Free what an allocation left held, whoever holds it now: the map count, or the folio.

    A RAW folio is still locked by its allocator: the caller must be that worker.
    """
    folios = si.folios
    nr = 1 << order
    if state == SWAPPED:
        free_swap_and_cache_nr(si, entry, nr)
        return
    if state == CACHED:
        free_swap_and_cache_nr(si, entry, nr)      # unmapped and unlocked: reclaimed at once
        folios.folio_put(folio)
        return
    if state == CACHE_ONLY:
        folios.folio_lock(folio)
    if folios.folio_matches_swap_entry(folio, entry):
        swap_cache_del_folio(si, folio)            # folio_free_swap: no map count left
    folios.folio_unlock(folio)
    folios.folio_put(folio)


# -- snapshots ----------------------------------------------------------------------------------------

@dataclass
class Snapshot:
    """The model's state as plain data (converts to JSON).

    ``clusters``: one dict per cluster (index, flag, list and position in it, count, order, table
    present).  ``lists``: every list's clusters, head to tail.  ``percpu``: per CPU and order, the
    cached device flag and offset.  ``device``: the swap_info counters.  ``slab``: the table slab.
    """

    clusters: list[dict] = field(default_factory=list)
    lists: dict[str, list[int]] = field(default_factory=dict)
    percpu: list[dict] = field(default_factory=list)
    device: dict[str, int] = field(default_factory=dict)
    slab: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self, **kw) -> str:
        return json.dumps(self.as_dict(), **kw)


def _snapshot(system: SwapSystem, cpus: int) -> Snapshot:
    shm = system.shm
    nrl = nr_lists(system.cfg.nr_orders)
    names = LIST_NAMES(system.cfg.nr_orders)
    clu, heads = shm.clu, shm.dev["heads"]
    lists: dict[str, list[int]] = {}
    where: dict[int, tuple[str, int]] = {}
    for lst in range(nrl):
        c, out = int(heads[lst][0]), []
        while c != -1 and len(out) <= len(clu):
            where[c] = (names[lst], len(out))
            out.append(c)
            c = int(clu["next"][c])
        lists[names[lst]] = out
    clusters = []
    for c in range(len(clu)):
        lst, pos = where.get(c, (None, None))
        clusters.append({"index": c, "flag": FLAG_NAMES.get(int(clu["flags"][c]), str(int(clu["flags"][c]))),
                         "list": lst, "position": pos, "count": int(clu["count"][c]),
                         "order": int(clu["order"][c]), "table": bool(clu["table"][c] != -1)})
    pcp = shm.pcp
    percpu = [{"cpu": cpu, "si": [int(x) for x in pcp["si"][cpu]], "offset": [int(x) for x in pcp["offset"][cpu]]}
              for cpu in range(cpus)]
    dev = shm.dev
    device = {"flags": int(dev["flags"]), "max": int(dev["max"]), "pages": int(dev["pages"]),
              "inuse_pages": int(dev["inuse_pages"]) & SWAP_USAGE_COUNTER_MASK,
              "nr_swap_pages": int(dev["nr_swap_pages"]), "total_swap_pages": int(dev["total_swap_pages"]),
              "on_avail": int(dev["on_avail"]), "global_next": [int(x) for x in dev["global_next"]]}
    return Snapshot(clusters, lists, percpu, device, system.slab.statistics())


def _on_device(type: int, where: str) -> str:  # noqa: A002 - si->type
    """A further device's check ``where``, prefixed with its device (once: W12 events name it already)."""
    prefix = f"device {type}"
    return where if where == prefix or where.startswith(prefix + " ") else f"{prefix} {where}"


# -- the model -----------------------------------------------------------------------------------------

class Model:
    """One swap device driven from one process, CPU by CPU.

    ``Model(cfg)`` creates the device (its segments and swapon) with ``cfg.cpus`` CPUs and one more
    worker for the manager's work.  Close it (or use ``with``) to unlink the segments.
    """

    def __init__(self, config: Config | None = None, *, observers: Iterable[Observer] = (),
                 oracles: bool = True, n_workers: int | None = None, _system: SwapSystem | None = None,
                 _wids: Iterable[int] | None = None) -> None:
        cfg = config or Config()
        self.cfg = cfg
        self.cpus = cfg.cpus
        self.system = _system or SwapSystem.create(cfg, n_workers or cfg.cpus + 1)
        self.si = self.system.si
        self.n_workers = self.system.shm.geo.n_workers
        # the CPUs, then the manager; a multiprocess run's torture readers come after it
        self.manager_wid = min(cfg.cpus, self.n_workers - 1)
        # --lockdep: lock-order checking at every lock, in every process of the run.
        self.lockdep = self.system.observers.add(Lockdep(self.system)) if cfg.lockdep else None
        if oracles:
            self.system.observers.add(ReaderOracle(self.system.slab, self.system.cur))
        for o in observers:
            self.system.observers.add(o)
        # The tasks this process plays; the last one made is current (worker 0 in one process).
        wids = list(range(self.n_workers)) if _wids is None else list(_wids)
        self.tasks: list[Task | None] = [None] * self.n_workers
        for w in reversed(wids):
            self.tasks[w] = self.system.task(w)
        self.held: dict[int, Allocation] = {}
        self.last_errno = 0
        if cfg.sleep_reclaim:           # nested swap-outs (mm/vmscan.py) are held like alloc's (a workload rebinds)
            for w in wids:
                bind_swap_out(self.tasks[w], self.si, self._swapped_out, cfg.seed)

    @classmethod
    def attach(cls, config: Config, n_workers: int, names: dict[str, str] | list[dict[str, str]], wid: int, *,
               observers: Iterable[Observer] = (), oracles: bool = True,
               sleep_alloc: SleepAlloc | None = None,
               sleep_allocs: Callable[[int], SleepAlloc] | None = None) -> Model:
        """Attach to a model another process created, as worker ``wid`` (a CPU worker process).

        ``names``: the owner's ``system.names()`` (every device's segments).  The sleeping table
        allocation is ``sleep_allocs(type)`` for device ``type`` (or ``sleep_alloc`` for device 0)."""
        system = SwapSystem.attach(config, n_workers, names, sleep_alloc=sleep_alloc, sleep_allocs=sleep_allocs)
        return cls(config, observers=observers, oracles=oracles, n_workers=n_workers, _system=system, _wids=[wid])

    @classmethod
    def owner(cls, config: Config, n_workers: int, *, supervisor: ReaderSupervisor | None = None,
              observers: Iterable[Observer] = (), oracles: bool = True) -> Model:
        """Create the device for a multiprocess run, as the manager (worker ``cpus``: the torture
        readers, if any, come after it), with its RCU watched by ``supervisor``."""
        system = SwapSystem.create(config, n_workers, supervisor=supervisor)
        return cls(config, observers=observers, oracles=oracles, n_workers=n_workers, _system=system,
                   _wids=[min(config.cpus, n_workers - 1)])

    # -- who runs -----------------------------------------------------------------------------------
    def on(self, cpu: int) -> Model:
        """Make CPU ``cpu``'s task current (the manager's is ``manager_wid``); returns the model."""
        self.system.switch_to(self.tasks[cpu])
        return self

    def on_manager(self) -> Model:
        return self.on(self.manager_wid)

    def add_observer(self, observer: Observer) -> Observer:
        return self.system.observers.add(observer)

    # -- the slot life ---------------------------------------------------------------------------------
    def alloc(self, cpu: int | None = None, order: int = 0, state: str = SWAPPED) -> Allocation | None:
        """Allocate slots for a new folio of ``order`` on ``cpu`` (default: the current task).

        ``state`` is what is left held: SWAPPED (written back, one map count, a shadow),
        CACHE_ONLY (SWAP_HAS_CACHE only, for reclaim), CACHED or RAW (see the constants).  Returns
        None when no slot was found (``last_errno`` says why) or no folio id is free.
        """
        if state not in STATES:
            raise ValueError(f"state {state!r} is not one of {STATES}")
        if cpu is not None:
            self.on(cpu)
        si = self.si
        folios = si.folios
        wid = si.cur.wid
        folio = folios.folio_alloc(wid, order)
        if folio < 0:
            self.last_errno = errno.ENOMEM
            return None
        folios.folio_lock(folio)
        entry = folio_alloc_swap(si, folio)
        if self.cfg.sleep_reclaim:
            settle(si.cur)                            # the branch taken after a nested swap-out
        if entry < 0:
            folios.folio_unlock(folio)
            folios.folio_put(folio)
            self.last_errno = -entry
            return None
        si = si.cur.alloc_si                          # the device the entry is on
        nr = 1 << order
        if state != RAW and swap_duplicate(si, entry, nr):
            raise AssertionError(f"swap_duplicate failed on a fresh entry {entry}")
        if state == CACHED:
            folios.folio_unlock(folio)
        elif state == CACHE_ONLY:
            free_swap_and_cache_nr(si, entry, nr)     # folio locked: it stays cache-only
            folios.folio_unlock(folio)
        elif state == SWAPPED:
            writeback_folio(si, folio, entry, entry + 1)
            folio = -1
        a = Allocation(entry, order, folio, state, wid, si.type)
        self.held[a.swp] = a
        return a

    def _swapped_out(self, si, folio: int, entry: int) -> None:
        """A nested swap-out's slot (``--sleep-reclaim``, mm/vmscan.py), inside an ``alloc``: the map
        count and writeback, held as SWAPPED by the task that reclaimed."""
        order = si.folios.order(folio)
        swap_duplicate(si, entry, 1 << order)
        writeback_folio(si, folio, entry, entry + 1)
        a = Allocation(entry, order, -1, SWAPPED, si.cur.wid, si.type)
        self.held[a.swp] = a

    def free(self, what: Allocation | int, cpu: int | None = None) -> None:
        """Give back what ``alloc`` left held (by entry or allocation), on ``cpu`` (default: current).

        A RAW folio is locked by the worker that allocated it: that worker unlocks it.
        """
        a = self.held.pop(what if isinstance(what, int) else what.swp)
        if cpu is not None:
            self.on(cpu)
        me = self.system.current
        if a.state == RAW and me.wid != a.wid:
            self.system.switch_to(self.tasks[a.wid])
        release_allocation(self.system.devices[a.type], a.entry, a.order, a.folio, a.state)
        if self.system.current is not me:
            self.system.switch_to(me)

    def free_all(self) -> None:
        for entry in sorted(self.held):
            self.free(entry)

    def lookup(self, cpu: int | None, entry: int, type: int = 0) -> int | None:  # noqa: A002 - si->type
        """A lockless swap-cache lookup (``swap_cache_get_folio``) validated as swap-in does:
        the folio id if one is cached for ``entry`` (of device ``type``), else None."""
        if cpu is not None:
            self.on(cpu)
        si = self.system.devices[type]
        folios = si.folios
        folio = swap_cache_get_folio(si, entry)
        if folio < 0:
            return None
        ok = folios.folio_matches_swap_entry(folio, entry)
        folios.folio_put(folio)
        return folio if ok else None

    # -- the manager's work -----------------------------------------------------------------------------
    def run_pending_work(self, grace_period: bool | None = None) -> None:
        """As the manager: scheduled discard and reclaim work, grace periods, deferred frees."""
        self.on_manager()
        self.system.run_pending_work(grace_period)

    def reclaim(self) -> None:
        """As the manager: ``swap_reclaim_work`` (every FULL cluster's cache-only slots)."""
        self.on_manager()
        swap_reclaim_work(self.si)

    def discard(self) -> bool:
        """As the manager: ``swap_discard_work``; True if a cluster was discarded."""
        self.on_manager()
        return swap_discard_work(self.si)

    def grace_period(self) -> None:
        """As the manager: ``synchronize_rcu`` and the RCU callbacks that became due."""
        self.on_manager()
        self.system.rcu.synchronize_rcu()
        self.system.slab.process_deferred()

    def swapoff(self, type: int | None = None) -> None:  # noqa: A002 - si->type
        """The swapoff syscall as the manager; ``try_to_unuse`` frees everything ``held`` (on
        device ``type``; default: every device, last first)."""
        types = range(len(self.system.devices) - 1, -1, -1) if type is None else (type,)
        for t in types:
            def try_to_unuse(_si, t=t) -> None:
                for key in sorted(k for k, a in self.held.items() if a.type == t):
                    self.free(key)
                self.on_manager()
                self.system.run_pending_work()

            self.on_manager()
            swapoff(self.system.devices[t], try_to_unuse)
            self.system.run_pending_work()

    @property
    def devices(self) -> list:
        """Every device's ``si`` by type."""
        return self.system.devices

    def inject_lost_cluster(self) -> int:
        """``--inject-bug lose-cluster``: drop a cluster from its list without a record."""
        return lose_cluster(self.si)

    # -- looking -------------------------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        return _snapshot(self.system, self.cpus)

    def check(self, warnings: list[str] | None = None) -> CheckResult:
        """Every invariant, at quiescence: findings (the seed's lost clusters) and violations;
        with several devices, every device's, each ``where`` after the first's prefixed."""
        res = check(self.system.shm, self.system.variant, self.warnings if warnings is None else warnings)
        for shm in self.system.device_shms[1:]:
            more = check(shm, self.system.variant, [])
            res.violations += [replace(v, where=_on_device(shm.type, v.where)) for v in more.violations]
            res.findings += [replace(f, where=_on_device(shm.type, f.where)) for f in more.findings]
        return res

    def check_device(self, type: int) -> CheckResult:  # noqa: A002 - si->type
        """One device's invariants (its clusters, map, slab and this CPU cache's entries for it)."""
        return check(self.system.device_shms[type], self.system.variant, self.warnings if type == 0 else [])

    @property
    def warnings(self) -> list[str]:
        return self.system.cur.warnings

    def usage(self) -> int:
        """Slots in use (``swap_usage_in_pages``)."""
        return swap_usage_in_pages(self.si)

    def cluster_counts(self) -> np.ndarray:
        return self.system.shm.clu["count"].copy()

    # -- lifetime ----------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.system.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
