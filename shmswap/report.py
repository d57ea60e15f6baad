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


def render(res: Result, strict: bool = False) -> str:
    cfg = res.config
    out: list[str] = []
    args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in cfg.items()
                    if k not in ("json", "quiet", "strict", "pin", "bad_pages") and v not in (None, "", False))
    out.append(f"shmswap run {args}")
    out.append(f"variant: {', '.join(f'{k}={v}' for k, v in res.variant.items())}")
    for note in res.notes:
        out.append(f"note: {note}")
    ops = res.ops
    out.append("")
    out.append(f"throughput: {res.throughput_ops_per_s:,.0f} ops/s over {res.duration_s:.2f} s "
               f"(alloc {ops['alloc']:,}, alloc failed {ops['alloc_failed']:,}, free slots {ops['free']:,}, "
               f"lookups {ops['lookup']:,})")
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
               f"{t['static_equivalent']:,} ({_mib(t['bytes_static'])}); allocs atomic {t['atomic_allocs']:,}, "
               f"sleeping {t['sleep_allocs']:,}, failed {t['alloc_failures']:,}; frees {t['frees']:,}, "
               f"deferred {t['deferred_frees']:,}, freed unused {t['unused_freed']:,}")
    m = res.migration
    out.append(f"sleep path (swap_cluster_alloc_table): atomic failures {m['atomic_failures']:,}, "
               f"slept {m['sleeps']:,}, migrated {m['migrated']:,}, used per-CPU cluster {m['used_percpu_cluster']:,}, "
               f"installed {m['installed']:,}, already had a table {m['already_had_table']:,}, "
               f"returned NULL {m['returned_null']:,}, clusters lost {m['lost_clusters']:,}")
    r = res.rcu
    out.append(f"RCU: {r['grace_periods']:,} grace periods (mean {r['gp_latency_us_mean']:.0f} us, max "
               f"{r['gp_latency_us_max']:.0f} us), {r['reader_sections']:,} reader sections, pipe ages "
               f"{r['pipe_histogram']}")
    o = res.oracles
    verdict = "clean" if not res.oracle_failures else "FAILED"
    out.append(f"oracles: {verdict}: freed-memory reads {o['freed_memory_reads']}, wrong folio accepted "
               f"{o['wrong_owner_accepted']}, reads older than a grace period {o['pipe_too_old']}; "
               f"foreign folios rejected by readers {o['foreign_folios_rejected']}")
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
