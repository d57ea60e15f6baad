"""The result of a run: every figure, read from the shared state at the end (DESIGN §9).

``collect`` sums the per-worker counters and lockstat blocks, reads the slab and RCU words, runs
nothing itself; the checker's verdict is passed in.  ``Result.as_dict`` is the JSON document of
``--json``; ``report.render`` prints it for people.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field, replace

import numpy as np

from .checks.checker import CheckResult, Finding
from .substrate.locks import lockstat_by_class
from .substrate.stats import Stat

__all__ = ["Result", "collect"]

# A finding about one cluster (``cluster N``, ``device T cluster N``) is a lost cluster; the others
# (``device T``) are W12 events that lost none, one per line but for the checker's overflow line.
_LOST_WHERE = re.compile(r"(?:^|\s)cluster \d+$")
_MORE_W12 = re.compile(r"(\d+) more W12 events not listed")


@dataclass
class Result:
    config: dict
    variant: dict
    duration_s: float
    ops: dict
    locks: dict
    tables: dict
    migration: dict
    rcu: dict
    oracles: dict
    check: CheckResult
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def throughput_ops_per_s(self) -> float:
        """Workload operations (allocations, frees, lookups, failed ones included) per second."""
        return self.ops.get("steps", 0) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def oracle_failures(self) -> int:
        return self.oracles["freed_memory_reads"] + self.oracles["wrong_owner_accepted"] + \
            self.oracles["pipe_too_old"]

    def exit_status(self, strict: bool = False) -> int:
        """DESIGN §8: 1 on a violation or an oracle failure (or, strict, a finding); else 0.

        A run stopped by a signal is not a completed one: 128 + the signal (130 SIGINT, 143 SIGTERM).
        """
        if self.extra.get("interrupted"):
            return 128 + int(signal.Signals[self.extra["interrupted"]])
        if self.check.violations or self.oracle_failures:
            return 1
        if strict and self.check.findings:
            return 1
        return 0

    @property
    def findings(self) -> list[Finding]:
        """The checker's findings; with several devices each names its device (the check prefixes
        further devices' only: ``Model.check``), so device 0's get ``device 0`` here."""
        if len(self.extra.get("devices") or ()) < 2:
            return list(self.check.findings)
        return [f if f.where.startswith("device ") else replace(f, where=f"device 0 {f.where}")
                for f in self.check.findings]

    def finding_counts(self) -> dict:
        """What the findings count: clusters the seed lost (T5, T6b, W12 re-check; reference §5.3) and
        W12 events that lost no cluster (reference §10; a "N more ... not listed" line counts N)."""
        lost = events = 0
        for f in self.check.findings:
            if _LOST_WHERE.search(f.where):
                lost += 1
            else:
                m = _MORE_W12.match(f.reason)
                events += int(m.group(1)) if m else 1
        return {"lost_clusters": lost, "w12_events": events}

    def as_dict(self) -> dict:
        return {
            "config": self.config,
            "variant": self.variant,
            "duration_s": self.duration_s,
            "throughput_ops_per_s": self.throughput_ops_per_s,
            "ops": self.ops,
            "locks": self.locks,
            "tables": self.tables,
            "migration": self.migration,
            "rcu": self.rcu,
            "oracles": self.oracles,
            "findings": [f.as_dict() for f in self.findings],
            "finding_counts": self.finding_counts(),
            "invariants": {"checked": self.check.checked,
                           "violations": [v.as_dict() for v in self.check.violations],
                           "counts": self.check.counts},
            "notes": self.notes,
            **self.extra,
        }


def _sum(stats: np.ndarray, s: Stat) -> int:
    return int(stats[:, s].sum())


def collect(system, check: CheckResult, duration_s: float, notes: list[str] | None = None,
            gp_latencies_ns: list[int] | None = None) -> Result:
    shm, cfg = system.shm, system.cfg
    stats = shm.workers["stats"]
    spc = cfg.slots_per_cluster
    rcu_hdr = shm.rcu_hdr
    gps = int(rcu_hdr["gps"])
    pipe = shm.readers["pipe"].sum(axis=0)
    ops = {"alloc": _sum(stats, Stat.ALLOC), "alloc_failed": _sum(stats, Stat.ALLOC_FAILED),
           "free": _sum(stats, Stat.FREE_OPS), "free_slots": _sum(stats, Stat.FREE),
           "lookup": _sum(stats, Stat.LOOKUP),
           "fast_path_hits": _sum(stats, Stat.FAST_HIT), "slow_path": _sum(stats, Stat.SLOW_PATH),
           "steps": _sum(stats, Stat.OPS), "trylock_skips": _sum(stats, Stat.TRYLOCK_SKIPS),
           "reclaimed_slots": _sum(stats, Stat.RECLAIMED_SLOTS), "discards": _sum(stats, Stat.DISCARDS)}
    tables = swap_tables(system.device_shms, spc)
    tables.update(unused_freed=_sum(stats, Stat.TABLE_UNUSED_FREED),
                  null_table_frees=_sum(stats, Stat.NULL_TABLE_FREES))
    migration = {"atomic_failures": _sum(stats, Stat.TABLE_ATOMIC_FAIL), "sleeps": _sum(stats, Stat.SLEEPS),
                 "sleep_failures": _sum(stats, Stat.SLEEP_FAIL), "migrated": _sum(stats, Stat.MIGRATED),
                 "used_percpu_cluster": _sum(stats, Stat.USED_PERCPU), "installed": _sum(stats, Stat.INSTALLED),
                 "already_had_table": _sum(stats, Stat.ALREADY_HAD_TABLE),
                 "returned_null": _sum(stats, Stat.RETURNED_NULL), "lost_clusters": _sum(stats, Stat.LOST_CLUSTERS)}
    lat = np.asarray(gp_latencies_ns if gp_latencies_ns else system.rcu.latencies_ns, dtype=np.float64) / 1e3
    rcu = {"grace_periods": gps,
           "gp_latency_us_p50": float(np.percentile(lat, 50)) if len(lat) else 0.0,
           "gp_latency_us_p99": float(np.percentile(lat, 99)) if len(lat) else 0.0,
           "gp_latency_us_mean": (int(rcu_hdr["gp_ns_total"]) / gps / 1000) if gps else 0.0,
           "gp_latency_us_max": int(rcu_hdr["gp_ns_max"]) / 1000,
           "gp_latency_sample": len(lat),
           "reader_sections": int(shm.readers["sections"].sum()),
           "pipe_histogram": [int(x) for x in pipe],
           "freed_memory_reads": _sum(stats, Stat.FREED_MEMORY_READS),
           "wrong_owner_accepted": _sum(stats, Stat.WRONG_OWNER_ACCEPTED)}
    oracles = {"freed_memory_reads": rcu["freed_memory_reads"],
               "wrong_owner_accepted": rcu["wrong_owner_accepted"],
               "pipe_too_old": _sum(stats, Stat.PIPE_TOO_OLD),
               "foreign_folios_rejected": _sum(stats, Stat.FOREIGN_REJECTED),
               "reader_delays": {"short": _sum(stats, Stat.READER_DELAYS_SHORT),
                                 "long": _sum(stats, Stat.READER_DELAYS_LONG),
                                 "long_saw_table_freed": _sum(stats, Stat.LONG_DELAY_FREED),
                                 "long_saw_table_gone": _sum(stats, Stat.LONG_DELAY_GONE),
                                 "delayed_s": _sum(stats, Stat.READER_DELAY_US) / 1e6,
                                 "torture_readers": cfg.n_torture_readers,
                                 "torture_reads": _sum(stats, Stat.TORTURE_READS)}}
    locks = {k: v.as_dict() for k, v in lockstat_by_class(shm.workers["lockstat"]).items()}
    return Result(config=cfg.as_dict(), variant=system.variant.as_dict(), duration_s=duration_s, ops=ops,
                  locks=locks, tables=tables, migration=migration, rcu=rcu, oracles=oracles, check=check,
                  notes=list(notes or []), extra={"nested_reclaim": nested_reclaim(stats, cfg)})


_SLAB_WORDS = ("live", "peak", "atomic_allocs", "sleep_allocs", "alloc_failures", "frees", "deferred_frees",
               "pages_returned")


def swap_tables(device_shms: list, spc: int) -> dict:
    """Every device's table slab (its own ``swap_table_cachep`` pages in the model), summed over the
    devices; ``finish.device_figures`` keeps the rows.  ``peak`` is the sum of the devices' peaks
    (each reached at its own time: an upper bound of the system's peak); ``static_equivalent`` the
    tables every device's clusters would need without the patch."""
    out = {k: sum(int(d.slab_hdr[k]) for d in device_shms) for k in _SLAB_WORDS}
    clusters = sum(d.cfg.nr_clusters for d in device_shms)
    out.update(static_equivalent=clusters, bytes_peak=out["peak"] * spc * 8, bytes_static=clusters * spc * 8)
    return out


def nested_reclaim(stats: np.ndarray, cfg=None) -> dict:
    """--sleep-reclaim (mm/vmscan.py): the nested swap-outs, the swap_cluster_alloc_table branches
    taken inside them, and the branch the outer allocation took afterwards (all also in ``migration``);
    with P > 0, ``explanation``: what this variant did differently, in this run's counts."""
    out = {"reclaims": _sum(stats, Stat.NESTED_RECLAIM), "allocations": _sum(stats, Stat.NESTED_ALLOC),
           "failed": _sum(stats, Stat.NESTED_ALLOC_FAILED),
           "nested": {"atomic_tables": _sum(stats, Stat.NESTED_TABLE_ATOMIC),
                      "sleeps": _sum(stats, Stat.NESTED_SLEEPS),
                      "used_percpu_cluster": _sum(stats, Stat.NESTED_USED_PERCPU),
                      "installed": _sum(stats, Stat.NESTED_INSTALLED),
                      "returned_null": _sum(stats, Stat.NESTED_RETURNED_NULL),
                      "lost_clusters": _sum(stats, Stat.NESTED_LOST)},
           "outer_after": {"used_percpu_cluster": _sum(stats, Stat.OUTER_USED_PERCPU),
                           "installed": _sum(stats, Stat.OUTER_INSTALLED),
                           "returned_null": _sum(stats, Stat.OUTER_RETURNED_NULL),
                           "already_had_table": _sum(stats, Stat.OUTER_ALREADY),
                           "lost_clusters": _sum(stats, Stat.OUTER_LOST)}}
    if cfg is not None and cfg.sleep_reclaim:
        out["explanation"] = nested_explanation(out, cfg.alloc_table)
    return out


def nested_explanation(n: dict, alloc_table: str) -> str:
    """What the seed and merged variants do after a nested swap-out (mm/vmscan.py), with the counts.

    The nested swap-out leaves this CPU's ``percpu_swap_cluster`` pointing at the cluster it used;
    the seed's re-check after the sleep then takes that cluster (T5) and loses the one it isolated;
    merged ignores the per-CPU cluster and installs its table on the cluster it isolated.
    """
    o, i = n["outer_after"], n["nested"]
    head = (f"{n['reclaims']:,} sleeping table allocations swapped a folio out first (a nested folio_alloc_swap "
            f"with PF_MEMALLOC, so one level deep) and {n['allocations']:,} got a slot; one that gets it on an "
            f"SSD leaves this CPU's per-CPU cluster pointing at the cluster it used. ")
    if alloc_table == "seed":
        return head + (f"After them, the seed's outer allocation re-checked the per-CPU cluster and took it "
                       f"(T5; W12 if it was another device's) {o['used_percpu_cluster']:,} times, each time losing "
                       f"the cluster it had isolated, installed its own table {o['installed']:,} times and returned "
                       f"NULL (T6b, also losing it) {o['returned_null']:,} times: {o['lost_clusters']:,} clusters "
                       f"lost after a nested swap-out, {i['lost_clusters']:,} more inside the nested ones (seed "
                       f"branches there too); merged would ignore the per-CPU cluster and install its table on the "
                       f"cluster it isolated.")
    return head + (f"Merged ignores the per-CPU cluster: after them its outer allocation installed its table on "
                   f"the cluster it isolated {o['installed']:,} times, returned NULL with the cluster put back on "
                   f"free_clusters {o['returned_null']:,} times and found a table already installed "
                   f"{o['already_had_table']:,} times: {o['lost_clusters']:,} clusters lost; the seed would take "
                   f"the per-CPU cluster (T5) and lose the cluster it isolated.")
