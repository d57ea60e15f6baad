"""Tests of shmswap.mm.cluster: predicates, lists, isolation with trylock, relocation, free, discard."""

import multiprocess as mp
import pytest
from conftest import SWAPPED, alloc_folio, assert_clean, release, run_check, stat
from helpers import hold_cluster_lock, walk

from shmswap.mm.cluster import (
    C_COUNT,
    C_FLAGS,
    C_ORDER,
    CI_BYTES,
    CW,
    ci_lock,
    ci_trylock,
    ci_unlock,
    cluster_is_usable,
    cluster_offset,
    free_cluster,
    isolate_lock_cluster,
    list_del,
    list_of,
    move_cluster,
    partial_free_cluster,
    relocate_cluster,
    swap_cluster_free_table,
    swap_cluster_lock,
    swap_do_scheduled_discard,
)
from shmswap.mm.slab import OBJ_FREE, OBJ_INUSE
from shmswap.mm.swap import (
    CLUSTER_FLAG_DISCARD,
    CLUSTER_FLAG_FRAG,
    CLUSTER_FLAG_FREE,
    CLUSTER_FLAG_FULL,
    CLUSTER_FLAG_NONE,
    CLUSTER_FLAG_NONFULL,
    KernelBug,
)
from shmswap.substrate import _prim
from shmswap.substrate.layout import LIST_DISCARD, LIST_FREE, LIST_FULL, list_frag, list_nonfull
from shmswap.substrate.stats import Stat

CTX = mp.get_context("fork")



def field(system, ci, f):
    return system.si.cq[ci * CW + f]


# -- predicates -------------------------------------------------------------------------------------

def test_cluster_is_usable(system):
    si = system.si
    cq = si.cq
    b = 0 * CW
    # cluster 0: NONFULL, table, count 1 (header), order 0
    assert cluster_is_usable(si, 0, 0)
    assert not cluster_is_usable(si, 0, 2)            # non-empty, order 0 owns it
    cq[b + C_ORDER] = 2
    assert cluster_is_usable(si, 0, 2) and cluster_is_usable(si, 0, 0) and not cluster_is_usable(si, 0, 1)
    cq[b + C_ORDER] = 0
    for flags, usable in ((CLUSTER_FLAG_NONE, True), (CLUSTER_FLAG_FRAG, True),
                          (CLUSTER_FLAG_FULL, False), (CLUSTER_FLAG_DISCARD, False)):
        saved = cq[b + C_FLAGS]
        cq[b + C_FLAGS] = flags
        assert cluster_is_usable(si, 0, 0) is usable
        cq[b + C_FLAGS] = saved
    # a FREE cluster has no table: never usable, whatever the order
    assert [cluster_is_usable(si, 1, o) for o in range(4)] == [False] * 4
    assert cluster_offset(si, 5) == 40


def test_list_of_and_lock_helpers(system):
    si = system.si
    assert list_of(si, 0) == list_nonfull(0)
    assert list_of(si, 3) == LIST_FREE
    with pytest.raises(KernelBug, match="names no list"):
        si.cq[3 * CW + C_FLAGS] = CLUSTER_FLAG_NONE
        list_of(si, 3)
    si.cq[3 * CW + C_FLAGS] = CLUSTER_FLAG_FREE
    assert swap_cluster_lock(si, 21) == 2
    assert si.cr.held_by_me(2 * CI_BYTES)
    assert not ci_trylock(si, 2)
    ci_unlock(si, 2)
    assert si.cr.load(2 * CI_BYTES) == 0


def test_list_del_requires_head_when_no_prev(system):
    si = system.si
    si.si_lock()
    try:
        with pytest.raises(KernelBug, match="not the head"):
            list_del(si, LIST_FULL, 1)                # 1 heads free_clusters, not full_clusters
    finally:
        si.si_unlock()


# -- move / isolate / relocate ------------------------------------------------------------------------

def test_move_cluster_and_warn_on_same_flag(system):
    si = system.si
    ci_lock(si, 3)
    move_cluster(si, 3, LIST_FULL, CLUSTER_FLAG_FULL)     # from FREE: list_move_tail
    assert walk(system, LIST_FULL) == [3] and 3 not in walk(system, LIST_FREE)
    assert field(system, 3, C_FLAGS) == CLUSTER_FLAG_FULL
    assert si.cur.warnings == []
    move_cluster(si, 3, LIST_FULL, CLUSTER_FLAG_FULL)
    assert len(si.cur.warnings) == 1 and "already has flag FULL" in si.cur.warnings[0]
    move_cluster(si, 3, LIST_FREE, CLUSTER_FLAG_FREE)
    ci_unlock(si, 3)
    assert walk(system, LIST_FREE)[-1] == 3
    assert stat(system, Stat.WARNINGS) == 1
    res = run_check(system)
    assert [v.invariant for v in res.violations] == ["no kernel WARN"]


