"""The plots of a sweep (matplotlib, Agg): each figure against CPUs, a median over the repeats with
the spread (min to max) as error bars, one line per combination of the other options that vary.

* ``throughput.png``: operations per second, with the linear-scaling reference as will-it-scale
  draws it (the smallest CPU count's median times N / N0, dashed, per line);
* ``lock_wait.png``: lockstat wait per lock class (ms waited per second of run, summed over CPUs),
  one panel per class that waited at all;
* ``tables.png``: the peak memory of the swap tables, with the static tables' size for reference.

Where the CPU processes outnumber the cores the runs could use, the background is shaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402

__all__ = ["PLOTS", "write_plots", "series"]

_LOCK_WAIT = re.compile(r"locks_(.+)_wait_ns_total")


def series(rows: list[dict], option_names: Sequence[str]) -> dict[str, list[dict]]:
    """Rows grouped by the values of the options that vary (other than ``cpus``); label -> rows."""
    varying = [n for n in option_names if n != "cpus" and len({str(r.get(n)) for r in rows}) > 1]
    out: dict[str, list[dict]] = {}
    for r in rows:
        label = ", ".join(f"{n}={r.get(n)}" for n in varying) or "all"
        out.setdefault(label, []).append(r)
    return out


def _by_cpus(rows: list[dict], value: Callable[[dict], float | None]) -> tuple[np.ndarray, ...]:
    """x (CPUs), median, lower and upper spread over the repeats."""
    values: dict[int, list[float]] = {}
    for r in rows:
        v = value(r)
        if v is not None and math.isfinite(v):
            values.setdefault(int(r["cpus"]), []).append(float(v))
    xs = sorted(values)
    med = np.array([np.median(values[x]) for x in xs])
    lo = np.array([np.min(values[x]) for x in xs])
    hi = np.array([np.max(values[x]) for x in xs])
    return np.array(xs), med, med - lo, hi - med


def _decorate(ax, rows: list[dict], title: str, ylabel: str) -> None:
    cpus = sorted({int(r["cpus"]) for r in rows})
    cores = min((int(r["cores"]) for r in rows if r.get("cores")), default=0)
    ax.set_xticks(cpus)
    ax.set_xlim(0, max(cpus) + 0.5)
    if cores and max(cpus) > cores:
        ax.axvspan(cores + 0.5, max(cpus) + 0.5, color="0.85", zorder=0, label=f"CPUs > {cores} cores")
    ax.set_xlabel("CPUs (worker processes)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def _errorbar(ax, x, med, lo, hi, label, color):
    ax.errorbar(x, med, yerr=[lo, hi], marker="o", capsize=3, label=label, color=color)


def _throughput(rows: list[dict], option_names: Sequence[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, group) in enumerate(series(rows, option_names).items()):
        color = f"C{i % 10}"
        x, med, lo, hi = _by_cpus(group, lambda r: r.get("throughput_ops_per_s"))
        if not len(x):
            continue
        _errorbar(ax, x, med, lo, hi, label, color)
        ax.plot(x, med[0] * x / x[0], linestyle="--", color=color, alpha=0.5,
                label="linear scaling" if i == 0 else None)
    _decorate(ax, rows, "shmswap sweep: throughput (median, spread over repeats)", "operations / s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _lock_wait(rows: list[dict], option_names: Sequence[str], path: Path) -> None:
    classes = []                           # in lockstat's order, those that waited at all
    for k in dict.fromkeys(k for r in rows for k in r):
        m = _LOCK_WAIT.fullmatch(k)
        if m and any(r.get(k) for r in rows):
            classes.append(m.group(1))
    ncols = min(3, max(1, len(classes)))
    nrows = max(1, math.ceil(len(classes) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    groups = series(rows, option_names)
    for ax, cls in zip(axes.flat, classes, strict=False):
        for i, (label, group) in enumerate(groups.items()):
            def wait(r, cls=cls):
                ns, d = r.get(f"locks_{cls}_wait_ns_total"), r.get("duration_s")
                return ns / d / 1e6 if ns is not None and d else None
            x, med, lo, hi = _by_cpus(group, wait)
            if len(x):
                _errorbar(ax, x, med, lo, hi, label, f"C{i % 10}")
        _decorate(ax, rows, cls, "ms waited / s")
    for ax in list(axes.flat)[len(classes):]:
        ax.set_axis_off()
    if classes:
        axes.flat[0].legend(fontsize=6)
    else:
        axes.flat[0].text(0.5, 0.5, "no lock waited", ha="center", transform=axes.flat[0].transAxes)
    fig.suptitle("lock wait per class (lockstat; median, spread over repeats)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _tables(rows: list[dict], option_names: Sequence[str], path: Path) -> None:
    peak = [r.get("tables_bytes_peak") or 0 for r in rows] + [r.get("tables_bytes_static") or 0 for r in rows]
    unit, scale = ("MiB", 2 ** 20) if max(peak, default=0) >= 2 ** 20 else ("KiB", 2 ** 10)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, group) in enumerate(series(rows, option_names).items()):
        color = f"C{i % 10}"
        x, med, lo, hi = _by_cpus(group, lambda r: (r["tables_bytes_peak"] / scale
                                                    if r.get("tables_bytes_peak") is not None else None))
        if len(x):
            _errorbar(ax, x, med, lo, hi, label, color)
        static = sorted({r["tables_bytes_static"] for r in group if r.get("tables_bytes_static")})
        for s in static:
            ax.axhline(s / scale, linestyle=":", color=color, alpha=0.6,
                       label="static tables" if i == 0 and s == static[0] else None)
    _decorate(ax, rows, "swap table memory at its peak (median, spread over repeats)", unit)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PLOTS: tuple[tuple[str, Callable], ...] = (("throughput.png", _throughput), ("lock_wait.png", _lock_wait),
                                           ("tables.png", _tables))


def write_plots(rows: list[dict], directory: str | Path, option_names: Sequence[str]) -> list[Path]:
    """Every plot of ``PLOTS`` into ``directory``; the paths written."""
    out = []
    for name, plot in PLOTS:
        path = Path(directory) / name
        plot(rows, option_names, path)
        out.append(path)
    return out
