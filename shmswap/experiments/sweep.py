"""A sweep: a grid of whole multiprocess runs, each point repeated after an uncounted warm-up.

* ``OPTIONS``: every run option a sweep takes as a list (``--cpus 1,2,4 --percpu on,off``; the
  orders of ``--orders`` are separated by ``;`` because one order list holds commas).
* ``Grid.parse(texts, repeat=, warmup=)``: the lists, validated: every point's ``Config`` is built
  (and so checked) before anything runs; a bad value raises ``ConfigError`` naming it.
* ``Grid.points()``: the points in a fixed order, each with a stable ``key`` made from the
  normalised option values (``size=16777216;...``).  Each run's seed is derived from the key and
  the repeat (``derive_seed``), so a point runs the same workload streams whatever shard or
  machine runs it: ``--shard`` pieces merged equal the unsharded sweep's rows.
* ``run_point(job)``: one point (its warm-up and its repeats) -> rows; top level and picklable, so
  a Dask worker runs it as well as this process does.
* ``run_sweep(...)``: the points of a shard, here or on a Dask cluster, each finished point handed
  to ``on_point`` (the caller checkpoints); ``merge(docs)`` joins the pieces of a sharded sweep.
* ``write_outputs(out, doc)``: ``results.csv``, ``results.json`` and the plots, written whole
  (a temporary directory beside ``out``, then renames).

A row is one counted run: the point's identity (``point``, ``key``, ``repeat``, ``run_seed``), the
machine that ran it (``host``, ``cores``, ``oversubscribed`` when CPU processes outnumber the cores
it may use), every option, and every figure of the ``Result`` flattened (``ops_alloc``,
``locks_ci_lock_wait_ns_total``, ``tables_bytes_peak``, ...), with the invariant check's verdict:
``violations``, ``findings``, ``oracle_failures`` and ``status`` (the run's exit status).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import itertools
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config, ConfigError
from ..result import Result
from ..runner.driver import RunAborted, failed_result, run_multiprocess
from .plots import PLOTS, write_plots

__all__ = ["OPTIONS", "Option", "Grid", "Point", "PointJob", "SweepError", "derive_seed", "run_point",
           "run_sweep", "merge", "write_outputs", "load", "summarize", "machine_info", "parse_shard",
           "SCHEMA", "CSV_NAME", "JSON_NAME", "IDENTITY_COLUMNS", "OPTION_NAMES", "PLOT_FILES",
           "connect_dask", "document", "to_csv"]

SCHEMA = "shmswap-sweep/1"
CSV_NAME = "results.csv"
JSON_NAME = "results.json"

_INT = re.compile(r"\s*[+-]?[0-9]{1,30}\s*", re.ASCII)
_FLOAT = re.compile(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", re.ASCII)


class SweepError(ValueError):
    """A sweep cannot start (or pieces cannot be merged); the message names the value."""


def _int(flag: str, text: str) -> int:
    if not _INT.fullmatch(text):
        raise ConfigError(f"{flag}: {text!r} is not an integer")
    return int(text)


def _float(flag: str, text: str) -> float:
    if not _FLOAT.fullmatch(text):
        raise ConfigError(f"{flag}: {text!r} is not a number")
    return float(text)


def _text(flag: str, text: str) -> str:
    return text.strip()


def _optional_int(flag: str, text: str) -> int | None:
    return None if text.strip().lower() in ("auto", "none") else _int(flag, text)


def _onoff(flag: str, text: str) -> bool:
    t = text.strip().lower()
    if t not in ("on", "off"):
        raise ConfigError(f"{flag}: {text!r} is not one of on|off")
    return t == "on"


@dataclass(frozen=True)
class Option:
    """A run option a sweep takes as a list: the ``Config`` field, its default list, one item's parser."""

    name: str
    default: str
    help: str
    parse: Callable[[str, str], object] = _text
    sep: str = ","

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("cpus", "1,2,4", "worker CPUs of each point (1..256)", _int),
    Option("percpu", "on,off", "per-CPU cluster cache: on|off"),
    Option("alloc_table", "seed,merged", "swap_cluster_alloc_table variant: seed|merged"),
    Option("tables", "dynamic", "dynamic|static"),
    Option("device", "ssd", "ssd|hdd"),
    Option("discard", "off", "off|on"),
    Option("reclaim", "slab", "slab|page"),
    Option("rcu", "normal", "normal|none"),
    Option("reader", "normal", "normal|broken"),
    Option("size", "1G", "device size with K/M/G/T suffix"),
    Option("slots_per_cluster", "512", "power of two, 8..512", _int),
    Option("max_order", "auto", "largest order (auto: log2 of the cluster)", _optional_int),
    Option("orders", "0:0.7,2:0.2,4:0.1", "order:probability,... summing to 1; lists separated by ';'",
           _text, ";"),
    Option("seconds", "2", "run time of each counted run (ignored with --ops)", _float),
    Option("ops", "none", "total operations of each run over all CPUs (none: timed by --seconds)",
           _optional_int),
    Option("fill", "0.8", "target fill of the device, 0..1", _float),
    Option("seed", "1", "base seeds; each run's seed is derived from it, the point and the repeat", _int),
    Option("atomic_fail", "0.05", "atomic table allocation failure rate", _float),
    Option("sleep_fail", "0", "sleeping table allocation failure rate", _float),
    Option("sleep_latency_us", "0", "added sleeping-allocation latency", _int),
    Option("migrate", "0.5", "probability of migrating after a sleep", _float),
    Option("migrate_to", "random", "random|N"),
    Option("cache_only", "0.05", "share of allocations left SWAP_HAS_CACHE-only", _float),
    Option("reader_delay_us", "0", "hold CPU 0's lockless readers in their window up to N us", _int),
    Option("watchdog_s", "10", "no-progress limit before a worker is declared stuck", _float),
    Option("pin", "off", "pin workers to cores round robin: on|off", _onoff),
    Option("start_method", "fork", "fork|spawn|forkserver"),
)
OPTION_NAMES = tuple(o.name for o in OPTIONS)
IDENTITY_COLUMNS = ("point", "key", "repeat", "run_seed", "host", "cores", "oversubscribed")


