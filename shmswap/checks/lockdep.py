"""Lockdep: the lock order of reference §2.6 checked at every acquisition (reference §9 I-lock-order).

An observer at the C lock's own preemption points (``SP_LOCK`` / ``SP_TRYLOCK`` before the
attempt, ``SP_UNLOCK`` after the release, each with the lock class and the word's byte offset),
keeping for each worker (task) the stack of locks it holds.  A blocking acquisition is checked
against the held locks:

* the order, outermost first (§2.6): folio lock → local lock → ``global_cluster_lock`` →
  ``ci->lock`` → ``si->lock`` → ``swap_avail_lock``; the slab's, the grace-period and the hand-off
  locks are leaves, taken last;
* a second lock of a class already held (two ``ci->lock``\\ s, two local locks);
* a trylock is exempt from the order, as in the kernel's lockdep: ``isolate_lock_cluster``'s
  ``spin_trylock(&ci->lock)`` under ``si->lock`` is the one legal reverse edge (§2.6), and
  ``folio_trylock`` in reclaim under the local lock is the other; but a trylock of a second
  ``ci->lock`` is still two cluster locks;
* sleeping (the ``TABLE_SLEEP`` point of ``swap_cluster_alloc_table``) with a spinlock or the
  local lock held.

Whether a trylock succeeded is not reported by the C lock; it is resolved at the worker's next
lock event by asking the lock word's owner (``held_by_me``).

A violation is reported once per (held class, new class, call site) through ``current->warn``
(so it is counted in the worker's WARN statistics, forwarded to the manager in a multiprocess run
and reported by the checker as an ``I-lock-order`` violation: every message starts with
``lockdep:``) and kept in ``violations``.  The call site is the first frame outside this module
and the observer dispatcher: the model function that called ``lock()``.

Installed by ``Model`` when ``Config.lockdep`` is set (``--lockdep``; the tests' configurations
set it), in every process of the run.  It costs a Python call at every lock and unlock, so it is
never on by default.
"""

from __future__ import annotations

import sys
from typing import Any

from ..mm.cluster import CI_BYTES
from ..mm.system import SwapSystem
from ..substrate.locks import LockClass
from ..substrate.observe import Observer
from ..substrate.preempt import Point

__all__ = ["Lockdep", "LOCK_ORDER", "LOCKDEP_PREFIX"]

LOCKDEP_PREFIX = "lockdep:"

# Rank of each class, outermost first (reference §2.6).  Leaves share the highest ranks.
LOCK_ORDER: dict[int, int] = {
    int(LockClass.FOLIO_LOCK): 0,
    int(LockClass.LOCAL_LOCK): 1,
    int(LockClass.GLOBAL_CLUSTER_LOCK): 2,
    int(LockClass.CI_LOCK): 3,
    int(LockClass.SI_LOCK): 4,
    int(LockClass.SWAP_AVAIL_LOCK): 5,
    int(LockClass.RCU_GP_LOCK): 6,
    int(LockClass.SLAB_LOCK): 7,
    int(LockClass.HANDOFF_LOCK): 7,
}
_SLEEP_FORBIDDEN = frozenset(int(c) for c in (LockClass.LOCAL_LOCK, LockClass.GLOBAL_CLUSTER_LOCK,
                                              LockClass.CI_LOCK, LockClass.SI_LOCK, LockClass.SWAP_AVAIL_LOCK))
_CI, _FOLIO = int(LockClass.CI_LOCK), int(LockClass.FOLIO_LOCK)
# Classes of which a task never holds two (spinlocks and the local lock; folio locks nest in the
# kernel too, ordered by the caller, and the slab, grace-period and hand-off locks are leaves).
_ONE_PER_TASK = _SLEEP_FORBIDDEN
_LOCK, _TRYLOCK, _UNLOCK = int(Point.LOCK), int(Point.TRYLOCK), int(Point.UNLOCK)
_SLEEP = int(Point.TABLE_SLEEP)
_SKIP_FILES = (__file__.rsplit("/", 1)[-1], "observe.py")


def _label(cls: int) -> str:
    try:
        return LockClass(cls).label
    except ValueError:
        return f"class {cls}"


def _where(f) -> str:
    path = f.f_code.co_filename
    short = path[path.find("shmswap/"):] if "shmswap/" in path else path.rsplit("/", 1)[-1]
    return f"{f.f_code.co_name} ({short}:{f.f_lineno})"


