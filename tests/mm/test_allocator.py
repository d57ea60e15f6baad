"""Tests of shmswap.mm.allocator: the fast path, the ordered list search, trylock skipping,
full-cluster and scan reclaim (shmswap.mm.reclaim), discard, HDD, per-CPU off, swapoff's WRITEOK,
hibernation.

Table allocation failures are forced with the test's fault plan (``system.faults``); a task
sleeping for a table is held there by an observer's ``sleep`` hook, and preemption points are
watched by an observer's ``sched_point`` hook.
"""

import errno
import threading

import multiprocess as mp
import pytest
from conftest import (
    CACHE_ONLY,
    CACHED,
    RAW,
    SWAPPED,
    alloc_folio,
    assert_clean,
    release,
    release_all,
    run_check,
    stat,
)
from helpers import OnPoint, hold_cluster_lock, walk

from shmswap.mm.allocator import folio_alloc_swap, get_swap_page_of_type
from shmswap.mm.cluster import CI_BYTES, ci_lock, ci_unlock
from shmswap.mm.device import del_from_avail_list, vm_swap_full
from shmswap.mm.reclaim import swap_reclaim_full_clusters, swap_reclaim_work
from shmswap.mm.swap import (
    CLUSTER_FLAG_DISCARD,
    CLUSTER_FLAG_FRAG,
    CLUSTER_FLAG_FREE,
    CLUSTER_FLAG_FULL,
    CLUSTER_FLAG_NONFULL,
    SWAP_HAS_CACHE,
)
from shmswap.mm.work import swap_discard_work
from shmswap.substrate.layout import LIST_DISCARD, LIST_FREE, LIST_FULL, list_frag, list_nonfull
from shmswap.substrate.locks import LockClass
from shmswap.substrate.observe import Observer
from shmswap.substrate.preempt import Point
from shmswap.substrate.stats import Stat

CTX = mp.get_context("fork")


