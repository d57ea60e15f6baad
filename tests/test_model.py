"""The public model API (shmswap.model.Model) end to end in one process, on a small device.

16 clusters of 8 slots, 2 CPUs, order 0 only, no injected failures and no random migration: every
state below is reached on purpose.  Slot 0 is the header, so cluster 0 is on nonfull_clusters[0]
with a table from swapon, and the first entry of a fresh device is 1.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
from pathlib import Path

import pytest
from conftest import reset_prim

from shmswap import Allocation, Config, Model, Snapshot
from shmswap import model as model_module
from shmswap.config import PAGE_SIZE
from shmswap.model import CACHE_ONLY, CACHED, SWAPPED

ROOT = Path(__file__).resolve().parent.parent      # the repository (the package may be installed elsewhere)
SPC = 8
NR_CLUSTERS = 16
CLUSTER_KEYS = {"index", "flag", "list", "position", "count", "order", "table"}


def small(**kw) -> Config:
    base = dict(size=NR_CLUSTERS * SPC * PAGE_SIZE, slots_per_cluster=SPC, cpus=2, orders={0: 1.0},
                atomic_fail=0.0, migrate=0.0)
    base.update(kw)
    return Config(**base)


@pytest.fixture
def make_model(open_model):
    """Factory: ``make_model(**config) -> Model`` on the small device, closed at teardown."""
    return lambda **kw: open_model(small(**kw))


@pytest.fixture
def model(make_model) -> Model:
    return make_model()


def _walk_lists(snap: Snapshot) -> None:
    """Every cluster's (list, position) agrees with the lists, and each listed cluster once."""
    seen = set()
    for name, members in snap.lists.items():
        for pos, ci in enumerate(members):
            assert ci not in seen
            seen.add(ci)
            c = snap.clusters[ci]
            assert (c["list"], c["position"]) == (name, pos)
    for c in snap.clusters:
        if c["index"] not in seen:
            assert c["list"] is None and c["position"] is None


# -- the fresh device ----------------------------------------------------------------------------------------

def test_fresh_device_snapshot(model):
    snap = model.snapshot()
    assert len(snap.clusters) == NR_CLUSTERS
    assert all(set(c) == CLUSTER_KEYS for c in snap.clusters)
    assert [c["index"] for c in snap.clusters] == list(range(NR_CLUSTERS))
    # the header cluster: slot 0 counted, a table from swapon, on nonfull_clusters[0]
    assert snap.clusters[0] == {"index": 0, "flag": "NONFULL", "list": "nonfull_clusters[0]", "position": 0,
                                "count": 1, "order": 0, "table": True}
    assert snap.lists["free_clusters"] == list(range(1, NR_CLUSTERS))
    assert snap.lists["nonfull_clusters[0]"] == [0]
    assert snap.lists["full_clusters"] == [] and snap.lists["discard_clusters"] == []
    assert all(c["flag"] == "FREE" and not c["table"] and c["count"] == 0 for c in snap.clusters[1:])
    _walk_lists(snap)
    assert snap.percpu == [{"cpu": cpu, "si": [0] * 4, "offset": [0] * 4} for cpu in range(2)]
    assert snap.device["max"] == NR_CLUSTERS * SPC
    assert snap.device["pages"] == snap.device["total_swap_pages"] == snap.device["nr_swap_pages"] == 127
    assert snap.device["inuse_pages"] == 0 and snap.device["on_avail"] == 1
    assert snap.slab["live"] == 1
    assert model.usage() == 0
    assert model.check().ok


# -- the slot life -------------------------------------------------------------------------------------------