def test_isolate_lock_cluster_takes_the_head(system):
    si = system.si
    si.pcp.local_lock(0)
    ci = isolate_lock_cluster(si, LIST_FREE, 0)
    assert ci == 1
    assert si.cr.held_by_me(ci * CI_BYTES)
    assert field(system, 1, C_FLAGS) == CLUSTER_FLAG_NONE
    assert 1 not in walk(system, LIST_FREE)
    table = int(system.shm.clu["table"][1])
    assert table >= 0 and system.shm.objs["state"][table] == OBJ_INUSE
    assert stat(system, Stat.TABLE_ATOMIC) == 1
    assert int(system.shm.workers["rec"]["cluster"][0]) == 1
    relocate_cluster(si, ci)                      # count 0: free_cluster -> FREE, table freed
    ci_unlock(si, ci)
    si.pcp.local_unlock(0)
    assert walk(system, LIST_FREE) == list(range(2, 16)) + [1]
    assert int(system.shm.clu["table"][1]) == -1
    assert system.shm.objs["state"][table] == OBJ_FREE
    assert stat(system, Stat.TABLE_FREES) == 1
    system.si.cur.set_rec_cluster(-1)
    assert_clean(system)


def test_isolate_lock_cluster_empty_list(system):
    si = system.si
    si.pcp.local_lock(0)
    assert isolate_lock_cluster(si, LIST_FULL, 0) == -1
    assert isolate_lock_cluster(si, list_frag(2), 2) == -1
    si.pcp.local_unlock(0)


def test_isolate_lock_cluster_skips_a_cluster_locked_by_another_worker(make_system):
    system = make_system(n_workers=3)
    si = system.si
    me, other = system.tasks[0], system.tasks[1]
    system.switch_to(other)
    ci_lock(si, 1)                     # worker 1 holds the head of free_clusters
    system.switch_to(me)
    assert not si.cr.held_by_me(1 * CI_BYTES) and si.cr.owner(1 * CI_BYTES) == 1
    si.pcp.local_lock(0)
    ci = isolate_lock_cluster(si, LIST_FREE, 0)
    assert ci == 2
    assert stat(system, Stat.TRYLOCK_SKIPS) == 1
    assert walk(system, LIST_FREE)[0] == 1          # the busy cluster stays where it was
    relocate_cluster(si, ci)
    ci_unlock(si, ci)
    # every node contended: NULL for a non-empty list (a third worker holds cluster 0: no task
    # holds two ci->locks, reference §9 I-lock-order)
    third = system.tasks[2]
    system.switch_to(third)
    ci_lock(si, 0)
    system.switch_to(me)
    assert isolate_lock_cluster(si, list_nonfull(0), 0) == -1
    assert stat(system, Stat.TRYLOCK_SKIPS) == 2
    assert walk(system, list_nonfull(0)) == [0]
    si.pcp.local_unlock(0)
    system.switch_to(third)
    ci_unlock(si, 0)
    system.switch_to(other)
    ci_unlock(si, 1)
    system.switch_to(me)
    si.cur.set_rec_cluster(-1)
    assert stat(system, Stat.TRYLOCK_SKIPS, wid=1) == 0
    assert_clean(system)



def test_isolate_lock_cluster_skips_a_cluster_locked_by_another_process(system):
    si = system.si
    held, done = CTX.Event(), CTX.Event()
    p = CTX.Process(target=hold_cluster_lock, args=(system, 1, held, done))
    p.start()
    try:
        assert held.wait(20)
        assert si.cr.owner(1 * CI_BYTES) == 1
        si.pcp.local_lock(0)
        ci = isolate_lock_cluster(si, LIST_FREE, 0)
        assert ci == 2
        relocate_cluster(si, ci)
        ci_unlock(si, ci)
        si.pcp.local_unlock(0)
        si.cur.set_rec_cluster(-1)
    finally:
        done.set()
        p.join(20)
    assert p.exitcode == 0
    assert _prim.get_worker() == 0
    assert stat(system, Stat.TRYLOCK_SKIPS) == 1
    assert si.cr.load(1 * CI_BYTES) == 0
    assert_clean(system)


def test_relocate_cluster_by_count(system):
    si = system.si
    cq = si.cq
    si.pcp.local_lock(0)
    ci = isolate_lock_cluster(si, list_nonfull(0), 0)
    assert ci == 0
    relocate_cluster(si, 0)                             # 0 < count < spc: FRAG[order]
    assert field(system, 0, C_FLAGS) == CLUSTER_FLAG_FRAG and walk(system, list_frag(0)) == [0]
    relocate_cluster(si, 0)                             # already FRAG: stays, no warning
    assert si.cur.warnings == []
    cq[C_COUNT] = 8
    relocate_cluster(si, 0)
    assert field(system, 0, C_FLAGS) == CLUSTER_FLAG_FULL and walk(system, LIST_FULL) == [0]
    cq[C_COUNT] = 1
    cq[C_FLAGS] = CLUSTER_FLAG_DISCARD
    relocate_cluster(si, 0)                             # DISCARD: left alone
    assert walk(system, LIST_FULL) == [0]
    cq[C_FLAGS] = CLUSTER_FLAG_FULL
    partial_free_cluster(si, 0)                         # a free left 0 < count < spc: NONFULL
    assert field(system, 0, C_FLAGS) == CLUSTER_FLAG_NONFULL and walk(system, list_nonfull(0)) == [0]
    ci_unlock(si, 0)
    si.pcp.local_unlock(0)
    si.cur.set_rec_cluster(-1)
    assert_clean(system)


