"""Tests of shmswap.mm.vmscan: direct reclaim from the sleeping table allocation (``--sleep-reclaim``).

The scene, both variants: 16 clusters of 8 slots, order 0, CPU 0.  Seven allocations fill cluster 0
(slot 0 is the header), so the eighth isolates cluster 1 from ``free_clusters``; the fault plan fails
its atomic table allocation, so it sleeps, and with P = 1 the sleeping allocation swaps out one
order-0 folio first (the nested ``folio_alloc_swap``), on CPU 0, while cluster 1 dangles.  The nested
allocation isolates cluster 2; what it and then the outer allocation do is the variant's.
"""

import pytest
from conftest import stat
from helpers import walk

from shmswap.config import Config
from shmswap.mm.system import SleepingAllocator
from shmswap.mm.task import REC_CLUSTER
from shmswap.mm.vmscan import DirectReclaim, direct_reclaim, shrink_folio_list
from shmswap.model import SWAPPED
from shmswap.runner.inprocess import run_inprocess
from shmswap.substrate.layout import LIST_FREE
from shmswap.substrate.stats import Stat

NESTED = [s for s in Stat if s.name.startswith(("NESTED_", "OUTER_"))]
TABLE = (Stat.TABLE_ATOMIC, Stat.TABLE_ATOMIC_FAIL, Stat.SLEEPS, Stat.SLEEP_FAIL, Stat.USED_PERCPU,
         Stat.INSTALLED, Stat.RETURNED_NULL, Stat.LOST_CLUSTERS, Stat.TABLE_UNUSED_FREED, Stat.ALLOC_FAILED)


def counters(m, which) -> dict[str, int]:
    return {s.name: stat(m, s, 0) for s in which if stat(m, s, 0)}


def scene(make_system, variant: str, atomic: int, sleeping: int = 0):
    """Cluster 0 full, then one allocation whose sleep reclaims; returns (model, outer allocation,
    the nested swap-outs' slots: the model holds them, bound by ``Model`` as the workload binds its own)."""
    m = make_system(alloc_table=variant, sleep_reclaim=1.0)
    m.on(0)
    assert [m.alloc().entry for _ in range(7)] == list(range(1, 8))
    before = set(m.held)
    m.faults.atomic, m.faults.sleeping = atomic, sleeping
    a = m.alloc()
    nested = sorted(set(m.held) - before - {a.swp})
    assert all(m.held[e].state == SWAPPED and m.held[e].wid == 0 for e in nested)
    return m, a, nested


# (variant, atomic failures, sleeping failures) -> (outer slot, nested slots, counters, findings)
CASES = {
    # The nested allocation's atomic table allocation succeeds (cluster 2, slot 16); CPU 0's per-CPU
    # cluster is now cluster 2.  Seed: the re-check after the sleep takes it (T5), cluster 1 is lost.
    ("seed", 1, 0): (17, [16], {"TABLE_ATOMIC": 1, "TABLE_ATOMIC_FAIL": 1, "SLEEPS": 1, "USED_PERCPU": 1,
                                "LOST_CLUSTERS": 1, "TABLE_UNUSED_FREED": 1},
                     {"NESTED_RECLAIM": 1, "NESTED_ALLOC": 1, "NESTED_TABLE_ATOMIC": 1, "OUTER_USED_PERCPU": 1,
                      "OUTER_LOST": 1}, [("T5", "cluster 1")]),
    # Merged: no re-check, cluster 1 gets its table; cluster 2 stays the nested one's.
    ("merged", 1, 0): (8, [16], {"TABLE_ATOMIC": 1, "TABLE_ATOMIC_FAIL": 1, "SLEEPS": 1, "INSTALLED": 1},
                       {"NESTED_RECLAIM": 1, "NESTED_ALLOC": 1, "NESTED_TABLE_ATOMIC": 1, "OUTER_INSTALLED": 1}, []),
    # The nested allocation sleeps too (PF_MEMALLOC: no second reclaim) and installs its table.
    ("seed", 2, 0): (17, [16], {"TABLE_ATOMIC_FAIL": 2, "SLEEPS": 2, "INSTALLED": 1, "USED_PERCPU": 1,
                                "LOST_CLUSTERS": 1, "TABLE_UNUSED_FREED": 1},
                     {"NESTED_RECLAIM": 1, "NESTED_ALLOC": 1, "NESTED_SLEEPS": 1, "NESTED_INSTALLED": 1,
                      "OUTER_USED_PERCPU": 1, "OUTER_LOST": 1}, [("T5", "cluster 1")]),
    ("merged", 2, 0): (8, [16], {"TABLE_ATOMIC_FAIL": 2, "SLEEPS": 2, "INSTALLED": 2},
                       {"NESTED_RECLAIM": 1, "NESTED_ALLOC": 1, "NESTED_SLEEPS": 1, "NESTED_INSTALLED": 1,
                        "OUTER_INSTALLED": 1}, []),
    # The nested sleeping allocation fails.  Seed: T6b, cluster 2 lost by the nested allocation,
    # whose search then fails (ENOMEM); the outer one installs.  Merged: cluster 2 goes back on
    # free_clusters, the nested search fails the same way; the outer one installs.
    ("seed", 2, 1): (8, [], {"TABLE_ATOMIC_FAIL": 2, "SLEEPS": 2, "SLEEP_FAIL": 1, "RETURNED_NULL": 1,
                             "LOST_CLUSTERS": 1, "INSTALLED": 1, "ALLOC_FAILED": 1},
                     {"NESTED_RECLAIM": 1, "NESTED_ALLOC_FAILED": 1, "NESTED_SLEEPS": 1, "NESTED_RETURNED_NULL": 1,
                      "NESTED_LOST": 1, "OUTER_INSTALLED": 1}, [("T6b", "cluster 2")]),
    ("merged", 2, 1): (8, [], {"TABLE_ATOMIC_FAIL": 2, "SLEEPS": 2, "SLEEP_FAIL": 1, "RETURNED_NULL": 1,
                               "INSTALLED": 1, "ALLOC_FAILED": 1},
                       {"NESTED_RECLAIM": 1, "NESTED_ALLOC_FAILED": 1, "NESTED_SLEEPS": 1,
                        "NESTED_RETURNED_NULL": 1, "OUTER_INSTALLED": 1}, []),
}


