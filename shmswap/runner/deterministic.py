"""The deterministic scheduler: exactly one CPU runs between preemption points (DESIGN §4).

Every CPU (and the manager, whose work -- grace periods, deferred frees, discard, reclaim -- is
one more schedulable task) runs in its own Python thread of this process.  The ``Scheduler`` is an
observer: at every preemption point (the C lock's ``SP_LOCK`` / ``SP_TRYLOCK`` / ``SP_UNLOCK``,
the model's ``TABLE_SLEEP``, ``TABLE_WAKE``, reclaim, discard and reader windows, and its own
``OP`` point before each operation) the running thread parks on its own lock and the scheduler
hands control to the task its *policy* picks (a seeded random choice, PCT priorities, a recorded
schedule or a script).  Handing control is "release the next thread's lock, wait on mine"; the
resumed thread makes its task current (``SwapSystem.switch_to``: the C lock owner, the lockstat
block, the RCU reader record) and restores its RCU nesting, so the process-wide state of the
C module is always the running task's.

A task is runnable unless its next step is to take a lock another task holds (the lock word is
read from the region the lock class lives in) or to start a grace period while another task is
inside an RCU read section: nobody ever spins.  No runnable task with some task blocked is a
deadlock, reported with who waits for what.  The sleeping table allocation is served in this
process between the ``TABLE_SLEEP`` and ``TABLE_WAKE`` points, so a sleep, the wake-up (and where
it wakes) and the migration after it are steps in the schedule like any other.

The trace is one ``(step, task, kind, a, b)`` per step: the task chosen and the point it resumes
from (task ``n`` is the manager, ``n`` = the number of CPUs).  It depends on nothing but the
configuration, the seed and the policy: no clock, no address, no thread identity.
"""

from __future__ import annotations

import _thread
import random
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..mm.cluster import CI_BYTES
from ..mm.rcu import RCU_NEST_MASK
from ..model import Model
from ..substrate import _prim
from ..substrate.locks import LockClass
from ..substrate.observe import Observer
from ..substrate.preempt import Point

__all__ = ["Scheduler", "SchedTask", "OP", "KIND_NAMES", "RandomPolicy", "PCTPolicy", "ChoicePolicy",
           "FirstPolicy", "Divergence", "SchedAbort", "ScheduleFailure", "task_name", "describe_point",
           "lock_region"]

OP = 30                 # the scheduler's own point: before each operation of a task (a = its op number)
_LOCK, _TRYLOCK, _UNLOCK = int(Point.LOCK), int(Point.TRYLOCK), int(Point.UNLOCK)
_RCU_GP = int(LockClass.RCU_GP_LOCK)
_MASK64 = (1 << 64) - 1

KIND_NAMES = {int(Point.LOCK): "lock", int(Point.UNLOCK): "unlock", int(Point.TRYLOCK): "trylock",
              int(Point.TABLE_SLEEP): "table_sleep", int(Point.TABLE_WAKE): "table_wake",
              int(Point.RECLAIM_WINDOW): "reclaim_window", int(Point.DISCARD_WINDOW): "discard_window",
              int(Point.READER): "reader", OP: "op"}


class SchedAbort(BaseException):
    """Raised in a parked task's thread when the run is being torn down."""


class Divergence(Exception):
    """A recorded or scripted schedule cannot be followed (the code or the schedule changed)."""


class ScheduleFailure(Exception):
    """A task crashed, a deadlock, or a script error: the run stopped (``Scheduler.failure``)."""


def task_name(idx: int, ncpus: int) -> str:
    return "manager" if idx == ncpus else f"cpu{idx}"


