"""``shmswap sweep``: a grid of whole runs (``shmswap/experiments/sweep.py``) into ``--out DIR``.

Every run option takes a list (``--cpus 1,2,4 --percpu on,off --size 256M,1G``; ``--orders``
lists are separated by ``;``); each point runs an uncounted warm-up and then ``--repeat`` counted
runs.  ``DIR`` gets ``results.csv`` (one row per run), ``results.json`` (the grid, the machines,
the rows, a summary) and the plots.  ``--resume`` skips the runs already in ``DIR`` (the results
are saved after every point, so an interrupted sweep resumes); ``--shard i/n`` runs the i-th of
n slices of the grid; ``--dask ADDRESS`` runs the points on a Dask cluster; ``--merge DIR...``
joins pieces into ``--out``.

Exit status: 1 if any run (or warm-up) had a violation or an oracle failure (``--strict``: also a
finding), 0 otherwise; 2 on bad input, with one line naming the value and nothing created.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..config import ConfigError
from ..experiments.sweep import (
    JSON_NAME,
    OPTIONS,
    PLOT_FILES,
    Grid,
    SweepError,
    connect_dask,
    document,
    load,
    machine_info,
    merge,
    parse_shard,
    run_sweep,
    write_outputs,
)
from .common import progress_bar

__all__ = ["add_parser", "main", "DEFAULT_OUT"]

DEFAULT_OUT = "sweep-results"


def add_parser(sub) -> argparse.ArgumentParser:
    """Add ``sweep`` and its options to the subcommands ``sub``."""
    s = sub.add_parser("sweep", help="a grid of runs over CPUs and any run option, with CSV, JSON and plots",
                       description="Run a grid of whole multiprocess runs (every run option takes a list), "
                       "each point repeated after an uncounted warm-up, into --out DIR: results.csv, "
                       "results.json and PNG plots.  The default grid (12 points of 2 s) takes about a "
                       "minute on 2 cores.")
    for o in OPTIONS:
        sep = "';'" if o.sep == ";" else "','"
        s.add_argument(o.flag, dest=o.name, default=o.default, metavar="LIST", help=f"{o.help} ({sep}-separated)")
    s.add_argument("--repeat", type=int, default=1, help="counted runs of each point (after one warm-up)")
    s.add_argument("--warmup", type=float, default=0.5,
                   help="seconds of the uncounted warm-up run before each point's repeats (0: none)")
    s.add_argument("--out", default=DEFAULT_OUT, help="the results directory (must not exist, unless --resume)")
    s.add_argument("--resume", action="store_true", help="skip the runs already in --out (same grid)")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="run only the I-th of N slices of the grid (0 <= I < N), e.g. for Slurm arrays")
    s.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run each point on this Dask scheduler (the 'dist' extra); workers should run one "
                   "task at a time or declare '--resources cores=N'")
    s.add_argument("--merge", nargs="+", default=None, metavar="DIR",
                   help="join these sweep directories (shards) into --out instead of running; the grid "
                   "options are taken from them")
    s.add_argument("--strict", action="store_true", help="a run's findings count as failures too")
    s.add_argument("--json", action="store_true", help="print results.json on stdout instead of the table")
    s.add_argument("--quiet", action="store_true", help="no progress bar and no table")
    s.set_defaults(func=main)
    return s


def _fail(message: str) -> int:
    sys.stderr.write(f"shmswap: error: {' '.join(str(message).split())}\n")
    return 2


def _check_out(out: Path, resume: bool) -> dict | None:
    """Validate ``--out`` without creating anything; the document to resume from, if any."""
    parent = out.absolute().parent
    if not parent.is_dir():
        raise SweepError(f"--out: {str(out)!r}: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise SweepError(f"--out: {str(out)!r}: cannot write in {str(parent)!r}")
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise SweepError(f"--out: {str(out)!r} exists and is not a directory")
        if resume and (out / JSON_NAME).exists():
            return load(out)
        if any(out.iterdir()):
            raise SweepError(f"--out: {str(out)!r} exists (use --resume to continue it, or another directory)")
    return None


def _table(doc: dict, out: Path) -> str:
    summary = doc["summary"]
    if not summary:
        return f"no runs; {out}"
    names = [k for k in summary[0] if k not in ("point", "repeats", "throughput_median", "throughput_min",
                                                  "throughput_max", "violations", "findings", "status",
                                                  "oversubscribed")]
    head = ["point", *names, "runs", "ops/s (median)", "spread", "violations", "findings", "status"]
    lines = [head]
    for s in summary:
        spread = f"{s['throughput_min']:,.0f}..{s['throughput_max']:,.0f}" if s["repeats"] > 1 else "-"
        lines.append([str(s["point"]), *(str(s[n]) + ("*" if n == "cpus" and s["oversubscribed"] else "")
                                         for n in names), str(s["repeats"]), f"{s['throughput_median']:,.0f}",
                      spread, str(s["violations"]), str(s["findings"]), str(s["status"])])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in lines)
    m = doc["machine"]
    notes = [f"machine: {m.get('host')}, {m.get('usable_cores')} usable of {m.get('cores')} cores, "
             f"Python {m.get('python')}, numpy {m.get('numpy')}, shmswap {m.get('shmswap')}"
             + (f" ({m['git_commit'][:12]})" if m.get("git_commit") else "")]
    if any(s["oversubscribed"] for s in summary):
        notes.append("* CPUs outnumber the cores the run could use (contention is partly the scheduler's)")
    if not doc["complete"]:
        notes.append("incomplete: some points of the grid are missing")
    files = ", ".join(["results.csv", "results.json", *PLOT_FILES])
    notes.append(f"written: {out}/ ({files})")
    return text + "\n" + "\n".join(notes)


def _print(doc: dict, out: Path, args) -> None:
    if args.json:
        print(json.dumps(doc, indent=1))
    elif not args.quiet:
        print(_table(doc, out))


def _merge(args) -> int:
    out = Path(args.out)
    try:
        pieces = []
        for d in args.merge:
            if Path(d).absolute() == out.absolute():
                raise SweepError(f"--merge: {d!r} is also --out")
            pieces.append((d, load(d)))
        _check_out(out, resume=False)
        doc = merge(pieces)
    except SweepError as e:
        return _fail(str(e))
    write_outputs(out, doc)
    _print(doc, out, args)
    return doc["exit_status"]


def main(args: argparse.Namespace) -> int:
    """Run (or merge) the sweep; the exit status."""
    if args.merge:
        return _merge(args)
    out = Path(args.out)
    client = None
    try:
        grid = Grid.parse({o.name: getattr(args, o.name) for o in OPTIONS}, repeat=args.repeat,
                          warmup_s=args.warmup, strict=args.strict)
        shard = parse_shard(args.shard) if args.shard is not None else None
        previous = _check_out(out, args.resume)
        if previous is not None and previous["grid"] != grid.spec():
            raise SweepError(f"--resume: {str(out)!r} holds a different sweep (its grid, repeat or warm-up differ)")
        if args.dask is not None:
            client = connect_dask(args.dask)
    except (ConfigError, SweepError) as e:
        return _fail(str(e))
    rows = list(previous["rows"]) if previous else []
    machines = dict(previous.get("machines", {})) if previous else {}
    jobs = grid.jobs(shard, done={(r["key"], r["repeat"]) for r in rows})
    wanted = {p.key for p in grid.points(shard)}
    shard_text = f"{shard[0]}/{shard[1]}" if shard else None
    machine = machine_info()
    total = sum(len(j.repeats) for j in jobs)

    def doc(final: bool) -> dict:
        have = {(r["key"], r["repeat"]) for r in rows}
        complete = all((k, rep) in have for k in wanted for rep in range(grid.repeat))
        return document(grid.spec(), rows, machines, machine, shard_text, complete=complete and final)

    try:
        with progress_bar("shmswap sweep", max(total, 1), args.quiet or args.json) as bar:
            done = 0

            def on_point(piece: dict) -> None:
                nonlocal done
                rows.extend(piece["rows"])
                machines[piece["machine"]["host"]] = piece["machine"]
                done += len(piece["rows"])
                write_outputs(out, doc(final=False), plots=False)       # a checkpoint for --resume
                if bar is not None:
                    last = piece["rows"][-1]
                    bar(done, f"{done}/{total} runs, last: {last['cpus']} CPUs "
                        f"{last['throughput_ops_per_s']:,.0f} ops/s")

            run_sweep(jobs, on_point, client)
    except KeyboardInterrupt:
        sys.stderr.write(f"shmswap: sweep interrupted: {len(rows)} runs saved in {out} (--resume continues)\n")
        return 130
    finally:
        if client is not None:
            client.close()
    final = doc(final=True)
    write_outputs(out, final)
    _print(final, out, args)
    return final["exit_status"]
