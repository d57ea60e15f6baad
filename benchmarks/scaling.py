"""Scaling of the multiprocess model: throughput and contention by CPU count, per-CPU cache on and off.

Runs ``shmswap run`` (the library call behind it) for 1, 2 and 4 CPUs with ``--percpu on`` and
``off``, same seed and workload, and prints the figures side by side in one run; says where CPUs
outnumber cores (lock holders get preempted there, and contention is partly the scheduler's).  It
also reports grace-period latency and the cost of lockstat (the same 4-CPU run with it off).

    python benchmarks/scaling.py [--json] [--seconds S] [--size SIZE]

``--json`` prints one JSON object: ``rows`` (``cpus``, ``percpu``, ``throughput_ops_per_s``, lock
contention, grace periods), ``lockstat_cost`` and ``machine``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

from shmswap.config import Config
from shmswap.runtime import run_multiprocess

CPUS = (1, 2, 4)
CLASSES = ("si_lock", "ci_lock", "local_lock", "slab_lock", "handoff_lock")


def _row(res, cpus: int, percpu: str) -> dict:
    locks = res.locks
    acq = sum(v["acquisitions"] for v in locks.values())
    cont = sum(v["contentions"] for v in locks.values())
    return {
        "cpus": cpus, "percpu": percpu,
        "throughput_ops_per_s": round(res.throughput_ops_per_s),
        "per_cpu_ops_per_s": round(res.throughput_ops_per_s / cpus),
        "fast_path_hits": res.ops["fast_path_hits"], "slow_path": res.ops["slow_path"],
        "contention_pct": round(100.0 * cont / acq, 3) if acq else 0.0,
        "contentions": {k: locks[k]["contentions"] for k in CLASSES},
        "wait_ms": {k: round(locks[k]["wait_ns_total"] / 1e6, 2) for k in CLASSES},
        "grace_periods": res.rcu["grace_periods"],
        "gp_latency_us_p50": round(res.rcu["gp_latency_us_p50"], 1),
        "gp_latency_us_p99": round(res.rcu["gp_latency_us_p99"], 1),
        "violations": len(res.check.violations),
        "oversubscribed": cpus + 1 > (os.cpu_count() or 1),
    }


def measure(seconds: float, size: str) -> dict:
    base = Config(size=size, seconds=seconds, seed=7, quiet=True)
    rows = []
    for percpu in ("on", "off"):
        for cpus in CPUS:
            rows.append(_row(run_multiprocess(base.with_(cpus=cpus, percpu=percpu)), cpus, percpu))
    off = run_multiprocess(base.with_(cpus=4, lockstat=False))
    on = next(r for r in rows if r["cpus"] == 4 and r["percpu"] == "on")
    cost = {"on_ops_per_s": on["throughput_ops_per_s"], "off_ops_per_s": round(off.throughput_ops_per_s),
            "cost_pct": round(100.0 * (off.throughput_ops_per_s - on["throughput_ops_per_s"])
                              / max(off.throughput_ops_per_s, 1), 1)}
    machine = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    return {"rows": rows, "lockstat_cost": cost, "machine": machine, "seconds": seconds, "size": size}


def render(d: dict) -> str:
    cores = d["machine"]["cores"]
    out = [f"shmswap scaling: {d['size']} SSD, {d['seconds']} s a run, {cores} cores "
           f"(a run is N CPU processes plus the manager)", ""]
    head = f"{'cpus':>4} {'percpu':>6} {'ops/s':>10} {'ops/s/cpu':>10} {'contended%':>10} " \
           f"{'si ms':>8} {'ci ms':>8} {'local ms':>8} {'gp p50us':>9} {'gp p99us':>9}  note"
    out += [head, "-" * len(head)]
    for r in d["rows"]:
        note = "CPUs outnumber cores" if r["oversubscribed"] else ""
        if r["violations"]:
            note += f" VIOLATIONS {r['violations']}"
        w = r["wait_ms"]
        out.append(f"{r['cpus']:>4} {r['percpu']:>6} {r['throughput_ops_per_s']:>10,} {r['per_cpu_ops_per_s']:>10,} "
                   f"{r['contention_pct']:>10.3f} {w['si_lock']:>8.1f} {w['ci_lock']:>8.1f} {w['local_lock']:>8.1f} "
                   f"{r['gp_latency_us_p50']:>9.0f} {r['gp_latency_us_p99']:>9.0f}  {note}")
    c = d["lockstat_cost"]
    out += ["", f"lockstat cost (4 CPUs, per-CPU on): {c['on_ops_per_s']:,} ops/s with it, {c['off_ops_per_s']:,} "
                f"without: {c['cost_pct']:+.1f}% (run-to-run noise on a shared 2-core machine is several %)"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", default="1G")
    a = ap.parse_args(argv)
    d = measure(a.seconds, a.size)
    print(json.dumps(d, indent=1) if a.json else render(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
