"""Random delays inside the lockless readers' read sections, as rcutorture's readers take them.

rcutorture's readers (``rcu_torture_reader`` → ``rcu_read_delay``) sleep inside their read-side
critical sections now and then: mostly not at all, sometimes a few microseconds, rarely long
enough to span grace periods.  That is what makes a broken RCU, or a reader that forgets to
validate, show up in an ordinary torture run rather than only in a crafted one.

``ReaderDelays`` does the same in the ``reader_window`` hook of ``swap_table_get`` (the table
pointer loaded, the entry not yet read; reference §10 W3; an observer hook, not the C lock's
preemption-point hook, so no lock pays a Python call for it), in every CPU worker by default
(``--reader-delays off`` turns it off), each worker with its own seeded stream:

* most reads: no delay;
* ``SHORT_P`` of them: a short delay, up to ``SHORT_US`` microseconds;
* ``LONG_P`` of them: a long one, up to ``LONG_S`` seconds (chosen at random between a tenth of
  that and all of it), long enough to span grace periods (the manager runs one every 20 ms) and
  table recycles.  A table is recycled only when its cluster empties, which a default run does a
  few times a second among hundreds of tables, so a read of a nearly empty cluster (count at most
  ``NEAR_EMPTY`` of the slots) that this CPU does not allocate from (its own cannot empty while
  it waits) is delayed long with the higher probability ``LONG_P_NEAR``.  A long delay ends early
  once what it waited for has happened: the table went back to the page pool, or was reused
  (page mode), or was reused for another cluster and now holds a cached folio at the reader's
  offset (slab mode).  Waiting longer could not change what the reader reads next.
* a worker starts no long delay while its delays add up to more than ``BUDGET`` of its run time,
  which bounds the throughput they cost.

Delays never change what a correct reader concludes: a validating reader rejects a foreign folio
and a correct RCU holds the table's memory back until the delayed reader leaves.  ``--reader
broken`` and ``--rcu none`` are the variants whose oracles they are there to trip.
``--reader-delay-us`` (``faults.ReaderWindowDelay``) stays as the forced window of the tests.
"""

from __future__ import annotations

import random
import time

from ..mm.cluster import C_COUNT as _C_COUNT
from ..mm.cluster import CW as _CW
from ..mm.folio import PG_SWAPCACHE
from ..mm.slab import OBJ_POOL
from ..mm.system import SwapSystem
from ..substrate.observe import Observer

__all__ = ["ReaderDelays", "SHORT_P", "SHORT_US", "LONG_P", "LONG_P_NEAR", "NEAR_EMPTY", "LONG_S", "BUDGET"]

SHORT_P = 0.01          # share of reads delayed a little
SHORT_US = 50           # at most this many microseconds
LONG_P = 0.0002         # share of reads delayed long
LONG_P_NEAR = 0.3       # share of reads of a nearly empty cluster (not this CPU's) delayed long
NEAR_EMPTY = 1 / 4      # nearly empty: count at most this share of the cluster's slots
LONG_S = 0.5            # at most this many seconds
BUDGET = 0.15           # no long delay while the delays add up to more than this share of the time
_POLL_S = 0.0002


class ReaderDelays(Observer):
    """rcutorture-style random delays in this process's read sections (seeded per worker)."""

    def __init__(self, system: SwapSystem, seed: int, wid: int, short_p: float = SHORT_P,
                 long_p: float = LONG_P, long_s: float = LONG_S) -> None:
        self.shm = system.shm
        self.si = system.si
        self.page_mode = system.slab.mode == "page"
        self.rng = random.Random(seed * 1_000_033 + 7919 * wid + 1)
        self.short_p, self.long_p, self.long_s = short_p, long_p, long_s
        self.near = int(system.si.spc * NEAR_EMPTY)
        self.short = self.long = 0          # how many delays of each kind were taken
        self.delayed_s = 0.0                # time spent delaying
        self.t0 = time.monotonic()

    def reader_window(self, wid: int, ci: int, table: int, off: int) -> None:
        r = self.rng.random()
        if r >= LONG_P_NEAR:
            return
        a, b = table, off
        long_p = LONG_P_NEAR if self._near_empty(ci) else self.long_p
        if r >= self.short_p + long_p:
            return
        t0 = time.monotonic()
        if r < long_p and self.delayed_s < BUDGET * (t0 - self.t0):
            self.long += 1
            self._long(a, b, self.long_s * (0.1 + 0.9 * self.rng.random()))
        else:
            self.short += 1
            end = t0 + SHORT_US * 1e-6 * self.rng.random()
            while time.monotonic() < end:
                pass
        self.delayed_s += time.monotonic() - t0

    def _near_empty(self, ci: int) -> bool:
        """Cluster ``ci`` is nearly empty and not one this CPU allocates from."""
        si = self.si
        if not 0 < si.cq[ci * _CW + _C_COUNT] <= self.near:
            return False
        cpu = si.cur.task.cpu
        return all(si.pcp.offset(cpu, o) >> si.spc_shift != ci for o in range(si.nr_orders))

    def _long(self, table: int, off: int, max_s: float) -> None:
        objs, tables, folios = self.shm.objs, self.shm.tables_np, self.shm.folios
        gen0 = int(objs["gen"][table])
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            time.sleep(_POLL_S)
            if objs["state"][table] == OBJ_POOL:
                return
            if objs["gen"][table] != gen0:
                if self.page_mode:
                    return
                tb = int(tables[table, off])
                if tb and not tb & 1 and folios["flags"][(tb >> 3) - 1] & PG_SWAPCACHE:
                    return
