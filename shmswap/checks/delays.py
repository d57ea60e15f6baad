"""Random delays inside the lockless readers' read sections, as rcutorture's readers take them.

rcutorture's readers (``rcu_torture_reader`` → ``rcu_read_delay``) sleep inside their read-side
critical sections now and then: mostly not at all, sometimes a few microseconds, rarely long
enough to span grace periods.  That is what makes a broken RCU, or a reader that forgets to
validate, show up in an ordinary torture run rather than only in a crafted one.

``ReaderDelays`` does the same in the ``reader_window`` hook of ``swap_table_get`` (the table
pointer loaded, the entry not yet read; reference §10 W3; an observer hook, not the C lock's
preemption-point hook, so no lock pays a Python call for it), each process with its own seeded
stream.  With ``--reader-delays on`` (the default):

* the CPU workers' reads take short delays only: ``SHORT_P`` of them, up to ``SHORT_US``
  microseconds (a long one would stop that CPU's work, and cost throughput in proportion);
* the torture readers (``workers/reader.py``, ``--torture-readers N``), reader processes on no CPU
  of the model, take the long delays, up to ``LONG_S`` seconds, on the reads they aim where
  something is about to happen:

  - ``_DRAINED``: a cluster about to empty.  With ``--lifetimes on``, one a CPU published for the
    process it ends next (``_exiting``; not if that CPU waits in a reader itself, it would not end
    it); otherwise one nearly empty (count at most ``NEAR_EMPTY`` of its slots) that is no CPU's
    per-CPU cluster.  The table goes when it empties, and is reused for another cluster:
    ``--reader broken`` then accepts the folio it finds at its slot.
  - ``_LAST``: a table that is the last in use on its slab page, the page no CPU's active slab:
    when its cluster empties the page goes back to the pool, after a grace period; ``--rcu none``
    does not wait for the reader, which then reads freed memory.

* A long delay waits for the event, not for a fixed time.  It ends as soon as the table went back
  to the page pool, or was reused (page mode), or, reused for another cluster in slab mode, holds
  a cached folio at the reader's slot (the reader's load is then the one that saw it, returned to
  ``swap_table_get``: a folio stays in the swap cache only until its writeback); it gives up
  early when the cluster is being refilled (its count grew back by ``REFILL_SLOTS``) or has
  stopped draining (its count has not dropped for ``STALL_S``, without ``--lifetimes``), or when
  the reused table's slot was filled and written back (a shadow: nothing left to see).  Once the
  table is freed, it waits at most ``AFTER_FREE_S`` more (a reader is worth more looking
  elsewhere than waiting on a page that stays).  It looks every ``_POLL_S``, and every
  ``_POLL_REUSED_S`` once the table serves another cluster; while a CPU allocating in that
  cluster is at most ``SPIN_AHEAD`` slots below the reader's slot it spins (at most ``SPIN_S`` at
  a time).
* A delayer given a ``budget`` starts no long delay of a kind while those add up to more than
  that share of its run time (the torture readers have none: waiting is what they are for).

Delays never change what a correct reader concludes: a validating reader rejects a foreign folio
and a correct RCU holds the table's memory back until the delayed reader leaves (the manager's
grace periods wait for it without stopping its other work: ``Rcu.poll_grace_period``).
``--reader-delay-us`` (``faults.ReaderWindowDelay``) stays as the forced window of the tests.
"""

from __future__ import annotations

import random
import time

from ..mm.cluster import C_COUNT as _C_COUNT
from ..mm.cluster import CW as _CW
from ..mm.folio import PG_SWAPCACHE
from ..mm.slab import OBJ_POOL
from ..mm.swap import SWP_OFFSET_MASK as _OFFSET_MASK
from ..mm.swap import SWP_TYPE_SHIFT
from ..mm.system import SwapSystem
from ..mm.task import REC_OP
from ..substrate.observe import Observer
from ..substrate.stats import Stat

