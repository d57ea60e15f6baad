"""Drawing a run's time series (``shmswap run --sample-ms N`` then ``shmswap plot RESULT.json``).

``series(result)`` checks a result document and returns its samples as arrays; ``draw_png``
draws the five charts (live tables, clusters per list, table sleeps and migrations, lock wait per
class, throughput) into one PNG (matplotlib's Agg backend: no display needed); ``html_page``
wraps PNGs into one self-contained HTML page (the images are data URIs: no network, no other file).
"""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402

__all__ = ["SeriesError", "series", "draw_png", "html_page", "CHARTS"]

CHARTS = ("live swap tables", "clusters per list", "table sleeps and migrations (per s)",
          "lock wait per class (ms per s)", "throughput (operations per s)")


class SeriesError(ValueError):
    """The document is not a result with samples; the message says what is missing."""


def series(doc: dict) -> dict:
    """The samples of a result document as arrays: t, tables_live, lists{}, sleeps, migrated,
    ops_per_s, lock_wait_ns{} (cumulative counters stay cumulative)."""
    if not isinstance(doc, dict) or "config" not in doc:
        raise SeriesError("not a shmswap result (no 'config')")
    samples = doc.get("samples")
    if not samples:
        raise SeriesError("the result has no samples (run it with --sample-ms N)")
    try:
        out = {"t": np.array([s["t"] for s in samples], dtype=float),
               "tables_live": np.array([s["tables_live"] for s in samples], dtype=float),
               "sleeps": np.array([s["sleeps"] for s in samples], dtype=float),
               "migrated": np.array([s["migrated"] for s in samples], dtype=float),
               "ops_per_s": np.array([s["ops_per_s"] for s in samples], dtype=float),
               "lists": {k: np.array([s["lists"][k] for s in samples], dtype=float) for k in samples[0]["lists"]},
               "lock_wait_ns": {k: np.array([s["lock_wait_ns"][k] for s in samples], dtype=float)
                                for k in samples[0]["lock_wait_ns"]}}
    except (KeyError, TypeError, ValueError) as e:
        raise SeriesError(f"a sample lacks a field or has a bad value ({e})") from None
    return out


def _rate(t: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """Per-second rate between samples (the first point is 0)."""
    if len(t) < 2:
        return np.zeros_like(cumulative)
    dt = np.diff(t)
    dt[dt <= 0] = np.nan
    return np.concatenate([[0.0], np.nan_to_num(np.diff(cumulative) / dt)])


def _title(doc: dict) -> str:
    cfg, var = doc.get("config", {}), doc.get("variant", {})
    name = ", ".join(f"{k}={v}" for k, v in var.items()) if isinstance(var, dict) else ""
    return (f"shmswap run: {cfg.get('cpus')} CPUs, {doc.get('duration_s', 0):.1f} s"
            + (f" ({name})" if name else ""))


def _figure(doc: dict, s: dict):
    t = s["t"]
    fig, axes = plt.subplots(5, 1, figsize=(9, 13), sharex=True, constrained_layout=True)
    fig.suptitle(_title(doc), fontsize=10)
    ax = axes[0]
    ax.plot(t, s["tables_live"], color="tab:blue")
    ax.set_ylabel("tables")
    ax = axes[1]
    for name, values in s["lists"].items():
        if values.any():
            ax.plot(t, values, label=name)
    ax.set_ylabel("clusters")
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    ax = axes[2]
    ax.plot(t, _rate(t, s["sleeps"]), label="table sleeps")
    ax.plot(t, _rate(t, s["migrated"]), label="migrations")
    ax.set_ylabel("per s")
    ax.legend(fontsize=7)
    ax = axes[3]
    for name, values in s["lock_wait_ns"].items():
        if values.any():
            ax.plot(t, _rate(t, values) / 1e6, label=name)
    ax.set_ylabel("ms waited per s")
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    ax = axes[4]
    ax.plot(t, s["ops_per_s"], color="tab:green")
    ax.set_ylabel("ops/s")
    ax.set_xlabel("time since start (s)")
    for ax, title in zip(axes, CHARTS, strict=True):
        ax.set_title(title, fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    return fig


def draw_png(doc: dict) -> bytes:
    """The five charts of a result with samples, as one PNG."""
    s = series(doc)
    fig = _figure(doc, s)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=90)
    finally:
        plt.close(fig)
    return buf.getvalue()


def html_page(title: str, images: list[tuple[str, bytes]], summary: dict | None = None) -> str:
    """One self-contained page: each PNG embedded as a data URI, with a caption; a table of figures."""
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">", f"<title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em}img{max-width:100%}td{padding:0 1em}</style>",
             "</head><body>", f"<h1>{html.escape(title)}</h1>"]
    if summary:
        parts.append("<table>")
        parts += [f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items()]
        parts.append("</table>")
    for caption, png in images:
        data = base64.b64encode(png).decode("ascii")
        parts.append(f"<h2>{html.escape(caption)}</h2><img alt=\"{html.escape(caption)}\" "
                     f"src=\"data:image/png;base64,{data}\">")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
