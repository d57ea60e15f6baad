"""Tests of shmswap.checks.lockdep: the lock order of reference §2.6 at every acquisition
(reference §9 I-lock-order), on in the tests' configurations (conftest.small_config)."""

from __future__ import annotations

from conftest import CACHE_ONLY, SWAPPED, alloc_folio, assert_clean, release_all

from shmswap import Config, Model
from shmswap.checks.lockdep import Lockdep
from shmswap.mm.allocator import folio_alloc_swap
from shmswap.mm.cluster import ci_lock, ci_trylock, ci_unlock, isolate_lock_cluster, relocate_cluster
from shmswap.substrate.layout import LIST_FREE


def lock_order(res):
    return [v.reason for v in res.violations if v.invariant == "I-lock-order"]


def test_lockdep_is_on_in_the_tests(system):
    assert isinstance(system.lockdep, Lockdep)
    assert system.lockdep in list(system.system.observers)


def test_a_workload_takes_locks_in_order(make_system):
    s = make_system(orders={0: 0.5, 1: 0.25, 2: 0.25})
    for i in range(40):
        alloc_folio(s, i % 3, SWAPPED if i % 4 else CACHE_ONLY)
    s.run_pending_work()
    release_all(s)
    s.run_pending_work()
    assert s.lockdep.violations == []
    assert_clean(s)


def test_isolate_lock_cluster_trylocks_under_si_lock_legally(system):
    s, si = system, system.si
    si.pcp.local_lock(0)
    ci = isolate_lock_cluster(si, LIST_FREE, 0)          # si->lock, then spin_trylock(&ci->lock)
    assert ci >= 0
    assert s.lockdep.held_classes(s.si.cur.wid) == ["local_lock", "ci_lock"]
    relocate_cluster(si, ci)
    ci_unlock(si, ci)
    si.pcp.local_unlock(0)
    assert s.lockdep.violations == []
    assert s.lockdep.held_classes(s.si.cur.wid) == []


def test_blocking_ci_lock_under_si_lock_is_caught(system):
    """The injected wrong order: si->lock, then a blocking ci->lock (legal only as a trylock)."""
    s, si = system, system.si
    si.si_lock()
    ci_lock(si, 3)
    ci_unlock(si, 3)
    si.si_unlock()
    assert len(s.lockdep.violations) == 1
    msg = s.lockdep.violations[0]
    assert "ci_lock" in msg and "si_lock" in msg and "legal only as a trylock" in msg
    assert "test_blocking_ci_lock_under_si_lock_is_caught" in msg and "test_lockdep.py" in msg   # the call site
    res = s.check()
    assert lock_order(res) == [msg] or lock_order(res) == [f"{msg}"]
    assert {v.invariant for v in res.violations} == {"I-lock-order"}


def test_local_lock_inside_ci_lock_is_caught(system):
    s, si = system, system.si
    ci_lock(si, 2)
    si.pcp.local_lock(0)
    si.pcp.local_unlock(0)
    ci_unlock(si, 2)
    assert len(s.lockdep.violations) == 1
    assert "local_lock while holding ci_lock" in s.lockdep.violations[0]
    assert lock_order(s.check())


def test_two_cluster_locks_are_caught_even_by_trylock(system):
    s, si = system, system.si
    ci_lock(si, 1)
    assert ci_trylock(si, 2)
    ci_unlock(si, 2)
    ci_unlock(si, 1)
    assert len(s.lockdep.violations) == 1
    assert "two locks of one class" in s.lockdep.violations[0]


def test_a_report_is_made_once_per_site(system):
    s, si = system, system.si
    for _ in range(3):
        si.si_lock()
        ci_lock(si, 3)
        ci_unlock(si, 3)
        si.si_unlock()
    assert len(s.lockdep.violations) == 1


def test_sleeping_with_a_spinlock_held_is_caught(system):
    """The TABLE_SLEEP point with ci->lock held (an injected bug: a sleeper that kept its lock)."""
    s, si = system, system.si
    ci_lock(si, 5)
    s.lockdep.sched_point(10, 5, 0)                      # preempt.Point.TABLE_SLEEP
    ci_unlock(si, 5)
    assert any("sleeping" in v and "ci_lock" in v for v in s.lockdep.violations)


def test_the_allocation_path_is_clean_under_lockdep(system):
    s = system
    f = s.folios.folio_alloc(0, 0)
    s.folios.folio_lock(f)
    assert folio_alloc_swap(s.si, f) > 0
    assert s.lockdep.violations == []
    assert s.lockdep.held_classes(s.si.cur.wid) == ["folio_lock"]
    s.folios.folio_unlock(f)


def test_trylocks_on_a_device_larger_than_another_are_resolved():
    """The lock hook gives a cluster lock's offset, not its device: a trylock of a cluster of the
    larger device past the end of the smaller one's cluster array must not be looked up there
    (it raised ValueError from the C module, crashing the worker, before the bound was checked)."""
    cfg = Config(devices="ssd:1M:prio=5,ssd:128K", slots_per_cluster=8, cpus=2, orders={0: 1.0},
                 atomic_fail=0.0, sleep_fail=0.0, seconds=1, lockdep=True)
    with Model(cfg) as m:
        assert m.devices[1].nr_clusters < 8 < m.devices[0].nr_clusters
        held = [m.alloc(cpu=i % 2) for i in range(200)]
        assert all(a is not None and a.type == 0 for a in held)
        assert max(a.entry for a in held) >> m.devices[0].spc_shift >= 8
        for a in held[::3]:
            m.free(a)
        m.run_pending_work()
        held = [m.alloc(cpu=i % 2) for i in range(40)]     # order-0 scans: trylocks past cluster 8
        assert m.lockdep.violations == []
        m.free_all()
        assert m.check().ok
