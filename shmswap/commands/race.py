"""``shmswap race``: race studies, one sub-subcommand each.  ``shmswap race migration``: the
migration-after-sleep study of ``swap_cluster_alloc_table`` (experiments/race.py).

Exit status: 0 when no trial had a violation or an oracle failure (the seed's lost clusters are
findings, the study's subject), 1 otherwise or when a run aborted, 2 for bad arguments (one line
naming the value; nothing created).  ``--json`` prints the study as JSON instead of the table;
``--out DIR`` gets ``study.json``, CSV files and PNG plots, written whole after every trial has run.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError
from ..experiments.race import (
    INPROCESS_OPS,
    MODES,
    VARIANTS,
    MigrationStudy,
    latency_csv,
    plot_branches,
    plot_latency,
    run_migration,
    summary_csv,
    trials_csv,
)
from ..runner.driver import RunAborted
from .common import error, float_arg, int_arg, progress_bar
from .outdir import check_out_dir, write_dir

__all__ = ["add_parser", "main", "study_from_args", "render"]


def add_parser(sub) -> argparse.ArgumentParser:
    """Add ``race`` and its studies to the subcommands ``sub``."""
    r = sub.add_parser("race", help="race studies (migration: swap_cluster_alloc_table after a sleep)",
                       description="Race studies over many short runs.")
    races = r.add_subparsers(dest="race", metavar="STUDY", required=True, parser_class=type(r))
    d = MigrationStudy()
    m = races.add_parser("migration", help="the migration-after-sleep study, seed vs merged",
                         description="The migration-after-sleep study: both --alloc-table variants on the same "
                                     "seeds (trial i uses --seed + i), the sleeping path forced; per variant "
                                     "every branch of swap_cluster_alloc_table, tables allocated and freed "
                                     "unused, clusters lost per 1000 sleeps (95% Wilson interval), slow vs "
                                     "fast path latency, and each trial's check and reproducing seed.")
    m.add_argument("--trials", type=int_arg, default=d.trials, help="trials per variant")
    m.add_argument("--seed", type=int_arg, default=d.seed, help="base seed: trial i uses seed + i")
    m.add_argument("--mode", default=d.mode,
                   help=f"{'|'.join(MODES)}: process = shmswap.run (real processes; outcomes reproduce "
                        "statistically), inprocess = shmswap.run_inprocess (a seed replays exactly)")
    m.add_argument("--variants", default=",".join(d.variants), help=f"comma-separated, of {'|'.join(VARIANTS)}")
    m.add_argument("--cpus", type=int_arg, default=d.cpus, help="worker CPUs per trial")
    m.add_argument("--size", default=d.size, help="device size (K/M/G/T)")
    m.add_argument("--slots-per-cluster", type=int_arg, default=d.slots_per_cluster, help="power of two, 8..512")
    m.add_argument("--orders", default=d.orders, help="order:probability,... summing to 1")
    m.add_argument("--fill", type=float_arg, default=d.fill, help="target fill of the device, 0..1")
    m.add_argument("--seconds", type=float_arg, default=d.seconds, help="length of a process-mode trial")
    m.add_argument("--ops", type=int_arg, default=None,
                   help=f"operations per trial (overrides --seconds; inprocess mode default {INPROCESS_OPS}, "
                        "since exact replay needs an operation budget)")
    m.add_argument("--atomic-fail", type=float_arg, default=d.atomic_fail,
                   help="atomic table allocation failure rate (1 forces the sleeping path)")
    m.add_argument("--sleep-fail", type=float_arg, default=d.sleep_fail,
                   help="sleeping table allocation failure rate (the T6b branch)")
    m.add_argument("--sleep-latency-us", type=int_arg, default=d.sleep_latency_us,
                   help="added latency of a sleeping table allocation")
    m.add_argument("--migrate", type=float_arg, default=d.migrate, help="probability of migrating after a sleep")
    m.add_argument("--migrate-to", default=d.migrate_to, help="random|N")
    m.add_argument("--latency-samples", type=int_arg, default=d.latency_samples,
                   help="slept allocations to time per variant for the latency histogram (0: none)")
    m.add_argument("--json", action="store_true", help="print the whole study as JSON instead of the table")
    m.add_argument("--out", default=None, help="directory for CSV files and PNG plots")
    m.add_argument("--quiet", action="store_true", help="no progress output")
    m.set_defaults(func=main)
    r.set_defaults(func=main)
    return r


def study_from_args(a: argparse.Namespace) -> MigrationStudy:
    study = MigrationStudy(trials=a.trials, seed=a.seed, mode=a.mode,
                           variants=tuple(v.strip() for v in a.variants.split(",")), cpus=a.cpus, size=a.size,
                           slots_per_cluster=a.slots_per_cluster, orders=a.orders, fill=a.fill,
                           seconds=a.seconds, ops=a.ops, atomic_fail=a.atomic_fail, sleep_fail=a.sleep_fail,
                           sleep_latency_us=a.sleep_latency_us, migrate=a.migrate, migrate_to=a.migrate_to,
                           latency_samples=a.latency_samples)
    study.validate()
    return study


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    fmt = [lambda c, w: c.ljust(w)] + [lambda c, w: c.rjust(w)] * (len(header) - 1)
    return ["  " + "  ".join(f(str(c), w) for f, c, w in zip(fmt, r, widths, strict=True))
            for r in [header, ["-" * w for w in widths]] + rows]


def render(doc: dict) -> str:
    p = doc["parameters"]
    names = list(doc["variants"])
    out = [f"shmswap race migration: {p['trials']} trials per variant, {doc['mode']} mode, seeds "
           f"{p['seed']}..{p['seed'] + p['trials'] - 1}, {p['cpus']} CPUs, {p['size']} device, atomic fail "
           f"{p['atomic_fail']:g}, sleep fail {p['sleep_fail']:g}, sleep latency {p['sleep_latency_us']} us, "
           f"migrate {p['migrate']:g} to {p['migrate_to']}, "
           + (f"{p['ops_per_trial']} ops per trial" if p["ops_per_trial"] else f"{p['seconds']:g} s per trial"),
           f"note: {doc['reproducibility']}", ""]
    keys: list[str] = []
    for s in doc["variants"].values():
        keys += [k for k in s["branches"] if k not in keys]
    rows = [[k.replace("_", " ")] + [f"{doc['variants'][v]['branches'].get(k, 0):,}" for v in names] for k in keys]
    tkeys = [("allocated", "tables allocated"), ("atomic_allocs", "  atomically"), ("sleep_allocs", "  by sleeping"),
             ("unused_freed", "tables freed unused")]
    rows += [[label] + [f"{doc['variants'][v]['tables'].get(k, 0):,}" for v in names] for k, label in tkeys]
    rows.append(["lost per 1000 sleeps"]
                + [f"{doc['variants'][v]['lost_per_1000_sleeps']['value']:.1f}" for v in names])
    rows.append(["  95% interval"] + ["[{:.1f}, {:.1f}]".format(*doc["variants"][v]["lost_per_1000_sleeps"]["ci95"])
                                      for v in names])
    rows.append(["trials ok (no violation)"] + [f"{doc['variants'][v]['checks']['ok']}/{doc['variants'][v]['trials']}"
                                                for v in names])
    rows.append(["outcomes"] + [", ".join(f"{k} {n}" for k, n in sorted(doc["variants"][v]["outcomes"].items()))
                                for v in names])
    out.append("swap_cluster_alloc_table branches, summed over the trials:")
    out += _table(["", *names], rows)
    out.append(f"interval: {doc['ci_method']}")
    if any(doc["variants"][v]["latency_us"] for v in names):
        out.append("")
        out.append("latency of an allocation, us (" + doc["latency_method"] + "):")
        lrows = []
        for v in names:
            for c, s in (doc["variants"][v]["latency_us"] or {}).items():
                if s["count"]:
                    lrows.append([f"{v} {c}", f"{s['count']:,}", f"{s['p50']:.1f}", f"{s['p90']:.1f}",
                                  f"{s['p99']:.1f}", f"{s['mean']:.1f}"])
        out += _table(["path", "calls", "p50", "p90", "p99", "mean"], lrows)
    out.append("")
    out.append("trials (outcome; check; how to reproduce):")
    for t in doc["trials"]:
        c = t["check"]
        check = "ok" if c["ok"] and not c["oracle_failures"] else \
            f"{len(c['violations'])} violations, {c['oracle_failures']} oracle failures"
        out.append(f"  trial {t['trial']} seed {t['seed']} {t['variant']}: {t['outcome']} "
                   f"(lost {t['branches'].get('lost_clusters', 0)} in {t['branches'].get('sleeps', 0)} sleeps; "
                   f"check {check}, findings {len(c['findings'])})")
        out.append(f"    {t['reproduce']}")
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    if getattr(args, "race", None) != "migration":
        error(f"race: unknown study {getattr(args, 'race', None)!r} (studies: migration)")
    try:
        study = study_from_args(args)
    except ConfigError as e:
        error(str(e))
    if args.out:
        check_out_dir(args.out)
    try:
        total = study.trials * len(study.variants)
        with progress_bar("shmswap race migration", total, args.quiet) as bar:
            doc = run_migration(study, (lambda done, text: bar(done, text)) if bar is not None else None)
    except RunAborted as e:
        sys.stderr.write(f"shmswap: race aborted: {e}\n")
        return 1
    files = []
    if args.out:
        doc["files"] = ["study.json", "trials.csv", "summary.csv", "latency.csv", "branches.png", "latency.png"]
        files = write_dir(args.out, {"study.json": json.dumps(doc, indent=1), "trials.csv": trials_csv(doc),
                                     "summary.csv": summary_csv(doc), "latency.csv": latency_csv(doc),
                                     "branches.png": plot_branches(doc), "latency.png": plot_latency(doc)})
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(render(doc))
        for f in files:
            print(f"wrote {f}")
    bad = any(not t["check"]["ok"] or t["check"]["oracle_failures"] for t in doc["trials"])
    return 1 if bad else 0
