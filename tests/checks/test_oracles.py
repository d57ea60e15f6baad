"""Tests of shmswap.checks.oracles: ``ReaderOracle`` judges each lockless read from the header of
the table object the reader reached (freed memory, pipe age)."""

from conftest import SWAPPED, alloc_folio, release, stat

from shmswap import Config, Model
from shmswap.checks.oracles import ReaderOracle
from shmswap.mm.slab import OBJ_INUSE, OBJ_POOL, OBJ_RCU
from shmswap.model import CACHED
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


def test_a_read_of_another_devices_table_is_judged_by_that_devices_slab():
    """Table indices are per device (each has its slab): a lookup of a slot of device 1 whose
    table index is a pool object in device 0's slab is not a freed-memory read (a false positive
    every two-device run showed before the oracle asked which device the reader was on)."""
    cfg = Config(devices="ssd:512K,ssd:1M:prio=5", slots_per_cluster=8, cpus=2, orders={0: 1.0},
                 atomic_fail=0.0, sleep_fail=0.0, seconds=1)
    with Model(cfg) as m:
        d0, d1 = m.devices
        held = [m.alloc(cpu=0, state=CACHED) for _ in range(120)]    # device 1 (priority 5) first
        assert all(a is not None and a.type == 1 for a in held)
        table_of = {a.entry: int(d1.shm.clu["table"][a.entry >> d1.spc_shift]) for a in held}
        probe = next(a for a in held if d0.slab.obj_state(table_of[a.entry]) == OBJ_POOL)
        assert d1.slab.obj_state(table_of[probe.entry]) == OBJ_INUSE
        assert m.lookup(1, probe.entry, type=1) == probe.folio
        assert stat(m.system, Stat.FREED_MEMORY_READS) == 0, "judged by device 0's slab"
        m.free_all()
        assert m.check().ok
