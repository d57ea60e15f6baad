"""The driver of a multiprocess run: the manager, N CPU workers, and an orderly end (DESIGN §1).

The driver validates nothing itself (the ``Config`` already is), starts the manager, which creates
and owns the segments, then the CPU workers with the segment names, and waits for the manager's
result.  Ctrl-C (SIGINT) and SIGTERM become an orderly stop (the workers and the manager ignore
SIGINT; the driver asks the manager to stop, and the run ends with its check and report; the result
records ``extra["interrupted"]`` = the signal's name); a second signal aborts.  An ignored SIGINT (a
background job) stays ignored.  If the
manager dies, the driver kills the workers and unlinks the segments itself; if the driver dies,
the manager does the same.  The shared resource tracker, started before the first fork, unlinks
whatever an owner that was killed outright left behind.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import multiprocess as mp
from multiprocess import resource_tracker

from workers.cpu import cpu_main
from workers.manager import manager_main
from workers.reader import reader_main

from ..checks.checker import CheckResult, Violation
from ..config import Config
from ..result import Result
from ..substrate.shm import remove_orphaned_segments, unlink_by_name

__all__ = ["run_multiprocess", "join_or_kill", "RunAborted", "failed_result", "STOP_SIGNALS", "StopSignals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

START_TIMEOUT_S = 60.0


class RunAborted(RuntimeError):
    """The run could not produce a result (the manager died, or a second Ctrl-C).

    ``interrupted`` names the signal (``"SIGINT"``, ``"SIGTERM"``) when signals aborted it.
    """

    def __init__(self, message: str, interrupted: str | None = None) -> None:
        super().__init__(message)
        self.interrupted = interrupted


class _Signals:
    """SIGINT and SIGTERM recorded, not raised, while a run is driven (main thread only).

    A SIGINT ignored when the run starts stays ignored.  A forked child that inherits the handler
    (before it installs its own) takes the signal's default action.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.pid = os.getpid()
        self.saved: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if sig == signal.SIGINT and current == signal.SIG_IGN:
                continue
            self.saved[sig] = current
            signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, _frame) -> None:
        if os.getpid() != self.pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received.append(signum)

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    @property
    def first(self) -> str | None:
        return signal.Signals(self.received[0]).name if self.received else None


StopSignals = _Signals      # the deterministic runs and explore stop on the same signals the same way


def _budgets(cfg: Config) -> list[int | None]:
    if cfg.ops is None:
        return [None] * cfg.cpus
    base, extra = divmod(cfg.ops, cfg.cpus)
    return [base + (1 if w < extra else 0) for w in range(cfg.cpus)]


def run_multiprocess(cfg: Config, progress=None) -> Result:
    """Run the model with a manager and ``cfg.cpus`` worker processes; returns the result."""
    ctx = mp.get_context(cfg.start_method)
    orphans = remove_orphaned_segments()     # what runs killed outright (tracker and all) left behind
    resource_tracker.ensure_running()
    readers = cfg.n_torture_readers
    n_workers = cfg.cpus + 1 + readers          # the CPUs, the manager, the torture readers
    ctl, ctl_child = ctx.Pipe()
    pipes = [ctx.Pipe() for _ in range(cfg.cpus)]
    manager = ctx.Process(target=manager_main, name="shmswap-manager", daemon=False,
                          args=(cfg, n_workers, ctl_child, [a for a, _ in pipes], os.getpid()))
    workers: list = []
    names: list[dict[str, str]] = []       # every device's segments, from the manager
    finished = False
    with _Signals() as signals:
        try:
            manager.start()
            names = _await_names(ctl, manager, signals)
            for w, budget in enumerate(_budgets(cfg)):
                p = ctx.Process(target=cpu_main, name=f"shmswap-cpu{w}", daemon=False,
                                args=(cfg, n_workers, names, w, pipes[w][1], budget, os.getpid()))
                p.start()
                workers.append(p)
            for r in range(readers):
                p = ctx.Process(target=reader_main, name=f"shmswap-rdr{r}", daemon=False,
                                args=(cfg, n_workers, names, cfg.cpus + 1 + r, os.getpid()))
                p.start()
                workers.append(p)
            ctl.send(("pids", [p.pid for p in workers]))     # the CPUs', then the readers
            result = _await_result(ctl, manager, progress, silence_s=max(120.0, 10 * cfg.watchdog_s),
                                   signals=signals)
            finished = True
        finally:
            _reap(manager, workers, names, patient=finished)
    if signals.first:
        result.extra["interrupted"] = signals.first
        result.notes.append(f"interrupted by {signals.first}: stopped early; the check and the report ran on "
                            "what was done")
    result.notes[:0] = list(cfg.notes)
    if orphans:
        result.notes.append(f"removed {len(orphans)} orphaned segments of killed runs: {', '.join(orphans)}")
        result.extra["orphans_removed"] = orphans
    return result