class OnSleep(Observer):
    """Calls ``fn(ci)`` right before every sleeping table allocation (every lock dropped)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def sleep(self, wid, ci, cpu):
        self.fn(ci)



def flags(system, ci):
    return int(system.shm.clu["flags"][ci])


# -- fast path and list order -----------------------------------------------------------------------------

def test_first_allocation_takes_the_header_cluster_then_the_fast_path(system):
    s = system
    assert alloc_folio(s, 0, SWAPPED) == 1
    assert stat(s, Stat.SLOW_PATH) == 1 and stat(s, Stat.FAST_HIT) == 0
    assert walk(s, list_frag(0)) == [0]                  # after allocation: FRAG, not NONFULL
    assert s.si.pcp.si(0, 0) == 1 and s.si.pcp.offset(0, 0) == 2
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(6)] == [2, 3, 4, 5, 6, 7]
    assert stat(s, Stat.FAST_HIT) == 6 and stat(s, Stat.SLOW_PATH) == 1
    assert flags(s, 0) == CLUSTER_FLAG_FULL and s.si.pcp.offset(0, 0) == 0
    assert alloc_folio(s, 0, SWAPPED) == 8               # slow path again: free_clusters
    assert stat(s, Stat.SLOW_PATH) == 2
    assert stat(s, Stat.ALLOC) == 8
    assert_clean(s)


def test_orders_are_aligned_and_own_their_cluster(system):
    s = system
    got = [alloc_folio(s, 2, SWAPPED), alloc_folio(s, 1, SWAPPED), alloc_folio(s, 2, SWAPPED),
           alloc_folio(s, 1, SWAPPED), alloc_folio(s, 3, SWAPPED)]
    assert got == [8, 16, 12, 18, 24]
    clu = s.shm.clu
    assert [int(clu["order"][c]) for c in (1, 2, 3)] == [2, 1, 3]
    assert flags(s, 1) == CLUSTER_FLAG_FULL and flags(s, 3) == CLUSTER_FLAG_FULL
    assert walk(s, list_frag(1)) == [2]
    assert_clean(s)


def test_order_larger_than_a_cluster_is_refused(system):
    s = system
    f = s.folios.folio_alloc(0, 4)
    s.folios.folio_lock(f)
    assert folio_alloc_swap(s.si, f) == -errno.EINVAL
    assert "exceeds the cluster size" in s.warnings[0]
    s.folios.folio_unlock(f)
    s.folios.folio_put(f)


def test_whole_cluster_orders_use_free_clusters_only(make_system):
    s = make_system(clusters=3)
    assert alloc_folio(s, 3, SWAPPED) == 8
    assert alloc_folio(s, 3, SWAPPED) == 16
    assert alloc_folio(s, 3, SWAPPED) == -errno.ENOMEM    # cluster 0 has room, but not a whole one
    assert stat(s, Stat.ALLOC_FAILED) == 1
    assert_clean(s)


def test_order0_steals_from_higher_orders(make_system):
    s = make_system(clusters=3)
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(7)] == list(range(1, 8))
    assert alloc_folio(s, 1, SWAPPED) == 8
    assert alloc_folio(s, 1, SWAPPED) == 10
    assert alloc_folio(s, 3, SWAPPED) == 16
    assert walk(s, LIST_FREE) == [] and walk(s, list_frag(1)) == [1]
    assert alloc_folio(s, 1, SWAPPED) == 12
    s.si.pcp.set(0, 0, 0)
    e = alloc_folio(s, 0, SWAPPED)
    assert e == 14                                        # order 0 in an order-1 cluster
    assert int(s.shm.clu["order"][1]) == 1
    assert_clean(s)


def test_higher_orders_do_not_steal(make_system):
    s = make_system(clusters=2)
    assert alloc_folio(s, 0, SWAPPED) == 1
    assert alloc_folio(s, 2, SWAPPED) == 8
    assert alloc_folio(s, 1, SWAPPED) == -errno.ENOMEM    # room in clusters 0 and 1, other orders
    assert_clean(s)


# -- trylock skipping --------------------------------------------------------------------------------------

def test_allocator_skips_a_busy_free_cluster(system):
    s, si = system, system.si
    me, other = s.tasks
    s.switch_to(other)
    ci_lock(si, 1)
    s.switch_to(me)
    assert alloc_folio(s, 1, SWAPPED) == 16               # cluster 1 busy: cluster 2 used
    assert stat(s, Stat.TRYLOCK_SKIPS) == 1
    assert walk(s, LIST_FREE)[0] == 1
    s.switch_to(other)
    ci_unlock(si, 1)
    s.switch_to(me)
    assert_clean(s)


def test_allocator_skips_a_busy_nonfull_cluster(system):
    s, si = system, system.si
    me, other = s.tasks
    s.switch_to(other)
    ci_lock(si, 0)                                        # the only nonfull_clusters[0] node
    s.switch_to(me)
    assert alloc_folio(s, 0, SWAPPED) == 8                # the step returned NULL: free_clusters next
    assert stat(s, Stat.TRYLOCK_SKIPS) == 1
    s.switch_to(other)
    ci_unlock(si, 0)
    s.switch_to(me)
    assert walk(s, list_nonfull(0)) == [0]
    assert_clean(s)



def test_allocator_skips_a_cluster_locked_by_another_process(system):
    s = system
    held, done = CTX.Event(), CTX.Event()
    p = CTX.Process(target=hold_cluster_lock, args=(s, 1, held, done))
    p.start()
    try:
        assert held.wait(20)
        assert alloc_folio(s, 2, SWAPPED) == 16
        assert alloc_folio(s, 2, SWAPPED) == 20           # fast path in cluster 2
    finally:
        done.set()
        p.join(20)
    assert p.exitcode == 0
    assert stat(s, Stat.TRYLOCK_SKIPS) == 1
    assert s.si.cr.load(1 * CI_BYTES) == 0
    assert_clean(s)


# -- reclaim ------------------------------------------------------------------------------------------------

def _fill_alternating(s):
    """Fill the device with order-0 slots: odd entries cache-only, even ones with a map count."""
    pages = int(s.shm.dev["pages"])
    got = []
    for i in range(pages):
        got.append(alloc_folio(s, 0, CACHE_ONLY if i % 2 == 0 else SWAPPED))
    assert got == list(range(1, pages + 1))
    assert vm_swap_full(s.si) and int(s.shm.dev["on_avail"]) == 0
    return got


def _check_model(s):
    """Slots with a map count are intact; cache-only slots are intact or were reclaimed whole."""
    m = s.shm.map_np
    reclaimed = []
    for e, h in s.held.items():
        if h.state == SWAPPED:
            assert m[e] == 1, e
        elif h.state == CACHE_ONLY:
            if s.folios.folio_matches_swap_entry(h.folio, e):
                assert m[e] == SWAP_HAS_CACHE, e
            else:
                reclaimed.append(e)
    return reclaimed


def test_full_cluster_reclaim_frees_cache_only_slots(make_system):
    s = make_system(clusters=4)
    _fill_alternating(s)
    assert walk(s, LIST_FULL) == [0, 1, 2, 3]
    assert int(s.shm.dev["reclaim_work"]) == 1
    swap_reclaim_full_clusters(s.si, False)               # one FULL cluster (the head)
    first = _check_model(s)
    assert first == [1, 3, 5, 7]
    assert stat(s, Stat.RECLAIMED_SLOTS) == 4 and stat(s, Stat.RECLAIM_FULL) == 1
    assert flags(s, 0) == CLUSTER_FLAG_NONFULL            # a free moved it while reclaiming
    assert_clean(s)
    swap_reclaim_work(s.si)                               # the worker: inuse / spc clusters
    assert int(s.shm.dev["reclaim_work"]) == 0
    reclaimed = _check_model(s)
    assert set(first) < set(reclaimed)
    assert stat(s, Stat.RECLAIMED_SLOTS) == len(reclaimed) > 4
    assert_clean(s)
    release_all(s)
    assert_clean(s)


def test_scan_reclaim_when_swap_is_full(make_system):
    s = make_system(clusters=4)
    _fill_alternating(s)
    assert s.held[17].state == CACHE_ONLY and s.held[18].state == SWAPPED
    release(s, 18)                                        # cluster 2: one free slot, NONFULL
    assert walk(s, list_nonfull(0)) == [2]
    cached = s.held.pop(17)
    e = alloc_folio(s, 0, SWAPPED)
    assert e == 17                                        # reclaimed the cache-only slot on the way
    assert stat(s, Stat.RECLAIMED_SLOTS) == 1
    assert not s.folios.folio_matches_swap_entry(cached.folio, 17)
    s.folios.folio_put(cached.folio)
    assert s.shm.map_np[16] == 1 and s.shm.map_np[18] == 0   # slots with a map count untouched
    assert _check_model(s) == []
    assert_clean(s)


def test_no_scan_reclaim_below_half_full(system):
    s = system
    assert alloc_folio(s, 0, CACHE_ONLY) == 1
    assert alloc_folio(s, 0, SWAPPED) == 2
    release(s, 2)
    s.switch_to(s.tasks[1])
    assert alloc_folio(s, 0, SWAPPED) == 2                # the cache-only slot 1 is skipped
    assert stat(s, Stat.RECLAIMED_SLOTS, "all") == 0
    assert s.shm.map_np[1] == SWAP_HAS_CACHE
    assert_clean(s)


def test_reclaim_never_takes_mapped_or_locked_slots(make_system):
    s = make_system(clusters=4)
    pages = int(s.shm.dev["pages"])
    for i in range(pages):
        assert alloc_folio(s, 0, (CACHED, SWAPPED, RAW)[i % 3]) == i + 1
    swap_reclaim_full_clusters(s.si, True)
    swap_reclaim_work(s.si)
    assert stat(s, Stat.RECLAIMED_SLOTS) == 0
    for e, h in s.held.items():
        assert s.shm.map_np[e] == {CACHED: SWAP_HAS_CACHE | 1, SWAPPED: 1, RAW: SWAP_HAS_CACHE}[h.state]
    assert_clean(s)


# -- discard ------------------------------------------------------------------------------------------------

def test_discard_prefers_free_clusters(make_system):
    plain = make_system()
    assert alloc_folio(plain, 0, SWAPPED) == 1            # nonfull_clusters[0] first
    s = make_system(discard="on")
    assert alloc_folio(s, 0, SWAPPED) == 8                # free_clusters first with discard
    assert walk(s, list_nonfull(0)) == [0]


def test_discard_then_work(make_system):
    s = make_system(discard="on")
    e = alloc_folio(s, 2, SWAPPED)
    table = int(s.shm.clu["table"][1])
    release(s, e)
    assert flags(s, 1) == CLUSTER_FLAG_DISCARD and int(s.shm.clu["table"][1]) == table
    assert walk(s, LIST_DISCARD) == [1]
    assert alloc_folio(s, 2, SWAPPED) == 16               # a DISCARD cluster is never usable
    assert_clean(s)
    assert swap_discard_work(s.si)
    assert flags(s, 1) == CLUSTER_FLAG_FREE and int(s.shm.clu["table"][1]) == -1
    assert walk(s, LIST_FREE)[-1] == 1 and int(s.shm.dev["discard_work"]) == 0
    assert_clean(s)


def test_order0_failure_runs_discard_and_retries(make_system):
    s = make_system(clusters=3, discard="on")
    assert alloc_folio(s, 3, SWAPPED) == 8
    assert alloc_folio(s, 3, SWAPPED) == 16
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(7)] == list(range(1, 8))
    release(s, 8)
    release(s, 16)
    assert walk(s, LIST_DISCARD) == [1, 2]
    assert alloc_folio(s, 1, SWAPPED) == -errno.ENOMEM   # order > 0: no retry
    assert walk(s, LIST_DISCARD) == [1, 2] and stat(s, Stat.DISCARDS) == 0
    assert alloc_folio(s, 0, SWAPPED) == 8                # order 0: swap_sync_discard, then retry
    assert stat(s, Stat.DISCARDS) == 2 and walk(s, LIST_DISCARD) == []
    assert_clean(s)


# -- device kinds and variants -------------------------------------------------------------------------------

def test_hdd_uses_the_global_cluster(make_system):
    s = make_system(device="hdd")
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(3)] == [1, 2, 3]
    assert alloc_folio(s, 1, SWAPPED) == 8
    dev = s.shm.dev
    assert list(dev["global_next"][:2]) == [4, 10]
    assert not s.shm.pcp["si"].any() and not s.shm.pcp["offset"].any()
    assert stat(s, Stat.FAST_HIT) == 0 and stat(s, Stat.SLOW_PATH) == 4
    assert int(dev["global_lock"]) == 0
    s.switch_to(s.tasks[1])
    assert alloc_folio(s, 0, SWAPPED) == 4                # one cursor for every CPU
    assert_clean(s)


def test_percpu_off_never_writes_the_cache(make_system):
    s = make_system(percpu="off")
    # every allocation takes the list path: a FRAG cluster comes after free_clusters
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(3)] == [1, 8, 16]
    assert not s.shm.pcp["si"].any() and not s.shm.pcp["offset"].any()
    assert stat(s, Stat.FAST_HIT) == 0 and stat(s, Stat.SLOW_PATH) == 3
    assert_clean(s)


def test_fast_path_rejects_a_stale_offset(system):
    s = system
    assert alloc_folio(s, 1, SWAPPED) == 8
    release(s, 8)                                         # cluster 1 FREE; offset[1] = 10 stale
    assert s.si.pcp.offset(0, 1) == 10
    assert alloc_folio(s, 1, SWAPPED) == 16               # fast path rejected, slow path
    assert stat(s, Stat.FAST_HIT) == 0 and stat(s, Stat.SLOW_PATH) == 2
    assert flags(s, 1) == CLUSTER_FLAG_FREE               # no relocation of the stale cluster
    assert_clean(s)


def test_order0_fast_path_may_use_a_higher_order_cluster(system):
    s = system
    assert alloc_folio(s, 1, SWAPPED) == 8
    s.si.pcp.set(0, 0, 10)                                # a cache pointing into cluster 1
    assert alloc_folio(s, 0, SWAPPED) == 10
    assert stat(s, Stat.FAST_HIT) == 1 and int(s.shm.clu["order"][1]) == 1
    s.si.pcp.set(0, 2, 12)                                # an order-2 cache into an order-1 cluster
    assert alloc_folio(s, 2, SWAPPED) == 16               # rejected by cluster_is_usable
    assert stat(s, Stat.FAST_HIT) == 1
    assert_clean(s)


def test_allocation_fails_once_writeok_is_clear(system):
    s, si = system, system.si
    assert alloc_folio(s, 0, SWAPPED) == 1
    si.si_lock()                                         # as swapoff holds it
    del_from_avail_list(si, True)                         # swapoff's first step
    si.si_unlock()
    assert alloc_folio(s, 0, SWAPPED) == -errno.ENOMEM    # fast path: cluster_alloc_range refuses
    assert stat(s, Stat.ALLOC_FAILED) == 1
    assert si.pcp.offset(0, 0) == 0                       # a failed scan clears the cached offset
    assert list(s.shm.map_np[:4]) == [0x3F, 1, 0, 0]
    assert flags(s, 0) == CLUSTER_FLAG_FRAG
    assert alloc_folio(s, 0, SWAPPED) == -errno.ENOMEM    # slow path: off the avail list


def test_hibernation_slot(system):
    """``get_swap_page_of_type``: count 1, this CPU's cache rewritten, and the kernel's extra
    ``nr_swap_pages`` decrement (reference §4.9), which the checker's I-nr-swap reports."""
    s, si = system, system.si
    off = get_swap_page_of_type(si)
    assert off == 1 and s.shm.map_np[1] == 1
    assert si.pcp.si(0, 0) == 1 and si.pcp.offset(0, 0) == 2
    assert int(s.shm.dev["nr_swap_pages"]) == 127 - 2
    res = run_check(s)
    assert [v.invariant for v in res.violations] == ["I-nr-swap"]
    assert stat(s, Stat.ALLOC) == 0
    assert not s.shm.pcp["lock"].any()


