"""A single-process run: every CPU a task taking turns in one process (tests, teaching, profiling).

The CPUs are tasks that take turns (a seeded round-robin with random bursts) on one shared device,
with the manager's deferred work (discard, reclaim, grace periods and deferred table frees) run
between steps.  Everything else is the real thing: the allocator on shared memory through the C
locks, both variants, the checker.  With one process the interleaving is fixed by the seed, so a
run replays exactly; ``shmswap run`` itself uses the multiprocess runtime (runtime.py).

At the end: quiescence, the invariant check, then swapoff (every worker releases what it holds,
per-CPU caches are flushed, the reserved clusters' tables are freed) and a final accounting check
that no table object is left allocated.
"""

from __future__ import annotations

import random
import time

from .checker import check
from .config import Config
from .device import account_swapoff, swapoff
from .housekeeping import run_pending_work
from .result import Result, collect
from .system import SwapSystem

__all__ = ["run_inprocess"]

HOUSEKEEPING_EVERY = 64
_CHECK_EVERY_S = 0.25


def run_inprocess(config: Config, progress=None) -> Result:
    """Run the model once and return its result (the invariant check always runs)."""
    from workers.workload import Workload
    cfg = config
    with SwapSystem.create(cfg, n_workers=cfg.cpus + 1) as system:
        tasks = [system.task(w) for w in range(cfg.cpus)]
        loads = [Workload(system, t, cfg, cfg.cpus) for t in tasks]
        manager = system.task(cfg.cpus)
        inject = cfg.inject_bug == "lose-cluster"
        start = time.monotonic()
        _drive(system, tasks, loads, manager, cfg, start, progress)
        duration = time.monotonic() - start
        system.si.switch_to(manager)
        run_pending_work(system)
        if inject:
            from .inject import lose_cluster
            lose_cluster(system.si)
        result = check(system.shm, system.variant, system.si.warnings)
        notes = [f"single-process run: {cfg.cpus} CPUs took turns in one process"]
        res = collect(system, result, duration, notes)
        _swapoff_and_account(system, loads, tasks, manager, res)
        return res


def _drive(system, tasks, loads, manager, cfg: Config, start: float, progress) -> None:
    rng = random.Random(cfg.seed)
    si = system.si
    steps = 0
    budget = cfg.ops
    deadline = None if cfg.ops else start + float(cfg.seconds or 0)
    next_tick = start
    while True:
        w = rng.randrange(len(tasks))
        si.switch_to(tasks[w])
        for _ in range(rng.randint(1, 8)):
            loads[w].step()
            steps += 1
            if budget is not None and steps >= budget:
                break
        if steps % HOUSEKEEPING_EVERY < 8:
            si.switch_to(manager)
            run_pending_work(system, grace_period=bool(system.shm.slab_hdr["npending"] > 4))
        if budget is not None and steps >= budget:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if progress is not None and now >= next_tick:
            progress(steps, now - start)
            next_tick = now + _CHECK_EVERY_S


def _swapoff_and_account(system, loads, tasks, manager, res: Result) -> None:
    si = system.si

    def try_to_unuse(si_) -> None:
        for task, load in zip(tasks, loads, strict=True):
            si.switch_to(task)
            load.release_all()
        si.switch_to(manager)
        run_pending_work(system)

    si.switch_to(manager)
    warned = len(si.warnings)
    swapoff(si, try_to_unuse)
    run_pending_work(system)
    res.extra["swapoff"] = account_swapoff(system, res.check, si.warnings[warned:])
