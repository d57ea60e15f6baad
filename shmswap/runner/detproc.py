"""The deterministic scheduler with real processes: every CPU and the manager an OS process (DESIGN §4).

``shmswap run --deterministic --processes``.  The schedule is the threads mode's (deterministic.py)
step for step: the same policy, the same runnable test, the same trace, final state and check, bit
for bit.  Only where the tasks live differs: the driver creates the model (``Model``, the owner of
the segments, built exactly as the threads mode builds it) and starts one process per task, each
attached to the segments (``Model.attach``) as its worker.  Control passes between processes at the
same preemption points, through a small shared block (``SharedControl``): the *running task* word,
every task's pending point and ``done`` flag, the step, the trace digest, the operation budget.
The running process evaluates the policy itself, writes the next task, posts that task's semaphore
(a futex underneath) and sleeps on its own: one process runs at a time and nobody spins.

A process plays one task, so the C module's current task and the RCU nesting never switch.  What
the threads mode keeps in its one process and every task uses in turn moves with control instead:
at every hand-off the running process stores, and the next one loads, the policy's state (its RNG,
PCT's priorities) and each device slab's failslab RNG.  What is a task's own (the device of its
last allocation, ``alloc_si``; the reader oracle's generation per worker) stays in its process, as
the threads mode keeps it with the task.  A folio freed by a process for a worker it does not
play is queued for its owner (``Folios.foreign_free``), who takes it back into its idle set when it
next runs, in the order the threads mode would have.  The WARNs each process saw are merged by step.

Failures: a task's crash, a deadlock or the step limit stop the run as in the threads mode.  The
driver is a watchdog: a task process that dies, or a run that makes no step for ``stall_s`` seconds,
stops the run with a clear failure; every process is then released (or killed) and the segments
unlinked.  A task process whose driver is gone exits.  Only workload runs (``workload N`` and a
``then`` policy, what ``shmswap run --deterministic`` runs) are played by processes; recordings and
race scripts replay in the threads mode, which follows the same schedule.
"""

from __future__ import annotations

import array
import os
import pickle
import random
import signal
import time
from collections.abc import Callable

import multiprocess as mp
from multiprocess import resource_tracker

from workers.workload import Workload

from ..config import Config
from ..model import Model
from ..substrate import _prim
from ..substrate.files import write_atomically
from ..substrate.lifeline import Lifeline
from ..substrate.proc import set_comm
from .deterministic import OP, SchedAbort, ScheduleFailure, Scheduler, task_name
from .driver import join_or_kill
from .script import (
    CHECKPOINT_EVERY,
    ManagerLoop,
    Script,
    ScriptRun,
    WorkloadProgram,
    _fallback,
    check_summary,
    deterministic_script,
    parse_script,
    record_text,
    state_digest,
)

__all__ = ["run_processes", "run_deterministic_processes", "SharedControl", "ProcScheduler", "ProcessDied",
           "release_and_warnings"]

DRIVER = -1                     # the running word when control is back with the driver
PARK_POLL_S = 0.25              # a parked process looks for its driver this often
START_TIMEOUT_S = 60.0
STALL_S = 60.0                  # no step for this long: the run is declared stuck
XFER_BYTES = 1 << 16
FAIL_BYTES = 1 << 12
RING = 1 << 14                  # folio ids freed for one owner while it was parked
RNG_WORDS = 1 + 625             # an RNG slot: its version, then the Mersenne Twister's words and position
RNG_SLOTS = 8

# Header words of the shared block.
H_RUNNING, H_STEP, H_DIGEST, H_FG_RAN, H_ABORTING, H_CLOSING, H_FINISHED, H_BUDGET = range(8)
H_XFER_VER, H_XFER_LEN, H_FAIL_LEN, H_FAIL_KIND, H_STOP = range(8, 13)
HDR = 16
TASK_WORDS = 4                  # pending kind, a, b; done
FAIL_KINDS = ("divergence", "script", "deadlock", "limit", "crash", "died", "stuck", "interrupted")


class ProcessDied(RuntimeError):
    """The driver of a processes-mode run is gone (raised in a task process)."""


