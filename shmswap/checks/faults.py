"""Faults: what proves the checks can fail, and what makes a rare interleaving happen.

* ``lose_cluster`` (``--inject-bug lose-cluster``, DESIGN §8): take a listed cluster off its list
  and leave no record; the checker must report a violation.
* ``FaultPlan``: a test's plan, as an observer: fail the next N atomic or sleeping table
  allocations (failslab), wake a sleeping task on a chosen CPU.  The kernel's own harnesses do
  the same from outside the code under test (tools/testing/vma's ``fail_prealloc``).
* ``ReaderWindowDelay`` (``--reader-delay-us``): hold a lockless reader in its window until the
  table it loaded has been recycled (reference §10 W3), so the oracles see the race they exist
  for instead of hoping for it.
"""

from __future__ import annotations

import time
from typing import Any

from ..mm.cluster import C_FLAGS, CW, ci_trylock, ci_unlock, list_del, list_of
from ..mm.folio import PG_SWAPCACHE
from ..mm.slab import OBJ_POOL
from ..mm.swap import CLUSTER_FLAG_NONE
from ..mm.system import SwapSystem
from ..substrate.observe import Observer
from ..substrate.preempt import Point

__all__ = ["lose_cluster", "FaultPlan", "ReaderWindowDelay"]


def lose_cluster(si) -> int:
    """``--inject-bug lose-cluster``: take one listed cluster off its list, leave no record."""
    for ci in range(si.nr_clusters):
        if si.cq[ci * CW + C_FLAGS] != CLUSTER_FLAG_NONE and ci_trylock(si, ci):
            si.si_lock()
            list_del(si, list_of(si, ci), ci)
            si.si_unlock()
            si.cq[ci * CW + C_FLAGS] = CLUSTER_FLAG_NONE
            ci_unlock(si, ci)
            return ci
    return -1


class FaultPlan(Observer):
    """Forced failures and migrations for tests: set the counts, run, read them back at 0.

    ``atomic`` / ``sleeping``: fail that many of the next atomic / sleeping table allocations.
    ``migrate_to``: the CPU every task wakes on after a sleep (None: the migration policy).
    """

    def __init__(self) -> None:
        self.atomic = 0
        self.sleeping = 0
        self.migrate_to: int | None = None

    def fail_table_alloc(self, kind: str) -> bool:
        if kind == "atomic" and self.atomic:
            self.atomic -= 1
            return True
        if kind == "sleeping" and self.sleeping:
            self.sleeping -= 1
            return True
        return False

    def wake_cpu(self, wid: int, cpu: int) -> int | None:
        return self.migrate_to


class ReaderWindowDelay(Observer):
    """Hold this process's lockless readers in their window, for at most ``max_s`` each.

    A reader that has loaded a table pointer waits until the object it points to has been
    recycled for another cluster with a folio at the reader's offset (slab mode), or given back to
    the page pool or reused (page mode).  A correct RCU keeps the page-mode case from happening
    while the reader waits, so that reader just waits out ``max_s``.  The reader's own clusters
    (those its CPU allocates from) cannot be freed while it waits here, and are skipped.
    """

    def __init__(self, system: SwapSystem, max_s: float) -> None:
        self.shm = system.shm        # numpy views are read through it, so closing it lets them go
        self.page_mode = system.slab.mode == "page"
        self.si = system.si
        self.max_s = max_s

    def _cached_folio(self, tb: int) -> bool:
        """A folio entry whose folio is published in the swap cache (flags set after the entry)."""
        return bool(tb) and not tb & 1 and bool(self.shm.folios["flags"][(tb >> 3) - 1] & PG_SWAPCACHE)

    def _own(self, table: int) -> bool:
        si = self.si
        owner = int(self.shm.objs["owner"][table])
        cpu = si.cur.task.cpu
        return any(si.pcp.offset(cpu, o) >> si.spc_shift == owner for o in range(si.nr_orders))

    def sched_point(self, kind: int, a: Any, b: Any) -> None:
        if kind != Point.READER or self._own(a):
            return
        table, off = a, b
        objs, tables = self.shm.objs, self.shm.tables_np
        gen0 = int(objs["gen"][table])
        deadline = time.monotonic() + self.max_s
        while time.monotonic() < deadline:
            if objs["state"][table] == OBJ_POOL:
                return
            if objs["gen"][table] != gen0 and (self.page_mode or self._cached_folio(int(tables[table, off]))):
                return
            time.sleep(0.0001)
