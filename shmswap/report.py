"""The human report of a run: configuration, figures, lockstat, tables, branches, RCU, verdicts.

Every argument is echoed at the top (a student can re-run it), findings are listed prominently with
their cause in one line each, violations are never hidden, and the last line is machine-readable.
"""

from __future__ import annotations

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


# Config fields that are not options of ``shmswap run`` (library-only knobs) are echoed apart.
_NOT_OPTIONS = ("json", "quiet", "bad_pages", "objs_per_slab_page", "lookup_ratio", "lockstat")


def command_line(cfg: dict) -> str:
    """The options that reproduce this run's configuration (workload streams, not interleavings)."""
    parts = []
    for k, v in cfg.items():
        if k in _NOT_OPTIONS or v is None or v == "" or v is False:
            continue
        if k == "orders":
            v = ",".join(f"{o}:{p:g}" for o, p in v.items())
        if k == "seconds" and cfg.get("ops"):
            continue
        parts.append(f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')} {v}")
    extra = {k: cfg[k] for k in ("bad_pages", "objs_per_slab_page", "lookup_ratio", "lockstat")
             if k in cfg and cfg[k] not in ([], (), None)}
    return " ".join(parts) + (f"  (library settings: {extra})" if extra else "")


def _devices(devices: list[dict] | None) -> list[str]:
    """Several devices: one row each (the JSON's ``devices``); tables are per device's slab."""
    if not devices:
        return []
    rows = [[str(d["type"]), d["kind"], str(d["prio"]), f"{d['pages']:,}", f"{d['inuse_pages']:,}",
             f"{d['peak_tables']:,}", f"{d['atomic_allocs']:,}", f"{d['sleep_allocs']:,}", f"{d['w12_events']:,}",
             f"{d['lost_clusters']:,}"] for d in devices]
    return ["devices (at the end of the workload, before swapoff):"] + _table(
        ["type", "kind", "prio", "pages", "in use", "tables peak", "atomic", "sleeping", "W12 events",
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


def _nested(n: dict | None) -> str:
    """--sleep-reclaim: the nested swap-outs and what the outer allocation did after one."""
    if not n:
        return "nested reclaim: no figures"
    i, o = n["nested"], n["outer_after"]
    return (f"nested reclaim (--sleep-reclaim): {n['reclaims']:,} swap-outs from the sleeping allocation, "
            f"{n['allocations']:,} got slots, {n['failed']:,} failed; inside them: atomic tables "
            f"{i['atomic_tables']:,}, slept {i['sleeps']:,}, used per-CPU cluster {i['used_percpu_cluster']:,}, "
            f"installed {i['installed']:,}, returned NULL {i['returned_null']:,}, clusters lost "
            f"{i['lost_clusters']:,}; the outer allocation then: used per-CPU cluster {o['used_percpu_cluster']:,}, "
            f"installed {o['installed']:,}, returned NULL {o['returned_null']:,}, already had a table "
            f"{o['already_had_table']:,}, clusters lost {o['lost_clusters']:,}")


def render(res: Result, strict: bool = False) -> str:
    cfg = res.config
    out: list[str] = [f"shmswap run {command_line(cfg)}"]
    out.append(f"variant: {', '.join(f'{k}={v}' for k, v in res.variant.items())}")
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
    out.append(f"swap tables: live {t['live']:,}, peak {t['peak']:,} ({_mib(t['bytes_peak'])}) vs static "
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
        out.append(_nested(res.extra.get("nested_reclaim")))
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
    out.append("")
    chk = res.check
    out.append(f"invariants checked: {', '.join(chk.checked)}")
    if chk.findings:
        out.append(f"FINDINGS ({len(chk.findings)}): clusters the seed lost (reference §5.3)")
        for f in chk.findings:
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
