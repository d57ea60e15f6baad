"""``shmswap``: the command line.  ``shmswap run`` runs the model on its default configuration.

Exit status (DESIGN §8): 0 when there are no violations and the oracles are clean (findings are
listed), 1 on a violation or an oracle failure (with ``--strict`` also on findings), 2 for bad
arguments: one line naming the value, and nothing created.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .config import Config, ConfigError
from .report import render
from .runner.driver import RunAborted, run_multiprocess

__all__ = ["main", "build_parser", "config_from_args"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, status 2
        sys.stderr.write(f"shmswap: error: {message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="shmswap", description="A shared-memory model of the Linux swap-slot allocator "
                "with dynamically allocated swap tables.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="run the model (default configuration: 4 CPUs, 1 GiB SSD, 8 s)")
    d = Config()
    r.add_argument("--cpus", type=int, default=d.cpus, help="worker CPUs (1..256)")
    r.add_argument("--size", default="1G", help="device size with K/M/G/T suffix (at least one cluster)")
    r.add_argument("--device", default=d.device, help="ssd|hdd")
    r.add_argument("--discard", default=d.discard, help="off|on")
    r.add_argument("--slots-per-cluster", type=int, default=d.slots_per_cluster, help="power of two, 8..512")
    r.add_argument("--max-order", type=int, default=None, help="largest order (default log2 of the cluster)")
    r.add_argument("--orders", default="0:0.7,2:0.2,4:0.1", help="order:probability,... summing to 1")
    r.add_argument("--ops", type=int, default=None, help="total operations over all CPUs")
    r.add_argument("--seconds", type=float, default=d.seconds, help="run time (ignored with --ops)")
    r.add_argument("--fill", type=float, default=d.fill, help="target fill of the device, 0..1")
    r.add_argument("--seed", type=int, default=d.seed, help="fixes each worker's workload stream")
    r.add_argument("--alloc-table", default=d.alloc_table, help="seed|merged")
    r.add_argument("--tables", default=d.tables, help="dynamic|static")
    r.add_argument("--percpu", default=d.percpu, help="on|off")
    r.add_argument("--reclaim", default=d.reclaim, help="slab|page")
    r.add_argument("--rcu", default=d.rcu, help="normal|none")
    r.add_argument("--reader", default=d.reader, help="normal|broken")
    r.add_argument("--atomic-fail", type=float, default=d.atomic_fail, help="atomic table allocation failure rate")
    r.add_argument("--sleep-fail", type=float, default=d.sleep_fail, help="sleeping table allocation failure rate")
    r.add_argument("--sleep-latency-us", type=int, default=d.sleep_latency_us, help="added sleeping-allocation latency")
    r.add_argument("--migrate", type=float, default=d.migrate, help="probability of migrating after a sleep")
    r.add_argument("--migrate-to", default=d.migrate_to, help="random|N")
    r.add_argument("--watchdog-s", type=float, default=d.watchdog_s,
                   help="no-progress limit before a worker is declared stuck")
    r.add_argument("--pin", action="store_true", help="pin workers to cores round robin")
    r.add_argument("--strict", action="store_true", help="exit 1 on findings too")
    r.add_argument("--json", default=None, help="write the whole result as JSON to this path")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--inject-bug", default="", help=argparse.SUPPRESS)
    r.add_argument("--start-method", default=d.start_method, help="fork|spawn|forkserver")
    r.add_argument("--cache-only", type=float, default=d.cache_only,
                   help="share of allocations left SWAP_HAS_CACHE-only (work for reclaim, folios for readers)")
    r.add_argument("--reader-delay-us", type=int, default=0,
                   help="hold CPU 0's lockless readers in their window up to N us (race window)")
    return p


def config_from_args(a: argparse.Namespace) -> Config:
    seconds = None if a.ops is not None else a.seconds
    return Config(cpus=a.cpus, size=a.size, device=a.device, discard=a.discard,
                  slots_per_cluster=a.slots_per_cluster, max_order=a.max_order, orders=a.orders, ops=a.ops,
                  seconds=seconds, fill=a.fill, seed=a.seed, alloc_table=a.alloc_table, tables=a.tables,
                  percpu=a.percpu, reclaim=a.reclaim, rcu=a.rcu, reader=a.reader, atomic_fail=a.atomic_fail,
                  sleep_fail=a.sleep_fail, sleep_latency_us=a.sleep_latency_us, migrate=a.migrate,
                  migrate_to=a.migrate_to, watchdog_s=a.watchdog_s, pin=a.pin, strict=a.strict,
                  json=a.json, quiet=a.quiet, inject_bug=a.inject_bug, start_method=a.start_method,
                  reader_delay_us=a.reader_delay_us, cache_only=a.cache_only)


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


class _RichProgress:
    """A rich progress bar over the run's time or operation budget (terminals only)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.bar = Progress(TextColumn("shmswap run"), BarColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), transient=True)
        self.total = cfg.ops if cfg.ops else float(cfg.seconds)
        self.task = self.bar.add_task("", total=self.total)

    def __enter__(self):
        self.bar.__enter__()
        return self.update

    def update(self, steps: int, elapsed: float) -> None:
        done = steps if self.cfg.ops else min(elapsed, self.total)
        rate = steps / elapsed if elapsed > 0 else 0.0
        self.bar.update(self.task, completed=done, description=f"{steps:,} ops, {rate:,.0f} ops/s")

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)


def _progress(cfg: Config):
    if cfg.quiet or not sys.stdout.isatty():
        return _NoProgress()
    return _RichProgress(cfg)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        sys.stderr.write(f"shmswap: error: {e}\n")
        return 2
    if cfg.json:
        try:
            open(cfg.json, "a").close()
        except OSError as e:
            sys.stderr.write(f"shmswap: error: --json: cannot write {cfg.json!r}: {e.strerror}\n")
            return 2
    try:
        with _progress(cfg) as progress:
            res = run_multiprocess(cfg, progress)
    except RunAborted as e:
        sys.stderr.write(f"shmswap: run aborted: {e}\n")
        return 1
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump(res.as_dict(), f, indent=1)
    print(render(res, cfg.strict))
    return res.exit_status(cfg.strict)


if __name__ == "__main__":
    sys.exit(main())
