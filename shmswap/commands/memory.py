"""``shmswap memory``: static vs dynamic swap-table memory for devices up to 1 TiB
(experiments/memory.py): the model's table bytes, the real shared memory in use (tmpfs blocks,
measured), swapon time, and a log-log plot; beside them what the seed's commit message claims.

Exit status: 0, or 1 if a point's invariant check found a violation; 2 for bad arguments (one
line naming the value; nothing created).  ``--json`` prints the study as JSON instead of the
table; ``--out DIR`` gets ``memory.json``, ``memory.csv`` and ``memory.png``, written whole at
the end.
"""

from __future__ import annotations

import argparse
import json

from ..config import ConfigError
from ..experiments.memory import PATTERNS, TABLES, MemoryStudy, plot_memory, points_csv, run_memory
from .common import error, int_arg, progress_bar
from .outdir import check_out_dir, write_dir

__all__ = ["add_parser", "main", "study_from_args", "render"]


def _list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def add_parser(sub) -> argparse.ArgumentParser:
    """Add ``memory`` and its options to the subcommands ``sub``."""
    d = MemoryStudy()
    m = sub.add_parser("memory", help="static vs dynamic swap-table memory, devices up to 1 TiB",
                       description="Static vs dynamic swap tables: for each device size, --tables mode, fill "
                                   "and fragmentation pattern, a fresh device in this process is filled and "
                                   "measured: the model's table bytes, the real /dev/shm blocks of its "
                                   "segments, and the swapon time.  Fills are counted in half-cluster folios "
                                   "(one allocation call each); points beyond --max-allocs are listed as "
                                   "skipped, never extrapolated.")
    m.add_argument("--sizes", default=",".join(d.sizes), help="device sizes, comma-separated (K/M/G/T)")
    m.add_argument("--tables", default=",".join(d.tables), help=f"comma-separated, of {'|'.join(TABLES)}")
    m.add_argument("--fills", default=",".join(d.fills),
                   help="fill levels, comma-separated: a fraction (0.25), a percentage (25%%) or an amount "
                        "in use (1G)")
    m.add_argument("--patterns", default=",".join(d.patterns),
                   help=f"comma-separated, of {'|'.join(PATTERNS)}: packed = half-cluster folios back to back; "
                        "scattered = twice as many, every other one freed (twice the clusters in use)")
    m.add_argument("--slots-per-cluster", type=int_arg, default=d.slots_per_cluster, help="power of two, 8..512")
    m.add_argument("--max-allocs", type=int_arg, default=d.max_allocs,
                   help="allocation calls allowed per point; a point needing more is skipped")
    m.add_argument("--json", action="store_true", help="print the whole study as JSON instead of the table")
    m.add_argument("--out", default=None, help="directory for memory.json, memory.csv and memory.png")
    m.add_argument("--quiet", action="store_true", help="no progress output")
    m.set_defaults(func=main)
    return m


def study_from_args(a: argparse.Namespace) -> MemoryStudy:
    study = MemoryStudy(sizes=_list(a.sizes), tables=_list(a.tables), fills=_list(a.fills),
                        patterns=_list(a.patterns), slots_per_cluster=a.slots_per_cluster, max_allocs=a.max_allocs)
    study.validate()
    return study


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f}"


def render(doc: dict) -> str:
    out = ["shmswap memory: " + ", ".join(f"{k} {','.join(map(str, v)) if isinstance(v, list) else v}"
                                          for k, v in doc["parameters"].items()),
           f"method: {doc['method']}", ""]
    header = ["size", "tables", "fill", "pattern", "in use", "swapon ms", "tables MiB", "static MiB", "real MiB",
              "real tables MiB", "check"]
    rows = []
    for p in doc["points"]:
        rows.append([p["size"], p["tables"], p["fill"], p["pattern"], f"{p['fill_fraction'] * 100:.3g}%",
                     f"{p['swapon_s'] * 1e3:.1f}", _mib(p["table_bytes"]), _mib(p["static_table_bytes"]),
                     _mib(p["shm_bytes"]), _mib(p["shm_tables_bytes"]), "ok" if p["check_ok"] else "VIOLATION"])
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths]] + rows:
        out.append("  " + "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in
                                    enumerate(zip(r, widths, strict=True))))
    out.append("")
    out.append(f"what the patch saves: the seed claims {doc['cover_letter']}; measured on the model "
               "(table bytes, static -> dynamic):")
    for s in doc["savings"]:
        out.append(f"  {s['size']:>5} fill {s['fill']:>4} {s['pattern']:<9}: {_mib(s['static_table_bytes'])} MiB "
                   f"-> {_mib(s['dynamic_table_bytes'])} MiB (saves {s['saved_fraction']:.1%}); real /dev/shm "
                   f"{_mib(s['static_shm_bytes'])} -> {_mib(s['dynamic_shm_bytes'])} MiB")
    if doc["skipped"]:
        out.append("")
        out.append("not measured:")
        for s in doc["skipped"]:
            out.append(f"  {s['size']} {s['tables']} fill {s['fill']} {s['pattern']}: {s['reason']}")
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    try:
        study = study_from_args(args)
    except ConfigError as e:
        error(str(e))
    if args.out:
        check_out_dir(args.out)
    total = len(study.sizes) * len(study.tables) * len(study.fills) * len(study.patterns)
    with progress_bar("shmswap memory", total, args.quiet) as bar:
        doc = run_memory(study, (lambda done, text: bar(done, text)) if bar is not None else None)
    files = []
    if args.out:
        doc["files"] = ["memory.json", "memory.csv", "memory.png"]
        files = write_dir(args.out, {"memory.json": json.dumps(doc, indent=1), "memory.csv": points_csv(doc),
                                     "memory.png": plot_memory(doc)})
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(render(doc))
        for f in files:
            print(f"wrote {f}")
    return 0 if all(p["check_ok"] for p in doc["points"]) else 1
