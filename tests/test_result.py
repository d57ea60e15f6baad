"""The result of a run (shmswap/result.py): figures summed over every device, what the findings count,
and the nested-reclaim explanation, on whole single-process runs."""

from __future__ import annotations

import pytest
from conftest import reset_prim

from shmswap import Config, run_inprocess

# Three devices, one of them an HDD with discard on; the seed loses clusters (T5) and, with a second
# SSD, reads another device's per-CPU offset (W12).
THREE = dict(devices="ssd:1M:prio=5,ssd:512K:prio=5,hdd:256K:discard=on", slots_per_cluster=8, cpus=2,
             orders={0: 1.0}, ops=3000, seed=3, atomic_fail=0.5, migrate=0.5)
SLAB = {"live": "live_tables", "peak": "peak_tables", "atomic_allocs": "atomic_allocs",
        "sleep_allocs": "sleep_allocs", "frees": "table_frees"}


@pytest.fixture(autouse=True)
def _reset_prim():
    yield
    reset_prim()


@pytest.mark.parametrize("variant", ["seed", "merged"])
def test_tables_are_summed_over_every_device(variant):
    res = run_inprocess(Config(**THREE, alloc_table=variant))
    d = res.as_dict()
    rows, t, m = d["devices"], d["tables"], d["migration"]
    assert [(r["type"], r["kind"], r["discard"]) for r in rows] == [(0, "ssd", "off"), (1, "ssd", "off"),
                                                                   (2, "hdd", "on")]
    for key, row_key in SLAB.items():
        assert t[key] == sum(r[row_key] for r in rows), key
    # 1 MiB + 512 KiB + 256 KiB of 8-slot clusters: 32 + 16 + 8, not device 0's 32.
    assert t["static_equivalent"] == 56 == sum(r["slots"] // 8 for r in rows)
    assert t["bytes_static"] == 56 * 8 * 8 and t["bytes_peak"] == t["peak"] * 8 * 8
    # Every sleep path figure is summed over the devices too: the two agree (no sleep fails here).
    assert rows[1]["sleep_allocs"] > 0 and m["sleeps"] > rows[0]["sleep_allocs"]
    assert t["sleep_allocs"] == m["sleeps"] and t["alloc_failures"] == m["atomic_failures"]


def test_one_device_tables_are_its_own():
    cfg = Config(size="1M", slots_per_cluster=8, cpus=2, orders={0: 1.0}, ops=1500, seed=3)
    res = run_inprocess(cfg)
    assert "devices" not in res.extra
    assert res.tables["static_equivalent"] == cfg.nr_clusters == 32
    assert res.tables["sleep_allocs"] == res.migration["sleeps"]


def test_findings_name_their_device_and_are_counted_by_kind():
    res = run_inprocess(Config(**THREE, alloc_table="seed"))
    d = res.as_dict()
    rows, findings, counts = d["devices"], d["findings"], d["finding_counts"]
    assert findings and all(f["where"].startswith("device ") for f in findings)
    assert any(f["where"].startswith("device 0 cluster ") for f in findings)
    lost = [f for f in findings if " cluster " in f["where"]]
    events = [f for f in findings if f["where"].split() in (["device", "0"], ["device", "1"], ["device", "2"])]
    assert len(lost) + len(events) == len(findings)
    assert counts == {"lost_clusters": len(lost), "w12_events": len(events)}
    assert counts["lost_clusters"] == sum(r["lost_clusters"] for r in rows) > 0
    assert counts["w12_events"] > 0 and all("not usable" in f["reason"] or "past the end" in f["reason"]
                                            for f in events)
    # The checker's own findings are left as they were (replay scripts compare them).
    assert not any(f.where.startswith("device 0") and " cluster " in f.where for f in res.check.findings)


@pytest.mark.parametrize("variant", ["seed", "merged"])
def test_nested_reclaim_explanation_follows_the_variant_and_the_counts(variant):
    cfg = Config(size="1M", slots_per_cluster=8, cpus=2, orders={0: 1.0}, ops=3000, seed=3, alloc_table=variant,
                 atomic_fail=0.5, sleep_reclaim=0.5, migrate=0.5)
    n = run_inprocess(cfg).extra["nested_reclaim"]
    o, text = n["outer_after"], n["explanation"]
    assert n["reclaims"] > 0 and text.startswith(f"{n['reclaims']:,} sleeping table allocations swapped")
    assert f"installed its own table {o['installed']:,} times" in text or \
        f"installed its table on the cluster it isolated {o['installed']:,} times" in text
    if variant == "seed":
        assert o["used_percpu_cluster"] > 0
        assert f"took it (T5; W12 if it was another device's) {o['used_percpu_cluster']:,} times" in text
        assert f"{o['lost_clusters']:,} clusters lost after a nested swap-out" in text
        assert text.endswith("merged would ignore the per-CPU cluster and install its table on the cluster it "
                             "isolated.")
    else:
        assert "Merged ignores the per-CPU cluster" in text and "took it" not in text
        assert o["installed"] > 0 and f"{o['lost_clusters']:,} clusters lost; the seed would take" in text


def test_no_explanation_without_nested_reclaim():
    res = run_inprocess(Config(size="1M", slots_per_cluster=8, cpus=2, orders={0: 1.0}, ops=500, seed=3))
    assert "explanation" not in res.extra["nested_reclaim"]
