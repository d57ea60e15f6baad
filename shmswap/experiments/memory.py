"""Table memory: static vs dynamic swap tables for devices up to 1 TiB (``shmswap memory``).

The seed's commit message ("mm, swap: implement dynamic allocation of swap table") states what the
patch saves, without a figure: "This way, we can reduce the memory usage of large swap device
significantly."  Before it every cluster owned its table from swapon (static: 8 bytes per slot,
4 KiB per 512-slot cluster, 2 GiB for 1 TiB); after it only clusters in use have one.  This study
shows that comparison on the model.

For each device size x ``--tables static|dynamic`` x fill x pattern a fresh device is made in this
process through ``shmswap.Model`` (segments created, swapon; its wall time is the swapon time),
then filled, then measured:

* the model's table bytes: live table objects in the slab x slots per cluster x 8;
* the real shared memory: the blocks tmpfs has allocated for the model's segments in /dev/shm
  (``st_blocks``, read from the system, not computed), all segments and the tables segment alone.
  tmpfs allocates a page when it is first written: a static table nobody wrote (all null) costs
  no real page here, while the kernel's static tables were zeroed memory from swapon; the model's
  table bytes are the kernel's figure, the real bytes are what this model costs.

Fills.  A fill is a fraction of the device (``0.5``, ``1%``) or an amount in use (``1G``), turned
into *k* half-cluster folios (order ``log2(spc) - 1``; at least one).  Allocating slot by slot is
out of reach for big devices in Python (50 % of 1 TiB is 134 million slots), so the unit of a
fill is half a cluster: one allocation call each.

* ``packed``: *k* half-cluster folios allocated one after the other: two per cluster, k/2
  clusters in use (the best case for dynamic tables).
* ``scattered``: 2k half-cluster folios allocated, then every other one freed: the same slots in
  use, spread over k half-full clusters (fragmentation: twice the tables).

A point needing more than ``max_allocs`` allocation calls is not measured; it is listed as
skipped with the calls it would need (so is a fill beyond the device, or a scattered fill beyond
half of it).  Nothing is extrapolated.
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..config import PAGE_SIZE, Config, ConfigError, parse_size
from ..mm.swap import SWAP_USAGE_COUNTER_MASK
from ..model import Model

__all__ = ["MemoryStudy", "Fill", "parse_fill", "run_memory", "plot_memory", "points_csv", "PATTERNS", "TABLES",
           "COVER_LETTER", "METHOD"]

PATTERNS = ("packed", "scattered")
TABLES = ("static", "dynamic")
COVER_LETTER = ("\"This way, we can reduce the memory usage of large swap device significantly.\" "
                "(the seed's commit message; it gives no figure)")
METHOD = ("fresh device per point through shmswap.Model (one process); fills in half-cluster folios "
          "(one allocation call each): packed = k folios back to back, scattered = 2k folios with every "
          "other one freed; table bytes = live slab table objects x slots per cluster x 8; real bytes = "
          "st_blocks x 512 of the model's /dev/shm segments (tmpfs allocates a page on its first write)")


@dataclass(frozen=True)
class Fill:
    """A fill level: a fraction of the device, or bytes in use."""

    text: str
    fraction: float | None = None
    bytes: int | None = None

    def slots(self, max_slots: int) -> int:
        if self.fraction is not None:
            return round(self.fraction * max_slots)
        return self.bytes // PAGE_SIZE


def parse_fill(text: str) -> Fill:
    t = text.strip()
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*%", t)
    if m:
        f = float(m.group(1)) / 100
    elif re.fullmatch(r"[0-9]*\.[0-9]+|0|1", t):
        f = float(t)
    else:
        try:
            if not re.fullmatch(r"[0-9]+\s*[KMGT](i?B)?", t, re.I):
                raise ConfigError(t)
            b = parse_size(t)
        except ConfigError:
            raise ConfigError(f"--fills: cannot parse {text!r} (a fraction 0..1, a percentage, or a size "
                              "with K/M/G/T)") from None
        if b <= 0:
            raise ConfigError(f"--fills: {text!r} is not a positive amount")
        return Fill(t, bytes=b)
    if not 0 < f <= 1:
        raise ConfigError(f"--fills: {text!r} is not a fraction in (0, 1]")
    return Fill(t, fraction=f)


@dataclass(frozen=True)
class MemoryStudy:
    """The parameters of ``shmswap memory``."""

    sizes: tuple[str, ...] = ("16M", "256M", "4G", "64G", "1T")
    tables: tuple[str, ...] = TABLES
    fills: tuple[str, ...] = ("1%", "25%", "1G")
    patterns: tuple[str, ...] = PATTERNS
    slots_per_cluster: int = 512
    max_allocs: int = 25000

    def validate(self) -> list[Fill]:
        for name, values, allowed in (("tables", self.tables, TABLES), ("patterns", self.patterns, PATTERNS)):
            if not values or any(v not in allowed for v in values) or len(set(values)) != len(values):
                raise ConfigError(f"--{name}: {','.join(values)!r} is not a list of distinct {'|'.join(allowed)}")
        if not self.sizes:
            raise ConfigError("--sizes: empty")
        for s in self.sizes:
            _config(s, "dynamic", self.slots_per_cluster)
        if not isinstance(self.max_allocs, int) or self.max_allocs < 1:
            raise ConfigError(f"--max-allocs: {self.max_allocs!r} must be a positive integer")
        if not self.fills:
            raise ConfigError("--fills: empty")
        return [parse_fill(f) for f in self.fills]


def _config(size: str, tables: str, spc: int) -> Config:
    try:
        return Config(size=size, cpus=1, tables=tables, slots_per_cluster=spc, atomic_fail=0.0, sleep_fail=0.0,
                      migrate=0.0, quiet=True)
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg.replace("--size:", "--sizes:", 1) if msg.startswith("--size:") else msg) from None


def _plan(cfg: Config, fill: Fill, pattern: str, max_allocs: int) -> tuple[int, int, str]:
    """(k half-cluster folios kept, allocation calls, reason to skip or '')."""
    half = cfg.slots_per_cluster // 2
    usable = cfg.max_slots - cfg.slots_per_cluster     # the header's cluster keeps slot 0
    want = fill.slots(cfg.max_slots)
    k = max(1, round(want / half))
    calls = k if pattern == "packed" else 2 * k
    if k * half > usable:
        return k, calls, f"{fill.text} is beyond the device"
    if pattern == "scattered" and 2 * k * half > usable:
        return k, calls, f"scattered {fill.text} needs twice the slots (more than the device)"
    if calls > max_allocs:
        return k, calls, f"needs {calls:,} allocation calls (more than --max-allocs {max_allocs:,})"
    return k, calls, ""


def _shm_blocks(system) -> tuple[int, int]:
    total = system.shm.shm_bytes_touched()
    try:
        tables = os.stat(f"/dev/shm/{system.shm.segs['tables'].name}").st_blocks * 512
    except (FileNotFoundError, KeyError):
        tables = 0
    return total, tables


def _measure(cfg: Config, k: int, pattern: str) -> dict:
    spc = cfg.slots_per_cluster
    order = cfg.pmd_order - 1
    t0 = time.perf_counter()
    m = Model(cfg, oracles=False)
    swapon_s = time.perf_counter() - t0
    try:
        live0 = int(m.system.shm.slab_hdr["live"])
        shm0, tab0 = _shm_blocks(m.system)
        t1 = time.perf_counter()
        n = k if pattern == "packed" else 2 * k
        got = []
        for _ in range(n):
            a = m.alloc(cpu=0, order=order)
            if a is None:
                raise RuntimeError(f"allocation failed after {len(got)} of {n} half-cluster folios "
                                   f"({cfg.size} bytes, {pattern})")
            got.append(a)
        if pattern == "scattered":
            for a in got[1::2]:
                m.free(a)
        m.run_pending_work(grace_period=True)
        m.run_pending_work(grace_period=True)
        fill_s = time.perf_counter() - t1
        live = int(m.system.shm.slab_hdr["live"])
        shm1, tab1 = _shm_blocks(m.system)
        used = int(m.system.shm.dev["inuse_pages"]) & SWAP_USAGE_COUNTER_MASK
        check = m.check()
        return {"swapon_s": swapon_s, "fill_s": fill_s, "slots_in_use": used,
                "fill_fraction": used / cfg.max_slots,
                "table_objects_after_swapon": live0, "table_bytes_after_swapon": live0 * spc * 8,
                "table_objects": live, "table_bytes": live * spc * 8,
                "shm_bytes_after_swapon": shm0, "shm_tables_bytes_after_swapon": tab0,
                "shm_bytes": shm1, "shm_tables_bytes": tab1,
                "check_ok": check.ok, "violations": [v.as_dict() for v in check.violations]}
    finally:
        m.close()


Progress = Callable[[int, str], None]


def run_memory(study: MemoryStudy, progress: Progress | None = None) -> dict:
    """Measure every point; the study as plain data (the JSON document)."""
    fills = study.validate()
    points: list[dict] = []
    skipped: list[dict] = []
    done = 0
    for size in study.sizes:
        for tables in study.tables:
            cfg = _config(size, tables, study.slots_per_cluster)
            for fill in fills:
                for pattern in study.patterns:
                    k, calls, why = _plan(cfg, fill, pattern, study.max_allocs)
                    base = {"size": size, "size_bytes": cfg.size, "clusters": cfg.nr_clusters, "tables": tables,
                            "fill": fill.text, "pattern": pattern, "half_cluster_folios": k,
                            "alloc_calls": calls, "static_table_bytes": cfg.nr_clusters * cfg.slots_per_cluster * 8}
                    if why:
                        skipped.append({**base, "reason": why})
                    else:
                        points.append({**base, **_measure(cfg, k, pattern)})
                    done += 1
                    if progress is not None:
                        progress(done, f"{size} {tables} {fill.text} {pattern}")
    return {"study": "memory", "parameters": {"sizes": list(study.sizes), "tables": list(study.tables),
                                              "fills": list(study.fills), "patterns": list(study.patterns),
                                              "slots_per_cluster": study.slots_per_cluster,
                                              "max_allocs": study.max_allocs},
            "cover_letter": COVER_LETTER, "method": METHOD, "points": points, "skipped": skipped,
            "savings": _savings(points)}


def _savings(points: list[dict]) -> list[dict]:
    """Per size, fill and pattern: static vs dynamic table bytes (model) and real bytes."""
    by = {(p["size"], p["fill"], p["pattern"], p["tables"]): p for p in points}
    out = []
    for (size, fill, pattern, tables), d in by.items():
        if tables != "dynamic" or (size, fill, pattern, "static") not in by:
            continue
        s = by[(size, fill, pattern, "static")]
        out.append({"size": size, "fill": fill, "pattern": pattern, "static_table_bytes": s["table_bytes"],
                    "dynamic_table_bytes": d["table_bytes"],
                    "saved_bytes": s["table_bytes"] - d["table_bytes"],
                    "saved_fraction": 1 - d["table_bytes"] / s["table_bytes"] if s["table_bytes"] else 0.0,
                    "static_shm_bytes": s["shm_bytes"], "dynamic_shm_bytes": d["shm_bytes"]})
    return out


def points_csv(doc: dict) -> str:
    cols = ["size", "size_bytes", "clusters", "tables", "fill", "pattern", "half_cluster_folios", "alloc_calls",
            "slots_in_use", "fill_fraction", "swapon_s", "fill_s", "table_objects", "table_bytes",
            "table_bytes_after_swapon", "static_table_bytes", "shm_bytes_after_swapon", "shm_bytes",
            "shm_tables_bytes", "check_ok"]
    rows = [",".join(cols)]
    for p in doc["points"]:
        rows.append(",".join(f"{p[c]:.6g}" if isinstance(p[c], float) else str(p[c]) for c in cols))
    rows += [",".join(str(s.get(c, "")) for c in cols[:8]) + ",skipped: " + s["reason"].replace(",", "")
             for s in doc["skipped"]]
    return "\n".join(rows) + "\n"


def plot_memory(doc: dict) -> bytes:
    """Log-log: model table bytes, real /dev/shm bytes, and swapon time against device size."""
    fig = Figure(figsize=(15, 4.6))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    pts = doc["points"]
    series: dict[tuple, list[dict]] = {}
    for p in pts:
        series.setdefault((p["tables"], p["fill"], p["pattern"]), []).append(p)
    styles = {"static": "-", "dynamic": "--"}
    markers = {"packed": "o", "scattered": "s"}
    fills = list(dict.fromkeys(p["fill"] for p in pts))
    colours = {f: f"C{i}" for i, f in enumerate(fills)}
    for (tables, fill, pattern), ps in sorted(series.items()):
        ps = sorted(ps, key=lambda p: p["size_bytes"])
        x = [p["size_bytes"] / 2**30 for p in ps]
        kw = dict(ls=styles[tables], marker=markers[pattern], color=colours[fill], ms=4,
                  label=f"{tables}, {fill}, {pattern}")
        ax1.plot(x, [max(p["table_bytes"], 1) / 2**20 for p in ps], **kw)
        ax2.plot(x, [max(p["shm_bytes"], 1) / 2**20 for p in ps], **kw)
    best: dict[tuple, float] = {}                       # the fastest swapon of each size (first runs warm up)
    for p in pts:
        key = (p["size_bytes"], p["tables"])
        best[key] = min(best.get(key, p["swapon_s"]), p["swapon_s"])
    for tables in ("static", "dynamic"):
        sw = sorted((sb, v) for (sb, t), v in best.items() if t == tables)
        if sw:
            ax3.plot([s / 2**30 for s, _ in sw], [v * 1e3 for _, v in sw], ls=styles[tables], marker="o",
                     label=tables)
    static_x = sorted({p["size_bytes"] for p in pts})
    ax1.plot([s / 2**30 for s in static_x], [s / PAGE_SIZE * 8 / 2**20 for s in static_x], color="k", lw=0.8,
             ls=":", label="8 B per slot (static, kernel)")
    for ax, title, ylabel in ((ax1, "swap table bytes (model: live tables x 4 KiB)", "MiB"),
                              (ax2, "real shared memory of the model (/dev/shm blocks)", "MiB"),
                              (ax3, "swapon time (segments + swapon; fastest of the points)", "ms")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("device size (GiB)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    ax1.legend(fontsize=6, ncol=2)
    ax3.legend(fontsize=7)
    fig.suptitle("static vs dynamic swap tables (" + ", ".join(f"fill {f}" for f in fills) +
                 "; packed o, scattered s; static solid, dynamic dashed)", fontsize=9)
    fig.tight_layout()
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
