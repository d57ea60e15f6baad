"""Tests of shmswap.checks.checker: it passes a sound state and fails every kind of corruption, naming
where; seed T5/T6b clusters are findings, anything else on no list is a violation."""

import pytest
from conftest import CACHED, RAW, SWAPPED, alloc_folio, assert_clean, release, run_check

from shmswap.checks.checker import INVARIANTS
from shmswap.checks.faults import lose_cluster
from shmswap.config import Config
from shmswap.mm.alloc_table import LOST_T6B, lost_word
from shmswap.mm.allocator import cluster_alloc_range
from shmswap.mm.cluster import ci_lock, ci_unlock, list_del
from shmswap.mm.swap import CLUSTER_FLAG_DISCARD, CLUSTER_FLAG_FRAG, CLUSTER_FLAG_FULL, CLUSTER_FLAG_NONE
from shmswap.mm.swap_table import folio_to_swp_tb
from shmswap.runner.inprocess import run_inprocess


def kinds(res):
    return {v.invariant for v in res.violations}


def where(res, invariant):
    return [v.where for v in res.violations if v.invariant == invariant]


@pytest.fixture
def busy(make_system):
    """A device with some of everything: several clusters, orders, cached and swapped slots."""
    s = make_system(tail=2)
    for order, state in ((0, SWAPPED), (1, CACHED), (2, SWAPPED), (0, RAW), (3, SWAPPED), (1, SWAPPED)):
        assert alloc_folio(s, order, state) > 0
    assert_clean(s)
    return s


def test_clean_state(busy):
    res = run_check(busy)
    assert res.ok and res.violations == [] and res.findings == []
    assert res.checked == list(INVARIANTS)
    live = int(busy.shm.slab_hdr["live"])
    assert res.counts["tables_in_use"] == live == 5     # clusters 0, 1, 2, 3 and the tail's 15
    assert res.counts["tables_total"] == res.counts["tables_in_use"] + res.counts["tables_free_in_slab"]


def test_lose_cluster_is_a_violation(busy):
    ci = lose_cluster(busy.si)
    assert ci >= 0
    res = run_check(busy)
    assert not res.ok and res.findings == []
    assert where(res, "I-conservation") == [f"cluster {ci}"]
    assert "no recorded seed T5/T6b event" in res.violations[0].reason


def test_lose_cluster_in_a_run():
    r = run_inprocess(Config(size="2M", slots_per_cluster=16, orders={0: 0.8, 2: 0.2}, cpus=2, ops=300, seconds=None,
                   inject_bug="lose-cluster", atomic_fail=0.0))
    assert "I-conservation" in kinds(r.check)
    assert r.exit_status() == 1


def test_corrupted_count(busy):
    busy.shm.clu["count"][2] += 1
    res = run_check(busy)
    assert where(res, "I-count") == ["cluster 2"]
    assert "I-inuse" in kinds(res)


def test_count_against_swap_map(busy):
    busy.shm.map_np[40] = 1                 # a slot marked used behind the cluster's back
    res = run_check(busy)
    assert where(res, "I-count") == ["cluster 5"]


def test_free_cluster_with_a_table_or_order(busy):
    s = busy
    s.shm.clu["order"][9] = 2
    res = run_check(s)
    assert where(res, "I-free") == ["cluster 9"]
    s.shm.clu["order"][9] = 0
    s.shm.clu["table"][9] = int(s.shm.clu["table"][1])
    res = run_check(s)
    assert where(res, "I-free") == ["cluster 9"]
    assert "table accounting" in kinds(res)             # one table in two clusters


def test_static_free_cluster_without_a_table(make_system):
    s = make_system(tables="static")
    assert_clean(s)
    s.shm.clu["table"][7] = -1
    res = run_check(s)
    assert where(res, "I-free") == ["cluster 7"]


def test_table_needed(busy):
    busy.shm.clu["table"][3] = -1
    res = run_check(busy)
    assert where(res, "I-table-needed") == ["cluster 3"]


def test_flag_and_list_disagree(busy):
    s = busy
    s.shm.clu["flags"][10] = CLUSTER_FLAG_FRAG          # says frag_clusters[0], is on free_clusters
    res = run_check(s)
    assert "cluster 10" in where(res, "I-flag-list")
    s.shm.clu["flags"][10] = CLUSTER_FLAG_NONE          # NONE, yet linked
    assert "cluster 10" in where(run_check(s), "I-flag-list")


def test_broken_list_links(busy):
    s = busy
    s.shm.clu["prev"][11] = 4
    res = run_check(s)
    assert "cluster 11" in where(res, "I-flag-list")
    s.shm.clu["prev"][11] = 10
    s.shm.dev["heads"][0][2] += 1                      # length of free_clusters
    assert "free_clusters" in where(run_check(s), "I-flag-list")


