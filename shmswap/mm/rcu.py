"""RCU: readers, grace periods and the snapshot cookies deferred frees wait on.

What it models.  The kernel's swap cache readers (``swap_table_get``) run under ``rcu_read_lock``;
a detached table's memory must not return to the page allocator until every reader that might
hold its pointer has left its read section.  We follow liburcu's *memb* flavour, since our readers
are processes that cannot be interrupted by the grace-period engine:

* Each worker has a reader word in shared memory: 0 outside a read section, otherwise the phase
  bit of ``gp_ctr`` it saw on entry, plus a nesting count.  Entry publishes the word with a full
  barrier (the C module's exchange) before the protected loads; exit stores the decremented word.
* ``synchronize_rcu`` flips the phase bit twice, each time waiting until no reader is inside a
  section entered in the old phase: two flips, so a reader that read ``gp_ctr`` just before a flip
  and published just after cannot be missed (liburcu's argument).
* Grace periods are numbered the kernel's way (``rcu_seq``): ``gp_seq`` is odd while one runs and
  grows by 2 per completed grace period.  ``get_state_synchronize_rcu`` returns the value that
  ``gp_seq`` must reach for a full grace period to have elapsed since the call.

A worker marked dead (by the watchdog) counts as quiescent.  With the ``rcu none`` variant the
snapshot is already complete and a grace period waits for no reader: a broken RCU used to prove
the oracles catch it (a reader then sees its table's page go back to the pool, or grace periods
complete under it: the pipe age).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

from ..substrate import _prim
from ..substrate.locks import LockClass
from ..substrate.observe import Observers
from ..substrate.reservoir import Reservoir
from ..substrate.state import RCU, READER, SwapShm

__all__ = ["Rcu", "RCU_GP_PHASE", "ReaderSupervisor"]

RCU_GP_PHASE = 1 << 32
RCU_NEST_MASK = RCU_GP_PHASE - 1

# Byte offsets of the header words and of a reader record's words (generated from the dtypes).
_GP_LOCK, _GP_CTR, _GP_SEQ, _GPS = 8 * RCU.gp_lock, 8 * RCU.gp_ctr, 8 * RCU.gp_seq, 8 * RCU.gps
_GP_NS_TOTAL, _GP_NS_MAX = 8 * RCU.gp_ns_total, 8 * RCU.gp_ns_max
_R_SECTIONS, _R_DEAD, _R_PIPE = READER.sections, 8 * READER.dead, READER.pipe
_RCU_GP_LOCK = int(LockClass.RCU_GP_LOCK)


class ReaderSupervisor(Protocol):
    """Who can tell a dead reader and an aborting run (the manager's watchdog)."""

    def reader_alive(self, wid: int) -> bool:
        """False once worker ``wid`` is dead: a reader that died in its section is quiescent."""

    def aborting(self) -> bool:
        """True when the run is being aborted: a grace period stops waiting on a stopped reader."""


class Rcu:
    """One process's handle on the RCU state of a run."""

    def __init__(self, shm: SwapShm, observers: Observers, broken: bool = False,
                 supervisor: ReaderSupervisor | None = None) -> None:
        self.rr = shm.rr
        self.rq = shm.rq
        self.obs = observers
        self.broken = broken
        self.hdr = shm.rcu_hdr_dt.itemsize
        self.rec = READER.size * 8
        self.n = shm.geo.n_workers
        self.my = 0
        self.nest = 0
        # This process's grace-period latencies, for percentiles: a bounded sample (a list grew
        # by one int per grace period, every 20 ms, for the whole run: the manager's slow leak).
        self.latencies_ns = Reservoir()
        self.supervisor = supervisor
        self._gp_step = 0                   # poll_grace_period: 0 none under way, 1/2 after the 1st/2nd flip
        self._gp_start = 0

    def set_worker(self, wid: int) -> None:
        self.my = self.hdr + wid * self.rec

    # -- readers ------------------------------------------------------------------------------------
    def read_lock(self) -> None:
        """``rcu_read_lock()``: publish the phase seen on entry, with a full barrier."""
        if self.nest == 0:
            self.rr.xchg(self.my, (self.rr.load(_GP_CTR) & RCU_GP_PHASE) | 1)
            self.rq[(self.my >> 3) + _R_SECTIONS] += 1
        else:
            self.rr.store(self.my, self.rr.load(self.my) + 1)
        self.nest += 1

    def read_unlock(self) -> None:
        """``rcu_read_unlock()``."""
        self.nest -= 1
        self.rr.store(self.my, 0 if self.nest == 0 else self.rr.load(self.my) - 1)

    def pipe_record(self, age: int) -> None:
        self.rq[(self.my >> 3) + _R_PIPE + min(age, 4)] += 1

    # -- grace periods --------------------------------------------------------------------------------
    def gp_seq(self) -> int:
        return self.rr.load(_GP_SEQ)

    def completed(self) -> int:
        """Completed grace periods so far."""
        return self.rr.load(_GPS)

    def get_state_synchronize_rcu(self) -> int:
        """The ``gp_seq`` a full grace period from now will have reached (``rcu_seq_snap``)."""
        if self.broken:
            return 0
        return (self.rr.load(_GP_SEQ) + 3) & ~1

    def poll_state_synchronize_rcu(self, cookie: int) -> bool:
        return self.rr.load(_GP_SEQ) >= cookie

    def synchronize_rcu(self, timeout_s: float = 30.0) -> None:
        """Wait for a full grace period (two phase flips, liburcu memb)."""
        if self.nest:
            raise RuntimeError("synchronize_rcu inside an RCU read-side critical section")
        self.finish_grace_period(timeout_s)     # one this process started with poll_grace_period first
        start = _prim.now_ns()
        self.rr.lock(_GP_LOCK, _RCU_GP_LOCK)
        try:
            self.rr.fetch_add(_GP_SEQ, 1)
            if not self.broken:             # --rcu none: the grace period does not wait for readers
                for _ in range(2):
                    self.rr.xchg(_GP_CTR, self.rr.load(_GP_CTR) ^ RCU_GP_PHASE)
                    self._wait_for_readers(timeout_s)
            self._complete(start)
        finally:
            self.rr.unlock(_GP_LOCK, _RCU_GP_LOCK)

    def poll_grace_period(self) -> bool:
        """Advance a grace period as far as the readers allow now, without waiting; start one if none
        runs.  True when one completed in this call.

        The manager's loop runs its grace periods this way: a reader that waits long inside its
        section (a torture reader) holds the grace period back, as in the kernel, but not the
        manager's other duties (the sleeping allocations it serves).  Only one process may run
        grace periods this way (the manager); ``synchronize_rcu`` in that process first finishes
        the one under way.
        """
        if self._gp_step == 0:
            self._gp_start = _prim.now_ns()
            self.rr.lock(_GP_LOCK, _RCU_GP_LOCK)
            self.rr.fetch_add(_GP_SEQ, 1)
            self.rr.xchg(_GP_CTR, self.rr.load(_GP_CTR) ^ RCU_GP_PHASE)
            self.rr.unlock(_GP_LOCK, _RCU_GP_LOCK)
            self._gp_step = 1
        while self.broken or self._readers_clear():
            self.rr.lock(_GP_LOCK, _RCU_GP_LOCK)
            if self._gp_step == 1 and not self.broken:
                self.rr.xchg(_GP_CTR, self.rr.load(_GP_CTR) ^ RCU_GP_PHASE)
                self._gp_step = 2
                self.rr.unlock(_GP_LOCK, _RCU_GP_LOCK)
                continue
            self._complete(self._gp_start)
            self.rr.unlock(_GP_LOCK, _RCU_GP_LOCK)
            self._gp_step = 0
            return True
        return False

    @property
    def grace_period_under_way(self) -> bool:
        """This process started a grace period with ``poll_grace_period`` that has not completed."""
        return self._gp_step != 0

    def finish_grace_period(self, timeout_s: float = 30.0) -> None:
        """See a grace period started with ``poll_grace_period`` through (waiting for its readers)."""
        deadline = time.monotonic() + timeout_s
        while self._gp_step and not self.poll_grace_period():
            sup = self.supervisor
            if sup is not None and sup.aborting():
                raise _prim.Aborted("grace period abandoned: the run is aborting")
            if time.monotonic() > deadline:
                raise TimeoutError("synchronize_rcu: a reader stuck in a read section")
            time.sleep(0.0001)

    def _readers_clear(self) -> bool:
        """No reader is in a section entered before the last phase flip (or it is dead)."""
        phase = self.rr.load(_GP_CTR) & RCU_GP_PHASE
        for w in range(self.n):
            off = self.hdr + w * self.rec
            ctr = self.rr.load(off)
            if ctr & RCU_NEST_MASK and (ctr & RCU_GP_PHASE) != phase and not self.rr.load(off + _R_DEAD):
                return False
        return True

    def _complete(self, start: int) -> None:
        """The grace period ends (gp_lock held): the counters, its latency, the observers."""
        self.rr.fetch_add(_GP_SEQ, 1)
        self.rr.fetch_add(_GPS, 1)
        took = _prim.now_ns() - start
        self.latencies_ns.append(took)
        self.rr.fetch_add(_GP_NS_TOTAL, took)
        if took > self.rr.load(_GP_NS_MAX):
            self.rr.store(_GP_NS_MAX, took)
        for hook in self.obs.grace_period:
            hook(self.rr.load(_GP_SEQ), took)

    def _wait_for_readers(self, timeout_s: float) -> None:
        phase = self.rr.load(_GP_CTR) & RCU_GP_PHASE
        deadline = None
        for w in range(self.n):
            off = self.hdr + w * self.rec
            spins = 0
            while True:
                ctr = self.rr.load(off)
                if not ctr & RCU_NEST_MASK or (ctr & RCU_GP_PHASE) == phase or self.rr.load(off + _R_DEAD):
                    break
                spins += 1
                if spins < 100:
                    os.sched_yield()
                    continue
                if deadline is None:
                    deadline = time.monotonic() + timeout_s
                elif time.monotonic() > deadline:
                    raise TimeoutError(f"synchronize_rcu: reader of worker {w} stuck in a read section")
                sup = self.supervisor
                if spins % 64 == 0 and sup is not None:
                    if not sup.reader_alive(w):
                        self.rr.store(off + _R_DEAD, 1)
                        break
                    if sup.aborting():
                        raise _prim.Aborted(f"grace period abandoned: the run is aborting (worker {w} "
                                            "is in a read section)")
                time.sleep(0.0001)
