"""``--swapoff-every``: swapoff and swapon of one device while the CPUs run (workers/swapoff.py;
issue 7 item 1).  A forced swapoff/swapon mid-run with the per-CPU state it leaves stale, in one
process for both variants; the single-process runner's deterministic schedule; real multiprocess
runs with two devices; bad values."""

from __future__ import annotations

import time

import pytest
from test_driver import (  # noqa: F401 - nothing_left_behind: the fixture
    _new_segments_of_dead_creators,
    _start,
    _wait_for,
    nothing_left_behind,
    shmswap_run,
)

from shmswap.config import Config, ConfigError
from shmswap.finish import device_figures
from shmswap.mm.swap import SWP_WRITEOK
from shmswap.model import Model
from shmswap.runner.inprocess import run_inprocess
from shmswap.substrate.shm import leftover_segments
from workers.swapoff import SwapoffEvents, steps_between

# Two devices of one priority (allocations round-robin over both), tiny clusters.
SMALL_TWO = dict(devices="ssd:1M:prio=5,ssd:512K:prio=5", slots_per_cluster=8, cpus=2, orders="0:1",
                 seconds=1, atomic_fail=0.0, migrate=0.0)


def _unuse(model: Model, t: int) -> int:
    """try_to_unuse for the model API: free whatever it holds on device ``t``."""
    for key in sorted(k for k, a in model.held.items() if a.type == t):
        model.free(key)
    return 0


@pytest.mark.parametrize("variant", ["seed", "merged"])
def test_swapoff_swapon_mid_run_leaves_offsets_stale(variant):
    """One device off and on again between allocations: only its si[] entries are flushed, the
    offsets stay, the device comes back usable, and the run goes on clean."""
    with Model(Config(**SMALL_TWO, alloc_table=variant)) as m:
        for _ in range(6):
            for cpu in (0, 1):
                assert m.alloc(cpu=cpu) is not None
        pcp = m.system.si.pcp
        before = {(c, o): (pcp.si(c, o), pcp.offset(c, o)) for c in (0, 1) for o in range(m.system.si.nr_orders)}
        tags = {tag for tag, _ in before.values() if tag}
        assert tags, before
        events = SwapoffEvents(m, m.cfg)
        events.next_type = t = min(tags) - 1          # a device some CPU caches
        si = m.devices[t]
        on_it = sum(1 for a in m.held.values() if a.type == t)
        assert on_it and events.cycle(lambda typ: _unuse(m, typ)) == t
        fig = events.figures[t]
        assert (fig["swapoffs"], fig["swapons"]) == (1, 1) and fig["slots_unused"] >= on_it
        assert events.check.violations == []
        for (c, o), (tag, offset) in before.items():
            assert pcp.offset(c, o) == offset                          # offset[] stale, as in the kernel
            assert pcp.si(c, o) == (0 if tag == t + 1 else tag)       # si[] cleared for this device only
        assert si.writeok() and si.on_avail() and not any(a.type == t for a in m.held.values())
        assert m.check().ok
        # The stale offsets meet the sleeping allocation: every atomic table allocation now fails.
        for slab in m.system.slabs:
            slab.atomic_fail = 1.0
        for _ in range(12):
            for cpu in (0, 1):
                m.alloc(cpu=cpu)
        res = m.check()
        assert res.violations == [], res.violations
        if variant == "merged":
            assert res.findings == []
        assert {f.branch for f in res.findings} <= {"T5", "T6b", "W12"}
        m.free_all()
        m.swapoff()
        assert all(not d.flags & SWP_WRITEOK for d in m.devices)


def test_device_rows_count_the_clusters_a_swapoff_found_lost():
    """``swapon_again`` clears the device's lost-cluster words; the device row (finish.py
    ``device_figures``) adds what the run's swapoffs found (``SwapoffEvents.lost_counts``)."""
    with Model(Config(**SMALL_TWO, alloc_table="seed")) as m:
        slab = m.system.slabs[1]
        slab.atomic_fail = slab.sleep_fail = 1.0      # device 1: every table allocation fails (T6b)
        m.system.variant.percpu.enabled = False       # every allocation walks the plist, both devices
        for _ in range(6):
            m.alloc(cpu=0)
        m.system.variant.percpu.enabled = True
        lost = int((m.devices[1].shm.clu["lost"] != 0).sum())
        assert lost > 0
        slab.atomic_fail = slab.sleep_fail = 0.0
        assert [r["lost_clusters"] for r in device_figures(m.system)] == [0, lost]
        events = SwapoffEvents(m, m.cfg)
        events.next_type = 1
        assert events.cycle(lambda typ: _unuse(m, typ)) == 1
        assert events.figures[1]["lost_at_swapoff"] == {"T6b": lost} and events.lost_counts() == [0, lost]
        assert not m.devices[1].shm.clu["lost"].any()                 # cleared by swapon_again
        assert [r["lost_clusters"] for r in device_figures(m.system)] == [0, 0]
        assert [r["lost_clusters"] for r in device_figures(m.system, events.lost_counts())] == [0, lost]