@pytest.mark.parametrize(("variant", "atomic", "sleeping"), list(CASES))
def test_nested_swap_out_in_the_sleeping_allocation(make_system, variant, atomic, sleeping):
    outer, nested, table, counted, findings = CASES[variant, atomic, sleeping]
    m, a, held = scene(make_system, variant, atomic, sleeping)
    assert a.entry == outer
    assert held == nested
    assert counters(m, TABLE) == table
    assert counters(m, NESTED) == counted
    res = m.check()
    assert res.violations == [] and m.warnings == []           # lockdep on (small_config): no lock held
    assert [(f.branch, f.where) for f in res.findings] == findings
    if (variant, sleeping) == ("merged", 1):
        assert walk(m, LIST_FREE)[-1] == 2                     # merged put the nested one's cluster back
    # every slot, the nested ones too, is freed as any other, and swapoff accounts for everything
    m.swapoff()
    assert m.usage() == 0 and not m.held


def test_nested_swap_out_runs_where_the_task_is(make_system):
    """The nested folio_alloc_swap runs on the CPU the sleeping task is on, not on its home CPU, and
    leaves the task's home CPU, recorded cluster and ``alloc_si`` as they were."""
    m, _, _ = scene(make_system, "merged", 0)                  # the scene without a sleep: cluster 0 full
    task = m.tasks[0]
    task.cpu = 1                                               # as after an earlier sleep that migrated
    tr = task.reclaim
    m.cur.set_rec_cluster(5)
    assert shrink_folio_list(m.cur, tr)
    assert task.home_cpu == 0 and task.cpu == 1 and not tr.memalloc and m.cur.alloc_si is m.si
    assert int(m.cur.wq[m.cur.rec_base + REC_CLUSTER]) == 5
    m.cur.set_rec_cluster(-1)
    # CPU 1's per-CPU cluster is the one the nested swap-out took (cluster 2); CPU 0's is untouched
    assert int(m.shm.pcp["offset"][1][0]) == 17 and int(m.shm.pcp["offset"][0][0]) == 9
    assert m.check().violations == [] and m.warnings == []


def test_no_sink_no_reclaim_and_p_zero_is_the_allocation_itself(make_system):
    m = make_system(alloc_table="seed", sleep_reclaim=1.0)
    assert isinstance(m.si.sleep_alloc, DirectReclaim)
    m.on(0)
    m.tasks[0].reclaim = None                                  # unbound: the task does not reclaim
    for _ in range(7):
        m.alloc()
    m.faults.atomic = 1
    assert m.alloc().entry == 8                                # no sink bound: the allocation as usual
    assert counters(m, NESTED) == {} and len(m.held) == 8
    m2 = make_system(sleep_reclaim=0.0)
    assert isinstance(m2.si.sleep_alloc, SleepingAllocator) and m2.tasks[0].reclaim is None
    inner = SleepingAllocator(m.slab, 0)
    assert direct_reclaim(inner, m.cur, 0.0) is inner


@pytest.mark.parametrize("variant", ["seed", "merged"])
def test_inprocess_run_accounts_for_nested_slots(variant):
    """A whole single-process run with nested reclaim: the workload frees the nested slots, swapoff's
    account is exact, and only the seed loses clusters."""
    cfg = Config(size="1M", slots_per_cluster=8, cpus=2, orders={0: 1.0}, ops=3000, seed=3, alloc_table=variant,
                 atomic_fail=0.5, sleep_reclaim=0.5, migrate=0.5, lockdep=True)
    res = run_inprocess(cfg)
    n = res.extra["nested_reclaim"]
    assert n["reclaims"] > 0 and n["allocations"] > 0
    assert n["reclaims"] == n["allocations"] + n["failed"]
    o = n["outer_after"]
    assert o["used_percpu_cluster"] + o["installed"] + o["returned_null"] + o["already_had_table"] == n["reclaims"]
    assert res.check.violations == []                          # swapoff's account included (finish.py)
    assert res.extra["swapoff"]["inuse_after"] == 0 and res.extra["swapoff"]["tables_left"] == 0
    if variant == "merged":
        assert res.check.findings == [] and o["lost_clusters"] == 0
    else:                                                      # seeded: this run's T5s after a nested swap-out
        assert o["lost_clusters"] == o["used_percpu_cluster"] + o["returned_null"] > 0
