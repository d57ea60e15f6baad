"""The deterministic scheduler's speed: scheduling points per second, threads and processes side by side.

    python benchmarks/scheduler.py [--json] [--runs N] [--ops N] [--no-processes]

Each run is ``shmswap run --deterministic``'s core (``run_deterministic``: 2 CPUs and the manager
as threads, a seeded random choice at every point, the trace kept) on a small device, then the same
run with every task an OS process (``--processes``, detproc.py: the same schedule, checked here
step for step); the best run of each mode is reported, every run listed.  Setup (segments,
swapon, starting the processes) and the final check are outside the time.
"""

from __future__ import annotations

import argparse
import time

from _timing import ModelWarned, Report, main

from shmswap import Config
from shmswap.runner.detproc import run_processes
from shmswap.runner.script import deterministic_script, parse_script, run_script


def bench(args: argparse.Namespace) -> Report:
    cfg = Config(cpus=2, size="4M", slots_per_cluster=64, orders="0:0.8,2:0.2", atomic_fail=0.05, migrate=0.5,
                 seed=1, fill=0.5, lifetimes="off")          # the workload its baselines were measured with
    rates, switches, points, prates = [], [], [], []
    for i in range(args.runs):
        script = parse_script(deterministic_script(cfg.with_(seed=1 + i), args.ops))
        t = {}

        def started(model, t=t):
            t["t0"] = time.perf_counter()

        def finished(model, sched, t=t):
            t["t1"] = time.perf_counter()
        run = run_script(script, setup=started, finish=finished)
        if run.failure:
            raise ModelWarned(run.failure)
        if run.warnings:
            raise ModelWarned("; ".join(run.warnings[:3]))
        dt = t["t1"] - t["t0"]
        rates.append(run.steps / dt)
        points.append(run.steps)
        ch = run.choices
        switches.append(100.0 * sum(1 for a, b in zip(ch, ch[1:], strict=False) if a != b) / max(len(ch) - 1, 1))
        if args.processes:
            prun = run_processes(parse_script(deterministic_script(cfg.with_(seed=1 + i), args.ops)),
                                 finish=lambda model, sched: sched.schedule_s)
            if prun.failure:
                raise ModelWarned(prun.failure)
            if prun.trace != run.trace or prun.state != run.state:
                raise ModelWarned(f"run {i + 1}: the processes mode did not follow the threads mode's schedule")
            prates.append(prun.steps / prun.finished)
    best = max(range(len(rates)), key=lambda k: rates[k])
    report = Report("shmswap deterministic scheduler")
    report.add("det_point_us", 1e6 / rates[best])
    report.add("det_points_per_s", rates[best])
    report.add("det_switch_pct", switches[best])
    report.notes.append("runs: " + ", ".join(f"{p:,} points at {r:,.0f}/s" for p, r in zip(points, rates, strict=True)))
    if prates:
        report.add("detproc_point_us", 1e6 / max(prates))
        report.add("detproc_points_per_s", max(prates))
        report.notes.append("processes mode, the same runs: " + ", ".join(
            f"{p:,} points at {r:,.0f}/s ({t / r:.1f}x slower)" for p, r, t in zip(points, prates, rates, strict=True)))
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--no-processes", dest="processes", action="store_false",
                    help="the threads mode only (default: both modes, side by side)")
    raise SystemExit(main(bench, ap))