class SharedControl:
    """The block every process of a run shares: header words, per-task words, the hand-off state,
    the failure text, one folio ring per worker, and a semaphore per task and for the driver."""

    def __init__(self, ctx, ntasks: int) -> None:
        self.ntasks = ntasks
        self.task0 = HDR
        self.ring0 = HDR + TASK_WORDS * ntasks
        self.raw = ctx.RawArray("q", self.ring0 + ntasks * (2 + RING))
        self.xfer_raw = ctx.RawArray("B", XFER_BYTES)
        self.rng_raw = ctx.RawArray("Q", RNG_SLOTS * RNG_WORDS)
        self.fail_raw = ctx.RawArray("B", FAIL_BYTES)
        self.sems = [ctx.Semaphore(0) for _ in range(ntasks)]
        self.driver = ctx.Semaphore(0)
        self._views()

    def _views(self) -> None:
        self.q = memoryview(self.raw).cast("B").cast("q")
        self.u = memoryview(self.raw).cast("B").cast("Q")
        self.rngs = memoryview(self.rng_raw).cast("B").cast("Q")
        self.xfer = memoryview(self.xfer_raw).cast("B")
        self.fail = memoryview(self.fail_raw).cast("B")

    def __getstate__(self) -> dict:
        d = dict(self.__dict__)
        for k in ("q", "u", "rngs", "xfer", "fail"):
            d.pop(k, None)
        return d

    def __setstate__(self, d: dict) -> None:
        self.__dict__.update(d)
        self._views()

    def wake(self, to: int) -> None:
        (self.driver if to == DRIVER else self.sems[to]).release()


def _word(i: int):
    return property(lambda self: self.ctl.q[i], lambda self, v: self.ctl.q.__setitem__(i, int(v)))


def _flag(i: int):
    return property(lambda self: bool(self.ctl.q[i]), lambda self, v: self.ctl.q.__setitem__(i, int(bool(v))))


class SharedTask:
    """A task as every process sees it: its pending point and ``done`` live in the shared block."""

    def __init__(self, ctl: SharedControl, idx: int, ncpus: int, wid: int, program, background: bool) -> None:
        self.ctl = ctl
        self.idx, self.wid, self.program, self.background = idx, wid, program, background
        self.name = task_name(idx, ncpus)
        self.base = ctl.task0 + TASK_WORDS * idx
        self.ops = 0

    @property
    def pending(self) -> tuple:
        q, b = self.ctl.q, self.base
        return (q[b], q[b + 1], q[b + 2])

    @pending.setter
    def pending(self, p: tuple) -> None:
        q, b = self.ctl.q, self.base
        q[b], q[b + 1], q[b + 2] = int(p[0]), int(p[1]), int(p[2])

    @property
    def done(self) -> bool:
        return bool(self.ctl.q[self.base + 3])

    @done.setter
    def done(self, v: bool) -> None:
        self.ctl.q[self.base + 3] = int(bool(v))


class Elsewhere:
    """The program of a task another process plays: a workload or the manager's loop, never idle
    (the only programs this mode runs)."""

    def idle(self) -> bool:
        return False


class SharedBudget:
    """The operation budget the CPUs share (script.Budget), in the shared block."""

    def __init__(self, ctl: SharedControl) -> None:
        self.ctl = ctl

    @property
    def left(self) -> int:
        return self.ctl.q[H_BUDGET]

    @left.setter
    def left(self, v: int) -> None:
        self.ctl.q[H_BUDGET] = v

    @property
    def stop(self) -> bool:
        """The driver got a stop signal: no CPU begins another operation (a word of its own: the
        running process's read-modify-write of the budget would lose the driver's store)."""
        return bool(self.ctl.q[H_STOP])


