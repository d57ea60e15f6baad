"""Tests of workers.workload with ``--lifetimes on``: a CPU's processes swap out whole clusters'
worth, exit freeing all their slots in one step (their clusters empty and their tables go), exit
together with another CPU's exiting process, and never free a record swapoff already released."""

from conftest import assert_clean, stat

from shmswap.mm.cluster import cluster_count
from shmswap.mm.device import swap_usage_in_pages
from shmswap.mm.swap_cache import swap_cache_get_folio, swap_cache_get_shadow
from shmswap.substrate.stats import Stat
from workers.swapoff import release_device
from workers.workload import JOB_DROP, PROC_CLUSTERS, WRITEBACK_DEPTH, Workload

CLUSTERS = 128


def lifetimes_system(make_system, **kw):
    """Two CPUs, 128 clusters of 8 slots, order-0 folios only, no lookups: every step swaps out or exits."""
    base = dict(clusters=CLUSTERS, lifetimes="on", lookup_ratio=0.0, cache_only=0.0)
    base.update(kw)
    return make_system(**base)


def workload(system, wid):
    system.switch_to(system.tasks[wid])
    return Workload(system.system, system.tasks[wid], system.system.shm.cfg, 2)


def step(system, load):
    system.switch_to(load.task)
    load.step()


def grow_one(system, load):
    """Step until the CPU's first process has grown; returns its records."""
    while not load.procs:
        step(system, load)
    return load.procs[0][1]


def test_a_process_swaps_out_its_size_then_lives_then_exits_freeing_whole_clusters(make_system):
    s = lifetimes_system(make_system)
    load = workload(s, 0)
    recs = grow_one(s, load)
    lo, hi = PROC_CLUSTERS
    spc = s.system.shm.cfg.slots_per_cluster
    assert lo * spc <= len(recs) <= hi * spc
    assert load.procs[0][0] > load.clock            # it lives on after it has grown
    clusters = {r[0] >> s.system.si.spc_shift for r in recs}
    frees = stat(s, Stat.TABLE_FREES, 0)
    while load.procs and load.procs[0][1] is recs:
        step(s, load)
    assert all(r[0] < 0 for r in recs)              # all its slots freed, in the one exit step
    # its clusters emptied: all but the two shared with its neighbours (the per-CPU cluster it
    # started in, and the one the next process goes on with) lost their tables
    assert stat(s, Stat.TABLE_FREES, 0) - frees >= len(clusters) - 2
    load.release_all()
    assert_clean(s, findings=True)


def test_a_cpu_exits_its_oldest_process_when_another_cpus_process_exits(make_system):
    s = lifetimes_system(make_system)
    a, b = workload(s, 0), workload(s, 1)
    grow_one(s, a)
    grow_one(s, b)
    step(s, a)                                      # a sees the fill before b's exit
    oldest = a.procs[0][1]
    used = swap_usage_in_pages(s.system.si)
    s.switch_to(b.task)
    b.exit_process(0)                               # more than JOB_DROP clusters' worth freed
    assert used - swap_usage_in_pages(s.system.si) > JOB_DROP * s.system.shm.cfg.slots_per_cluster
    step(s, a)
    assert all(r[0] < 0 for r in oldest) and oldest not in [p[1] for p in a.procs]
    for load in (a, b):
        s.switch_to(load.task)
        load.release_all()
    assert_clean(s, findings=True)


def test_an_exit_skips_the_records_swapoff_released(make_system):
    s = lifetimes_system(make_system)
    load = workload(s, 0)
    recs = grow_one(s, load)
    assert release_device(load, 0) > 0             # try_to_unuse's share of this CPU: all of it
    assert all(r[0] < 0 for r in recs) and not load.live
    load.exit_process(0)                            # frees nothing twice (a double free raises)
    assert not load.procs
    assert_clean(s, findings=True)


def test_the_oldest_process_exits_above_the_fill_target(make_system):
    s = lifetimes_system(make_system, fill=0.3)
    load = workload(s, 0)
    peak = 0
    for _ in range(20_000):
        step(s, load)
        peak = max(peak, swap_usage_in_pages(s.system.si))
    # a process may be growing past the target, but the living ones go as soon as it is reached
    hi = PROC_CLUSTERS[1] * s.system.shm.cfg.slots_per_cluster
    assert load.device_target <= peak <= load.device_target + hi
    load.release_all()
    assert_clean(s, findings=True)


def test_a_swapped_out_folio_stays_in_the_swap_cache_while_under_writeback(make_system):
    """Writeback completes WRITEBACK_DEPTH allocations later: meanwhile a lockless reader of the slot
    finds the (locked) folio; then a shadow stays."""
    s = lifetimes_system(make_system, lifetimes="off", cache_only=0.0)
    load = workload(s, 0)
    assert load.writeback_depth == min(WRITEBACK_DEPTH, load.target // 64) > 0
    first = None
    while first is None or len(load.inflight) < load.writeback_depth:
        load.alloc()
        first = first or load.inflight[0]
    si, folio, entry = first[:3]
    got = swap_cache_get_folio(si, entry)
    s.system.folios.folio_put(got)
    assert got == folio
    assert not load.live                                # its record is kept once written
    load.alloc()                                        # one more: the oldest is written
    assert first not in load.inflight and load.live[0][0] == entry
    assert swap_cache_get_folio(si, entry) < 0 and swap_cache_get_shadow(si, entry) is not None
    load.release_all()                                  # writes the rest first
    assert not load.inflight
    assert_clean(s, findings=True)


def test_a_cpu_publishes_a_cluster_its_next_exit_empties_and_others_read_there(make_system):
    s = lifetimes_system(make_system, lookup_ratio=1.0)
    a, b = workload(s, 0), workload(s, 1)
    recs = grow_one(s, a)
    spc = s.system.shm.cfg.slots_per_cluster
    doomed = a.clusters_emptied_by(recs)
    held = {}
    for r in recs:
        held[r[0] // spc] = held.get(r[0] // spc, 0) + (1 << r[1])
    assert doomed and all(cluster_count(s.system.si, d // spc) == held[d // spc] for d in doomed)
    a.publish_exiting(a.procs[0])
    assert s.cur.exiting(0) in doomed
    s.switch_to(b.task)
    assert b.other_exiting() // spc * spc == s.cur.exiting(0)     # b's readahead reads in that cluster
    s.switch_to(a.task)
    a.exit_process(0)
    assert s.cur.exiting(0) == 0
    assert all(cluster_count(s.system.si, d // spc) == 0 for d in doomed)
    for load in (a, b):
        s.switch_to(load.task)
        load.release_all()
    assert_clean(s, findings=True)
