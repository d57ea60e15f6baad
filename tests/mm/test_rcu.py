"""Tests of shmswap.mm.rcu: readers, grace periods across processes, and deferred table frees."""

import time
import tracemalloc

import multiprocess as mp
import numpy as np
import pytest
from conftest import SWAPPED, alloc_folio, assert_clean, release, stat

from shmswap import Config, Model
from shmswap.mm.rcu import RCU_GP_PHASE
from shmswap.mm.slab import OBJ_POOL, OBJ_RCU
from shmswap.mm.swap_table import swap_table_get
from shmswap.result import collect
from shmswap.substrate import _prim, preempt
from shmswap.substrate.preempt import Point
from shmswap.substrate.reservoir import Reservoir
from shmswap.substrate.state import RCU
from shmswap.substrate.stats import Stat

CTX = mp.get_context("fork")
NEST = RCU_GP_PHASE - 1


def ctr(system, wid=0):
    return int(system.shm.readers["ctr"][wid])


def gp(system, name):
    return int(system.shm.rcu_hdr[name])


def test_read_lock_nesting(system):
    rcu = system.rcu
    phase = gp(system, "gp_ctr") & RCU_GP_PHASE
    assert ctr(system) == 0
    rcu.read_lock()
    assert ctr(system) == phase | 1
    assert int(system.shm.readers["sections"][0]) == 1
    rcu.read_lock()
    rcu.read_lock()
    assert ctr(system) & NEST == 3 and rcu.nest == 3
    assert int(system.shm.readers["sections"][0]) == 1       # one outermost section
    rcu.read_unlock()
    assert ctr(system) & NEST == 2
    rcu.read_unlock()
    rcu.read_unlock()
    assert ctr(system) == 0 and rcu.nest == 0
    assert ctr(system, 1) == 0                                 # another worker's record untouched


def test_synchronize_rcu_without_readers(system):
    rcu = system.rcu
    assert rcu.gp_seq() == 0 and rcu.completed() == 0
    phase = gp(system, "gp_ctr")
    for n in range(1, 4):
        rcu.synchronize_rcu()
        assert rcu.gp_seq() == 2 * n                           # +2 per grace period
        assert rcu.completed() == n
    assert gp(system, "gp_ctr") == phase                       # two flips per grace period
    assert gp(system, "gp_ns_total") > 0 and gp(system, "gp_ns_max") <= gp(system, "gp_ns_total")
    assert system.shm.rr.load(0) == 0                          # gp_lock released


def test_synchronize_rcu_inside_a_read_section_is_refused(system):
    rcu = system.rcu
    rcu.read_lock()
    with pytest.raises(RuntimeError, match="inside an RCU read-side critical section"):
        rcu.synchronize_rcu()
    rcu.read_unlock()
    assert rcu.gp_seq() == 0


def test_poll_state(system):
    rcu = system.rcu
    cookie = rcu.get_state_synchronize_rcu()
    assert cookie == 2 and not rcu.poll_state_synchronize_rcu(cookie)
    rcu.synchronize_rcu()
    assert rcu.poll_state_synchronize_rcu(cookie)
    # a snapshot taken while a grace period runs (odd gp_seq) needs the next full one
    system.shm.rr.store(8 * RCU.gp_seq, 3)
    assert rcu.get_state_synchronize_rcu() == 6


def test_broken_rcu_needs_no_grace_period(make_system):
    s = make_system(rcu="none")
    assert s.rcu.get_state_synchronize_rcu() == 0
    assert s.rcu.poll_state_synchronize_rcu(s.rcu.get_state_synchronize_rcu())


def test_a_broken_grace_period_waits_for_no_reader(make_system):
    """--rcu none: a grace period completes under a reader still in its section (what the pipe age
    and the freed-memory oracle are there to see)."""
    s = make_system(rcu="none")
    s.shm.readers["ctr"][1] = (gp(s, "gp_ctr") & RCU_GP_PHASE) | 1     # worker 1 inside a section
    done = s.rcu.completed()
    s.rcu.synchronize_rcu(timeout_s=0.05)
    assert s.rcu.completed() == done + 1 and s.rcu.gp_seq() % 2 == 0


def _reader(system, entered, left):
    system.switch_to(system.tasks[1])
    system.rcu.read_lock()
    system.rcu.read_lock()                 # nested, as swap_table_get inside a section would be
    entered.set()
    time.sleep(0.3)
    system.rcu.read_unlock()
    with left.get_lock():
        left.value = 1                     # still inside the outer section
    system.rcu.read_unlock()


def test_synchronize_rcu_waits_for_a_reader_in_another_process(system):
    entered, left = CTX.Event(), CTX.Value("i", 0)
    p = CTX.Process(target=_reader, args=(system, entered, left))
    p.start()
    try:
        assert entered.wait(20)
        assert ctr(system, 1) & NEST == 2
        t0 = time.monotonic()
        system.rcu.synchronize_rcu()
        waited = time.monotonic() - t0
        assert left.value == 1             # the grace period ended after the reader left
        assert waited > 0.1
        assert ctr(system, 1) == 0
        assert system.rcu.gp_seq() == 2
    finally:
        p.join(20)
    assert p.exitcode == 0