class ProcScheduler(Scheduler):
    """The threads mode's ``Scheduler`` with its state in the shared block: ``me`` is the task this
    process plays (None: the driver, which makes the first choice and watches)."""

    step = _word(H_STEP)
    _fg_ran = _flag(H_FG_RAN)
    aborting = _flag(H_ABORTING)
    closing = _flag(H_CLOSING)
    finished = _flag(H_FINISHED)

    def __init__(self, model: Model, policy, ctl: SharedControl, me: int | None, *, max_steps: int | None = None,
                 driver_pid: int | None = None) -> None:
        self.ctl = ctl
        self.me = me
        self.active = False
        super().__init__(model, policy, keep_trace=True, max_steps=max_steps)
        self.checkpoints: list[tuple] = []
        self.warned: list[tuple[int, str]] = []      # (step, WARN) seen by this process during the schedule
        self.xfer_seen = 0
        self.rng_seen: dict[int, int] = {}            # per RNG slot: the version this process holds
        self.rng_loaded: dict[int, tuple] = {}        # and its words then (unchanged: not stored again)
        self.started_at = 0.0
        self.schedule_s = 0.0                         # the driver's: from the first hand-off to the end
        if len(self._rngs()) > RNG_SLOTS:
            raise ScheduleFailure(f"more than {RNG_SLOTS} RNGs to hand over (a policy's and each device's slab's)")
        self.lifeline = Lifeline(driver_pid, every_s=PARK_POLL_S) if driver_pid else None
        ncpus = self.ncpus
        for idx in range(ncpus + 1):
            wid = idx if idx < ncpus else model.manager_wid
            self.tasks.append(SharedTask(ctl, idx, ncpus, wid, Elsewhere(), background=idx == ncpus))
        self.mine = self.tasks[me] if me is not None else None

        def on_step(s: Scheduler, t) -> None:
            if s.step % CHECKPOINT_EVERY == 0:
                self.checkpoints.append((s.step, s.digest, t.idx, *t.pending))
        self.on_step = on_step

    # -- the shared words the base class keeps as attributes ------------------------------------------
    @property
    def digest(self) -> int:
        return self.ctl.u[H_DIGEST]

    @digest.setter
    def digest(self, v: int) -> None:
        self.ctl.u[H_DIGEST] = v & 0xFFFFFFFFFFFFFFFF

    @property
    def failure(self) -> str | None:
        n = self.ctl.q[H_FAIL_LEN]
        return bytes(self.ctl.fail[:n]).decode(errors="replace") if self.ctl.q[H_FAIL_KIND] else None

    @failure.setter
    def failure(self, message: str | None) -> None:
        data = (message or "").encode()[:FAIL_BYTES]
        self.ctl.fail[:len(data)] = data
        self.ctl.q[H_FAIL_LEN] = len(data)

    @property
    def failure_kind(self) -> str | None:
        k = self.ctl.q[H_FAIL_KIND]
        return FAIL_KINDS[k - 1] if k else None

    @failure_kind.setter
    def failure_kind(self, kind: str | None) -> None:
        self.ctl.q[H_FAIL_KIND] = FAIL_KINDS.index(kind) + 1 if kind else 0

    def set_failure(self, kind: str, message: str) -> None:
        if self.failure_kind is None:
            self.failure, self.failure_kind = message, kind

    # -- what moves with control ------------------------------------------------------------------------
    def _rngs(self) -> list[random.Random]:
        """Every RNG the threads mode's one process shares between tasks: the policy's, each slab's."""
        return [v for _, v in sorted(self.policy.__dict__.items()) if isinstance(v, random.Random)] + \
            [s.rng for s in self.system.slabs]

    def _save(self) -> None:
        """Store the state the threads mode's one process would carry to the next task: each RNG
        that changed since this process loaded it (its 624 words and position, raw), and a small
        pickle of the rest (the policy's other fields).  Per-task state (``alloc_si``, the
        oracle's generation per worker) stays with the task's own process."""
        ctl = self.ctl
        q, u = ctl.q, ctl.rngs
        gauss = []
        for i, r in enumerate(self._rngs()):
            st = r.getstate()
            gauss.append(st[2])
            if st[1] != self.rng_loaded.get(i):
                base = i * RNG_WORDS
                u[base + 1:base + RNG_WORDS] = array.array("Q", st[1])
                u[base] += 1
                self.rng_seen[i] = u[base]
                self.rng_loaded[i] = st[1]
        rest = {k: v for k, v in self.policy.__dict__.items() if not isinstance(v, random.Random)}
        data = pickle.dumps((rest, gauss), pickle.HIGHEST_PROTOCOL)
        if len(data) > XFER_BYTES:
            raise ScheduleFailure(f"the policy's state ({len(data)} bytes) does not fit the hand-off block")
        ctl.xfer[:len(data)] = data
        q[H_XFER_LEN] = len(data)
        q[H_XFER_VER] += 1
        self.xfer_seen = q[H_XFER_VER]

    def _load(self) -> None:
        ctl = self.ctl
        q, u = ctl.q, ctl.rngs
        if q[H_XFER_VER] == self.xfer_seen:
            return
        self.xfer_seen = q[H_XFER_VER]
        rest, gauss = pickle.loads(ctl.xfer[:q[H_XFER_LEN]])
        self.policy.__dict__.update(rest)
        for i, r in enumerate(self._rngs()):
            base = i * RNG_WORDS
            if u[base] != self.rng_seen.get(i, 0):
                self.rng_seen[i] = u[base]
                words = tuple(u[base + 1:base + RNG_WORDS].tolist())
                self.rng_loaded[i] = words
                r.setstate((3, words, gauss[i]))
            elif r.gauss_next != gauss[i]:
                r.gauss_next = gauss[i]

    def foreign_free(self, owner: int, folio: int) -> None:
        """``Folios.foreign_free``: queue ``folio`` for its owner's idle set."""
        ctl = self.ctl
        base = ctl.ring0 + owner * (2 + RING)
        q = ctl.q
        tail = q[base + 1]
        if tail - q[base] >= RING:
            raise ScheduleFailure(f"{self.wid_name(owner)} did not run while {RING} of its folios were freed")
        q[base + 2 + tail % RING] = folio
        q[base + 1] = tail + 1

    def _take_back_folios(self) -> None:
        ctl, wid = self.ctl, self.mine.wid
        base = ctl.ring0 + wid * (2 + RING)
        q = ctl.q
        head, tail = q[base], q[base + 1]
        if head == tail:
            return
        idle = self.system.folios._free.get(wid)
        if idle is not None:
            for i in range(head, tail):
                idle.add(q[base + 2 + i % RING])
        q[base] = tail

    # -- hand-off ---------------------------------------------------------------------------------------------
    def _hand(self, to: int) -> None:
        if to != self.me:
            self._save()
        self.ctl.q[H_RUNNING] = to
        self.ctl.wake(to)

    def _wait(self) -> None:
        """Sleep until this process's task is chosen (or the run is torn down)."""
        sem = self.ctl.sems[self.me]
        while not sem.acquire(timeout=PARK_POLL_S):
            if self.lifeline is not None and not self.lifeline():
                raise ProcessDied("the driver is gone")

    def _resume(self) -> None:
        self._load()
        self._take_back_folios()

    # -- the threads mode's entry points, between processes ------------------------------------------------
    def sched_point(self, kind: int, a, b) -> None:
        t = self.mine
        if t is None or not self.active:
            return                                    # setup, the end's release: not scheduled
        if self.aborting:
            raise SchedAbort()
        t.pending = (kind, a, b)
        self._switch(t)

    def warn(self, wid: int, message: str) -> None:
        if self.active:
            self.warned.append((self.step, message))

    def _switch(self, t) -> None:
        nxt = self._choose(t)
        if nxt is None:                               # quiescent: back to the driver
            self.finished = True
            self._hand(DRIVER)
            self._park(t)
            return
        if nxt is not t:
            self._hand(nxt.idx)
            self._park(t)

    def _park(self, t) -> None:
        self._wait()
        if self.lifeline is not None and not self.lifeline():
            raise ProcessDied("the driver is gone")   # the tasks hand control on without it: look now and then
        if self.aborting or (self.closing and t.pending[0] != OP):
            raise SchedAbort()
        self._resume()

    def _fail(self, kind: str, message: str):
        self.set_failure(kind, message)
        self.aborting = True
        self.ctl.q[H_RUNNING] = DRIVER
        self.ctl.wake(DRIVER)
        raise SchedAbort()

    def body(self) -> None:
        """The task process's part of the schedule (the threads mode's ``_body``)."""
        t = self.mine
        self.active = True
        try:
            self._wait()
            if self.aborting or self.closing:
                return
            self._resume()
            self._run_program(t)
        except SchedAbort:
            return
        except ProcessDied:
            raise
        except BaseException as e:   # noqa: BLE001 - a crashed task stops the run, with its error
            t.done = True
            self.set_failure("crash", f"{t.name} crashed: {type(e).__name__}: {e}")
            self.aborting = True
            self.ctl.q[H_RUNNING] = DRIVER
            self.ctl.wake(DRIVER)
            return
        finally:
            self.active = False
        self._end_task(t)

    def _hand_back(self) -> None:
        self._hand(DRIVER)

    def _hand_over(self, nxt) -> None:
        self._hand(nxt.idx)

    # -- the end (task process): what it saw, and its share of try_to_unuse ----------------------------------
    def shipment(self) -> tuple:
        return ("ended", self.trace, self.checkpoints, self.warned)


