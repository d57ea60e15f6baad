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
        start = time.monotonic()
        _drive(model, loads, cfg, start, progress)
        duration = time.monotonic() - start

        def try_to_unuse() -> dict:
            for w, load in enumerate(loads):
                model.on(w)
                load.release_all()
            return {}

        notes = [f"single-process run: {cfg.cpus} CPUs took turns in one process"]
        return finish_run(model, duration, notes, warnings=lambda: model.warnings, try_to_unuse=try_to_unuse)


def _drive(model: Model, loads: list[Workload], cfg: Config, start: float, progress: Progress | None) -> None:
    rng = random.Random(cfg.seed)
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
        if budget is not None and steps >= budget:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        if progress is not None and now >= next_tick:
            progress(steps, now - start)
            next_tick = now + _CHECK_EVERY_S
