"""The deterministic scheduler's speed: scheduling points per second in one process.

    python benchmarks/scheduler.py [--json] [--runs N] [--ops N]

Each run is ``shmswap run --deterministic``'s core (``run_deterministic``: 2 CPUs and the manager
as threads, a seeded random choice at every point, the trace kept) on a small device; the best run
is reported, every run listed.  Setup (segments, swapon) and the final check are outside the time.
"""

from __future__ import annotations

import argparse
import time

from _timing import ModelWarned, Report, main

from shmswap import Config
from shmswap.runner.script import deterministic_script, parse_script, run_script


def bench(args: argparse.Namespace) -> Report:
    cfg = Config(cpus=2, size="4M", slots_per_cluster=64, orders="0:0.8,2:0.2", atomic_fail=0.05, migrate=0.5,
                 seed=1, fill=0.5)
    rates, switches, points = [], [], []
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
    best = max(range(len(rates)), key=lambda k: rates[k])
    report = Report("shmswap deterministic scheduler")
    report.add("det_point_us", 1e6 / rates[best])
    report.add("det_points_per_s", rates[best])
    report.add("det_switch_pct", switches[best])
    report.notes.append("runs: " + ", ".join(f"{p:,} points at {r:,.0f}/s" for p, r in zip(points, rates, strict=True)))
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ops", type=int, default=3000)
    raise SystemExit(main(bench, ap))