def task_main(cfg: Config, n_workers: int, names, idx: int, ctl: SharedControl, policy, conn, driver_pid: int,
              max_steps: int | None, driver_fds: list[int] = ()) -> None:
    """Entry point of task ``idx``'s process (a CPU, or the manager when ``idx == cfg.cpus``).

    ``driver_fds``: the driver's ends of the pipes, inherited by a forked child; closed, so that
    once the driver is gone a send to it fails instead of filling a pipe nobody reads.
    """
    for fd in driver_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the driver stops the run
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    set_comm(f"shmswap-d-{task_name(idx, cfg.cpus) if idx < cfg.cpus else 'mgr'}")
    _prim.set_hook(None)
    wid = idx if idx < cfg.cpus else n_workers - 1
    model = Model.attach(cfg, n_workers, names, wid)
    system = model.system
    try:
        sched = ProcScheduler(model, policy, ctl, idx, max_steps=max_steps, driver_pid=driver_pid)
        me = sched.mine
        if idx < cfg.cpus:
            me.program = WorkloadProgram(Workload(system, model.tasks[wid], cfg, cfg.cpus), SharedBudget(ctl))
        else:
            me.program = ManagerLoop(model, sched)
        system.folios.foreign_free = sched.foreign_free
        model.add_observer(sched)
        conn.send(("ready", os.getpid()))
        sched.body()
        conn.send(sched.shipment())
        lifeline = Lifeline(driver_pid, every_s=PARK_POLL_S)
        while True:
            if not conn.poll(PARK_POLL_S):
                if not lifeline():
                    return
                continue
            cmd = conn.recv()
            if cmd[0] == "release":               # try_to_unuse's share of this CPU, outside the schedule
                before = len(model.warnings)
                if isinstance(me.program, WorkloadProgram):
                    me.program.load.release_all()
                conn.send(("released", model.warnings[before:]))
            else:
                return
    except (ProcessDied, EOFError, BrokenPipeError):
        return
    finally:
        system.observers.clear()
        system.detach()