def test_partial_free_and_free_cluster_bugs(system):
    si = system.si
    ci_lock(si, 0)
    si.cq[C_COUNT] = 0
    with pytest.raises(KernelBug, match="partial_free_cluster: cluster 0 has count 0"):
        partial_free_cluster(si, 0)
    si.cq[C_COUNT] = 8
    with pytest.raises(KernelBug, match="count 8"):
        partial_free_cluster(si, 0)
    with pytest.raises(KernelBug, match="free_cluster: cluster 0 count 8"):
        free_cluster(si, 0)
    si.cq[C_COUNT] = 1
    ci_unlock(si, 0)
    ci_lock(si, 4)
    with pytest.raises(KernelBug, match="flag FREE"):
        free_cluster(si, 4)
    ci_unlock(si, 4)


# -- table free -----------------------------------------------------------------------------------------

def test_swap_cluster_free_table_needs_the_lock(system):
    with pytest.raises(KernelBug, match="lockdep: ci->lock of cluster 0"):
        swap_cluster_free_table(system.si, 0)


def test_swap_cluster_free_table_of_a_null_table_is_a_warning(system):
    si = system.si
    ci_lock(si, 5)
    swap_cluster_free_table(si, 5)                  # reference §10 W2: counted and WARNed
    ci_unlock(si, 5)
    assert stat(system, Stat.NULL_TABLE_FREES) == 1
    assert stat(system, Stat.TABLE_FREES) == 0
    assert len(si.cur.warnings) == 1 and "NULL table" in si.cur.warnings[0]


def test_swap_cluster_free_table_warns_on_entries_and_count(system):
    si = system.si
    table = int(system.shm.clu["table"][0])
    system.shm.tables_np[table][3] = 0x41              # a shadow left behind
    ci_lock(si, 0)
    swap_cluster_free_table(si, 0)                   # count 1 (header) too
    ci_unlock(si, 0)
    assert len(si.cur.warnings) == 2
    assert "not empty (count 1)" in si.cur.warnings[0]
    assert f"table {table} of cluster 0 still has entries" in si.cur.warnings[1]


# -- free and discard -------------------------------------------------------------------------------------

def test_free_without_discard_goes_to_free(system):
    e = alloc_folio(system, 0, SWAPPED)
    e2 = alloc_folio(system, 0, SWAPPED)
    assert (e, e2) == (1, 2)
    assert walk(system, list_frag(0)) == [0]
    release(system, e)
    assert walk(system, list_nonfull(0)) == [0]          # partial free: NONFULL
    release(system, e2)
    assert field(system, 0, C_COUNT) == 1
    assert_clean(system)


def test_discard_keeps_the_table_until_the_work_runs(make_system):
    s = make_system(discard="on", orders={0: 0.5, 1: 0.5})
    si = s.si
    e = alloc_folio(s, 1, SWAPPED)
    ci = e >> si.spc_shift
    assert ci == 1
    table = int(s.shm.clu["table"][ci])
    release(s, e)
    assert field(s, ci, C_FLAGS) == CLUSTER_FLAG_DISCARD
    assert walk(s, LIST_DISCARD) == [ci]
    assert int(s.shm.clu["table"][ci]) == table                  # table kept
    assert not s.shm.tables_np[table].any()                      # and all-null
    assert int(s.shm.dev["discard_work"]) == 1
    assert_clean(s)
    assert swap_do_scheduled_discard(si)
    assert field(s, ci, C_FLAGS) == CLUSTER_FLAG_FREE
    assert walk(s, LIST_FREE)[-1] == ci and walk(s, LIST_DISCARD) == []
    assert int(s.shm.clu["table"][ci]) == -1
    assert s.shm.objs["state"][table] == OBJ_FREE
    assert stat(s, Stat.DISCARDS) == 1
    assert not swap_do_scheduled_discard(si)                     # nothing left
    assert_clean(s)


def test_static_tables_stay_with_free_clusters(make_system):
    s = make_system(tables="static")
    tables = s.shm.clu["table"].copy()
    assert (tables != -1).all()
    e = alloc_folio(s, 1, SWAPPED)
    assert e == 8 and stat(s, Stat.TABLE_ATOMIC) == 0          # no table allocation: it had one
    assert_clean(s)
    release(s, e)
    assert field(s, 1, C_FLAGS) == CLUSTER_FLAG_FREE
    assert (s.shm.clu["table"] == tables).all()               # the FREE cluster keeps its table
    assert stat(s, Stat.TABLE_FREES) == 0 and int(s.shm.slab_hdr["frees"]) == 0
    assert int(s.shm.slab_hdr["live"]) == 16
    assert_clean(s)
    assert alloc_folio(s, 2, SWAPPED) == 16                   # cluster 1 went to the tail
    assert (s.shm.clu["table"] == tables).all()
    assert_clean(s)
