"""Scaling of the multiprocess model: 1, 2 and 4 CPUs with the per-CPU cache on and off.

    python benchmarks/scaling.py [--json] [--seconds S] [--size SIZE]

Each row is one ``shmswap.run`` (N CPU worker processes plus the manager), same seed and workload:
throughput, contention per lock class, grace-period latency.  Then the cost of lockstat: the
4-CPU, per-CPU-on run again with ``Config(lockstat=False)``.  Where CPU processes outnumber the
cores, lock holders get preempted and contention is partly the scheduler's (a note says so).
"""

from __future__ import annotations

import argparse
import os

from _timing import ModelWarned, Report, main

import shmswap
from shmswap import Config

CPUS = (1, 2, 4)


def run(cfg: Config) -> shmswap.Result:
    res = shmswap.run(cfg)
    if res.check.violations:
        raise ModelWarned("; ".join(f"{v.where}: {v.reason}" for v in res.check.violations[:3]))
    return res


def bench(args: argparse.Namespace) -> Report:
    # the workload its baselines were measured with: fill and drain, no torture reader
    base = Config(size=args.size, seconds=args.seconds, seed=7, quiet=True, lifetimes="off", reader_delays="off")
    report = Report(f"shmswap scaling: {args.size} device, {args.seconds:g} s a run")
    for percpu in ("on", "off"):
        for cpus in CPUS:
            res = run(base.with_(cpus=cpus, percpu=percpu))
            locks, ops = res.locks, res.throughput_ops_per_s
            acq = sum(v["acquisitions"] for v in locks.values())
            cont = sum(v["contentions"] for v in locks.values())
            report.add_row(cpus=cpus, percpu=percpu, throughput_ops_per_s=ops, per_cpu_ops_per_s=ops / cpus,
                           contention_pct=100.0 * cont / acq if acq else 0.0,
                           **{f"{k}_wait_ms": locks[k]["wait_ns_total"] / 1e6
                              for k in ("si_lock", "ci_lock", "local_lock")},
                           gp_latency_us_p50=res.rcu["gp_latency_us_p50"],
                           gp_latency_us_p99=res.rcu["gp_latency_us_p99"])
    on = next(r["throughput_ops_per_s"] for r in report.rows if r["cpus"] == 4 and r["percpu"] == "on")
    off = run(base.with_(cpus=4, lockstat=False)).throughput_ops_per_s
    report.add("lockstat_cost_pct", 100.0 * (off - on) / max(off, 1.0))
    report.notes.append(f"lockstat cost: {on:,.0f} ops/s with it, {off:,.0f} without; run-to-run noise is "
                        "several % on a shared machine")
    cores = os.cpu_count() or 1
    over = [n for n in CPUS if n + 1 > cores]
    if over:
        report.notes.append(f"with {', '.join(map(str, over))} CPUs the processes outnumber the {cores} cores")
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", default="1G")
    raise SystemExit(main(bench, ap))