# -- the driver ----------------------------------------------------------------------------------------------

def run_processes(text: str | Script, *, policy=None, finish: Callable | None = None, max_steps: int | None = None,
                  stall_s: float = STALL_S, start_method: str | None = None,
                  stop: list[int] | None = None) -> ScriptRun:
    """Run a workload script with every task a process; the result equals ``run_script``'s.

    ``finish(model, sched)`` runs at the end (as in ``run_script``), with ``sched.release_all()``
    freeing what the CPUs hold (their share of ``try_to_unuse``) and ``sched.all_warnings()``.
    ``stop``: the stop signals the driver receives (a list that grows, ``driver.StopSignals``): at
    the first no CPU begins another operation and the run ends in order; at the second the
    schedule stops at the next step (failure kind ``interrupted``).
    """
    script = parse_script(text) if isinstance(text, str) else text
    if script.workload is None or script.stmts:
        raise ScheduleFailure("the processes mode runs workload scripts only (replay a recording in the threads "
                              "mode: it follows the same schedule)")
    cfg = script.config.with_(sleep_latency_us=0) if script.config.sleep_latency_us else script.config
    ctx = mp.get_context(start_method or cfg.start_method)
    resource_tracker.ensure_running()
    n_workers = cfg.cpus + 1
    ntasks = cfg.cpus + 1
    policy = policy or _fallback(script.fallback)
    procs: list = []
    conns: list = []
    with Model(cfg, n_workers=n_workers) as model:
        ctl = SharedControl(ctx, ntasks)
        sched = ProcScheduler(model, policy, ctl, None, max_steps=max_steps)
        ctl.q[H_BUDGET] = script.workload
        for t in sched.tasks:
            t.pending = (OP, 0, 0)                        # SchedTask's: every task starts at its first op
        ctl.q[H_RUNNING] = DRIVER
        pre_warnings = list(model.warnings)
        shipments: dict[int, tuple] = {}
        ended = False
        try:
            names = model.system.names()
            forked = ctx.get_start_method() == "fork"
            for idx in range(ntasks):
                mine, theirs = ctx.Pipe()
                fds = [c.fileno() for c in (*conns, mine)] if forked else []
                p = ctx.Process(target=task_main, name=f"shmswap-det-{task_name(idx, cfg.cpus)}", daemon=True,
                                args=(cfg, n_workers, names, idx, ctl, policy, theirs, os.getpid(), max_steps, fds))
                p.start()
                theirs.close()
                procs.append(p)
                conns.append(mine)
            _await_ready(conns, procs)
            _drive(sched, ctl, procs, conns, shipments, stall_s, stop if stop is not None else [])
            _teardown(sched, ctl, procs, conns, shipments)
            ended = True
            sched._load()                                 # the RNGs as the last task left them
            model.on_manager()
            trace = sorted([e for s in shipments.values() for e in s[1]] + sched.trace)
            checkpoints = sorted([c for s in shipments.values() for c in s[2]] + sched.checkpoints)
            warned = sorted((w for s in shipments.values() for w in s[3]), key=lambda w: w[0])
            sched_warnings = pre_warnings + [m for _, m in warned]
            driver_warned = len(model.warnings)
            released: list[str] = []

            def all_warnings() -> list[str]:
                return sched_warnings + released + model.warnings[driver_warned:]

            def release_all() -> dict:
                for idx in range(cfg.cpus):
                    kind, more = _ask(conns[idx], procs[idx], ("release",))
                    released.extend(more)
                return {}
            sched.all_warnings, sched.release_all = all_warnings, release_all
            return _result(script, model, sched, trace, checkpoints, sched_warnings, finish)
        finally:
            _reap(procs, conns, patient=ended and sched.failure_kind not in ("died", "stuck"))


