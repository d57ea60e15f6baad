"""The human report of a run: configuration, figures, lockstat, tables, branches, RCU, verdicts.

Every argument is echoed at the top (a student can re-run it), findings are listed prominently with
their cause in one line each, violations are never hidden, and the last line is machine-readable.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import fields

from .config import Config
from .result import Result

__all__ = ["render"]


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    out = ["  " + _row(header, widths), "  " + _row(["-" * w for w in widths], widths)]
    out += ["  " + _row([str(c) for c in r], widths) for r in rows]
    return out


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.2f} MiB"


# Config fields that are not options of ``shmswap run`` (library-only knobs, outputs) are not echoed;
# the library knobs are named apart when they differ from their defaults (no option reproduces them).
_NOT_OPTIONS = ("json", "quiet", "bad_pages", "objs_per_slab_page", "lookup_ratio", "lockstat")
_LIBRARY = ("bad_pages", "objs_per_slab_page", "lookup_ratio", "lockstat")
# With a device list (``--device KIND:SIZE...``) device 0's kind, size and discard come from it.
_DEVICE0 = ("size", "discard", "devices")


def _number(v: float) -> str:
    """A float as short as it reads back exactly."""
    g = f"{v:g}"
    return g if float(g) == v else repr(v)


def _size(n: int) -> str:
    """Bytes with the largest K/M/G/T suffix that divides them (``--size`` reads it back exactly)."""
    for suffix, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def _list_discard(cfg: dict, devices: list[dict] | None) -> str:
    """The ``--discard`` a device list was given with: the setting of its parts without ``discard=``."""
    implicit = [i for i, part in enumerate(cfg["devices"].split(",")) if not re.search(r":\s*discard=", part, re.I)]
    if not implicit:
        return "off"
    if implicit[0] == 0:
        return cfg["discard"]
    rows = {d["type"]: d.get("discard", "off") for d in devices or []}
    return rows.get(implicit[0], "off")


def command_line(cfg: dict, deterministic: dict | None = None, devices: list[dict] | None = None) -> str:
    """The options that reproduce this run's configuration (workload streams, not interleavings):
    ``shmswap run`` + this, pasted, runs it again (``deterministic``: the run's ``extra`` entry, whose
    schedule it reproduces too; ``devices``: the per-device rows, for a device list's discard)."""
    parts = []
    for k, v in cfg.items():
        if k in _NOT_OPTIONS or (cfg.get("devices") and k in _DEVICE0):
            continue
        if k == "device" and cfg.get("devices"):
            parts.append(f"--device {shlex.quote(cfg['devices'])}")
            if _list_discard(cfg, devices) != "off":
                parts.append("--discard on")
            continue
        if v is None or v == "" or v is False:
            continue
        if k == "orders":
            v = ",".join(f"{o}:{_number(p)}" for o, p in v.items())
        elif isinstance(v, float):
            v = _number(v)
        elif k == "size":
            v = _size(v)
        if k == "seconds" and cfg.get("ops"):
            continue
        opt = f"--{k.replace('_', '-')}"
        parts.append(opt if v is True else f"{opt} {shlex.quote(str(v))}")
    if deterministic:
        parts.append("--deterministic")
        if deterministic.get("mode") == "processes":
            parts.append("--processes")
    return " ".join(parts)


def library_settings(cfg: dict) -> dict:
    """The library-only settings of ``cfg`` that differ from the defaults (no option sets them)."""
    defaults = {f.name: f.default for f in fields(Config)}
    out = {}
    for k in _LIBRARY:
        if k in cfg and cfg[k] != defaults[k] and not (k == "bad_pages" and not cfg[k]):
            out[k] = cfg[k]
    return out


def _devices(devices: list[dict] | None) -> list[str]:
    """Several devices: one row each (the JSON's ``devices``); tables are per device's slab."""
    if not devices:
        return []
    rows = [[str(d["type"]), d["kind"], d.get("discard", "?"), str(d["prio"]), f"{d['pages']:,}",
             f"{d['inuse_pages']:,}",
             f"{d['peak_tables']:,}", f"{d['atomic_allocs']:,}", f"{d['sleep_allocs']:,}", f"{d['w12_events']:,}",
             f"{d['lost_clusters']:,}"] for d in devices]
    return ["devices (at the end of the workload, before swapoff):"] + _table(
        ["type", "kind", "discard", "prio", "pages", "in use", "tables peak", "atomic", "sleeping", "W12 events",
         "lost clusters"], rows)


def _swapoffs(ev: dict | None) -> list[str]:
    """--swapoff-every: per device, swapoffs and swapons during the run, slots try_to_unuse freed, time."""
    if not ev:
        return []
    parts = []
    for d in ev["devices"]:
        mean = d["swapoff_ms_total"] / d["swapoffs"] if d["swapoffs"] else 0.0
        lost = ", ".join(f"{k} {v}" for k, v in sorted(d["lost_at_swapoff"].items()))
        parts.append(f"device {d['type']}: {d['swapoffs']} off / {d['swapons']} on, {d['slots_unused']:,} slots "
                     f"unused, {mean:.1f} ms mean (max {d['swapoff_ms_max']:.1f})"
                     + (f", lost clusters found {lost}" if lost else ""))
    return [f"swapoff during the run (every {ev['every_s']:g} s): " + "; ".join(parts)
            + f"; {ev['alloc_no_device']:,} allocations failed with no device available"]


def _nested(n: dict | None) -> list[str]:
    """--sleep-reclaim: the nested swap-outs and what the outer allocation did after one."""
    if not n:
        return ["nested reclaim: no figures"]
    i, o = n["nested"], n["outer_after"]
    line = (f"nested reclaim (--sleep-reclaim): {n['reclaims']:,} swap-outs from the sleeping allocation, "
            f"{n['allocations']:,} got slots, {n['failed']:,} failed; inside them: atomic tables "
            f"{i['atomic_tables']:,}, slept {i['sleeps']:,}, used per-CPU cluster {i['used_percpu_cluster']:,}, "
            f"installed {i['installed']:,}, returned NULL {i['returned_null']:,}, clusters lost "
            f"{i['lost_clusters']:,}; the outer allocation then: used per-CPU cluster {o['used_percpu_cluster']:,}, "
            f"installed {o['installed']:,}, returned NULL {o['returned_null']:,}, already had a table "
            f"{o['already_had_table']:,}, clusters lost {o['lost_clusters']:,}")
    return [line] + ([f"  {n['explanation']}"] if n.get("explanation") else [])


def render(res: Result, strict: bool = False) -> str:
    cfg = res.config
    devices = res.extra.get("devices")
    out: list[str] = [f"shmswap run {command_line(cfg, res.extra.get('deterministic'), devices)}"]
    library = library_settings(cfg)
    if library:
        out.append(f"library settings (no option sets them): {library}")
    variant = [f"{k}={v}" for k, v in res.variant.items()
               if not (devices and len(devices) > 1 and k in ("device", "discard"))]
    if devices and len(devices) > 1:
        variant.append(f"devices: {len(devices)}, see the devices table")
    out.append(f"variant: {', '.join(variant)}")
    for note in res.notes:
        out.append(f"note: {note}")
    ops = res.ops
    out.append("")
    out.append(f"throughput: {res.throughput_ops_per_s:,.0f} ops/s over {res.duration_s:.2f} s "
               f"({ops['steps']:,} operations: alloc {ops['alloc']:,}, alloc failed {ops['alloc_failed']:,}, "
               f"free {ops['free']:,}, lookups {ops['lookup']:,}; slots freed {ops['free_slots']:,})")
    out.append(f"  fast-path hits {ops['fast_path_hits']:,}, slow path {ops['slow_path']:,}, "
               f"trylock skips {ops['trylock_skips']:,}, reclaimed slots {ops['reclaimed_slots']:,}, "
               f"discarded clusters {ops['discards']:,}")
    out.append("")
    out.append("lockstat (per lock class, summed over workers):")
    rows = [[name, f"{s['acquisitions']:,}", f"{s['contentions']:,}", f"{s['trylock_failures']:,}",
             f"{s['wait_ns_total'] / 1e6:.2f}", f"{s['wait_ns_max'] / 1e3:.1f}"]
            for name, s in res.locks.items() if s["acquisitions"] or s["trylock_failures"]]
    out += _table(["class", "acquisitions", "contentions", "trylock-fail", "wait ms", "max wait us"], rows)
    t = res.tables
    out.append("")
    summed = f" (summed over the {len(devices)} devices; peak: the sum of their peaks)" if devices else ""
    out.append(f"swap tables{summed}: live {t['live']:,}, peak {t['peak']:,} ({_mib(t['bytes_peak'])}) vs static "
               f"{t['static_equivalent']:,} ({_mib(t['bytes_static'])}); allocated atomically {t['atomic_allocs']:,}, "
               f"by sleeping {t['sleep_allocs']:,}, failed attempts {t['alloc_failures']:,}; frees {t['frees']:,} "
               f"(freed unused {t['unused_freed']:,}, of a NULL table {t['null_table_frees']:,}); deferred to a "
               f"grace period {t['deferred_frees']:,}, pages back to the pool {t['pages_returned']:,}")
    out += _devices(res.extra.get("devices"))
    out += _swapoffs(res.extra.get("swapoff_events"))
    m = res.migration
    out.append(f"sleep path (swap_cluster_alloc_table): atomic failures {m['atomic_failures']:,}, "
               f"slept {m['sleeps']:,}, migrated {m['migrated']:,}, used per-CPU cluster {m['used_percpu_cluster']:,}, "
               f"installed {m['installed']:,}, already had a table {m['already_had_table']:,}, "
               f"returned NULL {m['returned_null']:,}, clusters lost {m['lost_clusters']:,}")
    if cfg.get("sleep_reclaim"):
        out += _nested(res.extra.get("nested_reclaim"))
    r = res.rcu
    out.append(f"RCU: {r['grace_periods']:,} grace periods (latency p50 {r['gp_latency_us_p50']:.0f} us, p99 "
               f"{r['gp_latency_us_p99']:.0f} us, max {r['gp_latency_us_max']:.0f} us), {r['reader_sections']:,} "
               f"reader sections; pipe ages (grace periods since the table read was freed: 0,1,2,3,4+) "
               f"{r['pipe_histogram']}")
    o = res.oracles
    verdict = "clean" if not res.oracle_failures else "FAILED"
    out.append(f"oracles: {verdict}: freed-memory reads {o['freed_memory_reads']}, foreign folio accepted "
               f"{o['wrong_owner_accepted']}, reads 2+ grace periods after the free {o['pipe_too_old']}; "
               f"foreign folios rejected by validating readers {o['foreign_folios_rejected']}")
    d = o.get("reader_delays")
    if d and (d["short"] or d["long"] or d.get("torture_reads")):
        out.append(f"reader delays (rcutorture-style, inside the read sections): short {d['short']:,}; "
                   f"{d.get('torture_readers', 0)} torture reader process(es): {d.get('torture_reads', 0):,} "
                   f"lookups, long delays {d['long']:,} (the table freed under {d['long_saw_table_freed']:,} "
                   f"of them, then back in the page pool or another cluster's under "
                   f"{d['long_saw_table_gone']:,}); {d['delayed_s']:.2f} s delayed in all")
    out.append("")
    chk = res.check
    out.append(f"invariants checked: {', '.join(chk.checked)}")
    if chk.findings:
        counts = res.finding_counts()
        what = [f"{counts['lost_clusters']:,} clusters the seed lost (reference §5.3)"] * bool(
            counts["lost_clusters"]) + [f"{counts['w12_events']:,} W12 events that lost no cluster (reference §10)"
                                        ] * bool(counts["w12_events"])
        out.append(f"FINDINGS ({len(chk.findings)}): {', '.join(what)}")
        for f in res.findings:
            out.append(f"  [{f.branch}] {f.where}: {f.reason}")
    else:
        out.append("findings: none")
    if chk.violations:
        out.append(f"VIOLATIONS ({len(chk.violations)}):")
        for v in chk.violations:
            out.append(f"  [{v.invariant}] {v.where}: {v.reason}")
    else:
        out.append("violations: none")
    status = res.exit_status(strict)
    out.append("")
    out.append(f"RESULT status={status} violations={len(chk.violations)} findings={len(chk.findings)} "
               f"oracle_failures={res.oracle_failures} ops_per_s={res.throughput_ops_per_s:.0f}")
    return "\n".join(out)
