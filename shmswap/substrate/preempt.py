"""Preemption points: the one hook every point where the kernel could be preempted or sleep calls.

The points (DESIGN §4): each lock acquire and release (called from inside the C lock, with
``SP_LOCK`` / ``SP_TRYLOCK`` / ``SP_UNLOCK``), the sleeping table allocation, and each window in
which the allocator has dropped ``ci->lock``.  ``sched_point`` is the C module's: with no hook
installed it returns at once, so an uninstrumented run pays a C call and a pointer test.  Tracing,
fault injection and the deterministic scheduler are observers (observe.py), whose dispatcher is
installed here when one of them listens to the points; never branches in the allocator.
``install`` sets a raw hook directly (tests that predate the observers use it).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum

from . import _prim

__all__ = ["Point", "sched_point", "install", "installed"]

sched_point = _prim.sched_point


class Point(IntEnum):
    """Kinds of preemption point.  The C lock reports 1..3 itself."""

    LOCK = _prim.SP_LOCK
    UNLOCK = _prim.SP_UNLOCK
    TRYLOCK = _prim.SP_TRYLOCK
    TABLE_SLEEP = 10          # swap_cluster_alloc_table: every lock dropped, about to sleep (a=cluster)
    TABLE_WAKE = 11           # woke from the sleeping allocation (a=cpu now, b=cpu before)
    RECLAIM_WINDOW = 12       # cluster_reclaim_range / full reclaim: ci->lock dropped (a=cluster, b=slot)
    DISCARD_WINDOW = 13       # swap_do_scheduled_discard: si->lock dropped around the I/O (a=cluster)
    READER = 14               # swap_table_get: table pointer loaded, entry not yet (a=table, b=offset)
    DEVICE_REF = 15           # get_swap_device_info: the reference taken, si->users not yet read


def install(hook: Callable[[int, int, int], None] | None) -> Callable | None:
    """Install ``hook(kind, a, b)`` (or None to remove); returns the previous hook."""
    prev = _prim.get_hook()
    _prim.set_hook_points(True, True)
    _prim.set_hook(hook)
    return prev


def installed() -> Callable | None:
    return _prim.get_hook()
