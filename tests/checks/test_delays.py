"""Tests of shmswap.checks.delays: ``ReaderDelays`` takes its long delays only in the workload's
lookups of a cluster being drained, within its budget, and a long delay ends on the event it waits
for (the table back in the pool, or reused with something at the reader's slot) or at its bound."""

import time

from conftest import alloc_folio, release

from shmswap.checks.delays import _OP_LOOKUP, AFTER_FREE_S, STALL_S, ReaderDelays
from shmswap.mm.slab import OBJ_POOL
from shmswap.mm.task import REC_DELAYING, REC_EXITING
from shmswap.model import CACHE_ONLY, SWAPPED
from shmswap.substrate.state import WORKER
from workers.workload import OP_ALLOC, OP_LOOKUP


def drained_cluster(system, keep=1):
    """Fill a cluster (not the first) with order-0 slots until the per-CPU cluster moves on, then
    free all but its first ``keep`` slots: a nearly empty cluster that no CPU allocates from.  Returns
    (cluster, its entries, the entry in the CPU's new per-CPU cluster)."""
    shift = system.si.spc_shift
    while (first := alloc_folio(system)) >> shift == 0:
        pass                                    # cluster 0 holds the header page: it never empties
    ci, same = first >> shift, [first]
    while (e := alloc_folio(system)) >> shift == ci:
        same.append(e)
    for entry in same[keep:]:
        release(system, entry)
    return ci, same[:keep], e


def always_long(system, long_s=0.05):
    """Delays whose every read is a long-delay candidate (no short ones)."""
    return ReaderDelays(system.system, seed=1, wid=0, short_p=0.0, long_p=1.0, long_s=long_s)


def table_of(system, ci):
    return int(system.shm.clu["table"][ci])


def test_the_lookup_op_is_the_workloads():
    assert _OP_LOOKUP == OP_LOOKUP


def test_long_delays_only_in_lookups_of_a_cluster_being_drained_and_within_budget(system):
    ci, _, filling = drained_cluster(system)
    pcp_ci = filling >> system.si.spc_shift
    d = always_long(system)
    system.cur.set_rec_op(OP_ALLOC)             # a reader inside the allocation path: never long
    d.reader_window(0, ci, table_of(system, ci), 1)
    assert d.long == 0
    system.cur.set_rec_op(OP_LOOKUP)
    d.reader_window(0, pcp_ci, table_of(system, pcp_ci), 1)     # nearly empty, but being filled
    assert d.long == 0
    t0 = time.monotonic()
    d.reader_window(0, ci, table_of(system, ci), 1)             # nothing happens: waits to its bound
    assert d.long == 1 and time.monotonic() - t0 >= 0.005
    d.reader_window(0, ci, table_of(system, ci), 1)             # its delays are over the budget now
    assert d.long == 1


def test_a_long_delay_ends_when_the_table_is_back_in_the_pool(make_system):
    s = make_system(reclaim="page", rcu="none", objs_per_slab_page=1)
    ci, rest, _ = drained_cluster(s)
    table = table_of(s, ci)
    for entry in rest:
        release(s, entry)                       # the cluster empties, its table goes with call_rcu
    s.slab.process_deferred()                   # and, with no grace period to wait for, to the pool
    assert s.slab.obj_state(table) == OBJ_POOL
    t0 = time.monotonic()
    always_long(s)._long(s.si, ci, table, 1, 5.0)
    assert time.monotonic() - t0 < 1.0


def reused(system, state):
    """Empty a drained cluster, then allocate (leaving ``state``) until its table, reused for
    another cluster, has something at slot 1.  Returns (the old cluster, the table)."""
    ci, rest, _ = drained_cluster(system)
    table = table_of(system, ci)
    gen = int(system.shm.objs["gen"][table])
    for entry in rest:
        release(system, entry)
    for _ in range(200):
        if int(system.shm.objs["gen"][table]) != gen and system.shm.tables_np[table, 1]:
            return ci, table
        alloc_folio(system, state=state)
    raise AssertionError("the freed table was not reused")


def test_a_long_delay_ends_when_the_reused_table_caches_a_folio_at_the_readers_slot(system):
    ci, table = reused(system, CACHE_ONLY)
    t0 = time.monotonic()
    seen, loaded = always_long(system)._long(system.si, ci, table, 1, 5.0)
    assert time.monotonic() - t0 < 1.0
    assert loaded == int(system.shm.tables_np[table, 1]) and not loaded & 1     # the reader's load: the folio


def test_a_long_delay_gives_up_when_the_reused_slot_was_written_back(system):
    ci, table = reused(system, SWAPPED)
    assert system.shm.tables_np[table, 1] & 1          # a shadow: nothing left to see
    t0 = time.monotonic()
    always_long(system)._long(system.si, ci, table, 1, 5.0)
    assert time.monotonic() - t0 < 1.0


def test_a_long_delay_gives_up_on_a_cluster_that_stopped_draining_until_its_count_moves(system):
    ci, rest, _ = drained_cluster(system, keep=2)
    d = always_long(system, long_s=5.0)
    system.cur.set_rec_op(OP_LOOKUP)
    assert d._being_drained(system.si, ci)
    t0 = time.monotonic()
    d._long(system.si, ci, table_of(system, ci), 1, 5.0)       # nothing frees its last two slots
    assert STALL_S <= time.monotonic() - t0 < 1.0
    assert not d._being_drained(system.si, ci)                 # no second wait on a stalled cluster
    release(system, rest[1])
    assert d._being_drained(system.si, ci)                     # ... until its count moves


def test_once_the_table_is_freed_the_wait_is_bounded_from_the_free(system):
    ci, rest, _ = drained_cluster(system)
    table = table_of(system, ci)
    for entry in rest:
        release(system, entry)                  # freed to the slab, and nothing allocates to reuse it
    assert int(system.shm.objs["owner"][table]) < 0
    t0 = time.monotonic()
    always_long(system, long_s=0.2)._long(system.si, ci, table, 1, 0.01)    # waits on, past its 10 ms
    assert AFTER_FREE_S[0] <= time.monotonic() - t0 < 1.0


def publish(system, wid, entry):
    """Worker ``wid`` publishes ``entry`` as a slot of the process it ends next (workload.publish_exiting)."""
    system.shm.wq[wid * WORKER.size + WORKER.rec + REC_EXITING] = entry


def test_with_lifetimes_a_long_delay_waits_only_on_a_cluster_another_cpu_will_empty(make_system):
    s = make_system(lifetimes="on", cpus=2)
    ci, rest, filling = drained_cluster(s, keep=s.si.spc)       # full: nothing freed yet
    d = always_long(s, long_s=0.2)
    assert not d._being_drained(s.si, ci)                       # nobody said it empties
    publish(s, 0, rest[0])
    assert not d._being_drained(s.si, ci)                       # the reader's own process: it would wait for itself
    publish(s, 0, 0)
    publish(s, 1, rest[0])
    assert d._being_drained(s.si, ci) and d.exiter == 1
    s.shm.wq[1 * WORKER.size + WORKER.rec + REC_DELAYING] = 1
    assert not d._being_drained(s.si, ci)                       # cpu1 waits in a reader too: no exit soon
    s.shm.wq[1 * WORKER.size + WORKER.rec + REC_DELAYING] = 0
    assert d._being_drained(s.si, ci)
    t0 = time.monotonic()
    assert d._long(s.si, ci, table_of(s, ci), 1, 0.2) == (0, None)     # its count stands still: no giving up
    assert 0.2 <= time.monotonic() - t0 < 1.0