def test_alloc_on_two_cpus_returns_the_first_entries(model):
    a = model.alloc(cpu=0)
    assert a == Allocation(entry=1, order=0, folio=-1, state=SWAPPED, wid=0)   # slot 0 is the header
    assert a.nr == 1
    b = model.alloc(cpu=1)
    assert b == Allocation(entry=SPC, order=0, folio=-1, state=SWAPPED, wid=1)  # CPU 1: a free cluster
    assert model.alloc(cpu=0).entry == 2                                        # CPU 0's cluster again
    assert model.alloc(cpu=1).entry == SPC + 1
    c = model.alloc(cpu=1, order=2, state=CACHE_ONLY)
    assert (c.entry, c.order, c.nr, c.state, c.wid) == (2 * SPC, 2, 4, CACHE_ONLY, 1) and c.folio >= 0
    assert sorted(model.held) == [1, 2, SPC, SPC + 1, 2 * SPC]
    assert model.usage() == 8
    assert list(model.cluster_counts()[:4]) == [3, 2, 4, 0]
    assert model.check().ok


def test_alloc_rejects_an_unknown_state(model):
    with pytest.raises(ValueError, match="bogus"):
        model.alloc(cpu=0, state="bogus")
    assert model.held == {} and model.usage() == 0


def test_lookup_finds_a_cache_only_folio_not_a_swapped_entry(model):
    a = model.alloc(cpu=0)
    b = model.alloc(cpu=1, state=CACHE_ONLY)
    c = model.alloc(cpu=0, state=CACHED)
    assert model.lookup(cpu=0, entry=b.entry) == b.folio
    assert model.lookup(cpu=1, entry=b.entry) == b.folio           # from the other CPU too
    assert model.lookup(cpu=1, entry=c.entry) == c.folio
    assert model.lookup(cpu=0, entry=a.entry) is None               # written back: a shadow only
    assert model.lookup(cpu=0, entry=NR_CLUSTERS * SPC - 1) is None  # a free cluster: no table
    model.free(b)
    assert model.lookup(cpu=0, entry=b.entry) is None
    model.free(c)
    assert model.lookup(cpu=0, entry=c.entry) is None
    assert model.check().ok


def test_free_by_allocation_or_entry(model):
    a = model.alloc(cpu=0)
    b = model.alloc(cpu=1, state=CACHE_ONLY)
    c = model.alloc(cpu=1, order=2, state=CACHED)
    assert model.usage() == 6
    model.free(a)
    assert a.entry not in model.held and model.usage() == 5
    model.free(b.entry, cpu=0)                      # another CPU frees it
    assert model.usage() == 4
    model.free(c)
    assert model.held == {} and model.usage() == 0
    snap = model.snapshot()
    assert snap.device["inuse_pages"] == 0
    assert snap.clusters[1]["flag"] == "FREE" and not snap.clusters[1]["table"]   # CPU 1's cluster emptied
    assert model.check().ok
    with pytest.raises(KeyError):
        model.free(a)


def test_run_pending_work_frees_deferred_tables(make_model):
    m = make_model(reclaim="page")                   # a table page goes back after a grace period
    m.alloc(cpu=0)
    b = m.alloc(cpu=1)
    assert b.entry == SPC and m.snapshot().clusters[1]["table"]
    m.free(b)
    snap = m.snapshot()
    assert snap.clusters[1]["flag"] == "FREE" and not snap.clusters[1]["table"]
    assert snap.slab["npending"] == 1 and snap.slab["deferred_frees"] == 1 and snap.slab["pages_returned"] == 0
    pool_free = snap.slab["pool_free"]
    m.run_pending_work()
    assert m.system.current.wid == m.manager_wid
    snap = m.snapshot()
    assert snap.slab["npending"] == 0 and snap.slab["pages_returned"] == 1
    assert snap.slab["pool_free"] == pool_free + 1
    assert m.check().ok


