"""The single-process runner (shmswap/runner/inprocess.py): CPUs taking turns in one process, the
shared end of a run (finish.py), and exact replay from the seed."""

from __future__ import annotations

import pytest

from shmswap import Config, run_inprocess
from shmswap.substrate import _prim

BASE = dict(size="4M", slots_per_cluster=16, orders="0:0.8,2:0.2", fill=0.3, cpus=3, seed=5, ops=3000)


@pytest.fixture(autouse=True)
def reset_prim():
    yield
    _prim.set_hook(None)
    _prim.set_stats(None)
    _prim.set_abort(None)
    _prim.set_worker(0)


def test_ops_budget_runs_clean_and_swaps_off():
    res = run_inprocess(Config(**BASE))
    d = res.as_dict()
    assert d["ops"]["steps"] == 3000
    assert d["ops"]["alloc"] > 0 and d["ops"]["free"] > 0 and d["ops"]["lookup"] > 0
    assert d["invariants"]["violations"] == [] and res.exit_status() == 0
    assert d["swapoff"] == {"tables_left": 0, "inuse_after": 0, "folios_referenced": 0, "warnings": 0}
    assert any("single-process run: 3 CPUs" in n for n in d["notes"])


def test_same_seed_replays_exactly():
    a, b = run_inprocess(Config(**BASE)).as_dict(), run_inprocess(Config(**BASE)).as_dict()
    assert a["ops"] == b["ops"] and a["tables"] == b["tables"] and a["migration"] == b["migration"]


def test_seed_findings_reported_merged_clean():
    forced = dict(BASE, atomic_fail=0.5, migrate=1.0, ops=4000)
    seed = run_inprocess(Config(**forced, alloc_table="seed")).as_dict()
    merged = run_inprocess(Config(**forced, alloc_table="merged")).as_dict()
    assert seed["migration"]["sleeps"] > 0 and merged["migration"]["sleeps"] > 0
    assert seed["migration"]["lost_clusters"] == len(seed["findings"]) > 0
    assert {f["branch"] for f in seed["findings"]} <= {"T5", "T6b"}
    assert merged["findings"] == [] and merged["migration"]["lost_clusters"] == 0
    assert seed["invariants"]["violations"] == [] and merged["invariants"]["violations"] == []


def test_injected_lost_cluster_is_a_violation():
    res = run_inprocess(Config(**BASE, inject_bug="lose-cluster"))
    assert res.exit_status() == 1
    assert any("no recorded seed T5/T6b event" in v["reason"] for v in res.as_dict()["invariants"]["violations"])