@pytest.mark.parametrize("kw", [{}, {"device": "hdd"}, {"alloc_table": "merged"}, {"discard": "on"},
                                {"tables": "static"}, {"reclaim": "page"}, {"percpu": "off"}])
def test_fill_and_empty_the_device(make_system, kw):
    """Every slot handed out once, the device full, then emptied: back to the swapon state."""
    s = make_system(clusters=6, tail=3, bad_pages=(13,), **kw)
    pages = int(s.shm.dev["pages"])
    got, order = [], 3
    while len(got) < pages:
        e = alloc_folio(s, order, SWAPPED)
        if e < 0:
            order -= 1
            assert order >= 0
            continue
        got.extend(range(e, e + (1 << order)))
    assert len(set(got)) == pages and 13 not in got and 0 not in got and max(got) < 45
    assert alloc_folio(s, 0, SWAPPED) == -errno.ENOMEM
    assert_clean(s)
    release_all(s)
    s.system.run_pending_work()
    assert int(s.shm.dev["inuse_pages"]) == 0
    live = int(s.shm.slab_hdr["live"])
    assert live == (6 if kw.get("tables") == "static" else 3)   # header, bad page, tail clusters
    assert_clean(s)


def test_discard_tries_free_clusters_only_once(make_system):
    """With discard, free_clusters is step 2 and not step 4: when its table allocation fails
    (seed T6b), an order-1 allocation finds nothing else."""
    s = make_system(discard="on")
    s.faults.atomic = 1
    s.faults.sleeping = 1
    assert alloc_folio(s, 1, SWAPPED) == -errno.ENOMEM
    assert stat(s, Stat.RETURNED_NULL) == 1 and stat(s, Stat.TABLE_ATOMIC) == 0
    assert walk(s, LIST_FREE)[0] == 2
    res = assert_clean(s, findings=True)
    assert [f.where for f in res.findings] == ["cluster 1"]


