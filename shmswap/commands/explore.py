"""``shmswap explore SCENARIO``: PCT schedules until the first violation (or finding), shrunk.

SCENARIO is a script (a path or a shipped name, see ``shmswap replay --list``): its configuration
and operations (or ``workload N``); its own ``run`` steps and expectations are ignored.  Exit
status: 0 when nothing was found, 1 when a failure was found (its shrunk script is printed, and
written to ``--out``), 2 for bad arguments.
"""

from __future__ import annotations

import argparse

from ..runner.deterministic import ScheduleFailure
from ..runner.explore import explore
from .common import error, int_arg
from .replay import read_script

__all__ = ["add_parser", "main"]


def add_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("explore", help="search schedules (PCT) for a violation or finding; print a replay",
                       description="Run up to K schedules of a scenario with a PCT-style priority scheduler "
                                   "(random priorities, d-1 priority change points); stop at the first "
                                   "violation (or, with --until finding, also a finding such as the seed's "
                                   "T5 loss), shrink the schedule and print it as a replayable script.")
    r.add_argument("scenario", help="a script file or a shipped name")
    r.add_argument("--schedules", type=int_arg, default=100, help="schedules to try (K)")
    r.add_argument("--until", default="violation", choices=("violation", "finding"), help="what counts as found")
    r.add_argument("--depth", type=int_arg, default=3, help="PCT bug depth d (d-1 priority change points)")
    r.add_argument("--seed", type=int_arg, default=0, help="schedule i uses PCT seed seed+i")
    r.add_argument("--out", default=None, help="write the shrunk script here")
    r.set_defaults(func=main)
    return r


def main(args: argparse.Namespace) -> int:
    text = read_script(args.scenario)
    try:
        ex = explore(text, args.schedules, args.until, args.depth, args.seed)
    except ScheduleFailure as e:
        error(f"explore: {e}")
    if not ex.found:
        print(f"shmswap explore {args.scenario}: nothing found in {ex.schedules} schedules")
        return 0
    print(f"shmswap explore {args.scenario}: found after {ex.schedules} schedules (PCT seed {ex.seed}): "
          f"{ex.failure}; {ex.steps} steps, shrunk to {ex.shrunk_steps}")
    print(ex.script, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(ex.script)
        print(f"wrote {args.out}: shmswap replay {args.out}")
    return 1
