"""Tests of shmswap.checks.oracles: ``ReaderOracle`` judges each lockless read from the header of
the table object the reader reached (freed memory, pipe age)."""

from conftest import SWAPPED, alloc_folio, release, stat

from shmswap.checks.oracles import ReaderOracle
from shmswap.mm.slab import OBJ_INUSE, OBJ_POOL, OBJ_RCU
from shmswap.substrate.stats import Stat


def pipe(system, age):
    return int(system.shm.readers["pipe"][0][age])


def read(oracle, table, tb, ci=1, off=0, between=None):
    """A reader's window on ``table`` then its read of ``tb``; ``between`` runs in the window."""
    oracle.reader_window(0, ci, table, off)
    if between is not None:
        between()
    return oracle.reader_read(0, ci, table, off, tb)


def test_the_model_installs_a_reader_oracle(system):
    assert [o for o in system.system.observers if isinstance(o, ReaderOracle)]


def test_read_of_a_pool_object_is_a_freed_memory_read(system):
    oracle = ReaderOracle(system.slab, system.cur)
    table = system.shm.geo.n_objs - 1                  # never handed out: its page is in the pool
    assert system.slab.obj_state(table) == OBJ_POOL
    assert read(oracle, table, 0x41) == 0              # the reader goes on as if it read NULL
    assert stat(system, Stat.FREED_MEMORY_READS) == 1
    assert stat(system, Stat.PIPE_TOO_OLD) == 0
    assert pipe(system, 0) == 0                         # no pipe age for a freed read


def test_read_of_a_live_table_passes_with_age_zero(system):
    oracle = ReaderOracle(system.slab, system.cur)
    table = int(system.shm.clu["table"][0])
    assert system.slab.obj_state(table) == OBJ_INUSE
    assert read(oracle, table, 0x41, ci=0) == 0x41
    assert stat(system, Stat.FREED_MEMORY_READS) == 0
    assert pipe(system, 0) == 1


def test_page_mode_table_reused_in_the_window_is_a_freed_memory_read(make_system):
    s = make_system(reclaim="page")
    oracle = ReaderOracle(s.slab, s.cur)
    table = s.slab.alloc_atomic(1)
    gen = s.shm.objs["gen"]

    def realloc():
        gen[table] += 1                                 # freed and handed out again

    realloc()                                           # before the window: a live table
    assert read(oracle, table, 0x41) == 0x41 and stat(s, Stat.FREED_MEMORY_READS) == 0
    assert read(oracle, table, 0x41, between=realloc) == 0     # in the window: freed memory
    assert stat(s, Stat.FREED_MEMORY_READS) == 1
    assert s.slab.obj_state(table) == OBJ_INUSE


def test_slab_mode_reuse_in_the_window_is_allowed(system):
    """SLAB_TYPESAFE_BY_RCU: a reused object is live memory; the caller's validation rejects it."""
    oracle = ReaderOracle(system.slab, system.cur)
    table = system.slab.alloc_atomic(1)
    gen = system.shm.objs["gen"]

    def realloc():
        gen[table] += 1

    assert read(oracle, table, 0x41, between=realloc) == 0x41
    assert stat(system, Stat.FREED_MEMORY_READS) == 0


def test_pipe_age_of_a_table_waiting_for_its_grace_period(make_system):
    s = make_system(reclaim="page")
    oracle = ReaderOracle(s.slab, s.cur)
    e = alloc_folio(s, 1, SWAPPED)
    table = int(s.shm.clu["table"][1])
    release(s, e)                                       # call_rcu: the table waits, OBJ_RCU
    assert s.slab.obj_state(table) == OBJ_RCU
    assert read(oracle, table, 0) == 0 and pipe(s, 0) == 1
    s.rcu.synchronize_rcu()
    assert read(oracle, table, 0) == 0 and pipe(s, 1) == 1
    assert stat(s, Stat.PIPE_TOO_OLD) == 0
    s.rcu.synchronize_rcu()                             # a grace period ended under the reader
    assert read(oracle, table, 0) == 0 and pipe(s, 2) == 1
    assert stat(s, Stat.PIPE_TOO_OLD) == 1
    assert stat(s, Stat.FREED_MEMORY_READS) == 0