@pytest.mark.parametrize("variant", ["seed", "merged"])
def test_w2_stale_isolator_leaves_a_nonempty_cluster_on_the_discard_list(make_system, variant):
    """Reference §10 W2 (a candidate kernel race, not confirmed upstream), reproduced.

    B isolates cluster C from nonfull_clusters and drops its lock to reclaim a cache-only slot.
    Meanwhile frees and B's own reclaim empty C (-> DISCARD) and the discard work frees its table
    (-> FREE).  A isolates C from free_clusters, its atomic table allocation fails and it sleeps
    (C dangling).  B relocks C, finds it unusable (no table) and relocates it: count 0, so
    ``free_cluster`` puts the table-less C on the discard list.  A wakes, installs a table and
    allocates in C; ``relocate_cluster`` leaves a DISCARD cluster alone.  A non-empty cluster now
    sits on the discard list (I-discard), and the discard work frees its table under a live slot.
    Both variants of ``swap_cluster_alloc_table`` take this path: the checker must catch it.

    A runs in a thread that takes strict turns with the main thread (B), each switching the
    process's worker identity back to its own when it resumes.
    """
    s = make_system(n_workers=4, clusters=4, cpus=3, discard="on", alloc_table=variant)
    si = s.si
    cpu0, b_task, a_task, manager = s.tasks
    C = 3
    s.switch_to(cpu0)
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(16)] == list(range(8, 24))    # clusters 1, 2
    s.switch_to(b_task)
    assert [alloc_folio(s, 0, CACHE_ONLY if i == 0 else SWAPPED) for i in range(8)] == list(range(24, 32))
    s.switch_to(cpu0)
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(6)] == list(range(1, 7))       # cluster 0 FRAG
    release(s, 31)                                       # C: NONFULL, slot 24 cache-only first
    assert walk(s, list_nonfull(0)) == [C] and walk(s, list_frag(0)) == [0] and vm_swap_full(si)

    a_sleeping, b_done = threading.Event(), threading.Event()
    seen: dict = {}

    def a_sleeps(ci):
        seen["a_isolated"] = ci
        a_sleeping.set()
        assert b_done.wait(20)
        s.switch_to(a_task)

    def task_a():
        s.switch_to(a_task)
        s.faults.atomic = 1
        s.add_observer(OnSleep(a_sleeps))
        seen["a"] = alloc_folio(s, 0, SWAPPED)

    thread = threading.Thread(target=task_a)

    def b_relocks(kind, a, b):
        clu = s.shm.clu
        if not (kind == Point.LOCK and a == LockClass.CI_LOCK and b == C * CI_BYTES
                and clu["count"][C] == 0 and clu["flags"][C] == CLUSTER_FLAG_DISCARD):
            return
        relocks.remove()
        s.switch_to(manager)
        assert swap_discard_work(si)                     # C: FREE, table freed
        seen["freed"] = (int(clu["flags"][C]), int(clu["table"][C]))
        thread.start()
        assert a_sleeping.wait(20)
        s.switch_to(b_task)

    def b_window(kind, a, b):
        if kind == Point.RECLAIM_WINDOW and a == C:
            window.remove()
            s.switch_to(manager)
            for e in range(25, 31):                      # other CPUs free the rest of C
                release(s, e)
            s.switch_to(b_task)
            s.add_observer(relocks)

    window, relocks = OnPoint(s, b_window), OnPoint(s, b_relocks)
    s.add_observer(window)
    try:
        s.switch_to(b_task)
        seen["b"] = alloc_folio(s, 0, SWAPPED)
    finally:
        window.remove()
        relocks.remove()
        b_done.set()
        if thread.ident is not None:
            thread.join(20)
    s.switch_to(manager)
    assert seen == {"freed": (CLUSTER_FLAG_FREE, -1), "a_isolated": C, "b": 7, "a": 24}
    clu = s.shm.clu
    assert int(clu["flags"][C]) == CLUSTER_FLAG_DISCARD and walk(s, LIST_DISCARD) == [C]
    assert int(clu["count"][C]) == 1 and int(clu["table"][C]) >= 0 and s.shm.map_np[24] == 1
    res = run_check(s)
    assert [(v.invariant, v.where) for v in res.violations] == [("I-discard", f"cluster {C}")]
    # the discard work then frees the table of a cluster with a live slot
    assert swap_discard_work(si)
    assert int(clu["flags"][C]) == CLUSTER_FLAG_FREE and int(clu["table"][C]) == -1
    assert any("not empty (count 1)" in w for w in s.warnings)
    assert {"I-free", "I-table-needed", "no kernel WARN"} <= {v.invariant for v in run_check(s).violations}