def _await_names(ctl, manager, signals: _Signals) -> list[dict[str, str]]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if len(signals.received) > 1:
            raise RunAborted("interrupted twice: aborted", signals.first)
        if ctl.poll(0.05):
            kind, payload = ctl.recv()
            if kind == "names":
                return payload
            raise RunAborted(f"the manager failed to start:\n{payload}")
        if not manager.is_alive():
            raise RunAborted(f"the manager exited with status {manager.exitcode} before swapon")
    raise RunAborted("the manager did not swapon in time")


def _await_result(ctl, manager, progress, silence_s: float, signals: _Signals | None = None) -> Result:
    """Wait for the manager's result; a manager silent for ``silence_s`` is declared hung.

    The first stop signal (or KeyboardInterrupt) asks the manager to stop; a second one aborts.
    """
    received = signals.received if signals is not None else []
    asked = 0
    heard = time.monotonic()
    while True:
        try:
            if len(received) > asked:
                if asked or len(received) > 1:
                    raise RunAborted("interrupted twice: aborted", signal.Signals(received[0]).name)
                asked = 1
                try:
                    ctl.send(("stop", signal.Signals(received[0]).name))
                except OSError:
                    raise RunAborted("interrupted, and the manager is gone", signal.Signals(received[0]).name) \
                        from None
            if ctl.poll(0.05):
                heard = time.monotonic()
                kind, *payload = ctl.recv()
                if kind == "progress" and progress is not None:
                    progress(*payload)
                elif kind == "result":
                    return payload[0]
                elif kind == "error":
                    raise RunAborted(f"the manager failed:\n{payload[0]}")
            elif not manager.is_alive():
                raise RunAborted(f"the manager died (exit status {manager.exitcode}); workers stopped, "
                                 "segments unlinked")
            elif time.monotonic() - heard > silence_s:
                raise RunAborted(f"the manager sent nothing for {silence_s:g} s: declared hung; everything "
                                 "killed, segments unlinked")
        except KeyboardInterrupt:
            received.append(signal.SIGINT)
        except EOFError:
            raise RunAborted("the manager's control pipe closed") from None


def _reap(manager, workers: list, names: list[dict[str, str]], patient: bool) -> None:
    """Join everything; kill what does not end; unlink whatever is left of every device's segments.

    After a result everyone is on the way out; after a failure nobody is waited for.
    """
    join_or_kill([*workers, manager], 10.0 if patient else 0.0)
    for device in names:
        for name in device.values():
            unlink_by_name(name)


def join_or_kill(procs: list, patience_s: float) -> None:
    """Join every started process within ``patience_s`` in all; SIGKILL (then join) what is left."""
    deadline = time.monotonic() + patience_s
    for p in procs:
        if p.pid is None:
            continue
        p.join(max(0.05, deadline - time.monotonic()))
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
            p.join(5.0)


def failed_result(cfg: Config, reason: str) -> Result:
    """A result for a run that produced none: one violation saying why."""
    chk = CheckResult(checked=[], violations=[Violation("run", reason, "runtime")])
    zero = {"alloc": 0, "alloc_failed": 0, "free": 0, "lookup": 0}
    return Result(config=cfg.as_dict(), variant={}, duration_s=0.0, ops=zero, locks={}, tables={},
                  migration={}, rcu={}, oracles={"freed_memory_reads": 0, "wrong_owner_accepted": 0,
                                                  "pipe_too_old": 0, "foreign_folios_rejected": 0},
                  check=chk, notes=[reason])
