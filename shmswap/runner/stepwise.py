"""A schedule script run on a model that lives on: the teaching mode's steps (``shmswap demo``).

``run_script`` makes a fresh model for each race and checks it at the end.  A lesson runs step
after step on one tiny device and looks at it between the steps, so ``run_schedule`` runs one
script's statements (its operations, ``run cpuN until ...``, ``cpuN wakes on cpuM``, ``fail
atomic|sleeping N``, ``steps``, ``then``) under a fresh ``Scheduler`` on an existing ``model``:
every CPU and the manager are tasks, exactly one runs between preemption points, and the script
decides which.  The operations are the script's own (``alloc``, ``free``, ``lookup``, the
manager's work); ``make_op`` builds them, so the caller can keep what they return.

A lesson also looks at the device in the middle of a script: ``stops`` maps a number of
statements to a callback, called once those statements are done and before the next one lets
any task run (e.g. after ``run cpu0 until sleep in swap_cluster_alloc_table``: cpu0 asleep, its
cluster isolated, nobody else run yet).  The callback runs while every task is parked at a
preemption point: it may read the model (``Model.snapshot``, the shared memory), not drive it.
Stops change nothing in the schedule: the trace and its digest are those of the same script
without them.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..model import Model
from .deterministic import SchedTask, ScheduleFailure, Scheduler
from .script import (
    HEADER,
    Script,
    ScriptPolicy,
    _Checks,
    _fallback,
    _make_op,
    add_queue_tasks,
    parse_script,
    run_observing,
)

__all__ = ["schedule_script", "run_schedule", "script_op", "Stop"]

Stop = Callable[[Scheduler], None]


def script_op(model: Model, op: tuple) -> Callable[[], None]:
    """The operation a script statement ``cpuN: OP`` queues (``op`` as parsed), as ``run_script``
    runs it: for a ``make_op`` that keeps some operations' results and leaves the others as they are."""
    return _make_op(model, op)


def schedule_script(model: Model, body: str) -> Script:
    """Parse ``body`` (statements without a ``config`` line) as a script for ``model``'s device."""
    script = parse_script("\n".join([HEADER, "config " + json.dumps(model.cfg.as_dict(), sort_keys=True), body]))
    script.config = model.cfg
    return script


class _StoppingPolicy(ScriptPolicy):
    """The script's policy, calling ``stops[n]`` once the first ``n`` statements are done.

    The policy's counter only moves inside ``prepare`` and ``choose``, which decide and run no
    task: right after either, the device is as the last finished statement left it."""

    def __init__(self, *args, stops: dict[int, Stop], **kw) -> None:
        super().__init__(*args, **kw)
        self.stops = sorted(stops.items())

    def _fire(self, sched: Scheduler) -> None:
        while self.stops and self.stops[0][0] <= self.pc:
            n, stop = self.stops.pop(0)
            try:
                stop(sched)
            except Exception as e:  # noqa: BLE001 - the scheduler stops the run and reports it
                raise ScheduleFailure(f"the stop after statement {n} failed: {type(e).__name__}: {e}") from e

    def prepare(self, sched) -> None:
        super().prepare(sched)
        self._fire(sched)

    def choose(self, sched, runnable, cur):
        t = super().choose(sched, runnable, cur)
        self._fire(sched)
        return t


def run_schedule(model: Model, script: Script | str, *,
                 make_op: Callable[[Model, tuple], Callable[[], None]] | None = None,
                 on_step: Callable[[Scheduler, SchedTask], None] | None = None,
                 stops: dict[int, Stop] | None = None) -> Scheduler:
    """Run ``script`` on ``model`` until every task is idle; returns the scheduler (its ``trace``,
    ``choices``, ``digest``).  A crash, a deadlock or a script that cannot be followed raises
    ``ScheduleFailure`` with the scheduler's words; ``expect`` and ``check`` statements are
    refused (the caller checks the model itself).  ``stops``: ``{n: callback}``, each called
    once, when the first ``n`` statements are done (a stop the run never reaches is an error)."""
    if isinstance(script, str):
        script = schedule_script(model, script)
    if script.workload is not None or any(st.kind in ("expect", "check", "checkpoint") for st in script.stmts):
        raise ScheduleFailure("run_schedule: only operations and schedule statements (no workload, expect, "
                              "check or checkpoint)")
    bad = [n for n in (stops or {}) if not 0 < n < len(script.stmts)]
    if bad:
        raise ScheduleFailure(f"run_schedule: a stop after {bad[0]} statement(s): the script has "
                              f"{len(script.stmts)}; a stop goes between two of them")
    sched = Scheduler(model, None)
    sched.policy = _StoppingPolicy(script, model, sched, _fallback(script.fallback), _Checks(), make_op=make_op,
                                   stops=stops or {})
    sched.on_step = on_step
    add_queue_tasks(sched, model)
    run_observing(sched, model)
    if sched.failure is not None:
        raise ScheduleFailure(sched.failure)
    if sched.policy.stops:
        raise ScheduleFailure(f"run_schedule: the run ended before the stop after statement "
                              f"{sched.policy.stops[0][0]}")
    return sched