def test_order0_steals_from_frag_before_nonfull_of_the_same_order(make_system):
    """Reference §4.4: order 0 steals, for each higher order o, from ``frag_clusters[o]`` first and
    only then from ``nonfull_clusters[o]``.  Both lists of order 1 are populated here, so scanning
    ``nonfull[o]`` first takes the other cluster (issue 7 item 6a)."""
    s = make_system(clusters=4)
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(7)] == list(range(1, 8))     # cluster 0 FULL
    assert [alloc_folio(s, 1, SWAPPED) for _ in range(4)] == [8, 10, 12, 14]       # cluster 1 FULL
    assert [alloc_folio(s, 1, SWAPPED) for _ in range(2)] == [16, 18]              # cluster 2: FRAG[1]
    assert alloc_folio(s, 3, SWAPPED) == 24                                        # cluster 3 FULL
    release(s, 8)                                                                  # cluster 1: NONFULL[1]
    assert walk(s, list_frag(1)) == [2] and walk(s, list_nonfull(1)) == [1]
    assert walk(s, LIST_FREE) == [] and walk(s, list_nonfull(0)) == [] and walk(s, list_frag(0)) == []
    s.si.pcp.set(0, 0, 0)
    assert alloc_folio(s, 0, SWAPPED) == 20          # frag_clusters[1] (cluster 2), not nonfull (cluster 1)
    assert int(s.shm.clu["order"][2]) == 1
    assert_clean(s)


def test_cached_offset_is_not_carried_past_the_cluster_end(make_system):
    """``alloc_swap_scan_cluster`` caches the next offset only while it is inside the cluster
    (``offset <= end``): an allocation of the cluster's last slot, with a hole left earlier (count
    below the cluster size), must leave this CPU's offset[0] at 0, not at the next cluster's first
    slot (issue 7 item 6: until now only random multiprocess runs caught its loss, now and then)."""
    s = make_system(clusters=4)
    assert [alloc_folio(s, 0, SWAPPED) for _ in range(6)] == list(range(1, 7))
    release(s, 2)                                         # a hole: the cluster cannot become full
    assert s.si.pcp.offset(0, 0) == 7
    assert alloc_folio(s, 0, SWAPPED) == 7                # the fast path takes the last slot
    assert int(s.shm.clu["count"][0]) == 7
    assert s.si.pcp.offset(0, 0) == 0                     # not 8, the first slot of cluster 1
    assert walk(s, list_frag(0)) == [0]
    assert alloc_folio(s, 0, SWAPPED) == 8                # the slow path: free_clusters before frag
    assert_clean(s)