def test_snapshot_is_json_and_shows_clusters_lists_percpu_and_counters(model):
    model.alloc(cpu=0)
    snap = model.snapshot()
    assert snap.percpu[0] == {"cpu": 0, "si": [1, 0, 0, 0], "offset": [2, 0, 0, 0]}   # the next slot
    assert snap.percpu[1] == {"cpu": 1, "si": [0] * 4, "offset": [0] * 4}
    model.alloc(cpu=1)
    model.alloc(cpu=1, order=2, state=CACHE_ONLY)
    snap = model.snapshot()
    data = json.loads(snap.to_json())
    assert data == snap.as_dict()
    assert set(data) == {"clusters", "lists", "percpu", "device", "slab"}
    assert all(set(c) == CLUSTER_KEYS for c in data["clusters"])
    assert data["clusters"][1] == {"index": 1, "flag": "FRAG", "list": "frag_clusters[0]", "position": 1,
                                   "count": 1, "order": 0, "table": True}
    assert data["clusters"][2] == {"index": 2, "flag": "FRAG", "list": "frag_clusters[2]", "position": 0,
                                   "count": 4, "order": 2, "table": True}
    # every list, head to tail
    assert data["lists"]["frag_clusters[0]"] == [0, 1]
    assert data["lists"]["frag_clusters[2]"] == [2]
    assert data["lists"]["free_clusters"] == list(range(3, NR_CLUSTERS))
    assert {k for k in data["lists"]} >= {"free_clusters", "full_clusters", "discard_clusters",
                                          *(f"nonfull_clusters[{o}]" for o in range(4)),
                                          *(f"frag_clusters[{o}]" for o in range(4))}
    _walk_lists(snap)
    assert data["percpu"][0]["offset"] == [2, 0, 0, 0]
    assert data["percpu"][1] == {"cpu": 1, "si": [1, 0, 1, 0], "offset": [SPC + 1, 0, 2 * SPC + 4, 0]}
    assert data["device"]["inuse_pages"] == 6 == model.usage()
    assert data["device"]["nr_swap_pages"] == data["device"]["total_swap_pages"] - 6
    assert data["slab"]["live"] == 3 and data["slab"]["atomic_allocs"] == 2
    assert json.loads(snap.to_json(indent=1)) == data


def test_check_is_clean(model):
    for cpu in (0, 1, 0, 1):
        model.alloc(cpu=cpu)
    model.alloc(cpu=0, state=CACHE_ONLY)
    res = model.check()
    assert res.ok and res.violations == [] and res.findings == []
    assert model.warnings == []
    model.free_all()
    model.run_pending_work()
    res = model.check()
    assert res.ok and res.violations == [] and res.findings == []


def test_swapoff_leaves_no_table_live(model):
    for cpu in (0, 1, 0, 1):
        model.alloc(cpu=cpu)
    model.alloc(cpu=1, order=2, state=CACHE_ONLY)
    model.alloc(cpu=0, state=CACHED)
    model.swapoff()
    assert model.held == {}
    assert model.system.shm.slab_hdr["live"] == 0
    snap = model.snapshot()
    assert not any(c["table"] for c in snap.clusters)
    assert snap.device["inuse_pages"] == 0 and snap.device["total_swap_pages"] == 0
    assert snap.device["flags"] == 0 and snap.device["on_avail"] == 0
    assert model.warnings == []


# -- the documented examples ---------------------------------------------------------------------------------

def _run_example(code: str) -> str:
    ast.parse(code)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})
    return out.getvalue()


def test_readme_model_api_example_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Model API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "Model(" in code
    try:
        out = _run_example(code)
    finally:
        reset_prim()
    assert out.splitlines()[-1] == "True"           # print(m.check().ok)


def test_model_docstring_example_runs():
    lines = model_module.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    end = next(i for i in range(start, len(lines)) if lines[i] and not lines[i].startswith("    "))
    code = "\n".join(line[4:] for line in lines[start:end])
    assert "Model(" in code
    try:
        out = _run_example(code)
    finally:
        reset_prim()
    outs = out.splitlines()
    snap = json.loads(outs[0])
    assert set(snap) == {"clusters", "lists", "percpu", "device", "slab"}
    assert outs[1] == "True"