__all__ = ["ReaderDelays", "SHORT_P", "SHORT_US", "LONG_P_NEAR", "LONG_P_EXITING", "LONG_P_LAST", "NEAR_EMPTY",
           "REFILL_SLOTS", "LONG_S", "AFTER_FREE_S", "BUDGET", "SPIN_AHEAD", "SPIN_S", "STALL_S"]

SHORT_P = 0.01          # share of reads delayed a little
SHORT_US = 50           # at most this many microseconds
LONG_P_NEAR = 0.3       # share of lookups in a cluster being drained that are delayed long
LONG_P_EXITING = 0.5    # --lifetimes on: share of lookups in a cluster whose process ends next delayed long
LONG_P_LAST = 0.2       # of the rest, share of those whose table is the last in use on its slab page
NEAR_EMPTY = 1 / 4      # being drained: count at most this share of the cluster's slots, ...
REFILL_SLOTS = 16       # ... and abandoned once it has grown back by this many slots,
STALL_S = 0.05          # ... or once its count has not dropped for this long
LONG_S = 0.5            # at most this many seconds
BUDGET = 0.05           # no long delay of a kind while those add up to more than this share of the time
SPIN_AHEAD = 16         # spin (not sleep) while an allocating CPU is this close below the reader's slot
SPIN_S = 0.002          # at most this long per spin
_POLL_S = 0.002          # how often a long delay looks (it spins only near the event) ...
_POLL_REUSED_S = 0.0005  # ... and once its table serves another cluster (it may be filled any moment)
AFTER_FREE_S = (0.5, 0.05)   # once the table is freed, wait at most this for what follows, by kind:
                             # reuse with a folio at the slot (_DRAINED), the page's return (_LAST)
_FREED, _GONE = 1, 2    # how far a long delay saw its table go (``_long``)
_DRAINED, _LAST = 0, 1  # the kinds of long delay: a cluster about to empty, the last table on its page
_SHORT, _LONG, _DELAY_US = int(Stat.READER_DELAYS_SHORT), int(Stat.READER_DELAYS_LONG), int(Stat.READER_DELAY_US)
_SAW_FREED, _SAW_GONE = int(Stat.LONG_DELAY_FREED), int(Stat.LONG_DELAY_GONE)
_OP_LOOKUP = 3          # workers.workload.OP_LOOKUP (checks/ may not import workers/; a test pins it)