def _await_ready(conns: list, procs: list) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    for idx, (c, p) in enumerate(zip(conns, procs, strict=True)):
        while not c.poll(0.05):
            if not p.is_alive():
                raise ScheduleFailure(f"task process {idx} exited with status {p.exitcode} before it started")
            if time.monotonic() > deadline:
                raise ScheduleFailure(f"task process {idx} did not start in {START_TIMEOUT_S:g} s")
        c.recv()


def _drive(sched: ProcScheduler, ctl: SharedControl, procs: list, conns: list, shipments: dict,
           stall_s: float, stop: list[int]) -> None:
    """Make the first choice, then watch: the run ends when control comes back to the driver.

    A stop signal (in ``stop``): the first tells the CPUs to begin no further operation, the second
    stops the schedule where it is."""
    try:
        first = sched._choose(None)
    except SchedAbort:
        return
    if first is None:
        sched.finished = True
        return
    sched.started_at = time.perf_counter()
    sched._hand(first.idx)
    last_step, last_t = sched.step, time.monotonic()
    q = ctl.q
    while True:
        if stop and not q[H_STOP]:
            q[H_STOP] = 1
        if len(stop) > 1:
            sched.set_failure("interrupted", f"interrupted by {' and '.join(signal.Signals(s).name for s in stop)} "
                              f"at step {sched.step}")
            sched.aborting = True
            return
        if ctl.driver.acquire(timeout=0.1) and q[H_RUNNING] == DRIVER:
            sched.schedule_s = time.perf_counter() - sched.started_at
            return
        for idx, (p, c) in enumerate(zip(procs, conns, strict=True)):
            if idx not in shipments and c.poll():
                _collect(c, idx, shipments)
            if not p.is_alive() and idx not in shipments:
                sched.set_failure("died", f"{task_name(idx, sched.ncpus)}'s process died (exit status "
                                  f"{p.exitcode}) at step {sched.step}")
                sched.aborting = True
                return
        now = time.monotonic()
        if sched.step != last_step:
            last_step, last_t = sched.step, now
        elif now - last_t > stall_s:
            sched.set_failure("stuck", f"no scheduling step for {stall_s:g} s (at step {sched.step}, "
                              f"{task_name(q[H_RUNNING], sched.ncpus) if q[H_RUNNING] >= 0 else 'driver'} "
                              "running): declared stuck")
            sched.aborting = True
            return


