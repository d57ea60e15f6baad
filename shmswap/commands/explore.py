"""``shmswap explore SCENARIO``: PCT schedules until the first violation (or finding), shrunk.

SCENARIO is a script (a path or a shipped name, see ``shmswap replay --list``): its configuration
and operations (or ``workload N``); its own ``run`` steps and expectations are ignored.  Exit
status: 0 when nothing was found, 1 when a failure was found (its shrunk script is printed, and
written whole to ``--out``, checked before the search), 2 for bad arguments; 130 after Ctrl-C and
143 after SIGTERM: the schedule running stops, and what was searched so far is printed (a failure
found, shrunk as far as it got).
"""

from __future__ import annotations

import argparse
import signal
import sys

from ..runner.deterministic import ScheduleFailure
from ..runner.driver import StopSignals
from ..runner.explore import explore
from .common import check_output_path, cut_path, error, int_arg, write_atomically
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
    if args.schedules < 1:
        error(f"--schedules: {args.schedules} is not a number of schedules (at least 1)")
    if args.depth < 1:
        error(f"--depth: {args.depth} is not a PCT bug depth (at least 1: d-1 priority change points)")
    bad_path = check_output_path("--out", args.out)
    if bad_path:
        error(bad_path)
    text = read_script(args.scenario)
    with StopSignals() as signals:
        try:
            ex = explore(text, args.schedules, args.until, args.depth, args.seed, stop=signals.received)
        except ScheduleFailure as e:
            error(f"explore: {e}")
        stopped = f"interrupted by {ex.interrupted}: " if ex.interrupted else ""
        status = 128 + int(signal.Signals[ex.interrupted]) if ex.interrupted else 0
        if not ex.found:
            print(f"shmswap explore {args.scenario}: {stopped}nothing found in {ex.schedules} schedules"
                  + (f" (of {args.schedules})" if ex.interrupted else ""))
            return status
        print(f"shmswap explore {args.scenario}: {stopped}found after {ex.schedules} schedules (PCT seed {ex.seed}): "
              f"{ex.failure}; {ex.steps} steps, shrunk to {ex.shrunk_steps}"
              + (" (shrinking cut short)" if ex.interrupted else ""))
        print(ex.script, end="")
        if args.out:
            try:
                write_atomically(args.out, ex.script)
            except OSError as e:
                sys.stderr.write(f"shmswap: error: --out: cannot write {cut_path(args.out)}: {e.strerror or e}\n")
                return status or 1
            print(f"wrote {args.out}: shmswap replay {args.out}")
        return status or 1
