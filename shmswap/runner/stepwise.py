"""A schedule script run on a model that lives on: the teaching mode's steps (``shmswap demo``).

``run_script`` makes a fresh model for each race and checks it at the end.  A lesson runs step
after step on one tiny device and looks at it between the steps, so ``run_schedule`` runs one
script's statements (its operations, ``run cpuN until ...``, ``cpuN wakes on cpuM``, ``fail
atomic|sleeping N``, ``steps``, ``then``) under a fresh ``Scheduler`` on an existing ``model``:
every CPU and the manager are tasks, exactly one runs between preemption points, and the script
decides which.  The operations are the script's own (``alloc``, ``free``, ``lookup``, the
manager's work); ``make_op`` builds them, so the caller can keep what they return.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..model import Model
from .deterministic import SchedTask, ScheduleFailure, Scheduler
from .script import HEADER, QueueProgram, Script, ScriptPolicy, _Checks, _fallback, _make_op, parse_script

__all__ = ["schedule_script", "run_schedule", "script_op"]


def script_op(model: Model, op: tuple) -> Callable[[], None]:
    """The operation a script statement ``cpuN: OP`` queues (``op`` as parsed), as ``run_script``
    runs it: for a ``make_op`` that keeps some operations' results and leaves the others as they are."""
    return _make_op(model, op)


def schedule_script(model: Model, body: str) -> Script:
    """Parse ``body`` (statements without a ``config`` line) as a script for ``model``'s device."""
    script = parse_script("\n".join([HEADER, "config " + json.dumps(model.cfg.as_dict(), sort_keys=True), body]))
    script.config = model.cfg
    return script


def run_schedule(model: Model, script: Script | str, *,
                 make_op: Callable[[Model, tuple], Callable[[], None]] | None = None,
                 on_step: Callable[[Scheduler, SchedTask], None] | None = None) -> Scheduler:
    """Run ``script`` on ``model`` until every task is idle; returns the scheduler (its ``trace``,
    ``choices``, ``digest``).  A crash, a deadlock or a script that cannot be followed raises
    ``ScheduleFailure`` with the scheduler's words; ``expect`` and ``check`` statements are
    refused (the caller checks the model itself)."""
    if isinstance(script, str):
        script = schedule_script(model, script)
    if script.workload is not None or any(st.kind in ("expect", "check", "checkpoint") for st in script.stmts):
        raise ScheduleFailure("run_schedule: only operations and schedule statements (no workload, expect, "
                              "check or checkpoint)")
    sched = Scheduler(model, None)
    sched.policy = ScriptPolicy(script, model, sched, _fallback(script.fallback), _Checks(), make_op=make_op)
    sched.on_step = on_step
    for w in range(model.cpus):
        sched.add_task(w, w, QueueProgram())
    sched.add_task(model.cpus, model.manager_wid, QueueProgram())
    model.add_observer(sched)
    try:
        sched.run()
    finally:
        model.system.observers.remove(sched)
    if sched.failure is not None:
        raise ScheduleFailure(sched.failure)
    return sched
