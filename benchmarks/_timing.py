"""What every benchmark shares: the metrics (each described once, here), best-of-N interleaved
timing with the garbage collector off, machine facts, and the report (a table, or ``--json``).

A benchmark script builds a ``Report``, adds figures by metric name, and returns it from the
function that ``main`` runs.  Speed never fails a benchmark: each figure is printed beside its
target (``targets.py``); the exit status is 1 only when the model WARNed (``ModelWarned``) or the
benchmark crashed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from targets import TARGETS, Target

__all__ = ["Metric", "METRICS", "Report", "ModelWarned", "best_ns", "machine", "main"]


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    description: str
    target: Target | None = None
    baseline: float | None = None   # measured with the layout before the package split

    def format(self, value) -> str:
        if value is None:
            return "n/a"
        return format(value, _FORMATS.get(self.unit, ".3g"))


_FORMATS = {"ns": ".0f", "us": ".2f", "s": ".3f", "MiB": ".1f", "calls": ".1f", "locks": ".1f",
            "ops/s": ",.0f", "%": ".2f", "ms": ".1f"}


def _m(name: str, unit: str, description: str, baseline: float | None = None) -> Metric:
    return Metric(name, unit, description, TARGETS.get(name), baseline)


METRICS: dict[str, Metric] = {m.name: m for m in [
    # primitives.py: every ns figure is one loop iteration, the loop's own cost included
    _m("loop_overhead_ns", "ns", "an empty for-loop iteration (included in every ns figure)"),
    _m("shmswap_lock_pair_ns", "ns", "Region.lock + unlock on a /dev/shm word, uncontended, lockstat on", 38),
    _m("mp_lock_pair_ns", "ns", "multiprocess.Lock() acquire + release (a POSIX semaphore)", 37),
    _m("thread_lock_pair_ns", "ns", "threading.Lock() acquire + release"),
    _m("atomics_lock_pair_ns", "ns", "the atomics package: cmpxchg_strong(0, 1) + store(0) spin lock"),
    _m("atomic_op_ns", "ns", "Region.fetch_add", 30),
    _m("atomic_load_ns", "ns", "Region.load"),
    _m("atomic_store_ns", "ns", "Region.store"),
    _m("atomic_cmpxchg_ns", "ns", "Region.cmpxchg (succeeding)"),
    _m("atomic_xchg_ns", "ns", "Region.xchg"),
    _m("sched_point_ns", "ns", "sched_point(kind, a, b) with no hook installed", 19),
    _m("alloc_free_pair_us", "us", "order-0 pair on 1 GiB: folio_alloc + folio_lock + folio_alloc_swap, "
       "then writeback_folio (leaves the swap cache; no map count, so the slot is freed)", 11.75),
    _m("calls_per_pair", "calls", "function calls per pair under cProfile (primitive calls, the loop excluded)",
       145),
    _m("locks_per_pair", "locks", "lock acquisitions per pair (lockstat)"),
    _m("slot_life_workload_us", "us", "the workload's slot life: alloc, swap_duplicate, writeback_folio "
       "leaving a shadow, free_swap_and_cache_nr"),
    # swapon.py
    _m("swapon_1t_s", "s", "SwapSystem.create(Config(size='1T', cpus=4), n_workers=5): segments + swapon", 0.023),
    _m("swapon_1t_shm_mib", "MiB", "memory really touched in /dev/shm by that swapon (allocated blocks)", 32),
    # scaling.py: one row per run of shmswap.run
    _m("cpus", "", "CPU worker processes (plus the manager)"),
    _m("percpu", "", "the per-CPU cluster cache (Config.percpu)"),
    _m("throughput_ops_per_s", "ops/s", "workload operations per second, all CPUs"),
    _m("per_cpu_ops_per_s", "ops/s", "the same per CPU"),
    _m("contention_pct", "%", "lock acquisitions whose first try failed, all classes"),
    _m("si_lock_wait_ms", "ms", "time spent waiting for si->lock, all workers"),
    _m("ci_lock_wait_ms", "ms", "time spent waiting for ci->lock, all workers"),
    _m("local_lock_wait_ms", "ms", "time spent waiting for the per-CPU local lock, all workers"),
    _m("gp_latency_us_p50", "us", "RCU grace-period latency, median"),
    _m("gp_latency_us_p99", "us", "RCU grace-period latency, 99th percentile"),
    # scheduler.py: the deterministic scheduler (shmswap run --deterministic)
    _m("det_point_us", "us", "wall time per scheduling point: the workload under the deterministic scheduler, "
       "2 CPUs + the manager as threads of one process, seeded random choice (one point = one choice)"),
    _m("det_points_per_s", "ops/s", "scheduling points per second (the same run)"),
    _m("det_switch_pct", "%", "share of points where the chosen task is not the running one (a thread hand-off)"),
    _m("detproc_point_us", "us", "wall time per scheduling point, the same runs with every task an OS process "
       "(shmswap run --deterministic --processes: a hand-off is a semaphore post and wait between processes)"),
    _m("detproc_points_per_s", "ops/s", "scheduling points per second, processes mode (the same runs)"),
    _m("lockstat_cost_pct", "%", "throughput lost to lockstat: 4 CPUs, per-CPU on, Config(lockstat=False) vs on"),
]}


class ModelWarned(RuntimeError):
    """The model met a WARN condition during a benchmark: its figures are not to be trusted."""


# -- timing ------------------------------------------------------------------------------------------

def best_ns(cases: dict[str, Callable[[int], object]], iters: int, repeats: int,
            budget_s: float = 0.25) -> dict[str, float]:
    """Best ns per iteration of each ``loop(n)`` over ``repeats`` round-robin rounds, gc off.

    Calibration: a probe sizes each case's batch to ``iters``, fewer if a batch would take more
    than ``budget_s``, and warms it up.  Rounds run one batch of every case in turn, so a burst of
    other work on the machine spoils one batch of several figures, not every batch of one.
    """
    sizes = {}
    for name, loop in cases.items():
        t0 = time.perf_counter_ns()
        loop(100)
        per = max(1.0, (time.perf_counter_ns() - t0) / 100)
        sizes[name] = max(100, min(iters, int(budget_s * 1e9 / per)))
        loop(max(100, sizes[name] // 10))
    best = dict.fromkeys(cases, float("inf"))
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, loop in cases.items():
                n = sizes[name]
                t0 = time.perf_counter_ns()
                loop(n)
                best[name] = min(best[name], (time.perf_counter_ns() - t0) / n)
    finally:
        if enabled:
            gc.enable()
    return best


# -- machine facts -----------------------------------------------------------------------------------

def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict:
    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "numpy": np.__version__, "platform": platform.platform(), "git_commit": _git_commit(),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


# -- the report ----------------------------------------------------------------------------------------

class Report:
    """Figures by metric name, optional rows (one per run, columns by metric name), and notes."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.values: dict[str, float | None] = {}
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.machine = machine()

    def add(self, name: str, value: float | None) -> None:
        if name not in METRICS:
            raise KeyError(f"{name}: describe it in METRICS (benchmarks/_timing.py) first")
        self.values[name] = value

    def add_row(self, **values) -> None:
        for name in values:
            if name not in METRICS:
                raise KeyError(f"{name}: describe it in METRICS (benchmarks/_timing.py) first")
        self.rows.append(values)

    def as_dict(self) -> dict:
        verdicts = {k: {"target": str(METRICS[k].target), "verdict": METRICS[k].target.verdict(v)}
                    for k, v in self.values.items() if METRICS[k].target}
        return {"benchmark": self.title, "metrics": self.values, "targets": verdicts, "rows": self.rows,
                "notes": self.notes, "machine": self.machine}

    def render(self) -> str:
        out = [self.title, ""]
        if self.rows:
            names = list(self.rows[0])
            table = [tuple(names)] + [tuple(METRICS[k].format(r[k]) if not isinstance(r[k], str) else r[k]
                                            for k in names) for r in self.rows]
            out += _columns(table, ">") + [""]
        if self.values:
            table = [("metric", "value", "unit", "target", "verdict", "before")]
            for k, v in self.values.items():
                m = METRICS[k]
                table.append((k, m.format(v), m.unit, str(m.target or ""), m.target.verdict(v) if m.target else "",
                              m.format(m.baseline) if m.baseline is not None else ""))
            out += _columns(table, ">") + [""]
        shown = (list(self.rows[0]) if self.rows else []) + list(self.values)
        out += [f"  {k}{' [' + METRICS[k].unit + ']' if METRICS[k].unit else ''}: {METRICS[k].description}"
                for k in shown]
        out += [f"  note: {n}" for n in self.notes]
        m = self.machine
        out += ["", f"machine: {m['cores']} cores ({m['usable_cores']} usable), {m['python']}, numpy {m['numpy']}, "
                    f"commit {m['git_commit']}, 1-min load {m['loadavg_1m']} at start; {m['platform']}",
                "'before': measured with the layout before the package split; targets: benchmarks/targets.py"]
        return "\n".join(out)


def _columns(table: list[tuple], align: str) -> list[str]:
    """Aligned columns, a rule under the header; columns empty below the header are left out."""
    keep = [i for i in range(len(table[0])) if any(row[i] != "" for row in table[1:])]
    table = [tuple(row[i] for i in keep) for row in table]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    lines = []
    for j, row in enumerate(table):
        cells = [f"{c:<{w}}" if i == 0 or j == 0 else f"{c:{align}{w}}"
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def main(bench: Callable[[argparse.Namespace], Report], parser: argparse.ArgumentParser,
         argv: list[str] | None = None) -> int:
    """Parse the arguments (``--json`` added here), run ``bench``, print its report; 1 if the model WARNed."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    try:
        report = bench(args)
    except ModelWarned as e:
        print(f"FAILED: the model WARNed during the benchmark: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict()) if args.json else report.render())
    return 0
