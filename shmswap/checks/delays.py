"""Random delays inside the lockless readers' read sections, as rcutorture's readers take them.

rcutorture's readers (``rcu_torture_reader`` → ``rcu_read_delay``) sleep inside their read-side
critical sections now and then: mostly not at all, sometimes a few microseconds, rarely long
enough to span grace periods.  That is what makes a broken RCU, or a reader that forgets to
validate, show up in an ordinary torture run rather than only in a crafted one.

``ReaderDelays`` does the same in the ``reader_window`` hook of ``swap_table_get`` (the table
pointer loaded, the entry not yet read; reference §10 W3; an observer hook, not the C lock's
preemption-point hook, so no lock pays a Python call for it), in every CPU worker that runs with
``--reader-delays on``, each worker with its own seeded stream:

* most reads: no delay;
* ``SHORT_P`` of them: a short delay, up to ``SHORT_US`` microseconds;
* long delays, up to ``LONG_S`` seconds, only in the workload's own lookups (a reader inside the
  allocation path, ``__try_to_reclaim_swap``, holds the CPU's local lock: rcutorture delays its
  own readers, not the kernel's).  What a long delay can expose is a table freed under the reader
  (``--rcu none``: the table's slab page back in the pool) or reused for another cluster (the
  reader then reads another cluster's entry: ``--reader broken`` accepts the folio it finds).  A
  table goes only when its cluster empties, so the long delays go to lookups in a cluster being
  drained: count at most ``NEAR_EMPTY`` of its slots and no CPU's per-CPU cluster (a per-CPU
  cluster with a low count is being filled), with probability ``LONG_P_NEAR``.  Other reads take
  none: a long wait on a table whose cluster is not emptying sees nothing and only costs time.
* A long delay waits for the event, not for a fixed time.  It ends as soon as the table went back
  to the page pool, or was reused (page mode), or, reused for another cluster in slab mode, holds
  a cached folio at the reader's slot; it gives up early when the cluster is being refilled (its
  count grew back by ``REFILL_SLOTS``) or has stopped draining (its count has not dropped for
  ``STALL_S``: a cluster whose last entries are young; the reader takes no long delay there again
  until its count moves), or when the reused table's slot was filled and written back (a shadow:
  nothing left to see).  Once the table is freed, its bound is ``LONG_S`` from the free, whatever
  was drawn: reuse or the page's return is what the delay is for.  While a CPU allocating in the
  reused table's cluster is at most ``SPIN_AHEAD`` slots below the reader's slot, it spins instead
  of sleeping (for at most ``SPIN_S`` at a time): the folio sits in the swap cache only until its
  writeback, microseconds.
* a worker starts no long delay while its delays add up to more than ``BUDGET`` of its run time,
  which bounds the throughput they cost.

Delays never change what a correct reader concludes: a validating reader rejects a foreign folio
and a correct RCU holds the table's memory back until the delayed reader leaves.  ``--reader
broken`` and ``--rcu none`` are the variants whose oracles they are there to trip; how often they
do depends on how often the workload empties clusters (tables recycle) within the run.
``--reader-delay-us`` (``faults.ReaderWindowDelay``) stays as the forced window of the tests.
"""

from __future__ import annotations

import random
import time

from ..mm.cluster import C_COUNT as _C_COUNT
from ..mm.cluster import CW as _CW
from ..mm.folio import PG_SWAPCACHE
from ..mm.slab import OBJ_POOL
from ..mm.swap import SWP_TYPE_SHIFT
from ..mm.system import SwapSystem
from ..mm.task import REC_OP
from ..substrate.observe import Observer
from ..substrate.stats import Stat

__all__ = ["ReaderDelays", "SHORT_P", "SHORT_US", "LONG_P_NEAR", "LONG_P_EXITING", "NEAR_EMPTY", "REFILL_SLOTS",
           "LONG_S", "BUDGET", "SPIN_AHEAD", "SPIN_S", "STALL_S"]