def lock_region(shm, cls: int):
    """The region a lock of class ``cls`` lives in (its word: state low, owner + 1 high)."""
    c = LockClass(cls)
    if c == LockClass.CI_LOCK:
        return shm.cr
    if c in (LockClass.SI_LOCK, LockClass.GLOBAL_CLUSTER_LOCK, LockClass.SWAP_AVAIL_LOCK):
        return shm.devr
    return {LockClass.LOCAL_LOCK: shm.pr, LockClass.SLAB_LOCK: shm.sr, LockClass.RCU_GP_LOCK: shm.rr,
            LockClass.HANDOFF_LOCK: shm.hr, LockClass.FOLIO_LOCK: shm.fr}[c]


def describe_point(kind: int, a, b, spc_bytes: int | None = None) -> str:
    name = KIND_NAMES.get(kind, str(kind))
    if kind in (_LOCK, _TRYLOCK, _UNLOCK):
        cls = LockClass(a).label
        if a == LockClass.CI_LOCK and spc_bytes:
            return f"{name} {cls} cluster {b // spc_bytes}"
        return f"{name} {cls} +{b}"
    if kind == OP:
        return f"op {a}"
    return f"{name} {a} {b}"


@dataclass
class SchedTask:
    """One schedulable task: a CPU (its workload or script) or the manager."""

    idx: int
    name: str
    wid: int
    program: object                      # .pop() -> callable | None (finished); .idle() -> bool
    sem: object = field(default_factory=_thread.allocate_lock)
    pending: tuple = (OP, 0, 0)
    done: bool = False
    nest: int = 0
    ops: int = 0
    thread: threading.Thread | None = None
    ident: int = -1
    background: bool = False             # the manager in a workload run: never keeps a run alive alone


# -- policies --------------------------------------------------------------------------------------------

class FirstPolicy:
    """The lowest-numbered runnable task (scripts after their last step)."""

    name = "first"

    def choose(self, sched: Scheduler, runnable: list[SchedTask], cur: SchedTask | None) -> SchedTask:
        return runnable[0]


class RandomPolicy:
    """A seeded uniform choice among the runnable tasks."""

    name = "random"

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)

    def choose(self, sched, runnable, cur):
        return runnable[self.rng.randrange(len(runnable))] if len(runnable) > 1 else runnable[0]


class PCTPolicy:
    """PCT (Burckhardt et al., ASPLOS 2010): random distinct priorities, the highest-priority
    runnable task runs; at ``depth`` - 1 random steps in ``[1, steps]`` the running task drops
    below every other.  Finds a bug of depth d with probability >= 1/(n k^(d-1))."""

    name = "pct"

    def __init__(self, seed: int, depth: int = 3, steps: int = 2000) -> None:
        self.seed, self.depth, self.steps = seed, depth, steps
        self.rng = random.Random(seed)
        self.prio: dict[int, float] = {}
        self.change = sorted(self.rng.sample(range(1, max(steps, depth) + 1), max(depth - 1, 0)))
        self.low = 0.0

    def choose(self, sched, runnable, cur):
        prio = self.prio
        for t in runnable:
            if t.idx not in prio:
                prio[t.idx] = 1.0 + self.rng.random()
        best = max(runnable, key=lambda t: prio[t.idx])
        while self.change and sched.step + 1 >= self.change[0]:
            self.change.pop(0)
            self.low -= 1.0
            prio[best.idx] = self.low
            best = max(runnable, key=lambda t: prio[t.idx])
        return best


class ChoicePolicy:
    """Follow a list of task numbers; ``strict``: a choice that is not runnable is a ``Divergence``,
    else the fallback decides that step.  After the list, the fallback."""

    name = "choices"

    def __init__(self, choices: list[int], fallback=None, strict: bool = True, start: int = 0) -> None:
        self.choices = choices
        self.fallback = fallback or FirstPolicy()
        self.strict = strict
        self.start = start

    def choose(self, sched, runnable, cur):
        i = sched.step - self.start
        if 0 <= i < len(self.choices):
            want = self.choices[i]
            for t in runnable:
                if t.idx == want:
                    return t
            if self.strict:
                raise Divergence(f"step {sched.step + 1}: the schedule runs "
                                 f"{task_name(want, sched.ncpus)}, which {sched.why_not(want)}")
        return self.fallback.choose(sched, runnable, cur)