def test_two_phase_flips(system):
    """A reader that entered before the first flip holds it; one that entered in the new phase
    passes the first flip and holds the second (liburcu memb: two flips per grace period)."""
    rcu = system.rcu
    words = system.shm.readers
    start = gp(system, "gp_ctr")
    words["ctr"][1] = (start & RCU_GP_PHASE) | 1              # entered before the grace period
    with pytest.raises(TimeoutError, match="reader of worker 1 stuck"):
        rcu.synchronize_rcu(timeout_s=0.05)
    assert gp(system, "gp_ctr") == start ^ RCU_GP_PHASE        # stuck on the first flip
    assert system.shm.rr.load(0) == 0                          # gp_lock released
    now = gp(system, "gp_ctr")
    words["ctr"][1] = (now ^ RCU_GP_PHASE) | 1                 # read gp_ctr just before a flip
    with pytest.raises(TimeoutError):
        rcu.synchronize_rcu(timeout_s=0.05)
    assert gp(system, "gp_ctr") == now                         # both flips done: stuck on the second
    words["ctr"][1] = 0
    done = rcu.completed()
    rcu.synchronize_rcu()
    assert rcu.completed() == done + 1


def test_stuck_reader_times_out_and_dead_reader_is_quiescent(system):
    rcu = system.rcu
    words = system.shm.readers
    words["ctr"][1] = (gp(system, "gp_ctr") & RCU_GP_PHASE) | 1
    with pytest.raises(TimeoutError, match="reader of worker 1 stuck in a read section"):
        rcu.synchronize_rcu(timeout_s=0.05)
    assert system.shm.rr.load(0) == 0                                 # gp_lock released
    words["dead"][1] = 1                                              # the watchdog marked it dead
    done = rcu.completed()
    rcu.synchronize_rcu(timeout_s=5)
    assert rcu.completed() == done + 1


class Supervisor:
    """A stand-in for the manager's watchdog (``mm.rcu.ReaderSupervisor``)."""

    def __init__(self, dead=(), aborting=False):
        self.dead, self.abort, self.asked = set(dead), aborting, []

    def reader_alive(self, wid):
        self.asked.append(wid)
        return wid not in self.dead

    def aborting(self):
        return self.abort


def test_supervisor_marks_a_dead_reader_quiescent(system):
    rcu = system.rcu
    words = system.shm.readers
    words["ctr"][1] = (gp(system, "gp_ctr") & RCU_GP_PHASE) | 1    # died inside a read section
    rcu.supervisor = Supervisor(dead={1})
    done = rcu.completed()
    rcu.synchronize_rcu(timeout_s=5)
    assert rcu.completed() == done + 1
    assert int(words["dead"][1]) == 1 and 1 in rcu.supervisor.asked


def test_supervisor_aborting_abandons_the_grace_period(system):
    rcu = system.rcu
    words = system.shm.readers
    words["ctr"][1] = (gp(system, "gp_ctr") & RCU_GP_PHASE) | 1
    rcu.supervisor = Supervisor(aborting=True)
    with pytest.raises(_prim.Aborted, match="grace period abandoned"):
        rcu.synchronize_rcu(timeout_s=5)
    assert system.shm.rr.load(0) == 0                                 # gp_lock released
    assert int(words["dead"][1]) == 0
    words["ctr"][1] = 0


# -- deferred table frees ----------------------------------------------------------------------------

def test_page_mode_frees_tables_only_after_a_grace_period(make_system):
    s = make_system(reclaim="page")
    e = alloc_folio(s, 1, SWAPPED)
    table = int(s.shm.clu["table"][1])
    release(s, e)
    assert int(s.shm.clu["table"][1]) == -1
    assert int(s.shm.slab_hdr["npending"]) == 1
    assert s.shm.objs["state"][table] == OBJ_RCU
    assert s.slab.process_deferred() == 0                 # no grace period yet
    assert int(s.shm.slab_hdr["npending"]) == 1
    assert_clean(s)
    s.system.run_pending_work()                           # grace period + callbacks
    assert int(s.shm.slab_hdr["npending"]) == 0
    assert s.shm.objs["state"][table] == OBJ_POOL
    assert s.rcu.completed() == 1
    assert_clean(s)


def test_page_mode_synchronize_then_callbacks(make_system):
    s = make_system(reclaim="page")
    entries = [alloc_folio(s, 3, SWAPPED) for _ in range(3)]
    assert [e >> 3 for e in entries] == [1, 2, 3]
    for e in entries:
        release(s, e)
    assert int(s.shm.slab_hdr["npending"]) == 3
    s.rcu.synchronize_rcu()
    assert s.slab.process_deferred() == 3
    assert int(s.shm.slab_hdr["pages_returned"]) == 3


def _pause_reader_and_free(s, entry, calls):
    """At the reader's preemption point: free the cluster, then run the RCU callbacks."""
    def hook(kind, a, b):
        if kind != Point.READER:
            return
        preempt.install(None)
        calls.append((a, b))
        release(s, entry)
        s.slab.process_deferred()
    return hook