def call_site(depth: int = 1) -> str:
    """The function that took the lock: the first frame outside lockdep and the observer
    dispatcher, and, past the lock wrappers (``ci_lock``, ``si_lock``, ``folio_lock``, ...:
    functions named ``*lock``), the one that called them."""
    f = sys._getframe(depth)
    while f is not None and f.f_code.co_filename.rsplit("/", 1)[-1] in _SKIP_FILES:
        f = f.f_back
    if f is None:
        return "?"
    if f.f_code.co_name.endswith("lock") and f.f_back is not None:
        return f"{_where(f.f_back)} via {f.f_code.co_name}"
    return _where(f)


class Lockdep(Observer):
    """Per-worker held-lock stacks; reports acquisitions against the order of reference §2.6."""

    def __init__(self, system: SwapSystem) -> None:
        self.cur = system.cur
        self.si = system.si
        self.folios = system.folios
        self.held: dict[int, list[tuple[int, int]]] = {}      # wid -> [(class, offset)], innermost last
        self.pending: dict[int, tuple[int, int]] = {}         # wid -> the trylock not yet resolved
        self.violations: list[str] = []
        self._seen: set[tuple[int, int, str]] = set()

    # -- the stack ------------------------------------------------------------------------------------
    def _stack(self, wid: int) -> list[tuple[int, int]]:
        st = self.held.get(wid)
        if st is None:
            st = self.held[wid] = []
        return st

    def _resolve(self, wid: int, st: list[tuple[int, int]]) -> None:
        p = self.pending.pop(wid, None)
        if p is not None and self._trylocked(*p):
            st.append(p)

    def _trylocked(self, cls: int, off: int) -> bool:
        """Did this worker's trylock of the word at ``off`` succeed (is it held by it now)?"""
        if cls == _CI:              # a cluster lock of any device (each device has its cluster array)
            # The hook gives the offset, not the device: a device smaller than ``off`` cannot be it.
            return any(off < d.nr_clusters * CI_BYTES and d.cr.held_by_me(off)
                       for d in getattr(self.si, "devs", (self.si,)))
        if cls == _FOLIO:
            return self.folios.fr.held_by_me(off)
        return False

    def held_classes(self, wid: int) -> list[str]:
        """The classes worker ``wid`` holds, outermost first (the pending trylock resolved)."""
        st = self._stack(wid)
        self._resolve(wid, st)
        return [_label(c) for c, _ in st]

    # -- reporting ------------------------------------------------------------------------------------
    def _report(self, held: int, new: int, what: str) -> None:
        site = call_site()
        key = (held, new, site)
        if key in self._seen:
            return
        self._seen.add(key)
        msg = f"{LOCKDEP_PREFIX} {what} at {site} (reference §2.6, §9 I-lock-order)"
        self.violations.append(msg)
        self.cur.warn(msg)

    def _check(self, st: list[tuple[int, int]], cls: int, trylock: bool) -> None:
        rank = LOCK_ORDER.get(cls)
        for hcls, _ in st:
            if hcls == cls and cls in _ONE_PER_TASK and (not trylock or cls == _CI):
                self._report(hcls, cls, f"{'trylock' if trylock else 'lock'} of {_label(cls)} while "
                             f"already holding a {_label(hcls)} (two locks of one class)")
                return
            if trylock or rank is None:
                continue
            hrank = LOCK_ORDER.get(hcls)
            if hrank is not None and hrank > rank:
                self._report(hcls, cls, f"blocking lock of {_label(cls)} while holding {_label(hcls)}: "
                             f"{_label(hcls)} -> {_label(cls)} inverts the order "
                             f"{_label(cls)} -> {_label(hcls)}"
                             + (" (legal only as a trylock)" if hcls == int(LockClass.SI_LOCK) and cls == _CI
                                else ""))
                return

    # -- the hook -------------------------------------------------------------------------------------
    def sched_point(self, kind: int, a: Any, b: Any) -> None:
        if kind > _TRYLOCK and kind != _SLEEP:
            return
        wid = self.cur.wid
        st = self._stack(wid)
        if kind == _UNLOCK:
            p = self.pending.get(wid)
            if p is not None and p == (a, b):
                del self.pending[wid]           # the trylock succeeded and is released already
                return
            self._resolve(wid, st)
            for i in range(len(st) - 1, -1, -1):
                if st[i] == (a, b):
                    del st[i]
                    break
            return
        self._resolve(wid, st)
        if kind == _SLEEP:
            for hcls, _ in st:
                if hcls in _SLEEP_FORBIDDEN:
                    self._report(hcls, -1, f"sleeping (swap_cluster_alloc_table, cluster {a}) while holding "
                                 f"{_label(hcls)}")
                    break
            return
        self._check(st, a, kind == _TRYLOCK)
        if kind == _LOCK:
            st.append((a, b))
        else:
            self.pending[wid] = (a, b)
