"""A contention study: lock wait and throughput over CPUs x the per-CPU cluster cache.

Runs the model (``shmswap.run``: a manager and one process per CPU) over a tiny grid, 1 s per
point: cpus 1 and 2, ``--percpu on`` and ``off``.  Prints one line per point (throughput, ci_lock
and si_lock wait per operation), draws ``contention.png`` (or ``--out PATH``), and ends with one
machine-readable line: ``RESULT {json}``.

    python examples/contention.py [--seconds 1] [--out docs/examples/contention.png]
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import shmswap  # noqa: E402

CPUS = (1, 2)
PERCPU = ("on", "off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="run time per point")
    ap.add_argument("--out", default="contention.png", help="the picture")
    a = ap.parse_args()
    rows = []
    for percpu in PERCPU:
        for cpus in CPUS:
            cfg = shmswap.Config(cpus=cpus, percpu=percpu, seconds=a.seconds, size="64M", quiet=True)
            res = shmswap.run(cfg)
            steps = max(1, res.ops["steps"])
            row = {"cpus": cpus, "percpu": percpu, "ops_per_s": round(res.throughput_ops_per_s),
                   "ci_lock_wait_ns_per_op": round(res.locks["ci_lock"]["wait_ns_total"] / steps, 1),
                   "si_lock_wait_ns_per_op": round(res.locks["si_lock"]["wait_ns_total"] / steps, 1),
                   "status": res.exit_status()}
            rows.append(row)
            print(f"cpus={cpus} percpu={percpu:3}  {row['ops_per_s']:>8,} ops/s  ci_lock wait "
                  f"{row['ci_lock_wait_ns_per_op']:>8.1f} ns/op  "
                  f"si_lock wait {row['si_lock_wait_ns_per_op']:>8.1f} ns/op")
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    for percpu in PERCPU:
        pts = [r for r in rows if r["percpu"] == percpu]
        xs = [r["cpus"] for r in pts]
        left.plot(xs, [r["ops_per_s"] for r in pts], marker="o", label=f"percpu {percpu}")
        right.plot(xs, [r["ci_lock_wait_ns_per_op"] + r["si_lock_wait_ns_per_op"] for r in pts], marker="o",
                   label=f"percpu {percpu}")
    left.set(title="throughput", xlabel="CPUs", ylabel="operations per s", xticks=list(CPUS))
    right.set(title="ci_lock + si_lock wait", xlabel="CPUs", ylabel="ns per operation", xticks=list(CPUS))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(a.out, dpi=90)
    plt.close(fig)
    print("RESULT " + json.dumps({"example": "contention", "png": a.out, "rows": rows}))


if __name__ == "__main__":
    main()