def derive_seed(key: str, repeat: int | str) -> int:
    """A run's seed: a stable function of the point's key and the repeat (or ``"warmup"``)."""
    digest = hashlib.sha256(f"{key}#{repeat}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _canon(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ",".join(f"{k}:{float(p)!r}" for k, p in sorted(value.items()))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_shard(text: str) -> tuple[int, int]:
    """``'i/n'`` (0 <= i < n) -> ``(i, n)``."""
    m = re.fullmatch(r"\s*([0-9]{1,9})\s*/\s*([0-9]{1,9})\s*", text or "", re.ASCII)
    if not m:
        raise SweepError(f"--shard: {text!r} is not i/n (the i-th of n slices, 0 <= i < n)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise SweepError(f"--shard: {text!r} needs 0 <= i < n")
    return i, n


@dataclass(frozen=True)
class Point:
    index: int
    key: str
    config: Config
    values: dict          # option name -> the value as written in a row

    def row_options(self) -> dict:
        return dict(self.values, size_bytes=self.config.size)


@dataclass(frozen=True)
class PointJob:
    """What a process (here or on a Dask worker) needs to run one point."""

    point: Point
    repeats: tuple[int, ...]
    warmup_s: float
    strict: bool = False


@dataclass
class Grid:
    """The option lists of a sweep, the repeat count and the warm-up."""

    lists: dict[str, tuple]
    repeat: int = 1
    warmup_s: float = 0.5
    strict: bool = False
    _points: list[Point] = field(default_factory=list, repr=False)

    @classmethod
    def parse(cls, texts: dict[str, str] | None = None, repeat: int = 1, warmup_s: float = 0.5,
              strict: bool = False) -> Grid:
        """Option lists as text (``{"cpus": "1,2", "percpu": "on,off"}``; the rest default)."""
        texts = dict(texts or {})
        unknown = set(texts) - set(OPTION_NAMES)
        if unknown:
            raise ConfigError(f"not a sweep option: {sorted(unknown)[0]!r}")
        lists: dict[str, tuple] = {}
        for o in OPTIONS:
            text = texts.get(o.name)
            text = o.default if text is None else str(text)
            items = [t for t in text.split(o.sep)]
            if not text.strip() or any(not t.strip() for t in items):
                raise ConfigError(f"{o.flag}: {text!r} has an empty item (write a list like {o.default!r})")
            values = tuple(o.parse(o.flag, t) for t in items)
            if len(set(map(_canon, values))) != len(values):
                raise ConfigError(f"{o.flag}: {text!r} lists a value twice")
            lists[o.name] = values
        if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 10_000:
            raise ConfigError(f"--repeat: {repeat!r} is not an integer in 1..10000")
        if not isinstance(warmup_s, (int, float)) or not 0 <= warmup_s < 1e6 or warmup_s != warmup_s:
            raise ConfigError(f"--warmup: {warmup_s!r} is not a number of seconds >= 0")
        grid = cls(lists=lists, repeat=repeat, warmup_s=float(warmup_s), strict=strict)
        grid._points = grid._build_points()
        return grid

    def _build_points(self) -> list[Point]:
        points: list[Point] = []
        keys: set[str] = set()
        for combo in itertools.product(*(self.lists[n] for n in OPTION_NAMES)):
            opts = dict(zip(OPTION_NAMES, combo, strict=True))
            if opts["ops"] is not None:
                opts["seconds"] = None
            cfg = Config(**opts, quiet=True)          # validated here: ConfigError names the value
            values = {}
            for name in OPTION_NAMES:
                v = getattr(cfg, name)
                if name == "size":
                    v = str(opts["size"]).strip()
                elif name in ("orders", "pin"):
                    v = _canon(v)
                values[name] = v
            key = ";".join(f"{n}={_canon(getattr(cfg, n))}" for n in OPTION_NAMES)
            if key in keys:           # e.g. two --seconds values with --ops
                continue
            keys.add(key)
            points.append(Point(index=len(points), key=key, config=cfg, values=values))
        return points

    def points(self, shard: tuple[int, int] | None = None) -> list[Point]:
        if shard is None:
            return list(self._points)
        i, n = shard
        return [p for p in self._points if p.index % n == i]

    @property
    def varying(self) -> list[str]:
        return [n for n in OPTION_NAMES if len(self.lists[n]) > 1]

    def spec(self) -> dict:
        """What identifies the sweep (a resumed run or a merged piece must have the same)."""
        lists = {o.name: o.sep.join(_canon(v) for v in self.lists[o.name]) for o in OPTIONS}
        return {"options": lists, "repeat": self.repeat, "warmup_s": self.warmup_s, "strict": self.strict,
                "points": len(self._points)}

    def jobs(self, shard=None, done: set[tuple[str, int]] = frozenset()) -> list[PointJob]:
        out = []
        for p in self.points(shard):
            repeats = tuple(r for r in range(self.repeat) if (p.key, r) not in done)
            if repeats:
                out.append(PointJob(point=p, repeats=repeats, warmup_s=self.warmup_s, strict=self.strict))
        return out


# -- the machine ------------------------------------------------------------------------------------
def _affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _git_commit() -> str | None:
    repo = Path(__file__).resolve().parent.parent.parent
    if not (repo / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _version() -> str:
    try:
        return importlib.metadata.version("shmswap")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def machine_info() -> dict:
    """The machine this process runs on: cores, the affinity obtained, versions, the git commit."""
    affinity = _affinity()
    return {"host": socket.gethostname(), "cores": os.cpu_count() or 1, "affinity": affinity,
            "usable_cores": len(affinity), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__, "shmswap": _version(),
            "git_commit": _git_commit()}


# -- one point --------------------------------------------------------------------------------------
def _flatten(prefix: str, d: dict, out: dict) -> None:
    for k, v in d.items():
        name = f"{prefix}_{k}"
        if isinstance(v, dict):
            _flatten(name, v, out)
        elif isinstance(v, (list, tuple)):
            out[name] = " ".join(str(x) for x in v)
        else:
            out[name] = v


def _figures(res: Result, strict: bool) -> dict:
    out: dict = {"duration_s": res.duration_s, "throughput_ops_per_s": res.throughput_ops_per_s}
    for name in ("ops", "locks", "tables", "migration", "rcu", "oracles"):
        _flatten(name, getattr(res, name), out)
    out["violations"] = len(res.check.violations)
    out["findings"] = len(res.check.findings)
    out["oracle_failures"] = res.oracle_failures
    out["status"] = res.exit_status(strict)
    out["violation_first"] = (f"{res.check.violations[0].where}: {res.check.violations[0].reason}"
                              if res.check.violations else "")
    out["notes"] = " | ".join(res.notes)
    return out


def _run_one(cfg: Config) -> Result:
    try:
        return run_multiprocess(cfg)
    except RunAborted as e:
        return failed_result(cfg, f"run aborted: {e}")


def run_point(job: PointJob) -> dict:
    """Run one point: the warm-up (uncounted), then each repeat.  ``{"rows": [...], "machine": {...}}``."""
    machine = machine_info()
    p = job.point
    warm = {"warmup_violations": 0, "warmup_status": 0}
    if job.warmup_s > 0:
        wres = _run_one(p.config.with_(seconds=job.warmup_s, ops=None, seed=derive_seed(p.key, "warmup")))
        warm = {"warmup_violations": len(wres.check.violations), "warmup_status": wres.exit_status(job.strict)}
    rows = []
    for r in job.repeats:
        seed = derive_seed(p.key, r)
        res = _run_one(p.config.with_(seed=seed))
        row = {"point": p.index, "key": p.key, "repeat": r, "run_seed": seed, "host": machine["host"],
               "cores": machine["usable_cores"], "oversubscribed": p.config.cpus > machine["usable_cores"]}
        row.update(p.row_options())
        row.update(_figures(res, job.strict))
        row.update(warm)
        rows.append(row)
    return {"rows": rows, "machine": machine}


# -- the sweep --------------------------------------------------------------------------------------
def _dask_resources(client, cpus: int) -> dict | None:
    """``{"cores": n}`` when the workers declare a ``cores`` resource (``dask worker --resources cores=N``)."""
    declared = [w.get("resources", {}).get("cores") for w in client.scheduler_info()["workers"].values()]
    declared = [c for c in declared if c]
    if not declared:
        return None
    return {"cores": min(cpus + 1, max(declared))}


def connect_dask(address: str, timeout_s: float = 10.0):
    """A ``distributed.Client`` on ``address``; ``SweepError`` naming it when that fails."""
    try:
        from distributed import Client
    except ImportError:
        raise SweepError(f"--dask {address!r}: dask.distributed is not installed "
                         "(pip install 'shmswap[dist]')") from None
    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError, TypeError) as e:
        raise SweepError(f"--dask: cannot connect to {address!r}: {str(e).splitlines()[0] if str(e) else e!r}") \
            from None


def run_sweep(jobs: list[PointJob], on_point: Callable[[dict], None], client=None) -> None:
    """Run ``jobs`` one after another here, or all at once on a Dask ``client``; each finished
    point's ``{"rows", "machine"}`` goes to ``on_point`` as it arrives."""
    if client is None:
        for job in jobs:
            on_point(run_point(job))
        return
    from distributed import as_completed
    futures = [client.submit(run_point, job, pure=False, resources=_dask_resources(client, job.point.config.cpus))
               for job in jobs]
    try:
        with client.as_current():
            for fut in as_completed(futures):
                on_point(fut.result())
    finally:
        for fut in futures:
            fut.cancel()


# -- the document -----------------------------------------------------------------------------------
def document(spec: dict, rows: list[dict], machines: dict, machine: dict, shard: str | None,
             complete: bool) -> dict:
    rows = sorted(rows, key=lambda r: (r["point"], r["repeat"]))
    status = 1 if any(r.get("status") or r.get("warmup_status") for r in rows) else 0
    return {"schema": SCHEMA, "grid": spec, "shard": shard, "complete": complete, "machine": machine,
            "machines": machines, "runs": len(rows), "exit_status": status, "summary": summarize(rows),
            "rows": rows}


def load(out: str | os.PathLike) -> dict:
    """The document in ``out/results.json``; ``SweepError`` naming the directory when it is not one."""
    path = Path(out) / JSON_NAME
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{str(out)!r} holds no {JSON_NAME} (not a sweep directory)") from None
    except (OSError, ValueError) as e:
        raise SweepError(f"{str(path)!r}: cannot read it: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("rows"), list):
        raise SweepError(f"{str(path)!r} is not a {SCHEMA} document")
    return doc


def merge(docs: list[tuple[str, dict]]) -> dict:
    """Join the pieces (``[(name, document), ...]``) of one sweep: same grid, rows by point and repeat."""
    if not docs:
        raise SweepError("--merge: no directories")
    first_name, first = docs[0]
    rows: dict[tuple[str, int], dict] = {}
    machines: dict = {}
    for name, doc in docs:
        if doc["grid"] != first["grid"]:
            diff = sorted(k for k in set(doc["grid"]["options"]) | set(first["grid"]["options"])
                          if doc["grid"]["options"].get(k) != first["grid"]["options"].get(k))
            what = f"option {diff[0]!r}" if diff else "repeat or warm-up"
            raise SweepError(f"--merge: {name!r} is a different sweep from {first_name!r} ({what} differs)")
        for row in doc["rows"]:
            rows.setdefault((row["key"], row["repeat"]), row)
        machines.update(doc.get("machines", {}))
    expected = first["grid"]["points"] * first["grid"]["repeat"]
    return document(first["grid"], list(rows.values()), machines, first.get("machine", {}), None,
                    complete=len(rows) == expected)


def summarize(rows: list[dict]) -> list[dict]:
    """One line per point: its varying options, repeats, throughput median and spread, the verdicts."""
    varying = [n for n in OPTION_NAMES if len({str(r.get(n)) for r in rows}) > 1]
    if "cpus" not in varying:
        varying.insert(0, "cpus")
    out = []
    for _, group in itertools.groupby(sorted(rows, key=lambda r: (r["point"], r["repeat"])), key=lambda r: r["point"]):
        group = list(group)
        tput = np.array([r.get("throughput_ops_per_s", 0.0) for r in group], dtype=float)
        line = {n: group[0].get(n) for n in varying}
        line.update(point=group[0]["point"], repeats=len(group),
                    throughput_median=float(np.median(tput)), throughput_min=float(tput.min()),
                    throughput_max=float(tput.max()),
                    violations=sum(r.get("violations", 0) + r.get("warmup_violations", 0) for r in group),
                    findings=sum(r.get("findings", 0) for r in group),
                    status=max(max(r.get("status", 0), r.get("warmup_status", 0)) for r in group),
                    oversubscribed=any(r.get("oversubscribed") for r in group))
        out.append(line)
    return out


def _columns(rows: list[dict]) -> list[str]:
    cols: list[str] = [*IDENTITY_COLUMNS, *OPTION_NAMES, "size_bytes"]
    seen = set(cols)
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_columns(rows), restval="", lineterminator="\n")
    w.writeheader()
    for r in sorted(rows, key=lambda r: (r["point"], r["repeat"])):
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def write_outputs(out: str | os.PathLike, doc: dict, plots: bool = True) -> None:
    """``results.csv``, ``results.json`` and (``plots``) the PNGs in ``out``, whole or not at all.

    Everything is written into a temporary directory beside ``out``, which then takes its place
    (an existing ``out`` is renamed aside first and removed after).
    """
    out = Path(out).absolute()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    old: Path | None = None
    try:
        (tmp / JSON_NAME).write_text(json.dumps(doc, indent=1))
        (tmp / CSV_NAME).write_text(to_csv(doc["rows"]))
        if plots and doc["rows"]:
            write_plots(doc["rows"], tmp, OPTION_NAMES)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old / "previous")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "previous").exists() and not out.exists():
            os.rename(old / "previous", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


PLOT_FILES = tuple(name for name, _ in PLOTS)