def test_single_process_runner_swaps_off_by_step_count():
    """run_inprocess: a swapoff every S x INPROCESS_STEPS_PER_S steps, round robin, and the run
    replays exactly (the same figures and state twice)."""
    cfg = Config(devices="ssd:8M:prio=5,hdd:8M:prio=5", cpus=3, ops=12_000, seconds=None, alloc_table="merged",
                 swapoff_every=0.05)
    assert steps_between(0.05) == 2500
    a, b = run_inprocess(cfg), run_inprocess(cfg)
    ev = a.extra["swapoff_events"]
    assert [(d["swapoffs"], d["swapons"]) for d in ev["devices"]] == [(2, 2), (2, 2)]   # steps 2500 .. 10000
    assert all(d["slots_unused"] > 0 for d in ev["devices"])
    assert a.check.violations == [] and a.check.findings == [] and a.extra["swapoff"]["inuse_after"] == 0

    def timeless(rows):
        return [{k: v for k, v in d.items() if not k.startswith("swapoff_ms")} for d in rows]

    assert timeless(ev["devices"]) == timeless(b.extra["swapoff_events"]["devices"]) and a.ops == b.ops
    assert timeless(a.extra["devices"]) == timeless(b.extra["devices"])


# Two devices of one priority, so both hold slots when their turn comes.  No torture readers: each
# swapoff's synchronize_rcu would wait out their long read sections, and 2 s would see one swapoff.
TWO = ["--device", "ssd:64M:prio=5,hdd:32M:prio=5", "--swapoff-every", "0.3", "--seconds", "2", "--quiet",
       "--reader-delays", "off"]


def test_multiprocess_swapoff_every_clean_under_merged(tmp_path):
    rc, out, data = shmswap_run([*TWO, "--alloc-table", "merged"], tmp_path)
    assert rc == 0, out
    assert data["invariants"]["violations"] == [] and data["findings"] == []
    ev = data["swapoff_events"]
    assert data["config"]["swapoff_every"] == 0.3
    assert all(d["swapoffs"] > 0 and d["swapons"] == d["swapoffs"] for d in ev["devices"]), ev
    assert sum(d["slots_unused"] for d in ev["devices"]) > 0, ev
    assert all(d["swapoffs"] > 0 for d in data["devices"])
    assert [(d["tables_left"], d["inuse_after"]) for d in data["swapoff"]["devices"]] == [(0, 0), (0, 0)]
    assert "swapoff during the run (every 0.3 s): device 0:" in out


def test_multiprocess_swapoff_every_seed_has_no_violation(tmp_path):
    rc, out, data = shmswap_run([*TWO, "--alloc-table", "seed", "--atomic-fail", "0.5"], tmp_path)
    assert data["invariants"]["violations"] == [], out
    assert rc in (0, 1) and {f["branch"] for f in data["findings"]} <= {"T5", "T6b", "W12"}
    assert all(d["swapoffs"] > 0 for d in data["swapoff_events"]["devices"])


def test_worker_killed_during_swapoffs_is_reported(tmp_path):
    """A dead worker never acks try_to_unuse: the watchdog reports it and the run ends (no hang)."""
    p = _start(["--seconds", "60", "--device", "ssd:32M:prio=5,hdd:32M:prio=5", "--swapoff-every", "0.05"],
               tmp_path)
    victim = _wait_for("shmswap-cpu1")
    time.sleep(1.0)
    victim.kill()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1, out
    assert "worker 1" in out and "died" in out


def test_bad_swapoff_every_values():
    for bad in (-1, float("nan"), float("inf"), 1e9, "x", True):
        with pytest.raises(ConfigError, match="--swapoff-every"):
            Config(swapoff_every=bad)
    assert Config().swapoff_every == 0.0 and Config(swapoff_every="0.5").swapoff_every == 0.5


@pytest.mark.parametrize("bad", [["--swapoff-every", "-1"], ["--swapoff-every", "x"], ["--swapoff-every", "1e9"],
                                 ["--swapoff-every", "0.5", "--deterministic"]])
def test_bad_swapoff_every_exits_2_and_creates_nothing(bad, tmp_path):
    before = set(leftover_segments())
    status, out, data = shmswap_run(bad, tmp_path, timeout=30)
    assert status == 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("shmswap: error:") and "--swapoff-every" in lines[0], out
    assert _new_segments_of_dead_creators(before) == [] and data is None