def test_rest_counts_and_order_list(busy):
    s = busy
    c = 3                                              # the order-3 cluster: FULL, count 8
    s.shm.clu["count"][c] = 7
    s.shm.map_np[c * 8 + 7] = 0
    res = run_check(s)
    assert where(res, "I-rest-counts") == [f"cluster {c}"]
    assert "I-count" not in kinds(res)


def test_discard_invariant(make_system):
    s = make_system(discard="on")
    e = alloc_folio(s, 1, SWAPPED)
    release(s, e)
    assert int(s.shm.clu["flags"][1]) == CLUSTER_FLAG_DISCARD
    assert_clean(s)
    table = int(s.shm.clu["table"][1])
    s.shm.clu["table"][1] = -1
    s.shm.objs["state"][table] = 1                     # keep the object accounting consistent
    res = run_check(s)
    assert where(res, "I-discard") == ["cluster 1"]


def test_map_table_and_folio_runs(busy):
    s = busy
    e = next(e for e, h in s.held.items() if h.state == CACHED)      # order 1 at slots e, e+1
    f = s.held[e].folio
    table = int(s.shm.clu["table"][e >> 3])
    tabs = s.shm.tables_np[table]
    tabs[(e & 7) + 1] = folio_to_swp_tb(f + 1)         # the run now names two folios
    res = run_check(s)
    assert "I-folio-run" in kinds(res)
    tabs[(e & 7) + 1] = folio_to_swp_tb(f)
    assert_clean(s)
    free_slot = 21                                     # cluster 2 holds an order-2 folio at 16..19
    assert s.shm.map_np[free_slot] == 0
    tabs2 = s.shm.tables_np[int(s.shm.clu["table"][free_slot >> 3])]
    tabs2[free_slot & 7] = 0x21                        # a shadow on a free slot
    res = run_check(s)
    assert where(res, "I-map-table") == [f"slot {free_slot} (cluster 2)"]


def test_folio_entry_without_has_cache(busy):
    s = busy
    e = next(e for e, h in s.held.items() if h.state == RAW)
    s.shm.map_np[e] = 1
    assert f"slot {e} (cluster {e >> 3})" in where(run_check(s), "I-map-table")


def test_detached_table_must_be_null(busy):
    s = busy
    free = [int(h) for h in range(len(s.shm.objs)) if s.shm.objs["state"][h] == 1]
    s.shm.tables_np[free[0]][2] = 5
    assert where(run_check(s), "I-free-table") == [f"table {free[0]}"]


def test_table_accounting(busy):
    s = busy
    s.shm.slab_hdr["live"] += 1
    assert "slab" in where(run_check(s), "table accounting")
    s.shm.slab_hdr["live"] -= 1
    h = int(s.shm.clu["table"][2])
    s.shm.objs["owner"][h] = 7
    assert f"table {h}" in where(run_check(s), "table accounting")


def test_usage_counters(busy):
    s = busy
    s.shm.dev["inuse_pages"] += 1
    res = run_check(s)
    assert "I-inuse" in kinds(res) and "I-avail" not in kinds(res)
    s.shm.dev["inuse_pages"] -= 1
    s.shm.dev["nr_swap_pages"] += 1
    assert kinds(run_check(s)) == {"I-nr-swap"}
    s.shm.dev["nr_swap_pages"] -= 1
    s.shm.dev["on_avail"] = 0
    assert kinds(run_check(s)) == {"I-avail"}


def test_percpu_and_hdd_cursors(busy, make_system):
    busy.si.pcp.set(1, 2, 6)                            # offset[2] not a multiple of 4
    assert where(run_check(busy), "I-pcp") == ["CPU 1"]
    busy.si.pcp.set(1, 2, 0)
    hdd = make_system(device="hdd")
    assert alloc_folio(hdd, 0, SWAPPED) == 1
    assert_clean(hdd)
    hdd.shm.pcp["si"][0][0] = 1
    assert where(run_check(hdd), "I-hdd") == ["CPU 0"]
    hdd.shm.pcp["si"][0][0] = 0
    hdd.shm.dev["global_next"][2] = 6
    assert where(run_check(hdd), "I-hdd") == ["global_cluster"]


def test_locks_held_at_quiescence(busy):
    s, si = busy, busy.si
    si.pcp.local_lock(1)                    # the order of reference §2.6: local lock, then ci->lock
    ci_lock(si, 4)
    res = run_check(s)
    assert kinds(res) == {"no lock held at quiescence"}
    assert set(where(res, "no lock held at quiescence")) == {"cluster 4", "CPU 1"}
    ci_unlock(si, 4)
    si.pcp.local_unlock(1)
    si.si_lock()
    assert where(run_check(s), "no lock held at quiescence") == ["swap_info"]
    si.si_unlock()
    assert_clean(s)


def test_warnings_are_violations(busy):
    busy.si.cur.warn("something odd")
    res = run_check(busy)
    assert kinds(res) == {"no kernel WARN"}
    assert "something odd" in res.violations[0].reason