@pytest.mark.parametrize("rcu", ["normal", "none"])
def test_reader_of_a_freed_table_in_page_mode(make_system, rcu):
    """W3, page mode: a reader paused between the table pointer and the entry.

    With real RCU the detached table waits for the grace period: the reader sees its null entry.
    With ``--rcu none`` the page is back in the pool at once: the reader oracle (checks/oracles.py,
    an observer the model installs) counts a freed-memory read.
    """
    s = make_system(reclaim="page", rcu=rcu)
    e = alloc_folio(s, 1, SWAPPED)
    table = int(s.shm.clu["table"][1])
    calls = []
    preempt.install(_pause_reader_and_free(s, e, calls))
    try:
        tb = swap_table_get(s.si, 1, 0)
    finally:
        preempt.install(None)
    assert calls == [(table, 0)]                              # paused at (table, slot offset)
    assert tb == 0
    state = s.shm.objs["state"][table]
    if rcu == "normal":
        assert state == OBJ_RCU
        assert stat(s, Stat.FREED_MEMORY_READS) == 0
        assert int(s.shm.readers["pipe"][0][0]) == 1          # read in the grace period of its free
        s.system.run_pending_work()
        assert s.shm.objs["state"][table] == OBJ_POOL
    else:
        assert state == OBJ_POOL
        assert stat(s, Stat.FREED_MEMORY_READS) == 1
    assert s.rcu.nest == 0 and ctr(s) == 0


# -- the grace-period latencies stay bounded (issue 11 item 7: the manager's slow leak) -----------------

def test_latency_reservoir_exact_then_bounded_sample():
    r = Reservoir(capacity=100, seed=1)
    for v in range(50):
        r.append(v)
    assert len(r) == 50 and r.seen == 50 and list(r) == list(range(50))     # exact while it fits
    assert r.percentile(50) == 24.5
    for v in range(50, 100_000):
        r.append(v)
    assert len(r) == 100 and r.seen == 100_000 and r._buf.nbytes == 800     # bounded
    sample = r.values()
    assert len(set(sample.tolist())) == 100 and sample.min() >= 0 and sample.max() < 100_000
    assert 25_000 < sample.mean() < 75_000                                  # a uniform sample of all
    assert np.asarray(r, dtype=np.float64).shape == (100,)


def test_manager_loop_memory_stays_flat_over_thousands_of_grace_periods():
    """The manager's loop body (``run_pending_work`` with a grace period every pass) run through
    thousands of grace periods in one process: the latency store stops growing at its capacity and
    the traced memory is flat (a list grew by ~36 bytes per grace period, forever)."""
    cfg = Config(size="1M", slots_per_cluster=8, cpus=2, orders="0:1", seconds=1, migrate=0.0)
    with Model(cfg) as m:
        system = m.system
        assert isinstance(system.rcu.latencies_ns, Reservoir)
        lat = system.rcu.latencies_ns = Reservoir(capacity=1000)   # reach the bound in 1000 grace periods
        m.on_manager()

        def loop(n: int) -> None:
            for i in range(n):
                a = m.alloc(cpu=i % 2)
                system.run_pending_work(grace_period=True)
                if a is not None:
                    m.free(a)
                m.on_manager()

        loop(1500)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        loop(4000)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert lat.seen >= 5500 and len(lat) == 1000
        assert grown < 16 * 1024, f"the manager's loop grew by {grown} bytes over 4000 grace periods"
        rcu = collect(system, m.check(), 1.0).rcu
        assert rcu["gp_latency_sample"] == 1000 and 0 < rcu["gp_latency_us_p50"] <= rcu["gp_latency_us_p99"]
        m.free_all()


def test_a_polled_grace_period_waits_for_the_reader_without_blocking(make_system):
    """The manager's grace periods: poll_grace_period advances as far as the readers allow and
    returns at once; a reader in a section entered before it holds it back until it leaves."""
    s = make_system()
    rcu, words = s.rcu, s.shm.readers
    done = rcu.completed()
    words["ctr"][1] = (gp(s, "gp_ctr") & RCU_GP_PHASE) | 1     # worker 1 inside a section
    assert rcu.poll_grace_period() is False and rcu.grace_period_under_way
    assert rcu.poll_grace_period() is False and rcu.completed() == done
    assert s.shm.rr.load(0) == 0                              # gp_lock is not held between polls
    words["ctr"][1] = 0                                       # it leaves
    assert rcu.poll_grace_period() is True and not rcu.grace_period_under_way
    assert rcu.completed() == done + 1 and rcu.gp_seq() % 2 == 0


def test_synchronize_rcu_first_finishes_a_polled_grace_period(make_system):
    s = make_system()
    done = s.rcu.completed()
    s.shm.readers["ctr"][1] = (gp(s, "gp_ctr") & RCU_GP_PHASE) | 1
    assert s.rcu.poll_grace_period() is False
    s.shm.readers["ctr"][1] = 0
    s.rcu.synchronize_rcu(timeout_s=1.0)
    assert s.rcu.completed() == done + 2 and not s.rcu.grace_period_under_way
