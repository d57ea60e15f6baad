"""``shmswap plot RESULT.json``: draw the time series of a run made with ``--sample-ms N``.

Writes ``<name>.timeseries.png`` (live tables, clusters per list, table sleeps and migrations, lock
wait per class, throughput) and, with ``--html``, ``<name>.timeseries.html``: the same charts on
one self-contained page (the PNG is embedded as a data URI; nothing is fetched).  Exit status 2
with one line naming the problem when the result cannot be read or has no samples; nothing is
created then.  Files are written whole (a temporary name, then a rename).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..experiments.timeseries import SeriesError, draw_png, html_page
from .common import cut, write_atomically

__all__ = ["add_parser", "main"]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("plot", help="draw the time series of a run made with --sample-ms (PNG, HTML)",
                       description="Draw the samples of a shmswap run --sample-ms N --json RESULT.json.")
    p.add_argument("result", metavar="RESULT.json", help="a result written by shmswap run --sample-ms N --json")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the pictures (created if missing; default: beside RESULT.json)")
    p.add_argument("--html", action="store_true", help="also write a self-contained HTML page of the charts")
    p.set_defaults(func=main)
    return p


def _fail(message: str) -> int:
    sys.stderr.write(f"shmswap: error: {message}\n")
    return 2


def main(args: argparse.Namespace) -> int:
    path = args.result
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        return _fail(f"{cut(repr(path))}: cannot read: {e.strerror or e}")
    except (ValueError, UnicodeDecodeError) as e:
        return _fail(f"{cut(repr(path))}: not JSON ({cut(str(e))})")
    out = args.out if args.out is not None else (os.path.dirname(os.path.abspath(path)))
    if os.path.exists(out) and not os.path.isdir(out):
        return _fail(f"--out: {cut(repr(out))} is not a directory")
    try:
        png = draw_png(doc)
    except SeriesError as e:
        return _fail(f"{cut(repr(path))}: {e}")
    stem = os.path.splitext(os.path.basename(path))[0]
    try:
        os.makedirs(out, exist_ok=True)
        png_path = os.path.join(out, f"{stem}.timeseries.png")
        write_atomically(png_path, png)
        written = [png_path]
        if args.html:
            html_path = os.path.join(out, f"{stem}.timeseries.html")
            s = doc.get("sampling", {})
            summary = {"result": os.path.basename(path), "CPUs": doc["config"].get("cpus"),
                       "duration (s)": round(float(doc.get("duration_s", 0)), 3),
                       "throughput (ops/s)": round(float(doc.get("throughput_ops_per_s", 0))),
                       "samples": s.get("count", len(doc["samples"])), "interval (ms)": s.get("interval_ms")}
            write_atomically(html_path, html_page(f"shmswap: {stem}", [("time series", png)], summary))
            written.append(html_path)
    except OSError as e:
        return _fail(f"--out: cannot write into {cut(repr(out))}: {e.strerror or e}")
    for w in written:
        print(w)
    return 0
