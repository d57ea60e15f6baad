"""``shmswap run``: run the model once, as a manager and CPU worker processes (DESIGN §1, §8).

Exit status: 0 when there are no violations and the oracles are clean (findings are listed), 1 on
a violation or an oracle failure (with ``--strict`` also on findings) or when the JSON could not be
written, 2 for bad arguments: one line naming the value, and nothing created; 130 after SIGINT
(Ctrl-C) and 143 after SIGTERM: the run stops in order, its check, report and JSON still happen.

``--json PATH`` is checked before the run (its directory must exist and be writable; nothing is
created) and written at the end whole or not at all (a temporary file beside it, then a rename);
an aborted run writes the partial result it has, with its status.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from ..config import DEFAULT_ORDERS, Config, ConfigError, check_seconds
from ..report import render
from ..runner.driver import RunAborted, failed_result, run_multiprocess
from .common import check_output_path, cut, cut_message, cut_path, float_arg, int_arg, progress_bar, write_atomically
from .replay import run_deterministic_command

__all__ = ["add_parser", "config_from_args", "main"]


def add_parser(sub) -> argparse.ArgumentParser:
    """Add ``run`` and its options to the subcommands ``sub``."""
    r = sub.add_parser("run", help="run the model (default configuration: 4 CPUs, 1 GiB SSD, 8 s)",
                       description="Run the model once: a manager process and one worker process per CPU.")
    d = Config()
    r.add_argument("--cpus", type=int_arg, default=d.cpus, help="worker CPUs (1..256)")
    r.add_argument("--size", default="1G", help="device size with K/M/G/T suffix (at least one cluster)")
    r.add_argument("--device", default=d.device,
                   help="ssd|hdd, or several devices: KIND:SIZE[:prio=N][:discard=on|off],... "
                        "(e.g. ssd:1G:prio=5,hdd:4G; the first is swap type 0)")
    r.add_argument("--discard", default=d.discard, help="off|on")
    r.add_argument("--slots-per-cluster", type=int_arg, default=d.slots_per_cluster, help="power of two, 8..512")
    r.add_argument("--max-order", type=int_arg, default=None, help="largest order (default log2 of the cluster)")
    r.add_argument("--orders", default=None,
                   help="order:probability,... summing to 1 (default "
                        f"{','.join(f'{o}:{p:g}' for o, p in DEFAULT_ORDERS.items())}, orders above --max-order "
                        "folded into it)")
    r.add_argument("--ops", type=int_arg, default=None, help="total operations over all CPUs")
    r.add_argument("--seconds", type=float_arg, default=d.seconds, help="run time (ignored with --ops)")
    r.add_argument("--fill", type=float_arg, default=d.fill,
                   help="target fill of the device (of all devices together), 0..1")
    r.add_argument("--seed", type=int_arg, default=d.seed, help="fixes each worker's workload stream")
    r.add_argument("--alloc-table", default=d.alloc_table, help="seed|merged")
    r.add_argument("--tables", default=d.tables, help="dynamic|static")
    r.add_argument("--percpu", default=d.percpu, help="on|off")
    r.add_argument("--reclaim", default=d.reclaim, help="slab|page")
    r.add_argument("--rcu", default=d.rcu, help="normal|none")
    r.add_argument("--reader", default=d.reader, help="normal|broken")
    r.add_argument("--atomic-fail", type=float_arg, default=d.atomic_fail, help="atomic table allocation failure rate")
    r.add_argument("--sleep-fail", type=float_arg, default=d.sleep_fail, help="sleeping table allocation failure rate")
    r.add_argument("--sleep-latency-us", type=int_arg, default=d.sleep_latency_us,
                   help="added sleeping-allocation latency")
    r.add_argument("--migrate", type=float_arg, default=d.migrate, help="probability of migrating after a sleep")
    r.add_argument("--sleep-reclaim", type=float_arg, default=d.sleep_reclaim, metavar="P",
                   help="probability that the sleeping table allocation enters direct reclaim and swaps out "
                        "one folio (a nested folio_alloc_swap on the task's CPU) before it returns")
    r.add_argument("--swapoff-every", type=float_arg, default=d.swapoff_every, metavar="S",
                   help="every S seconds swap one device off (round robin over the swap types) while the CPUs "
                        "run, then on again with the same settings (0: off; with one device, allocations "
                        "fail while it is off, counted)")
    r.add_argument("--migrate-to", default=d.migrate_to, help="random|N")
    r.add_argument("--watchdog-s", type=float_arg, default=d.watchdog_s,
                   help="no-progress limit before a worker is declared stuck")
    r.add_argument("--pin", action="store_true", help="pin workers to cores round robin")
    r.add_argument("--strict", action="store_true", help="exit 1 on findings too")
    r.add_argument("--json", default=None, help="write the whole result as JSON to this path")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--inject-bug", default="", help=argparse.SUPPRESS)
    r.add_argument("--start-method", default=d.start_method, help="fork|spawn|forkserver")
    r.add_argument("--cache-only", type=float_arg, default=d.cache_only,
                   help="share of allocations left SWAP_HAS_CACHE-only (work for reclaim, folios for readers)")
    r.add_argument("--reader-delay-us", type=int_arg, default=0,
                   help="hold CPU 0's lockless readers in their window up to N us (race window)")
    r.add_argument("--reader-delays", default=d.reader_delays, action=_Given,
                   help="on|off: rcutorture-style delays inside the read sections: short ones in the CPUs' "
                        "lookups, long ones in --torture-readers reader processes (a --deterministic run takes "
                        "none)")
    r.add_argument("--torture-readers", type=int_arg, default=d.torture_readers, action=_Given,
                   help="reader processes that look up slots of tables about to be freed or reused and wait "
                        "inside their read sections, as rcutorture's readers do (0..64; only with "
                        "--reader-delays on)")
    r.add_argument("--lifetimes", default=d.lifetimes,
                   help="on|off: each CPU runs processes that swap out a few clusters' worth, live a while, then "
                        "exit freeing all their slots at once, so whole clusters and tables recycle "
                        "(off: the CPUs fill the device towards --fill, then drain it)")
    r.add_argument("--lockdep", action="store_true",
                   help="check the lock order of reference §2.6 at every lock, and the kernel's DEBUG_VM asserts")
    r.add_argument("--sample-ms", type=int_arg, default=d.sample_ms,
                   help="sample live tables, list lengths, sleeps, migrations, lock waits and throughput every "
                        "N ms into the result (0: off; draw them with shmswap plot)")
    r.add_argument("--trace", default=None, metavar="PATH",
                   help="write the run's events as Chrome trace-event JSON (open it in ui.perfetto.dev)")
    r.add_argument("--trace-limit", type=int_arg, default=d.trace_limit, help="at most this many trace events")
    r.add_argument("--trace-lock-ns", type=int_arg, default=d.trace_lock_ns,
                   help="trace lock waits of at least this many ns")
    r.add_argument("--deterministic", action="store_true",
                   help="run every CPU and the manager under the deterministic scheduler (one task between "
                        "preemption points, chosen by --seed), as tasks of one process (or, with --processes, "
                        "each its own process): the same seed gives the same trace and state bit for bit; "
                        "--ops operations (default 2000); options that need real time (--seconds, --trace, "
                        "--sample-ms, --pin, ...) are refused")
    r.add_argument("--record", default=None, metavar="FILE",
                   help="with --deterministic: write the schedule as a replayable script (shmswap replay FILE)")
    r.add_argument("--processes", action="store_true",
                   help="with --deterministic: run every CPU and the manager as its own OS process on the shared "
                        "segments, handing control between processes at the same points; the trace, state, "
                        "check and recording equal the threads mode's bit for bit (without it the tasks are "
                        "threads of one process)")
    r.set_defaults(func=main)
    return r


def config_from_args(a: argparse.Namespace) -> Config:
    d = Config
    check_seconds(a.seconds)   # checked even when --ops makes it unused
    seconds = None if a.ops is not None else a.seconds
    # --device ssd|hdd, or a list of devices: KIND:SIZE[:prio=N][:discard=on|off],...
    device, devices = (d.device, a.device) if ":" in a.device or "," in a.device else (a.device, "")
    return Config(cpus=a.cpus, size=a.size, device=device, devices=devices, discard=a.discard,
                  slots_per_cluster=a.slots_per_cluster, max_order=a.max_order, orders=a.orders, ops=a.ops,
                  seconds=seconds, fill=a.fill, seed=a.seed, alloc_table=a.alloc_table, tables=a.tables,
                  percpu=a.percpu, reclaim=a.reclaim, rcu=a.rcu, reader=a.reader, atomic_fail=a.atomic_fail,
                  sleep_fail=a.sleep_fail, sleep_latency_us=a.sleep_latency_us, migrate=a.migrate,
                  sleep_reclaim=a.sleep_reclaim, swapoff_every=a.swapoff_every,
                  migrate_to=a.migrate_to, watchdog_s=a.watchdog_s, pin=a.pin, strict=a.strict,
                  json=a.json, quiet=a.quiet, inject_bug=a.inject_bug, start_method=a.start_method,
                  reader_delay_us=a.reader_delay_us, lockdep=a.lockdep, reader_delays=a.reader_delays,
                  torture_readers=a.torture_readers, lifetimes=a.lifetimes,
                  cache_only=a.cache_only,
                  sample_ms=a.sample_ms, trace=a.trace, trace_limit=a.trace_limit, trace_lock_ns=a.trace_lock_ns)


def main(args: argparse.Namespace) -> int:
    """Run, print the report, write the JSON; the exit status."""
    try:
        cfg = config_from_args(args)
        cfg.device_configs()          # a further device's bad size or setting: exit 2 before any run
    except (ConfigError, ValueError, OverflowError) as e:
        sys.stderr.write(f"shmswap: error: {cut_message(str(e))}\n")
        return 2
    bad_path = check_output_path("--json", cfg.json) or check_output_path("--trace", cfg.trace)
    if bad_path:
        sys.stderr.write(f"shmswap: error: {bad_path}\n")
        return 2
    processes = getattr(args, "processes", False)
    deterministic = getattr(args, "deterministic", False)
    record = getattr(args, "record", None)
    for option, given in (("--processes", processes), ("--record", record is not None)):
        if given and not deterministic:
            sys.stderr.write(f"shmswap: error: {option}: only with --deterministic\n")
            return 2
    if deterministic:
        refused = _not_deterministic(args, cfg, processes) or check_output_path("--record", record)
        if refused:
            sys.stderr.write(f"shmswap: error: {refused}\n")
            return 2
        cfg = cfg.with_(**_OFF_IF_DETERMINISTIC)
        return run_deterministic_command(cfg, record, lambda res, rs, st: _write_json(cfg, res, rs, st),
                                         processes=processes)
    try:
        total = cfg.ops if cfg.ops else float(cfg.seconds)
        with progress_bar("shmswap run", total, cfg.quiet) as bar:
            def progress(steps: int, elapsed: float) -> None:
                rate = steps / elapsed if elapsed > 0 else 0.0
                bar(steps if cfg.ops else min(elapsed, total), f"{steps:,} ops, {rate:,.0f} ops/s")
            res = run_multiprocess(cfg, progress if bar is not None else None)
    except RunAborted as e:
        sys.stderr.write(f"shmswap: run aborted: {e}\n")
        res = failed_result(cfg, f"run aborted: {e}")
        if e.interrupted:
            res.extra["interrupted"] = e.interrupted
        return _write_json(cfg, res, "aborted", _signal_status(res) or 1)
    status = res.exit_status(cfg.strict)
    print(render(res, cfg.strict))
    return _write_json(cfg, res, "interrupted" if _signal_status(res) else "completed", status)


# Options of a multiprocess run that a deterministic run cannot honour, and why: (dest, reason).
# A value other than the default is refused (exit 2) rather than silently ignored.
_REAL_TIME_ONLY = (
    ("seconds", "a deterministic run does --ops operations (default 2000), not a time"),
    ("trace", "the trace-event timeline is of real time; a deterministic run's trace is its schedule "
              "(shmswap replay FILE --trace on its --record)"),
    ("trace_limit", "only with --trace, which a deterministic run refuses"),
    ("trace_lock_ns", "only with --trace, which a deterministic run refuses"),
    ("sample_ms", "sampling is by real time; a deterministic run has no clock"),
    ("pin", "one task runs at a time: nothing to pin"),
    ("watchdog_s", "the deterministic scheduler names a deadlock itself (a task process's death or a stall: "
                   "the driver's watchdog)"),
    ("swapoff_every", "the scheduler has no swapoff task"),
    ("reader_delay_us", "a real-time delay; the scheduler decides who runs inside a reader's window"),
    ("reader_delays", "real-time delays; the scheduler decides who runs inside a read section"),
    ("torture_readers", "reader processes waiting in real time; the scheduler decides who runs inside a read "
                        "section"),
    ("sleep_latency_us", "a real-time latency; the sleeping allocation is a scheduling step"),
)


class _Given(argparse.Action):
    """Store the value and note that it was given (``namespace.given``): a default and the same
    value given explicitly mean different things to a deterministic run."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", set()) | {self.dest}


