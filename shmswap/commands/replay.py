"""``shmswap replay FILE``: run a schedule script (a recording, a shipped race, an explored failure).

FILE is a path or the name of a shipped race (``shmswap replay --list``).  The run follows the
script under the deterministic scheduler and checks every ``expect``: the recorded final state and
check results, or a race's documented outcome.  If the code changed, the first step the recorded
schedule cannot follow, or the first checkpoint whose trace digest differs, is named.
Exit status: 0 when every expectation held, 1 otherwise (a divergence, a failed expectation), 2
for bad arguments or a script error (an unknown ``# shmswap-script`` version, a recording cut short),
130/143 after Ctrl-C/SIGTERM (the replay stops at its next step).

Also here: ``shmswap run --deterministic [--record FILE]`` (run.py calls ``run_deterministic_command``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import fields
from importlib import resources

from ..config import Config, ConfigError
from ..finish import finish_run
from ..report import render
from ..runner.deterministic import ScheduleFailure
from ..runner.detproc import release_and_warnings, run_deterministic_processes
from ..runner.driver import StopSignals, failed_result
from ..runner.script import config_value, parse_script, run_deterministic, run_script
from .common import cut, cut_path, error, write_atomically

__all__ = ["add_parser", "main", "race_names", "read_script", "run_deterministic_command"]


def race_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("shmswap.runner").joinpath("races").iterdir()
                  if p.name.endswith(".race"))


def read_script(name: str) -> str:
    """A script by path, or a shipped race by name."""
    if name in race_names():
        return resources.files("shmswap.runner").joinpath("races", f"{name}.race").read_text()
    try:
        with open(name) as f:
            return f.read()
    except OSError as e:
        error(f"replay: cannot read {name}: {e.strerror or e} (shipped races: {', '.join(race_names())})")
    return ""


def _overrides(sets: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs; an unknown KEY or a value the field refuses: one line, exit 2."""
    known = {f.name for f in fields(Config) if f.init}
    out = {}
    for s in sets or []:
        k, sep, v = s.partition("=")
        if not sep:
            error(f"--set: expected KEY=VALUE, got {cut(repr(s))}")
        key = k.strip().replace("-", "_")
        if key not in known:
            error(f"--set: no configuration field {cut(repr(k))} (e.g. alloc_table, cpus, seed)")
        out[key] = config_value(v)
        try:
            Config().with_(**{key: out[key]})        # the value alone; with the script's config at parse
        except (ConfigError, ValueError, TypeError) as e:
            error(f"--set {cut(s)}: {e}")
    return out


def add_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("replay", help="run a schedule script: a recording, a shipped race, an explored failure",
                       description="Run a schedule script under the deterministic scheduler and check its "
                                   "expectations (a recording's final state and check results, a race's "
                                   "documented outcome); says where a recording diverged.")
    r.add_argument("file", nargs="?", help="a script file, or a shipped race's name (see --list)")
    r.add_argument("--list", action="store_true", help="list the shipped race scripts")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a configuration field (e.g. alloc_table=merged); repeatable")
    r.add_argument("--trace", action="store_true", help="print the trace: step, task, point")
    r.set_defaults(func=main)
    return r


def main(args: argparse.Namespace) -> int:
    if args.list or not args.file:
        for n in race_names():
            title = next((ln[6:] for ln in read_script(n).splitlines() if ln.startswith("title ")), "")
            print(f"{n:16} {title}")
        return 0
    text = read_script(args.file)
    with StopSignals() as signals:
        try:
            script = parse_script(text, _overrides(args.set))
            t0 = time.perf_counter()
            run = run_script(script, stop=signals.received)
        except ScheduleFailure as e:
            error(f"replay: {e}")
    dt = time.perf_counter() - t0
    if run.failure_kind == "interrupted":        # Ctrl-C: the schedule stopped at its next step
        print(f"shmswap replay {args.file}: {run.failure}; nothing checked")
        return 128 + int(signal.Signals[signals.first])
    if args.trace:
        for step, idx, kind, a, b in run.trace:
            print(step, idx, kind, a, b)
    print(f"shmswap replay {args.file}: {run.title}")
    print(f"  {run.steps:,} steps in {dt:.2f} s; checks: " + "; ".join(
        f"violations {c['violations'] or 'none'}, findings {c['findings'] or 'none'}" for c in run.checks))
    if run.ok:
        print("  every expectation held")
        return 0
    for f in run.failures:
        print(f"  FAILED: {f}")
    return 1


