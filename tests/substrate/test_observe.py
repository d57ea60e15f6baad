"""Observers (shmswap.substrate.observe): hooks fire where the model says, only overridden ones are
called, and the C module's hook is installed only while someone listens to points or lock waits."""

from __future__ import annotations

import threading

import multiprocess as mp
import pytest
from conftest import small_config
from helpers import hold_cluster_lock

from shmswap import Observer
from shmswap.checks.faults import FaultPlan
from shmswap.mm.cluster import CW, ci_lock, ci_unlock
from shmswap.substrate import _prim
from shmswap.substrate.locks import LockClass
from shmswap.substrate.observe import HOOKS, Observers
from shmswap.substrate.preempt import Point

CTX = mp.get_context("fork")
SPC = 8


class Spy(Observer):
    """Records the events it overrides: table allocations, sleeps and wakes."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def table_alloc(self, wid, ci, table, sleeping) -> None:
        self.events.append(("table_alloc", wid, ci, table, sleeping))

    def sleep(self, wid, ci, cpu) -> None:
        self.events.append(("sleep", wid, ci, cpu))

    def wake(self, wid, cpu, before) -> None:
        self.events.append(("wake", wid, cpu, before))


class TableAllocOnly(Observer):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def table_alloc(self, wid, ci, table, sleeping=None) -> None:
        self.calls.append((wid, ci, table, sleeping))


class LockWaits(Observer):
    def __init__(self) -> None:
        self.waits: list[tuple[int, int]] = []

    def lock_wait(self, cls, wait_ns) -> None:
        self.waits.append((cls, wait_ns))


class Points(Observer):
    def __init__(self) -> None:
        self.kinds: list[int] = []

    def sched_point(self, kind, a, b) -> None:
        self.kinds.append(kind)


@pytest.fixture
def make_model(open_model):
    """Factory: ``make_model(observers=(), oracles=True, **config) -> Model`` on a small device."""
    return lambda observers=(), oracles=True, **kw: open_model(small_config(**kw), observers=observers,
                                                               oracles=oracles)


def test_only_overridden_hooks_are_dispatched():
    o = TableAllocOnly()
    obs = Observers([o])
    assert obs.table_alloc == (o.table_alloc,)
    for name in HOOKS:
        if name != "table_alloc":
            assert getattr(obs, name) == (), name
    assert _prim.get_hook() is None        # table_alloc is not a C-module event
    obs.remove(o)
    assert obs.table_alloc == ()


def test_table_alloc_on_the_first_allocation_into_a_free_cluster(make_model):
    spy = TableAllocOnly()
    m = make_model(observers=[spy])
    a = m.alloc(cpu=0)
    assert a.entry == 1 and spy.calls == []            # cluster 0 has had its table since swapon
    b = m.alloc(cpu=1)                                 # CPU 1 isolates free cluster 1
    assert b.entry == SPC
    assert len(spy.calls) == 1
    wid, ci, table, sleeping = spy.calls[0]
    assert (wid, ci, sleeping) == (1, 1, False)
    assert table >= 0 and m.system.shm.clu["table"][1] == table
    m.alloc(cpu=1)                                     # the same cluster: no new table
    assert len(spy.calls) == 1
    assert m.check().ok


def test_sleep_and_wake_fire_on_a_forced_sleeping_path(make_model):
    plan = FaultPlan()
    plan.atomic = 1
    plan.migrate_to = 1
    spy = Spy()
    m = make_model(observers=[plan, spy])
    got = [m.alloc(cpu=0).entry for _ in range(SPC)]
    assert got == list(range(1, SPC + 1))              # cluster 0 (7 slots), then free cluster 1
    assert plan.atomic == 0
    table = int(m.system.shm.clu["table"][1])
    assert spy.events == [("sleep", 0, 1, 0),          # worker 0 on CPU 0 sleeps for cluster 1
                          ("table_alloc", 0, 1, table, True),
                          ("wake", 0, 1, 0)]           # and wakes on CPU 1, as the plan says
    assert m.tasks[0].cpu == 1
    res = m.check()
    assert res.violations == [] and res.findings == []


def test_lock_wait_fires_when_a_cluster_lock_is_contended(make_system):
    system = make_system()                             # conftest's TestModel: a Model with a fault plan
    waits = system.add_observer(LockWaits())
    assert _prim.get_hook() is not None
    held, done = CTX.Event(), CTX.Event()
    p = CTX.Process(target=hold_cluster_lock, args=(system, 1, held, done))
    p.start()
    try:
        assert held.wait(20)
        assert system.si.cr.owner(1 * CW * 8) == 1     # worker 1 holds cluster 1's lock
        assert waits.waits == []
        timer = threading.Timer(0.2, done.set)         # the holder lets go while we wait
        timer.start()
        ci_lock(system.si, 1)
        ci_unlock(system.si, 1)
        timer.join()
    finally:
        done.set()
        p.join(20)
    assert p.exitcode == 0
    assert system.cur.wid == 0
    assert len(waits.waits) == 1, waits.waits
    cls, wait_ns = waits.waits[0]
    assert cls == LockClass.CI_LOCK
    assert wait_ns > 0
    assert system.check().ok


@pytest.mark.parametrize("oracles", [True, False])
def test_no_observer_no_hook(make_model, oracles):
    m = make_model(oracles=oracles, lockdep=False)     # lockdep is an observer of every lock
    if oracles:
        assert len(list(m.system.observers)) == 1      # the RCU oracles need no C hook
    else:
        assert list(m.system.observers) == []
    assert _prim.get_hook() is None
    m.alloc(cpu=0)
    m.alloc(cpu=1)
    m.run_pending_work()
    assert _prim.get_hook() is None
    assert m.check().ok


def test_removing_observers_uninstalls_the_hook(make_model):
    points, waits = Points(), LockWaits()
    m = make_model(lockdep=False)                       # lockdep is an observer of every lock
    assert _prim.get_hook() is None
    m.add_observer(points)
    assert _prim.get_hook() is not None
    m.alloc(cpu=0)
    assert Point.LOCK in points.kinds and Point.UNLOCK in points.kinds
    m.add_observer(waits)
    m.system.observers.remove(points)
    assert _prim.get_hook() is not None                # lock_wait still listens
    m.system.observers.remove(waits)
    assert _prim.get_hook() is None
    n = len(points.kinds)
    m.alloc(cpu=0)
    assert len(points.kinds) == n                      # no longer called
    m.add_observer(points)
    assert _prim.get_hook() is not None
    m.system.observers.clear()
    assert _prim.get_hook() is None
    assert m.check().ok


def test_closing_the_model_uninstalls_the_hook(make_model):
    m = make_model(observers=[Points()])
    assert _prim.get_hook() is not None
    m.close()
    assert _prim.get_hook() is None
