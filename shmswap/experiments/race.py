"""Race studies.  ``migration``: what happens after ``swap_cluster_alloc_table`` sleeps (reference §5.2, §5.3).

Each trial is one short run with the sleeping path forced (every atomic table allocation fails
with ``atomic_fail`` 1 by default), a migration policy after the sleep, and a rate of sleeping
allocations that fail.  Both ``--alloc-table`` variants run on the same derived seeds (trial *i*
of a study with base seed *S* uses seed *S + i*), and per variant the study sums every branch of
``swap_cluster_alloc_table`` that ``Result.migration`` counts (whatever branches later join it
are summed as well), the table allocations and the tables freed unused, and the clusters lost per
1000 sleeps with a 95 % Wilson score interval over the pooled sleeps of all trials (one sleep
loses at most one cluster, so lost/sleeps is a binomial proportion; the interval treats sleeps as
independent, which the trials' pooling only approximates).

A trial's outcome class is ``violation`` (a checker violation or an oracle failure), else the
lost-cluster branches its findings name (``T5 loss``, ``T6b loss``, ``T5+T6b loss``), else
``clean``.  A trial prints how to reproduce it: in ``inprocess`` mode (``shmswap.run_inprocess``,
every CPU in one process, an operation budget) a seed replays exactly, so the printed command
gives the same outcome class; in ``process`` mode (``shmswap.run``, real processes) the seed fixes
each worker's workload stream but not the interleaving, so the class reproduces only
statistically.

Latency of the slow and fast paths (``measure_latency``): a model is driven in this process
(``shmswap.Model``, the trial's configuration, base seed) and every ``Model.alloc`` call is timed
with ``perf_counter_ns``.  A call is ``fast`` when ``swap_alloc_fast`` served it, ``slow`` when
it entered ``swap_alloc_slow`` but did not sleep, ``slept`` when ``swap_cluster_alloc_table``
slept for a table (read from the worker's own counters before and after the call).  A time is the
whole call: the folio, ``folio_alloc_swap``, the model's writeback (a constant few microseconds),
and for ``slept`` the modelled sleeping allocation (``sleep_latency_us``).  One process: no lock
contention from other CPUs is in these figures.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..config import Config, ConfigError
from ..model import Model
from ..result import Result
from ..runner.driver import run_multiprocess
from ..runner.inprocess import run_inprocess
from ..substrate.stats import Stat

__all__ = ["MigrationStudy", "run_migration", "measure_latency", "wilson", "outcome_class", "trial_config",
           "MODES", "VARIANTS", "INPROCESS_OPS", "plot_branches", "plot_latency", "trials_csv", "summary_csv",
           "latency_csv", "CI_METHOD", "LATENCY_METHOD", "REPRODUCIBILITY"]

MODES = ("process", "inprocess")
VARIANTS = ("seed", "merged")
INPROCESS_OPS = 20000
LATENCY_CLASSES = ("fast", "slow", "slept")
CI_METHOD = ("95% Wilson score interval for lost/sleeps over the pooled sleeps of all trials "
             "(each sleep loses at most one cluster), times 1000")
LATENCY_METHOD = ("one Model.alloc call timed in this process (perf_counter_ns), classed by the worker's own "
                  "counters: fast = swap_alloc_fast served it, slow = swap_alloc_slow without a table sleep, "
                  "slept = swap_cluster_alloc_table slept (includes --sleep-latency-us); no other process runs")
REPRODUCIBILITY = {
    "inprocess": "inprocess mode: one process, an operation budget: a trial's seed replays it exactly "
                 "(the printed command gives the same outcome class)",
    "process": "process mode: real processes: a seed fixes each worker's workload stream, not the "
               "interleaving, so a trial's outcome class reproduces only statistically from its seed",
}


@dataclass(frozen=True)
class MigrationStudy:
    """The parameters of ``shmswap race migration`` (validated by ``configs``)."""

    trials: int = 10
    seed: int = 1
    mode: str = "process"
    variants: tuple[str, ...] = VARIANTS
    cpus: int = 2
    size: str = "64M"
    slots_per_cluster: int = 512
    orders: str = "0:0.7,2:0.2,4:0.1"
    fill: float = 0.8
    seconds: float = 0.5
    ops: int | None = None
    atomic_fail: float = 1.0
    sleep_fail: float = 0.1
    sleep_latency_us: int = 200
    migrate: float = 1.0
    migrate_to: str = "random"
    latency_samples: int = 200
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first bad value (builds every trial's configuration)."""
        if not isinstance(self.trials, int) or self.trials < 1:
            raise ConfigError(f"--trials: {self.trials!r} must be a positive integer")
        if self.mode not in MODES:
            raise ConfigError(f"--mode: {self.mode!r} is not one of {'|'.join(MODES)}")
        if not self.variants or any(v not in VARIANTS for v in self.variants) or \
                len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"--variants: {','.join(self.variants)!r} is not a list of distinct "
                              f"{'|'.join(VARIANTS)}")
        if not isinstance(self.latency_samples, int) or self.latency_samples < 0:
            raise ConfigError(f"--latency-samples: {self.latency_samples!r} must be a non-negative integer")
        if not isinstance(self.seed, int) or self.seed < 0 or self.seed + self.trials > 2**31:
            raise ConfigError(f"--seed: {self.seed!r} must be an integer in 0..2^31 - trials")
        for v in self.variants:
            trial_config(self, v, self.seed)

    @property
    def ops_per_trial(self) -> int | None:
        """The operation budget of a trial: --ops, or INPROCESS_OPS in inprocess mode (exact replay)."""
        if self.ops is not None:
            return self.ops
        return INPROCESS_OPS if self.mode == "inprocess" else None