def _collect(conn, idx: int, shipments: dict) -> None:
    try:
        msg = conn.recv()
    except (EOFError, OSError):
        return
    if msg[0] == "ended":
        shipments[idx] = msg


def _teardown(sched: ProcScheduler, ctl: SharedControl, procs: list, conns: list, shipments: dict) -> None:
    """Let every parked process go, one at a time: idle ones leave at their op point, others abort."""
    sched.closing = True
    for idx, (p, c) in enumerate(zip(procs, conns, strict=True)):
        if idx in shipments:
            continue
        if p.is_alive():
            ctl.sems[idx].release()
        # A long run's shipment (its trace) takes a while to pickle and send: wait for a live sender.
        deadline = time.monotonic() + (2.0 if sched.aborting else 300.0)
        while idx not in shipments and time.monotonic() < deadline:
            if c.poll(0.05):
                _collect(c, idx, shipments)
            elif not p.is_alive():
                break


def _ask(conn, proc, cmd: tuple, timeout_s: float = 120.0):
    conn.send(cmd)
    deadline = time.monotonic() + timeout_s
    while not conn.poll(0.05):
        if not proc.is_alive() or time.monotonic() > deadline:
            raise ScheduleFailure(f"{proc.name} did not answer {cmd[0]!r}")
    reply = conn.recv()
    if reply[0] == "ended":            # its shipment, late: the schedule's end did not wait long enough
        raise ScheduleFailure(f"{proc.name} sent its trace after the schedule's end: the run cannot be merged")
    return reply


def _reap(procs: list, conns: list, patient: bool = True) -> None:
    """Tell every task process to exit; kill what does not (at once after a death or a stall)."""
    for c in conns:
        try:
            c.send(("exit",))
        except (OSError, ValueError):
            pass
    join_or_kill(procs, 10.0 if patient else 0.5)
    for c in conns:
        c.close()


def _result(script: Script, model: Model, sched: ProcScheduler, trace: list, checkpoints: list,
            warnings: list[str], finish) -> ScriptRun:
    """The end of ``run_script``, on the merged trace and WARNs."""
    kind = sched.failure_kind
    failures: list[str] = []
    summaries: list[dict] = []
    state = ""
    if kind is None:
        summaries.append(check_summary(model.check(warnings)))
        state = state_digest(model)
    if kind is not None:
        failures.append(sched.failure)
    out = ScriptRun(script.title, not failures, failures, sched.failure, kind, summaries, state, sched.step,
                    [e[1] for e in trace], trace, sched.digest, checkpoints, list(warnings))
    if finish is not None and kind is None:
        out.finished = finish(model, sched)
    return out


def run_deterministic_processes(cfg: Config, record: str | None = None, finish=None,
                                stop: list[int] | None = None) -> tuple[ScriptRun, str]:
    """``script.run_deterministic`` with every task a process: the same run, the same recording
    (none after a stop signal)."""
    script = parse_script(deterministic_script(cfg))
    run = run_processes(script, finish=finish, stop=stop)
    text = record_text(parse_script(script.text), run) if run.failure_kind is None and not stop else ""
    if record and text:
        write_atomically(record, text)
    return run, text


def release_and_warnings(model: Model, sched: Scheduler) -> tuple[Callable[[], dict], Callable[[], list[str]]]:
    """``finish_run``'s ``try_to_unuse`` and ``warnings`` for a deterministic run of either mode."""
    if isinstance(sched, ProcScheduler):
        return sched.release_all, sched.all_warnings
    loads = [t.program.load for t in sched.tasks if hasattr(t.program, "load")]

    def try_to_unuse() -> dict:
        for w, load in enumerate(loads):
            model.on(w)
            load.release_all()
        return {}
    return try_to_unuse, lambda: model.warnings