# -- the scheduler ---------------------------------------------------------------------------------------------

class Scheduler(Observer):
    """Runs ``model``'s tasks one at a time, the next chosen by ``policy`` at every point.

    ``add_task(idx, wid, program)`` for each CPU and the manager, then ``run()``; afterwards
    ``trace`` (if kept), ``choices``, ``digest`` and ``failure`` (None, or why it stopped).
    """

    def __init__(self, model: Model, policy, *, keep_trace: bool = True, max_steps: int | None = None) -> None:
        self.model = model
        self.system = model.system
        self.shm = model.system.shm
        self.rcu = model.system.rcu
        self.ncpus = model.cpus
        self.policy = policy
        self.keep_trace = keep_trace
        self.max_steps = max_steps
        self.tasks: list[SchedTask] = []
        self.cur: SchedTask | None = None
        self.step = 0
        self.trace: list[tuple] = []
        self.choices: list[int] = []
        self.digest = 0
        self.failure: str | None = None
        self.failure_kind: str | None = None
        self.aborting = False
        self.closing = False
        self.finished = False
        self.wake_plan: dict[int, int] = {}
        self._fg_ran = True
        self.fail_atomic = 0
        self.fail_sleeping = 0
        self.on_step: Callable[[Scheduler, SchedTask], None] | None = None
        # The stop signals received (Ctrl-C, SIGTERM: ``driver.StopSignals.received``): once there
        # are ``stop_after`` of them the run stops at the next step ("interrupted").  A workload run
        # stops at the first by itself (no CPU begins another operation); this is for the second.
        self.stop: list[int] = []
        self.stop_after = 1
        self._main = _thread.allocate_lock()
        self._main.acquire()
        # Each device has its own cluster, device and slab regions; the point names a lock's class
        # and offset, not its device (the per-CPU, RCU, handoff and folio regions are shared).
        shms = getattr(model.system, "device_shms", None) or [self.shm]
        self._regions = {int(c): list({id(r): r for r in (lock_region(s, int(c)) for s in shms)}.values())
                         for c in LockClass}

    # -- setup ----------------------------------------------------------------------------------------------
    def add_task(self, idx: int, wid: int, program, background: bool = False) -> SchedTask:
        t = SchedTask(idx, task_name(idx, self.ncpus), wid, program, background=background)
        t.sem.acquire()
        self.tasks.append(t)
        self.tasks.sort(key=lambda x: x.idx)
        return t

    def task(self, idx: int) -> SchedTask:
        for t in self.tasks:
            if t.idx == idx:
                return t
        raise KeyError(idx)

    # -- steering hooks (a script's "wake cpu0 on cpu1", "fail atomic 1") ------------------------------------
    def wake_cpu(self, wid: int, cpu: int) -> int | None:
        return self.wake_plan.pop(wid, None)

    def fail_table_alloc(self, kind: str) -> bool:
        if kind == "atomic" and self.fail_atomic:
            self.fail_atomic -= 1
            return True
        if kind == "sleeping" and self.fail_sleeping:
            self.fail_sleeping -= 1
            return True
        return False

    # -- runnability -------------------------------------------------------------------------------------------
    def lock_holder(self, cls: int, off: int, me: int = -1) -> int:
        """The worker holding the lock word (-1 free).

        With several devices the point does not say which device's word ``off`` is: a worker
        other than ``me`` holding it on any device large enough counts (a task is never run into
        a held lock, which would spin; at worst it waits for the same lock of another device).
        """
        mine = -1
        for region in self._regions[cls]:
            if off + 8 > region.nbytes:
                continue
            word = region.load(off)
            if word & 0xFFFFFFFF:
                holder = (word >> 32) - 1
                if holder != me:
                    return holder
                mine = holder
        return mine

    def _reader_in_section(self, me_wid: int) -> int:
        rcu = self.rcu
        rr = rcu.rr
        for w in range(rcu.n):
            if w != me_wid and rr.load(rcu.hdr + w * rcu.rec) & RCU_NEST_MASK:
                return w
        return -1

    def runnable(self, t: SchedTask) -> bool:
        if t.done:
            return False
        kind = t.pending[0]
        if kind == OP:
            if t.background and not self._fg_ran:
                return False                          # the manager's loop: once per CPU step at most
            return not t.program.idle()
        if kind == _LOCK:
            cls, off = t.pending[1], t.pending[2]
            holder = self.lock_holder(cls, off, t.wid)
            if holder != -1 and holder != t.wid:      # one's own lock: let the C lock report the self-deadlock
                return False
            if cls == _RCU_GP and self._reader_in_section(t.wid) != -1:
                return False
        return True

    def why_not(self, idx: int) -> str:
        try:
            t = self.task(idx)
        except KeyError:
            return "does not exist"
        if t.done:
            return "has finished"
        kind, a, b = t.pending
        if kind == OP and t.program.idle():
            return "has nothing to do"
        if kind == _LOCK:
            holder = self.lock_holder(a, b, t.wid)
            if holder != -1:
                return f"waits to {self.describe(t.pending)} held by {self.wid_name(holder)}"
            if a == _RCU_GP:
                return f"waits for the RCU reader of {self.wid_name(self._reader_in_section(t.wid))}"
        return f"is at {self.describe(t.pending)}"

    def wid_name(self, wid: int) -> str:
        for t in self.tasks:
            if t.wid == wid:
                return t.name
        return f"worker {wid}"

    def describe(self, point: tuple) -> str:
        return describe_point(point[0], point[1], point[2], CI_BYTES)

    # -- the preemption point ---------------------------------------------------------------------------------
    def sched_point(self, kind: int, a, b) -> None:
        t = self.cur
        if t is None or t.ident != _thread.get_ident():
            return                                    # the main thread (setup, checks): not scheduled
        if self.aborting:
            raise SchedAbort()
        t.pending = (kind, a, b)
        self._switch(t)

    def _switch(self, t: SchedTask) -> None:
        nxt = self._choose(t)
        if nxt is None:                               # quiescent: every task idle; back to the main thread
            self.finished = True
            self.cur = None
            t.nest = self.rcu.nest
            self._main.release()
            self._park(t)
            return
        if nxt is not t:
            t.nest = self.rcu.nest
            self.cur = nxt
            nxt.sem.release()
            self._park(t)

    def _park(self, t: SchedTask) -> None:
        t.sem.acquire()
        if self.aborting or (self.closing and t.pending[0] != OP):
            raise SchedAbort()
        self.system.switch_to(self.model.tasks[t.wid])
        self.rcu.nest = t.nest

    def _choose(self, cur: SchedTask | None) -> SchedTask | None:
        """Pick the next task (raises SchedAbort after recording a failure)."""
        if self.closing:
            return None
        prepare = getattr(self.policy, "prepare", None)
        if prepare is not None:
            try:
                prepare(self)
            except Divergence as e:
                self._fail("divergence", f"diverged: {e}")
            except ScheduleFailure as e:
                self._fail("script", str(e))
        runnable = [x for x in self.tasks if self.runnable(x)]
        if runnable and all(x.background and x.pending[0] == OP for x in runnable) and any(
                not x.done and not x.background for x in self.tasks) and not self._fg_ran:
            runnable = []                             # only the idle manager could run: the CPUs are stuck
        if not runnable:
            live = [x for x in self.tasks if not x.done and not x.background]
            if all(x.pending[0] == OP and x.program.idle() for x in live):
                return None
            self._fail("deadlock", "deadlock: " + "; ".join(
                f"{x.name} {self.why_not(x.idx)}" for x in self.tasks if not x.done))
        if self.max_steps is not None and self.step >= self.max_steps:
            self._fail("limit", f"step limit {self.max_steps} reached")
        if len(self.stop) >= self.stop_after:
            self._fail("interrupted", f"interrupted by {' and '.join(signal.Signals(s).name for s in self.stop)} "
                       f"at step {self.step}")
        try:
            nxt = self.policy.choose(self, runnable, cur)
        except Divergence as e:
            self._fail("divergence", f"diverged: {e}")
        except ScheduleFailure as e:
            self._fail("script", str(e))
        if nxt is None:
            return None
        self.step += 1
        kind, a, b = nxt.pending
        if self.keep_trace:
            self.trace.append((self.step, nxt.idx, kind, a, b))
        self.choices.append(nxt.idx)
        self._fg_ran = not nxt.background
        self.digest = ((((self.digest * 1000003) ^ nxt.idx) * 1000003 ^ kind) * 1000003 ^ (a & _MASK64)) \
            * 1000003 ^ (b & _MASK64)
        self.digest &= _MASK64
        if self.on_step is not None:
            self.on_step(self, nxt)
        return nxt

    def _fail(self, kind: str, message: str):
        if self.failure is None:
            self.failure, self.failure_kind = message, kind
        self.aborting = True
        self.cur = None
        self._main.release()
        raise SchedAbort()

    # -- the threads ------------------------------------------------------------------------------------------
    def _run_program(self, t: SchedTask) -> None:
        """Run ``t``'s operations, one scheduling point (``OP``) before each but the first."""
        while True:
            if t.ops:
                t.pending = (OP, t.ops, 0)
                self._switch(t)
            if self.closing:
                break
            op = t.program.pop()
            if op is None:
                break
            t.ops += 1
            op()

    def _body(self, t: SchedTask) -> None:
        t.ident = _thread.get_ident()
        t.sem.acquire()
        try:
            if self.aborting or self.closing:
                return
            self.system.switch_to(self.model.tasks[t.wid])
            self.rcu.nest = 0
            self._run_program(t)
        except SchedAbort:
            return
        except BaseException as e:   # noqa: BLE001 - a crashed task stops the run, with its error
            t.done = True
            if self.failure is None:
                self.failure, self.failure_kind = f"{t.name} crashed: {type(e).__name__}: {e}", "crash"
            self.aborting = True
            self.cur = None
            self._main.release()
            return
        self._end_task(t)

    def _end_task(self, t: SchedTask) -> None:
        """``t`` ran out of operations: hand control to the next task, or back when none is left."""
        t.done = True
        if self.closing or self.aborting:
            return
        try:
            nxt = self._choose(None)
        except SchedAbort:
            return
        if nxt is None:
            self.finished = True
            self._hand_back()
        else:
            self._hand_over(nxt)

    def _hand_back(self) -> None:
        """The schedule is done: control goes back to the thread that called ``run``."""
        self.cur = None
        self._main.release()

    def _hand_over(self, nxt: SchedTask) -> None:
        self.cur = nxt
        nxt.sem.release()

    def run(self) -> None:
        """Run every task to the end (or the first failure); returns in the main thread."""
        main_task = self.system.current
        for t in self.tasks:
            t.thread = threading.Thread(target=self._body, args=(t,), name=f"shmswap-{t.name}", daemon=True)
            t.thread.start()
        for t in self.tasks:            # every thread has its identity before anyone runs
            while t.ident == -1:
                _prim.sched_point(0)
                threading.Event().wait(0.0005)
        first = self._first()
        if first is not None:
            self.cur = first
            first.sem.release()
            self._main.acquire()
        self._teardown()
        if main_task is not None:
            self.system.switch_to(main_task)
        self.rcu.nest = 0

    def _first(self) -> SchedTask | None:
        try:
            return self._choose(None)
        except SchedAbort:
            return None

    def _teardown(self) -> None:
        """Let every parked thread go, one at a time: idle ones leave at their op point, others abort."""
        self.cur = None
        self.closing = True
        for t in self.tasks:
            if t.thread is not None and t.thread.is_alive():
                if t.sem.locked():
                    t.sem.release()
                t.thread.join(10)