def test_isolated_cluster_of_a_worker_in_an_operation_is_not_lost(busy):
    s = busy
    ci = lose_cluster(s.si)
    rec = s.shm.workers["rec"]
    rec["op"][1], rec["cluster"][1] = 1, ci             # worker 1 is in an operation holding it
    assert_clean(s)
    rec["op"][1] = 0                                    # parked: then it is lost
    assert where(run_check(s), "I-conservation") == [f"cluster {ci}"]


def test_a_lost_record_explains_only_an_empty_tableless_cluster(busy):
    s = busy
    ci = lose_cluster(s.si)
    s.shm.clu["lost"][ci] = lost_word(LOST_T6B, 1, 1, -1)
    res = run_check(s)
    assert ci == 0 and where(res, "I-conservation") == ["cluster 0"]   # count 1: not a T6b cluster
    assert res.findings == []
    # an empty table-less cluster with the record is a finding
    c = 12
    ci_lock(s.si, c)
    s.si.si_lock()
    list_del(s.si, 0, c)
    s.si.si_unlock()
    s.shm.clu["flags"][c] = CLUSTER_FLAG_NONE
    ci_unlock(s.si, c)
    s.shm.clu["lost"][c] = lost_word(LOST_T6B, 1, 1, -1)
    res = run_check(s)
    assert [(f.where, f.branch) for f in res.findings] == [("cluster 12", "T6b")]
    assert "worker 1 on CPU 1" in res.findings[0].reason


def test_violations_are_capped_per_kind(make_system):
    s = make_system(clusters=32)
    s.shm.clu["count"][1:30] = 1                       # 29 clusters miscounted
    s.shm.clu["table"][1:30] = -1
    res = run_check(s)
    icount = [v for v in res.violations if v.invariant == "I-count"]
    assert len(icount) == 21 and icount[-1].where == "..."


def test_full_cluster_with_a_wrong_count(busy):
    s = busy
    s.shm.clu["flags"][1] = CLUSTER_FLAG_FULL
    res = run_check(s)
    assert "cluster 1" in where(res, "I-rest-counts")


# -- I-order-0-only-mixing and I-lock-order (issue 7 item 3) ---------------------------------------------

def test_order2_folio_in_an_order1_cluster_is_a_violation(make_system):
    """Reference §9 I-order-0-only-mixing: an order-2 folio in a cluster whose ``ci->order`` is 1."""
    s = make_system(orders={0: 0.5, 2: 0.5})
    e = alloc_folio(s, 2, CACHED)                         # the folio stays in the table
    assert alloc_folio(s, 2, CACHED) == e + 4             # the cluster is FULL: on no order's list
    c = e // s.si.spc
    assert int(s.shm.clu["order"][c]) == 2
    assert_clean(s)
    s.shm.clu["order"][c] = 1
    res = run_check(s)
    assert "I-order-0-only-mixing" in INVARIANTS
    assert where(res, "I-order-0-only-mixing") == [f"cluster {c}"] * 2      # one per folio
    assert kinds(res) == {"I-order-0-only-mixing"}
    assert "order-2 folio" in res.violations[0].reason
    s.shm.clu["order"][c] = 2
    assert_clean(s)


def test_order_mixing_allocation_warns(system):
    """The allocation-time side: ``cluster_alloc_range`` of order 2 into a non-empty order-1 cluster."""
    from_ = alloc_folio(system, 1, SWAPPED)
    si, c = system.si, from_ // system.si.spc
    ci_lock(si, c)
    assert cluster_alloc_range(si, c, (c * si.spc) + 4, 1, 2)
    ci_unlock(si, c)
    res = run_check(system)
    assert "I-order-0-only-mixing" in kinds(res)
    assert any("order-2 allocation" in v.reason for v in res.violations)


def test_lockdep_warnings_are_lock_order_violations(busy):
    busy.si.cur.warn("lockdep: blocking lock of ci_lock while holding si_lock at somewhere")
    busy.si.cur.warn("something odd")
    res = run_check(busy)
    assert kinds(res) == {"I-lock-order", "no kernel WARN"}
    assert where(res, "I-lock-order") == ["kernel"]
    assert [v.reason for v in res.violations if v.invariant == "no kernel WARN"] == [
        "1 WARN conditions met: something odd"]


def test_a_held_local_lock_is_reported_once_with_several_devices(make_system):
    """One ``percpu_swap_cluster`` per CPU for all devices, as in the kernel: a local lock held at
    quiescence is one violation, not one per device; a device's own held lock is still its own."""
    s = make_system(devices="ssd:64K:prio=5,ssd:64K:prio=5,hdd:64K")
    assert s.check().ok
    s.shm.pcp["lock"][1] = 1                         # CPU 1's local lock word left held
    s.system.device_shms[2].dev["si_lock"] = 1       # and device 2's si->lock
    try:
        res = s.check()
        assert [(v.where, v.reason) for v in res.violations] == [
            ("CPU 1", "local lock held"), ("device 2 swap_info", "si_lock held")]
    finally:
        s.shm.pcp["lock"][1] = 0
        s.system.device_shms[2].dev["si_lock"] = 0