def run_deterministic_command(cfg, record: str | None, write_json, processes: bool = False) -> int:
    """``shmswap run --deterministic [--processes]``: the workload under the scheduler, the usual report.

    ``write_json(result, run_status, exit_status)`` writes ``--json`` and returns the exit status.
    Ctrl-C or SIGTERM: no CPU begins another operation, the run ends in order (check, report, JSON
    with run_status "interrupted", exit 130/143), unrecorded; a second signal stops the schedule
    at once (run_status "aborted").  A run that stops (a crash, a deadlock, a task process that
    died) writes a failed result whose violation says why.
    """
    with StopSignals() as signals:
        return _run_deterministic(cfg, record, write_json, processes, signals)


def _run_deterministic(cfg, record: str | None, write_json, processes: bool, signals) -> int:
    t0 = time.perf_counter()

    def finish(model, sched):
        try_to_unuse, warnings = release_and_warnings(model, sched)
        who = "each its own process" if processes else "as tasks of one process"
        notes = [f"deterministic run: {cfg.cpus} CPUs and the manager {who}, one task between "
                 f"preemption points, seed {cfg.seed}: {sched.step:,} scheduling points"]
        res = finish_run(model, time.perf_counter() - t0, notes, warnings=warnings, try_to_unuse=try_to_unuse)
        res.extra["deterministic"] = {"mode": "processes" if processes else "threads", "steps": sched.step,
                                      "digest": f"{sched.digest:016x}"}
        return res

    stop = signals.received
    try:
        if processes:
            run, text = run_deterministic_processes(cfg, None, finish, stop=stop)
        else:
            run, text = run_deterministic(cfg, None, finish, stop=stop)
    except ScheduleFailure as e:
        return _stopped(cfg, write_json, f"deterministic run stopped: {e}", signals)
    except OSError as e:               # the segments or the task processes could not be made
        return _stopped(cfg, write_json, f"deterministic run failed: {e.strerror or e}", signals)
    if run.finished is None:
        return _stopped(cfg, write_json, f"deterministic run stopped: {run.failure}", signals)
    res = run.finished
    if signals.first:
        res.extra["interrupted"] = signals.first
        res.notes.append(f"interrupted by {signals.first} at step {run.steps:,}: no CPU began another operation; "
                         "the check and the report ran on what was done" + ("; the schedule was not recorded "
                                                                            "(it would not replay)" if record else ""))
    status = res.exit_status(cfg.strict)
    print(render(res, cfg.strict))
    if record and text:
        try:
            write_atomically(record, text)
            print(f"schedule recorded in {record} ({run.steps:,} steps): shmswap replay {record}")
        except OSError as e:
            sys.stderr.write(f"shmswap: error: --record: cannot write {cut_path(record)}: {e.strerror or e}\n")
            status = max(status, 1)
    return write_json(res, "interrupted" if signals.first else "completed", status)


def _stopped(cfg, write_json, reason: str, signals) -> int:
    """A run that produced no result: say why, and write a failed result (the reason its violation)."""
    sys.stderr.write(f"shmswap: {reason}\n")
    res = failed_result(cfg, reason)
    status = 1
    if signals.first:
        res.extra["interrupted"] = signals.first
        status = res.exit_status(cfg.strict)
    return write_json(res, "aborted", status)