def trial_config(study: MigrationStudy, variant: str, seed: int) -> Config:
    ops = study.ops_per_trial
    return Config(cpus=study.cpus, size=study.size, slots_per_cluster=study.slots_per_cluster, orders=study.orders,
                  fill=study.fill, ops=ops, seconds=None if ops else study.seconds, seed=seed, alloc_table=variant,
                  atomic_fail=study.atomic_fail, sleep_fail=study.sleep_fail,
                  sleep_latency_us=study.sleep_latency_us, migrate=study.migrate, migrate_to=study.migrate_to,
                  quiet=True, **study.extra)


def outcome_class(res: Result) -> str:
    """``violation``, ``T5 loss``, ``T6b loss``, ``T5+T6b loss`` or ``clean``."""
    if res.check.violations or res.oracle_failures:
        return "violation"
    branches = sorted({f.branch for f in res.check.findings if f.branch})
    if branches:
        return "+".join(branches) + " loss"
    if res.check.findings:
        return "finding"
    return "clean"


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval for a proportion k/n (0, 1 when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _reproduce(study: MigrationStudy, cfg: Config) -> str:
    """The command that reruns a trial (every other option is ``shmswap run``'s default)."""
    length = f"--ops {cfg.ops}" if cfg.ops else f"--seconds {cfg.seconds:g}"
    common = (f"--cpus {cfg.cpus} --size {study.size} --slots-per-cluster {cfg.slots_per_cluster} "
              f"--orders {study.orders} --fill {cfg.fill:g} {length} --atomic-fail {cfg.atomic_fail:g} "
              f"--sleep-fail {cfg.sleep_fail:g} --sleep-latency-us {cfg.sleep_latency_us} --migrate {cfg.migrate:g} "
              f"--migrate-to {cfg.migrate_to}")
    if study.mode == "process":
        return f"shmswap run --alloc-table {cfg.alloc_table} --seed {cfg.seed} {common}"
    return (f"shmswap race migration --mode inprocess --variants {cfg.alloc_table} --trials 1 --seed {cfg.seed} "
            f"{common} --latency-samples 0")


def _trial_record(study: MigrationStudy, i: int, cfg: Config, res: Result) -> dict:
    m = res.migration
    t = res.tables
    return {"trial": i, "seed": cfg.seed, "variant": cfg.alloc_table, "outcome": outcome_class(res),
            "duration_s": res.duration_s, "ops": res.ops.get("steps", 0),
            "branches": dict(m),
            "tables": {"allocated": t["atomic_allocs"] + t["sleep_allocs"], "atomic_allocs": t["atomic_allocs"],
                       "sleep_allocs": t["sleep_allocs"], "unused_freed": t["unused_freed"]},
            "lost_per_1000_sleeps": 1000.0 * m["lost_clusters"] / m["sleeps"] if m["sleeps"] else 0.0,
            "check": {"ok": res.check.ok, "violations": [v.as_dict() for v in res.check.violations],
                      "findings": [f.as_dict() for f in res.check.findings],
                      "oracle_failures": res.oracle_failures},
            "reproduce": _reproduce(study, cfg)}


def _summary(variant: str, trials: list[dict], latency: dict | None) -> dict:
    branches: dict[str, int] = {}
    tables: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    for t in trials:
        for k, v in t["branches"].items():
            branches[k] = branches.get(k, 0) + int(v)
        for k, v in t["tables"].items():
            tables[k] = tables.get(k, 0) + int(v)
        outcomes[t["outcome"]] = outcomes.get(t["outcome"], 0) + 1
    lost, sleeps = branches.get("lost_clusters", 0), branches.get("sleeps", 0)
    lo, hi = wilson(lost, sleeps)
    return {"variant": variant, "trials": len(trials), "branches": branches, "tables": tables,
            "lost_per_1000_sleeps": {"value": 1000.0 * lost / sleeps if sleeps else 0.0,
                                     "ci95": [1000.0 * lo, 1000.0 * hi], "lost": lost, "sleeps": sleeps,
                                     "method": "wilson"},
            "outcomes": outcomes,
            "checks": {"ok": sum(1 for t in trials if t["check"]["ok"]),
                       "violations": sum(len(t["check"]["violations"]) for t in trials),
                       "findings": sum(len(t["check"]["findings"]) for t in trials),
                       "oracle_failures": sum(t["check"]["oracle_failures"] for t in trials)},
            "latency_us": latency["summary"] if latency else None}


def measure_latency(cfg: Config, samples: int, max_rounds: int = 64) -> dict:
    """Time ``Model.alloc`` calls until ``samples`` of them slept (or ``max_rounds`` devices are used up).

    Order-0 allocations on the CPUs in turn; one cluster's worth is held, then everything is freed
    and a grace period runs, so clusters go back to ``free_clusters`` and their tables are freed:
    the next isolation sleeps again.  When the device stops sleeping (the seed has lost every
    cluster but the header's, which keeps its table), a fresh device is made (up to ``max_rounds``).
    Returns the samples (ns) per class and a summary (us).
    """
    times: dict[str, list[int]] = {c: [] for c in LATENCY_CLASSES}
    batch = cfg.slots_per_cluster
    rounds = 0
    budget = samples * batch * 4 + 1000
    calls = 0
    while samples and len(times["slept"]) < samples and rounds < max_rounds and calls < budget:
        rounds += 1
        with Model(cfg, oracles=False) as m:
            stats = m.system.shm.workers["stats"]
            held = []
            misses = 0
            cpu = 0
            last_sleep = calls
            while len(times["slept"]) < samples and calls < budget and calls - last_sleep < 4 * batch:
                cpu = (cpu + 1) % cfg.cpus
                slow0, sleep0 = int(stats[cpu, Stat.SLOW_PATH]), int(stats[cpu, Stat.SLEEPS])
                t0 = time.perf_counter_ns()
                a = m.alloc(cpu=cpu)
                dt = time.perf_counter_ns() - t0
                calls += 1
                if a is None:
                    misses += 1
                    if misses > 2 * cfg.cpus:
                        break
                    m.free_all()
                    m.run_pending_work(grace_period=True)
                    continue
                misses = 0
                if int(stats[cpu, Stat.SLEEPS]) != sleep0:
                    times["slept"].append(dt)
                    last_sleep = calls
                elif int(stats[cpu, Stat.SLOW_PATH]) != slow0:
                    times["slow"].append(dt)
                else:
                    times["fast"].append(dt)
                held.append(a)
                if len(held) >= batch:
                    m.free_all()
                    held.clear()
                    m.run_pending_work(grace_period=True)
            del stats                      # the view must go before the segments close
            m.free_all()
            m.run_pending_work(grace_period=True)
    summary = {}
    for c, xs in times.items():
        a = np.asarray(xs, dtype=np.float64) / 1e3
        summary[c] = {"count": len(xs),
                      **({"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
                          "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)),
                          "max": float(a.max())} if len(xs) else {})}
    return {"samples_ns": times, "summary": summary, "devices": rounds, "calls": calls}


Progress = Callable[[int, str], None]


def run_migration(study: MigrationStudy, progress: Progress | None = None) -> dict:
    """Run the study; the whole result as plain data (the JSON document of ``--json``)."""
    study.validate()
    runner = run_inprocess if study.mode == "inprocess" else run_multiprocess
    per_variant: dict[str, list[dict]] = {v: [] for v in study.variants}
    trials: list[dict] = []
    done = 0
    for i in range(study.trials):
        for v in study.variants:
            cfg = trial_config(study, v, study.seed + i)
            rec = _trial_record(study, i, cfg, runner(cfg))
            per_variant[v].append(rec)
            trials.append(rec)
            done += 1
            if progress is not None:
                progress(done, f"trial {i} {v}: {rec['outcome']}")
    latency: dict[str, dict] = {}
    for v in study.variants:
        if study.latency_samples:
            latency[v] = measure_latency(trial_config(study, v, study.seed), study.latency_samples)
    variants = {v: _summary(v, per_variant[v], latency.get(v)) for v in study.variants}
    params = asdict(study)
    params.pop("extra")
    params["variants"] = list(study.variants)
    params["ops_per_trial"] = study.ops_per_trial
    return {"study": "race migration", "parameters": params, "mode": study.mode,
            "reproducibility": REPRODUCIBILITY[study.mode], "ci_method": CI_METHOD,
            "latency_method": LATENCY_METHOD, "variants": variants, "trials": trials,
            "latency_samples_ns": {v: lat["samples_ns"] for v, lat in latency.items()}}


# -- CSV and plots ------------------------------------------------------------------------------------

def _csv(rows: list[list]) -> str:
    return "".join(",".join(str(c) for c in r) + "\n" for r in rows)


def _branch_keys(doc: dict) -> list[str]:
    keys: list[str] = []
    for s in doc["variants"].values():
        keys += [k for k in s["branches"] if k not in keys]
    return keys


def trials_csv(doc: dict) -> str:
    keys = _branch_keys(doc)
    tkeys = ["allocated", "atomic_allocs", "sleep_allocs", "unused_freed"]
    rows: list[list] = [["trial", "seed", "variant", "outcome", "ops", *keys, *("tables_" + k for k in tkeys),
                         "lost_per_1000_sleeps", "violations", "findings", "oracle_failures"]]
    for t in doc["trials"]:
        rows.append([t["trial"], t["seed"], t["variant"], t["outcome"], t["ops"],
                     *(t["branches"].get(k, 0) for k in keys), *(t["tables"][k] for k in tkeys),
                     f"{t['lost_per_1000_sleeps']:.3f}", len(t["check"]["violations"]),
                     len(t["check"]["findings"]), t["check"]["oracle_failures"]])
    return _csv(rows)


def summary_csv(doc: dict) -> str:
    keys = _branch_keys(doc)
    tkeys = ["allocated", "atomic_allocs", "sleep_allocs", "unused_freed"]
    rows: list[list] = [["variant", "trials", *keys, *("tables_" + k for k in tkeys), "lost_per_1000_sleeps",
                         "ci95_low", "ci95_high", "trials_ok"]]
    for v, s in doc["variants"].items():
        lp = s["lost_per_1000_sleeps"]
        rows.append([v, s["trials"], *(s["branches"].get(k, 0) for k in keys),
                     *(s["tables"].get(k, 0) for k in tkeys), f"{lp['value']:.3f}", f"{lp['ci95'][0]:.3f}",
                     f"{lp['ci95'][1]:.3f}", s["checks"]["ok"]])
    return _csv(rows)


def latency_csv(doc: dict) -> str:
    rows: list[list] = [["variant", "class", "ns"]]
    for v, per in doc["latency_samples_ns"].items():
        for c, xs in per.items():
            rows += [[v, c, x] for x in xs]
    return _csv(rows)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


_SHOWN = ("atomic_failures", "sleeps", "migrated", "used_percpu_cluster", "installed", "already_had_table",
          "returned_null", "sleep_failures", "lost_clusters")


def plot_branches(doc: dict) -> bytes:
    """Branch counts per variant (grouped bars) and lost clusters per 1000 sleeps with the 95 % interval."""
    fig = Figure(figsize=(11, 4.2))
    ax, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    keys = [k for k in _SHOWN if k in _branch_keys(doc)] + [k for k in _branch_keys(doc) if k not in _SHOWN]
    names = list(doc["variants"])
    width = 0.8 / max(1, len(names))
    x = np.arange(len(keys))
    for j, v in enumerate(names):
        b = doc["variants"][v]["branches"]
        ax.bar(x + j * width - 0.4 + width / 2, [b.get(k, 0) for k in keys], width, label=v)
    ax.set_xticks(x, [k.replace("_", "\n") for k in keys], fontsize=7)
    ax.set_ylabel("count (all trials)")
    p = doc["parameters"]
    ax.set_title(f"swap_cluster_alloc_table branches: {p['trials']} trials, {doc['mode']} mode, "
                 f"atomic fail {p['atomic_fail']:g}, sleep fail {p['sleep_fail']:g}, migrate {p['migrate']:g}",
                 fontsize=9)
    ax.legend()
    vals = [doc["variants"][v]["lost_per_1000_sleeps"] for v in names]
    centre = [lp["value"] for lp in vals]
    err = [[max(0.0, c - lp["ci95"][0]) for c, lp in zip(centre, vals, strict=True)],
           [max(0.0, lp["ci95"][1] - c) for c, lp in zip(centre, vals, strict=True)]]
    ax2.bar(names, centre, color=[f"C{j}" for j in range(len(names))], yerr=err, capsize=6)
    ax2.set_ylabel("clusters lost per 1000 sleeps")
    ax2.set_title("lost / 1000 sleeps (95% Wilson)", fontsize=9)
    fig.tight_layout()
    return _png(fig)


def plot_latency(doc: dict) -> bytes:
    """Histograms (log-spaced bins, microseconds) of the fast, slow and slept allocation paths."""
    per = doc["latency_samples_ns"]
    names = list(per) or list(doc["variants"])
    fig = Figure(figsize=(5.5 * max(1, len(names)), 4))
    axes = np.atleast_1d(fig.subplots(1, max(1, len(names)), sharey=True))
    allv = [x / 1e3 for p in per.values() for xs in p.values() for x in xs]
    lo, hi = (max(0.1, min(allv)), max(allv) * 1.1) if allv else (0.1, 1000.0)
    bins = np.geomspace(lo, max(hi, lo * 10), 60)
    for ax, v in zip(axes, names, strict=False):
        for c in LATENCY_CLASSES:
            xs = np.asarray(per.get(v, {}).get(c, []), dtype=np.float64) / 1e3
            if len(xs):
                ax.hist(xs, bins=bins, alpha=0.6, label=f"{c} (n={len(xs)}, p50 {np.median(xs):.1f} us)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Model.alloc call (us)")
        ax.set_title(f"{v}: sleep latency {doc['parameters']['sleep_latency_us']} us", fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("calls")
    fig.tight_layout()
    return _png(fig)
