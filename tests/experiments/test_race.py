"""The migration-after-sleep study (shmswap/experiments/race.py), in inprocess mode: deterministic."""

from __future__ import annotations

import pytest

from shmswap.config import ConfigError
from shmswap.experiments.race import (
    MigrationStudy,
    latency_csv,
    plot_branches,
    plot_latency,
    run_migration,
    summary_csv,
    trials_csv,
    wilson,
)

PNG = b"\x89PNG\r\n\x1a\n"


def small(**kw) -> MigrationStudy:
    base = dict(trials=2, mode="inprocess", size="16M", ops=2500, latency_samples=15)
    base.update(kw)
    return MigrationStudy(**base)


@pytest.fixture(scope="module")
def doc() -> dict:
    return run_migration(small())


def test_wilson_interval() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    lo, hi = wilson(0, 50)
    assert lo == 0.0 and 0.05 < hi < 0.08


def test_seed_loses_clusters_merged_none(doc: dict) -> None:
    seed, merged = doc["variants"]["seed"], doc["variants"]["merged"]
    assert seed["branches"]["sleeps"] > 0 and merged["branches"]["sleeps"] > 0
    assert seed["branches"]["lost_clusters"] > 0
    assert seed["branches"]["used_percpu_cluster"] > 0           # T5 happened
    assert seed["lost_per_1000_sleeps"]["value"] > 0
    assert seed["lost_per_1000_sleeps"]["ci95"][0] > 0
    assert merged["branches"]["lost_clusters"] == 0
    assert merged["branches"]["used_percpu_cluster"] == 0
    assert merged["lost_per_1000_sleeps"]["value"] == 0
    assert set(merged["outcomes"]) == {"clean"}
    assert all(o.endswith("loss") for o in seed["outcomes"])
    for t in doc["trials"]:
        assert t["check"]["ok"] and not t["check"]["oracle_failures"]       # findings, never violations
        if t["variant"] == "seed":
            assert {f["branch"] for f in t["check"]["findings"]} <= {"T5", "T6b"}
            assert len(t["check"]["findings"]) == t["branches"]["lost_clusters"]


def test_same_seeds_for_both_variants_and_exact_replay(doc: dict) -> None:
    seeds = {v: [t["seed"] for t in doc["trials"] if t["variant"] == v] for v in ("seed", "merged")}
    assert seeds["seed"] == seeds["merged"] == [1, 2]
    again = run_migration(small(latency_samples=0))
    assert [(t["variant"], t["seed"], t["outcome"], t["branches"]) for t in again["trials"]] == \
        [(t["variant"], t["seed"], t["outcome"], t["branches"]) for t in doc["trials"]]
    assert "exactly" in doc["reproducibility"]


def test_latency_classes(doc: dict) -> None:
    for v in ("seed", "merged"):
        lat = doc["variants"][v]["latency_us"]
        assert lat["slept"]["count"] == 15 and lat["fast"]["count"] > 0
        # a slept allocation includes the 200 us sleep
        assert lat["slept"]["p50"] > 200 > lat["fast"]["p50"]


def test_csv_and_plots(doc: dict) -> None:
    rows = trials_csv(doc).splitlines()
    assert len(rows) == 1 + 4 and rows[0].startswith("trial,seed,variant,outcome")
    assert "lost_clusters" in rows[0]
    summary = summary_csv(doc).splitlines()
    assert [r.split(",")[0] for r in summary[1:]] == ["seed", "merged"]
    assert latency_csv(doc).splitlines()[0] == "variant,class,ns"
    assert plot_branches(doc).startswith(PNG) and plot_latency(doc).startswith(PNG)


@pytest.mark.parametrize("kw, word", [(dict(trials=0), "--trials"), (dict(mode="x"), "--mode"),
                                      (dict(variants=("seed", "seed")), "--variants"),
                                      (dict(size="3X"), "--size"), (dict(atomic_fail=2.0), "--atomic-fail"),
                                      (dict(latency_samples=-1), "--latency-samples")])
def test_bad_parameters(kw: dict, word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        small(**kw).validate()
