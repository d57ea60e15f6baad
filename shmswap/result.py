"""The result of a run: every figure, read from the shared state at the end (DESIGN §9).

``collect`` sums the per-worker counters and lockstat blocks, reads the slab and RCU words, runs
nothing itself; the checker's verdict is passed in.  ``Result.as_dict`` is the JSON document of
``--json``; ``report.render`` prints it for people.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field

import numpy as np

from .checks.checker import CheckResult
from .substrate.locks import lockstat_by_class
from .substrate.stats import Stat

__all__ = ["Result", "collect"]


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
            "findings": [f.as_dict() for f in self.check.findings],
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
    hdr = shm.slab_hdr
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
    tables = {"live": int(hdr["live"]), "peak": int(hdr["peak"]), "static_equivalent": cfg.nr_clusters,
              "bytes_peak": int(hdr["peak"]) * spc * 8, "bytes_static": cfg.nr_clusters * spc * 8,
              "atomic_allocs": int(hdr["atomic_allocs"]), "sleep_allocs": int(hdr["sleep_allocs"]),
              "alloc_failures": int(hdr["alloc_failures"]), "frees": int(hdr["frees"]),
              "deferred_frees": int(hdr["deferred_frees"]), "pages_returned": int(hdr["pages_returned"]),
              "unused_freed": _sum(stats, Stat.TABLE_UNUSED_FREED),
              "null_table_frees": _sum(stats, Stat.NULL_TABLE_FREES)}
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
               "foreign_folios_rejected": _sum(stats, Stat.FOREIGN_REJECTED)}
    locks = {k: v.as_dict() for k, v in lockstat_by_class(shm.workers["lockstat"]).items()}
    return Result(config=cfg.as_dict(), variant=system.variant.as_dict(), duration_s=duration_s, ops=ops,
                  locks=locks, tables=tables, migration=migration, rcu=rcu, oracles=oracles, check=check,
                  notes=list(notes or []), extra={"nested_reclaim": nested_reclaim(stats)})


def nested_reclaim(stats: np.ndarray) -> dict:
    """--sleep-reclaim (mm/vmscan.py): the nested swap-outs, the swap_cluster_alloc_table branches
    taken inside them, and the branch the outer allocation took afterwards (all also in ``migration``)."""
    return {"reclaims": _sum(stats, Stat.NESTED_RECLAIM), "allocations": _sum(stats, Stat.NESTED_ALLOC),
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