# Real-time options on by default: a deterministic run turns them off, and refuses them only if given.
_OFF_IF_DETERMINISTIC = {"reader_delays": "off", "torture_readers": 0}


def _not_deterministic(a: argparse.Namespace, cfg: Config, processes: bool) -> str | None:
    """A one-line error for the first option a deterministic run would ignore, or None."""
    d = Config().with_(**_OFF_IF_DETERMINISTIC)
    for dest, why in _REAL_TIME_ONLY:
        value = a.seconds if dest == "seconds" else getattr(cfg, dest)    # cfg: normalised (ON -> on)
        if dest in _OFF_IF_DETERMINISTIC and dest not in getattr(a, "given", ()):
            continue                                                      # the default: turned off
        if value != getattr(d, dest):
            return f"--{dest.replace('_', '-')} {cut(str(value))}: not with --deterministic: {why}"
    if not processes and cfg.start_method != d.start_method:
        return f"--start-method {cut(cfg.start_method)}: only with --processes (the threads mode starts no process)"
    return None


def _signal_status(res) -> int:
    """128 + the signal that interrupted the run (130 SIGINT, 143 SIGTERM), or 0."""
    name = res.extra.get("interrupted")
    return 128 + int(signal.Signals[name]) if name else 0


def _write_json(cfg: Config, res, run_status: str, status: int) -> int:
    """Write the result (with its status) whole or not at all; a write error: one line and exit 1."""
    if not cfg.json:
        return status
    res.extra["run_status"] = run_status
    res.extra["exit_status"] = status
    try:
        write_atomically(cfg.json, json.dumps(res.as_dict(), indent=1))
    except OSError as e:
        sys.stderr.write(f"shmswap: error: --json: cannot write {cut_path(cfg.json)}: "
                         f"{e.strerror or e}\n")
        return max(status, 1)
    return status