class ReaderDelays(Observer):
    """rcutorture-style random delays in this process's read sections (seeded per worker)."""

    def __init__(self, system: SwapSystem, seed: int, wid: int, short_p: float = SHORT_P,
                 long_p: float | None = None, long_s: float = LONG_S, last_p: float = LONG_P_LAST,
                 budget: float | None = BUDGET) -> None:
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
        self.last_p = last_p
        self.budget = budget                # None: no budget (a torture reader is there to wait)
        # --lifetimes on: a cluster empties at once when its process exits, from any count: a long
        # delay goes to a cluster of a process a CPU ends next (``_exiting``), and waits for the exit
        # however long the count stands still.
        self.near = int(system.si.spc * NEAR_EMPTY)
        self.short = self.long = 0          # how many delays of each kind were taken
        self.delayed_s = 0.0                # time spent delaying
        self.stalled: dict[tuple[int, int], int] = {}   # (device, cluster): its count when a wait gave up
        self.exiter = -1                    # --lifetimes on: the CPU whose process's exit a long delay awaits
        self.kind = _DRAINED                # the kind of the long delay under way
        self.spent = [0.0, 0.0]             # time in long delays of each kind (_DRAINED, _LAST)
        self.pending: tuple[float, float, int, int] | None = None   # the last delay, counted at the next read
        self.t0 = time.monotonic()

    def reader_window(self, wid: int, ci: int, table: int, off: int) -> int | None:
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
            self.pending = (t0, time.monotonic(), -1, -1)
            return
        cur = self.cur
        if cur.wq[cur.rec_base + REC_OP] != _OP_LOOKUP:
            return
        allowed = self.budget * (t0 - self.t0) if self.budget is not None else float("inf")  # per kind
        si = cur.reader_si or self.si           # the device whose table the reader loaded
        if self.spent[_DRAINED] < allowed and self._being_drained(si, ci):
            kind = _DRAINED
        elif (self.spent[_LAST] < allowed and si.slab.last_on_its_page(table)
              and self.rng.random() < self.last_p):
            kind, self.exiter = _LAST, -1       # the last table on its page: its free empties the page
        else:
            return
        self.long += 1
        self.kind = kind
        cur.set_rec_delaying(True)
        seen, loaded = self._long(si, ci, table, off, self.long_s * (0.1 + 0.9 * self.rng.random()))
        cur.set_rec_delaying(False)
        # A folio seen in a reused table is in the swap cache for microseconds: the reader's load is
        # the one that saw it (returned), and the bookkeeping waits for the next read section.
        self.pending = (t0, time.monotonic(), seen, kind)
        return loaded

    def flush(self) -> None:
        """Count the last delay (the worker's run ends: no next read section will)."""
        if self.pending is not None:
            self._account()

    def _account(self) -> None:
        """Count the last delay (``pending``: its start and, for a long one, what it saw)."""
        t0, t1, seen, kind = self.pending
        self.pending = None
        cur = self.cur
        if kind >= 0:
            self.spent[kind] += t1 - t0
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

    def _long(self, si, ci: int, table: int, off: int, max_s: float) -> tuple[int, int | None]:
        """Wait, at most ``max_s``, for the table of ``si`` to be freed and reused (see the module's
        doc).  Returns how far it went (0 the table stayed the cluster's, ``_FREED`` it was freed,
        ``_GONE`` it went back to the page pool or to another cluster as well) and, if the wait ended
        on a folio at the reader's slot, the entry as it read it then (the reader's load), else None."""
        shm = si.slab.shm                       # each device has its slab: ``table`` indexes that one
        objs, tables, folios, cq = shm.objs, shm.tables_np, si.folios, si.cq
        gen0 = int(objs["gen"][table])
        low = int(cq[ci * _CW + _C_COUNT])
        progress = time.monotonic()
        deadline = progress + max_s
        freed = False
        seen = 0
        poll = _POLL_S
        while time.monotonic() < deadline:
            time.sleep(poll)
            if objs["state"][table] == OBJ_POOL:
                return _GONE, None
            owner = int(objs["owner"][table])
            if owner == ci and objs["gen"][table] == gen0:      # still the table of the reader's cluster
                if self.exits:
                    if self.exiter >= 0 and self.cur.delaying(self.exiter):
                        return 0, None          # the CPU that is to end the process waits in a reader too
                    continue
                count = int(cq[ci * _CW + _C_COUNT])
                now = time.monotonic()
                if count < low:
                    low, progress = count, now
                elif count >= low + REFILL_SLOTS or (now - progress > STALL_S and not self.exits):
                    self.stalled[si.type, ci] = count
                    return 0, None              # refilled, or not draining: it will not empty soon
                continue
            seen = _FREED
            if owner < 0:                       # freed, not yet reused nor back in the pool:
                if not freed:                   # what comes next is what the delay is for
                    freed, deadline = True, time.monotonic() + AFTER_FREE_S[self.kind]
                continue
            seen = _GONE
            poll = _POLL_REUSED_S               # reused: the slot may be filled any moment now
            if si.slab.mode == "page":
                return _GONE, None
            tb = int(tables[table, off])
            if tb & 1:
                return _GONE, None              # the slot was filled and written back meanwhile
            if tb and folios.flags((tb >> 3) - 1) & PG_SWAPCACHE:
                return _GONE, tb
            if self._allocating_cpu(si, owner, (owner << si.spc_shift) + off) >= 0:
                tb = self._spin(tables, table, off, min(deadline, time.monotonic() + SPIN_S))
                if tb and not tb & 1:
                    return _GONE, tb
        return seen, None

    @staticmethod
    def _spin(tables, table: int, off: int, end: float) -> int:
        """Watch the reader's slot until something is stored there (or ``end``): what was stored.
        A folio stays there only microseconds, until its writeback: the reader loads it now."""
        v = tables[table, off]
        while not v and time.monotonic() < end:
            v = tables[table, off]
        return int(v)
