"""Observers: one declared protocol for everything that watches or steers a run (DESIGN §4).

Modelled on trio's ``Instrument``: an ``Observer`` is an object whose methods are hooks; a
subclass overrides the hooks it cares about and inherits no-ops for the rest.  ``Observers`` (one
per process, passed to the model's objects through their constructors) keeps, for every hook, the
tuple of bound methods that really override it, so an event site is

    for hook in obs.table_alloc:
        hook(wid, ci, table, sleeping)

and costs one attribute load and an empty loop when nobody listens.  Tracing, fault injection
(delays that widen a race window, forced allocation failures, forced migrations), the RCU oracles,
the teaching trace and the deterministic scheduler are all observers; the allocator has no other
branch for them.

Preemption points come from two places: the C lock (``SP_LOCK``, ``SP_TRYLOCK``, ``SP_UNLOCK``
before the operation, ``SP_LOCK_WAITED`` after a contended acquire) and ``preempt.sched_point`` in
the model.  When some observer has a ``sched_point`` or ``lock_wait`` hook, ``Observers`` installs
one dispatcher as the C module's hook; otherwise no hook is installed and a point costs a pointer
test in C.

Hooks (``wid`` is the worker, i.e. the task; CPU numbers are the CPU the task runs on):

| hook | when |
|---|---|
| ``sched_point(kind, a, b)`` | a preemption point (``preempt.Point``) |
| ``lock_wait(cls, wait_ns)`` | a contended lock of class ``cls`` was acquired after ``wait_ns`` |
| ``table_alloc(wid, ci, table, sleeping)`` | a swap table was allocated for cluster ``ci`` |
| ``table_free(wid, ci, table)`` | ``swap_cluster_free_table`` freed the table of ``ci`` |
| ``table_freed_unused(wid, ci, table)`` | a freshly allocated table was freed without use |
| ``sleep(wid, ci, cpu)`` | every lock dropped, about to sleep for a table |
| ``wake(wid, cpu, before)`` | woke on ``cpu`` (a migration when ``cpu != before``) |
| ``wake_cpu(wid, cpu) -> int | None`` | steer: the CPU to wake on, or None for the policy |
| ``fail_table_alloc(kind) -> bool`` | steer: True fails this ``"atomic"`` or ``"sleeping"`` allocation |
| ``warn(wid, message)`` | a WARN_ON condition was met |
| ``reader_window(wid, ci, table, off)`` | a lockless reader loaded ``ci->table``, entry not yet read |
| ``reader_read(wid, ci, table, off, tb) -> int`` | the reader read ``tb``; returns what it uses |
| ``grace_period(gp_seq, ns)`` | a grace period completed |
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import _prim

__all__ = ["Observer", "Observers", "HOOKS"]

HOOKS = ("sched_point", "lock_wait", "table_alloc", "table_free", "table_freed_unused", "sleep", "wake",
         "wake_cpu", "fail_table_alloc", "warn", "reader_window", "reader_read", "grace_period")


class Observer:
    """Base class of observers: every hook is a no-op.  Override the ones you need."""

    def sched_point(self, kind: int, a: Any, b: Any) -> None:
        """A preemption point (``preempt.Point``); a scheduler may block here."""

    def lock_wait(self, cls: int, wait_ns: int) -> None:
        """A contended acquire of a lock of class ``cls`` waited ``wait_ns``."""

    def table_alloc(self, wid: int, ci: int, table: int, sleeping: bool) -> None:
        """A table object was allocated for cluster ``ci`` (atomic or sleeping)."""

    def table_free(self, wid: int, ci: int, table: int) -> None:
        """``swap_cluster_free_table`` detached and freed the table of cluster ``ci``."""

    def table_freed_unused(self, wid: int, ci: int, table: int) -> None:
        """A table allocated for cluster ``ci`` was freed without being installed."""

    def sleep(self, wid: int, ci: int, cpu: int) -> None:
        """Every lock dropped: the task sleeps for a table for cluster ``ci`` (it was on ``cpu``)."""

    def wake(self, wid: int, cpu: int, before: int) -> None:
        """The task woke on ``cpu`` (migrated when ``cpu != before``)."""

    def wake_cpu(self, wid: int, cpu: int) -> int | None:
        """Steer the wake-up: the CPU to wake on, or None to leave it to the migration policy."""
        return None

    def fail_table_alloc(self, kind: str) -> bool:
        """Steer a table allocation (``"atomic"`` or ``"sleeping"``): True makes it fail."""
        return False

    def warn(self, wid: int, message: str) -> None:
        """A WARN_ON condition was met."""

    def reader_window(self, wid: int, ci: int, table: int, off: int) -> int | None:
        """A lockless reader loaded ``ci->table`` and has not read the entry yet.  A hook that holds
        the reader in its window may end it with the reader's load of the entry and return the
        value (a delay that ends the instant the entry changes); None: the reader loads it next."""

    def reader_read(self, wid: int, ci: int, table: int, off: int, tb: int) -> int:
        """The reader read ``tb``; the value returned is what it goes on with."""
        return tb

    def grace_period(self, gp_seq: int, ns: int) -> None:
        """A grace period completed (``gp_seq`` after it) in ``ns``."""


def _overrides(obs: Observer, name: str) -> bool:
    base = getattr(Observer, name)
    return getattr(type(obs), name, base) is not base


class Observers:
    """The observers of one process: per hook, the bound methods that override it."""

    sched_point: tuple[Callable, ...] = ()

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._all: list[Observer] = []
        self._installed = False
        self._rebuild()
        for o in observers:
            self.add(o)

    def __iter__(self):
        return iter(self._all)

    def add(self, observer: Observer) -> Observer:
        """Start calling ``observer``'s hooks (after those already added); returns it."""
        self._all.append(observer)
        self._rebuild()
        return observer

    def remove(self, observer: Observer) -> None:
        self._all.remove(observer)
        self._rebuild()

    def clear(self) -> None:
        self._all.clear()
        self._rebuild()

    def _rebuild(self) -> None:
        for name in HOOKS:
            setattr(self, name, tuple(getattr(o, name) for o in self._all if _overrides(o, name)))
        self.install()

    # -- the C module's preemption-point hook ---------------------------------------------------------
    def install(self) -> None:
        """Install the dispatcher as the C hook if anyone listens to points or lock waits."""
        want = bool(self.sched_point or self.lock_wait)
        if want:
            # Lock waits alone need no call at every uncontended lock and unlock.
            points = bool(self.sched_point)
            _prim.set_hook_points(points, points)
            _prim.set_hook(self._dispatch)
        elif self._installed:
            _prim.set_hook(None)
            _prim.set_hook_points(True, True)
        self._installed = want

    def _dispatch(self, kind: int, a: Any, b: Any) -> None:
        if kind == _prim.SP_LOCK_WAITED:
            for hook in self.lock_wait:
                hook(a, b)
            return
        for hook in self.sched_point:
            hook(kind, a, b)