SHORT_P = 0.01          # share of reads delayed a little
SHORT_US = 50           # at most this many microseconds
LONG_P_NEAR = 0.3       # share of lookups in a cluster being drained that are delayed long
LONG_P_EXITING = 0.5    # --lifetimes on: share of lookups in a cluster whose process ends next delayed long
NEAR_EMPTY = 1 / 4      # being drained: count at most this share of the cluster's slots, ...
REFILL_SLOTS = 16       # ... and abandoned once it has grown back by this many slots,
STALL_S = 0.05          # ... or once its count has not dropped for this long
LONG_S = 0.5            # at most this many seconds
BUDGET = 0.05           # no long delay while the delays add up to more than this share of the time
SPIN_AHEAD = 64         # spin (not sleep) while an allocating CPU is this close below the reader's slot
SPIN_S = 0.002          # at most this long per spin
_POLL_S = 0.0002
_OFFSET_MASK = (1 << SWP_TYPE_SHIFT) - 1
_FREED, _GONE = 1, 2    # how far a long delay saw its table go (``_long``)
_SHORT, _LONG, _DELAY_US = int(Stat.READER_DELAYS_SHORT), int(Stat.READER_DELAYS_LONG), int(Stat.READER_DELAY_US)
_SAW_FREED, _SAW_GONE = int(Stat.LONG_DELAY_FREED), int(Stat.LONG_DELAY_GONE)
_OP_LOOKUP = 3          # workers.workload.OP_LOOKUP (checks/ may not import workers/; a test pins it)


