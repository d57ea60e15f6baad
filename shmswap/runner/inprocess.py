"""A single-process run: every CPU a task taking turns in one process (tests, teaching, profiling).

The CPUs are tasks that take turns (a seeded round-robin with random bursts) on one shared device,
with the manager's deferred work (discard, reclaim, grace periods and deferred table frees) run
between steps.  Everything else is the real thing, through the model API (model.py): the
allocator on shared memory through the C locks, both variants, the checker.  With one process the
interleaving is fixed by the seed, so a run replays exactly; ``shmswap run`` itself uses the
multiprocess runtime (driver.py).  The end of the run is the one both share (finish.py).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from workers.swapoff import INPROCESS_STEPS_PER_S, SwapoffEvents, release_device, steps_between
from workers.workload import Workload

from ..config import Config
from ..finish import finish_run
from ..model import Model
from ..result import Result

__all__ = ["run_inprocess"]

HOUSEKEEPING_EVERY = 64
_CHECK_EVERY_S = 0.25

Progress = Callable[[int, float], None]


def run_inprocess(config: Config, progress: Progress | None = None) -> Result:
    """Run the model once and return its result (the invariant check always runs)."""
    cfg = config
    with Model(cfg, n_workers=cfg.cpus + 1) as model:
        loads = [Workload(model.system, model.tasks[w], cfg, cfg.cpus) for w in range(cfg.cpus)]
        swapoffs = SwapoffEvents(model, cfg) if cfg.swapoff_every else None
        start = time.monotonic()
        _drive(model, loads, cfg, start, progress, swapoffs)
        duration = time.monotonic() - start

        def try_to_unuse() -> dict:
            for w, load in enumerate(loads):
                model.on(w)
                load.release_all()
            return {}

        notes = [f"single-process run: {cfg.cpus} CPUs took turns in one process"]
        if swapoffs is not None:
            notes.append(f"--swapoff-every {cfg.swapoff_every:g} s: a swapoff every "
                         f"{steps_between(cfg.swapoff_every):,} steps (S x {INPROCESS_STEPS_PER_S:,}), between turns")
        res = finish_run(model, duration, notes, warnings=lambda: model.warnings, try_to_unuse=try_to_unuse,
                         lost_at_swapoff=swapoffs.lost_counts() if swapoffs is not None else ())
        if swapoffs is not None:
            swapoffs.add_to(res)
        return res


def _unuse(model: Model, loads: list[Workload], type: int) -> int:  # noqa: A002 - si->type
    """try_to_unuse during a single-process run: every task, between its turns, frees its records
    on the device (there is no hand-off ring here)."""
    for w, load in enumerate(loads):
        model.on(w)
        release_device(load, type)
    return 0


def _drive(model: Model, loads: list[Workload], cfg: Config, start: float, progress: Progress | None,
           swapoffs: SwapoffEvents | None = None) -> None:
    rng = random.Random(cfg.seed)
    # --swapoff-every: by the step count, not the clock, so a run replays exactly
    period = steps_between(cfg.swapoff_every) if swapoffs is not None else None
    next_swapoff = period
    steps = 0
    budget = cfg.ops
    deadline = None if cfg.ops else start + float(cfg.seconds or 0)
    next_tick = start
    slab = model.system.slab
    while True:
        w = rng.randrange(len(loads))
        model.on(w)
        for _ in range(rng.randint(1, 8)):
            loads[w].step()
            steps += 1
            if budget is not None and steps >= budget:
                break
        if steps % HOUSEKEEPING_EVERY < 8:
            model.run_pending_work(grace_period=slab.pending() > 4)
        if period is not None and steps >= next_swapoff:
            swapoffs.cycle(lambda t: _unuse(model, loads, t))
            next_swapoff += period
        if budget is not None and steps >= budget:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if progress is not None and now >= next_tick:
            progress(steps, now - start)
            next_tick = now + _CHECK_EVERY_S
