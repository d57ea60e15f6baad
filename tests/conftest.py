"""Shared fixtures and helpers for the allocator tests.

* ``make_system(**config)``: a small device (``SwapSystem.create``), closed at teardown.  The
  returned system is also a context manager, so a test may close it early with ``with``.  Worker 0
  is the current task.  Defaults: 16 clusters of 8 slots, 2 CPUs, order 0 only, no injected
  failures and no random migration, so every state is reached on purpose.
* ``alloc_folio(system, order, state=...)``: a folio of ``order`` for the current task; returns its
  first entry (or a negative errno).  What is held is recorded in ``system.held[entry]`` so that
  ``release`` / ``release_all`` can give it back as the workload would.  A SWAPPED entry's shadow
  is ``entry + 1`` in each of its slots.
* ``assert_clean(system)``: run the checker and assert no violations (and, unless told otherwise,
  no findings).
* At session end, nothing of this process (prefix ``shmswap_``) may be left in /dev/shm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from shmswap import _prim
from shmswap.allocator import folio_alloc_swap
from shmswap.checker import CheckResult, check
from shmswap.config import PAGE_SIZE, Config
from shmswap.shm import leftover_segments
from shmswap.stats import Stat
from shmswap.swap_cache import swap_cache_del_folio
from shmswap.swap_free import free_swap_and_cache_nr, swap_duplicate
from shmswap.system import SwapSystem
from workers.workload import writeback_folio

SPC = 8
NR_CLUSTERS = 16

# Holding states of an allocation (see alloc_folio).
RAW = "raw"              # straight out of folio_alloc_swap: HAS_CACHE, folio in the cache, locked
CACHED = "cached"        # HAS_CACHE | 1 map count, folio in the swap cache, unlocked
SWAPPED = "swapped"      # 1 map count, a shadow in the table, the folio gone
CACHE_ONLY = "cache_only"  # HAS_CACHE only (no map count), folio in the swap cache, unlocked


def small_config(clusters: int = NR_CLUSTERS, tail: int = 0, **kw) -> Config:
    """A small configuration: ``clusters`` clusters (the last one ``tail`` slots short)."""
    spc = kw.get("slots_per_cluster", SPC)
    base = dict(slots_per_cluster=spc, cpus=2, orders={0: 1.0}, atomic_fail=0.0, sleep_fail=0.0,
                migrate=0.0, size=(clusters * spc - tail) * PAGE_SIZE)
    base.update(kw)
    return Config(**base)


@dataclass
class Held:
    entry: int
    order: int
    folio: int
    state: str
    wid: int


def stats(system: SwapSystem, wid: int | None = None) -> dict[Stat, int]:
    """Statistics counters of one worker (default: the current task), or summed over all."""
    rows = system.shm.workers["stats"]
    if wid is None:
        wid = system.si.task.wid
    if wid == "all":
        return {s: int(rows[:, s].sum()) for s in Stat}
    return {s: int(rows[wid][s]) for s in Stat}


def stat(system: SwapSystem, s: Stat, wid: int | None = None) -> int:
    return stats(system, wid)[s]


def alloc_folio(system: SwapSystem, order: int = 0, state: str = SWAPPED) -> int:
    """Allocate a folio of ``order`` and swap slots for it as the current task; return the entry.

    ``state`` says what is left held afterwards (RAW, CACHED, SWAPPED or CACHE_ONLY, see above);
    the workload's two endings are SWAPPED and CACHE_ONLY.  A negative errno is returned as is.
    """
    si, folios = system.si, system.folios
    wid = si.task.wid
    folio = folios.folio_alloc(wid, order)
    assert folio >= 0, "out of folios"
    folios.folio_lock(folio)
    entry = folio_alloc_swap(si, folio)
    if entry < 0:
        folios.folio_unlock(folio)
        folios.folio_put(folio)
        return entry
    nr = 1 << order
    if state == RAW:
        pass
    elif state == CACHED:
        assert swap_duplicate(si, entry, nr) == 0
        folios.folio_unlock(folio)
    elif state == CACHE_ONLY:
        assert swap_duplicate(si, entry, nr) == 0
        free_swap_and_cache_nr(si, entry, nr)     # folio locked: it stays cache-only
        folios.folio_unlock(folio)
    elif state == SWAPPED:
        assert swap_duplicate(si, entry, nr) == 0
        writeback(system, folio, entry, shadow=entry + 1)
        folio = -1
    else:
        raise ValueError(state)
    system.held[entry] = Held(entry, order, folio, state, wid)
    return entry


def writeback(system: SwapSystem, folio: int, entry: int, shadow: int) -> None:
    """Writeback done: the folio leaves the swap cache with a shadow, then goes (vmscan's path)."""
    writeback_folio(system.si, system.folios, folio, entry, shadow)


def release(system: SwapSystem, entry: int) -> None:
    """Give back what ``alloc_folio`` left held at ``entry``, as the current task.

    A RAW folio is still locked, and a lock belongs to the worker that took it: that worker
    unlocks it (the current task is switched for the call and back).
    """
    h = system.held.pop(entry)
    si, folios = system.si, system.folios
    nr = 1 << h.order
    if h.state == SWAPPED:
        free_swap_and_cache_nr(si, entry, nr)
    elif h.state == CACHED:
        free_swap_and_cache_nr(si, entry, nr)      # unmapped and unlocked: reclaimed at once
        folios.folio_put(h.folio)
    elif h.state in (CACHE_ONLY, RAW):
        me = si.task
        if h.state == RAW and me.wid != h.wid:
            si.switch_to(system.tasks[h.wid])
        if h.state == CACHE_ONLY:
            folios.folio_lock(h.folio)
        if folios.folio_matches_swap_entry(h.folio, entry):
            swap_cache_del_folio(si, h.folio)
        folios.folio_unlock(h.folio)
        folios.folio_put(h.folio)
        if si.task is not me:
            si.switch_to(me)


def release_all(system: SwapSystem) -> None:
    for entry in sorted(system.held):
        release(system, entry)


def run_check(system: SwapSystem) -> CheckResult:
    return check(system.shm, system.variant, system.si.warnings)


def assert_clean(system: SwapSystem, findings: bool = False) -> CheckResult:
    """The checker finds no violation (and no finding unless ``findings``)."""
    res = run_check(system)
    assert res.violations == [], res.violations
    if not findings:
        assert res.findings == [], res.findings
    return res


def _reset_prim() -> None:
    _prim.set_hook(None)
    _prim.set_stats(None)
    _prim.set_abort(None)
    _prim.set_worker(0)


@pytest.fixture
def make_system():
    """Factory: ``make_system(n_workers=None, clusters=16, tail=0, **config) -> SwapSystem``."""
    systems: list[SwapSystem] = []

    def make(n_workers: int | None = None, **kw) -> SwapSystem:
        cfg = small_config(**kw)
        system = SwapSystem.create(cfg, n_workers=n_workers or cfg.cpus)
        systems.append(system)
        system.held = {}
        system.tasks = [system.task(w) for w in reversed(range(system.shm.geo.n_workers))][::-1]
        return system

    yield make
    for system in reversed(systems):
        system.close()
    _reset_prim()


@pytest.fixture
def system(make_system) -> SwapSystem:
    """The default small device: SSD, seed, dynamic tables, 16 clusters of 8 slots, 2 CPUs."""
    return make_system()


def _ours(name: str) -> bool:
    pid = str(os.getpid())
    parts = name.split("_")
    return len(parts) > 2 and (parts[1] == pid or (parts[1] == "test" and parts[2] == pid))


@pytest.fixture(autouse=True, scope="session")
def _no_leftover_segments():
    yield
    left = [n for n in leftover_segments() if _ours(n)]
    assert left == [], f"segments left in /dev/shm: {left}"