class ReaderDelays(Observer):
    """rcutorture-style random delays in this process's read sections (seeded per worker)."""

    def __init__(self, system: SwapSystem, seed: int, wid: int, short_p: float = SHORT_P,
                 long_p: float | None = None, long_s: float = LONG_S) -> None:
        self.si = system.si
        self.cur = system.cur
        self.pcp = system.si.pcp
        self.ncpus = system.shm.geo.n_workers
        self.orders = sorted(system.shm.cfg.orders)     # the per-CPU clusters of other orders stay unused
        self.rng = random.Random(seed * 1_000_033 + 7919 * wid + 1)
        self.exits = system.shm.cfg.lifetimes == "on"
        if long_p is None:
            long_p = LONG_P_EXITING if self.exits else LONG_P_NEAR
        self.short_p, self.long_p, self.long_s = short_p, long_p, long_s
        # --lifetimes on: a cluster empties at once when its process exits, from any count: a long
        # delay goes to a cluster of a process a CPU ends next (``_exiting``), and waits for the exit
        # however long the count stands still.
        self.near = int(system.si.spc * NEAR_EMPTY)
        self.short = self.long = 0          # how many delays of each kind were taken
        self.delayed_s = 0.0                # time spent delaying
        self.stalled: dict[tuple[int, int], int] = {}   # (device, cluster): its count when a wait gave up
        self.exiter = -1                    # --lifetimes on: the CPU whose process's exit a long delay awaits
        self.pending: tuple[float, float, int] | None = None   # the last delay, counted at the next read (_account)
        self.t0 = time.monotonic()

    def reader_window(self, wid: int, ci: int, table: int, off: int) -> None:
        if self.pending is not None:
            self._account()
        r = self.rng.random()
        if r >= self.short_p + self.long_p:
            return
        t0 = time.monotonic()
        if r < self.short_p:
            self.short += 1
            self.cur.stat(_SHORT)
            end = t0 + SHORT_US * 1e-6 * self.rng.random()
            while time.monotonic() < end:
                pass
            self.pending = (t0, time.monotonic(), -1)
            return
        cur = self.cur
        if cur.wq[cur.rec_base + REC_OP] != _OP_LOOKUP or self.delayed_s >= BUDGET * (t0 - self.t0):
            return
        si = cur.reader_si or self.si           # the device whose table the reader loaded
        if not self._being_drained(si, ci):
            return
        self.long += 1
        cur.set_rec_delaying(True)
        seen = self._long(si, ci, table, off, self.long_s * (0.1 + 0.9 * self.rng.random()))
        cur.set_rec_delaying(False)
        # The reader loads its entry as soon as this returns: a folio seen in a reused table is in
        # the swap cache for microseconds, so the bookkeeping waits for the next read section.
        self.pending = (t0, time.monotonic(), seen)

    def flush(self) -> None:
        """Count the last delay (the worker's run ends: no next read section will)."""
        if self.pending is not None:
            self._account()

    def _account(self) -> None:
        """Count the last delay (``pending``: its start and, for a long one, what it saw)."""
        t0, t1, seen = self.pending
        self.pending = None
        cur = self.cur
        if seen >= 0:
            cur.stat(_LONG)
            if seen:
                cur.stat(_SAW_FREED)
            if seen == _GONE:
                cur.stat(_SAW_GONE)
        took = t1 - t0
        self.delayed_s += took
        cur.stat(_DELAY_US, int(took * 1e6))

    def _being_drained(self, si, ci: int) -> bool:
        """Cluster ``ci`` of ``si`` is nearly empty and no CPU's per-CPU cluster (those fill, not drain);
        with ``--lifetimes on``, it holds a slot of a process a CPU ends next."""
        if self.exits:
            self.exiter = self._exiting(si, ci)
            return self.exiter >= 0
        count = si.cq[ci * _CW + _C_COUNT]
        if not 0 < count <= self.near or (not self.exits and self.stalled.get((si.type, ci)) == count):
            return False                        # (one this reader saw stall has not moved since)
        return self._allocating_cpu(si, ci, -1) < 0

    def _exiting(self, si, ci: int) -> int:
        """Another CPU that published (``Current.set_rec_exiting``) a slot of cluster ``ci`` of ``si``
        for its next process to end, and is not itself in a long delay (it would not end it); -1 none."""
        cur = self.cur
        for w in range(self.ncpus):
            swp = cur.exiting(w)
            if (swp and w != cur.wid and swp >> SWP_TYPE_SHIFT == si.type
                    and (swp & _OFFSET_MASK) >> si.spc_shift == ci and not cur.delaying(w)):
                return w
        return -1

    def _allocating_cpu(self, si, ci: int, slot: int) -> int:
        """A CPU whose per-CPU cluster (any order) is ``ci`` of device ``si``, -1 if none; with
        ``slot`` >= 0 only one whose next offset is at most ``SPIN_AHEAD`` slots below it."""
        pcp = self.pcp
        shift, tag = si.spc_shift, si.tag
        for cpu in range(self.ncpus):
            for o in self.orders:
                nxt = pcp.offset(cpu, o)
                if nxt >> shift == ci and pcp.si(cpu, o) == tag and (slot < 0 or 0 <= slot - nxt <= SPIN_AHEAD):
                    return cpu
        return -1

    def _long(self, si, ci: int, table: int, off: int, max_s: float) -> int:
        """Wait, at most ``max_s``, for the table of ``si`` to be freed and reused (see the module's
        doc); returns how far it went: 0 the table stayed the cluster's, ``_FREED`` it was freed,
        ``_GONE`` it went back to the page pool or to another cluster as well."""
        shm = si.slab.shm                       # each device has its slab: ``table`` indexes that one
        objs, tables, folios, cq = shm.objs, shm.tables_np, si.folios, si.cq
        gen0 = int(objs["gen"][table])
        low = int(cq[ci * _CW + _C_COUNT])
        progress = time.monotonic()
        deadline = progress + max_s
        freed = False
        seen = 0
        while time.monotonic() < deadline:
            time.sleep(_POLL_S)
            if objs["state"][table] == OBJ_POOL:
                return _GONE
            owner = int(objs["owner"][table])
            if owner == ci and objs["gen"][table] == gen0:      # still the table of the reader's cluster
                if self.exits:
                    if self.cur.delaying(self.exiter):
                        return 0                # the CPU that is to end the process waits in a reader too
                    continue
                count = int(cq[ci * _CW + _C_COUNT])
                now = time.monotonic()
                if count < low:
                    low, progress = count, now
                elif count >= low + REFILL_SLOTS or (now - progress > STALL_S and not self.exits):
                    self.stalled[si.type, ci] = count
                    return 0                    # refilled, or not draining: it will not empty soon
                continue
            seen = _FREED
            if owner < 0:                       # freed, not yet reused nor back in the pool:
                if not freed:                   # what comes next is what the delay is for
                    freed, deadline = True, max(deadline, time.monotonic() + self.long_s)
                continue
            seen = _GONE
            if si.slab.mode == "page":
                return _GONE
            tb = int(tables[table, off])
            if tb & 1:
                return _GONE                    # the slot was filled and written back meanwhile
            if tb and folios.flags((tb >> 3) - 1) & PG_SWAPCACHE:
                return _GONE
            if self._allocating_cpu(si, owner, (owner << si.spc_shift) + off) >= 0:
                end = min(deadline, time.monotonic() + SPIN_S)
                while not tables[table, off] and time.monotonic() < end:
                    pass
                tb = int(tables[table, off])
                if tb and not tb & 1:
                    return _GONE
        return seen
