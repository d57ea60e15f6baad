"""The deterministic scheduler, recorded schedules, the shipped race scripts and exploration
(shmswap.runner.deterministic, script, explore; shmswap replay / explore / run --deterministic)."""

import dataclasses
import signal
from importlib import resources

import pytest

from shmswap.config import Config
from shmswap.mm.cluster import CI_BYTES, ci_lock, ci_unlock, swap_cluster_free_table
from shmswap.mm.variants import DynamicTables
from shmswap.model import Model
from shmswap.runner.deterministic import RandomPolicy, Scheduler
from shmswap.runner.explore import explore
from shmswap.runner.script import QueueProgram, parse_script, run_deterministic, run_script
from shmswap.substrate.locks import LockClass
from shmswap.substrate.preempt import Point

SMALL = Config(cpus=2, size="256K", slots_per_cluster=8, orders="0:1", atomic_fail=0.3, migrate=0.5, seed=3,
               fill=0.5, ops=300)


def race(name: str) -> str:
    return resources.files("shmswap.runner").joinpath("races", f"{name}.race").read_text()


def test_same_seed_same_trace_and_state():
    a, _ = run_deterministic(SMALL)
    b, _ = run_deterministic(SMALL)
    assert a.failure is None and a.steps > 1000
    assert a.trace == b.trace and a.state == b.state and a.checks == b.checks
    c, _ = run_deterministic(SMALL.with_(seed=4))
    assert c.trace != a.trace


@pytest.mark.parametrize("devices", ["ssd:128K,ssd:128K", "hdd:128K,ssd:128K:prio=5"])
def test_two_devices_interleaved_tasks_keep_their_own_device(devices):
    """A task preempted between ``folio_alloc_swap`` and its use of ``alloc_si`` (or inside a
    reader's window) must find its own device there, not the one the task that ran meanwhile
    used: with those kept per process, not per task, these runs crashed (no map count, NULL table)."""
    for seed in (1, 2, 3, 4):
        cfg = SMALL.with_(devices=devices, size="128K", seed=seed, ops=1500, cpus=4)
        run, _ = run_deterministic(cfg)
        assert run.failure is None, run.failure
        assert run.check and not run.failed(), run.check


def test_record_then_replay_reaches_the_same_state(tmp_path):
    run, text = run_deterministic(SMALL, record=str(tmp_path / "s.race"))
    assert (tmp_path / "s.race").read_text() == text and text.startswith("# shmswap-script 2")
    again = run_script(text)
    assert again.ok, again.failures
    assert again.state == run.state and again.trace == run.trace
    # a changed schedule is reported where it diverges
    lines = text.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("steps "))
    s = lines[i]
    lines[i] = s[:40] + ("1" if s[40] == "0" else "0") + s[41:]
    bad = run_script("\n".join(lines))
    assert not bad.ok and any("diverged" in f or "differs" in f for f in bad.failures)


SHIPPED = ["w1-t5", "w1-t6b", "w2-discard", "w12-crossdev", "w12-past-end"]


def test_every_shipped_race_script_is_tested():
    shipped = sorted(f.name[:-5] for f in resources.files("shmswap.runner").joinpath("races").iterdir()
                     if f.name.endswith(".race"))
    assert shipped == sorted([*SHIPPED, "t5-explore"])      # t5-explore: test_explore_finds_t5_...


@pytest.mark.parametrize("name,variant", [(n, v) for n in SHIPPED for v in ("seed", "merged")])
def test_shipped_race_scripts_give_their_outcome_every_time(name, variant):
    runs = [run_script(parse_script(race(name), {"alloc_table": variant})) for _ in range(3)]
    for r in runs:
        assert r.ok, r.failures
    assert runs[0].trace == runs[1].trace == runs[2].trace
    if name == "w1-t5" and variant == "seed":
        assert [b for _, b in runs[0].check["findings"]] == ["T5"]
    if name == "w1-t6b" and variant == "seed":
        assert [b for _, b in runs[0].check["findings"]] == ["T6b"]
    if name == "w2-discard":
        assert runs[0].checks[0]["violations"] == [["I-discard", "cluster 3"]]
    if name.startswith("w12-"):
        assert not runs[0].check["violations"]
        # reference §10 W12: the wrong device's cluster taken (device 0's cluster 1 lost), or an
        # offset past the end of the smaller device (recorded on device 0, nothing lost)
        want = {"seed": [["cluster 1", "W12"]] if name == "w12-crossdev" else [["device 0", "W12"]], "merged": []}
        assert runs[0].check["findings"] == want[variant]


def test_a_script_waits_for_the_per_cpu_cluster_of_a_named_device():
    """``... changes to device D`` and a finding's whole ``where`` (``device 0``, not just a cluster)."""
    # in w12-crossdev cpu1's per-CPU cluster moves to device 1, never to device 0: the script says where
    bad = run_script(race("w12-crossdev").replace("changes to device 1", "changes to device 0"))
    assert not bad.ok and bad.failure_kind == "script"
    assert "changes to device 0: cpu1 has nothing to do" in bad.failure
    # the past-the-end event is recorded on device 0 (the device allocating), not on device 1
    wrong = run_script(race("w12-past-end").replace("finding W12 device 0", "finding W12 device 1"))
    assert not wrong.ok and any("expect finding W12 device 1: not so" in f for f in wrong.failures)


def test_the_scheduler_sees_a_cluster_lock_held_on_a_second_larger_device():
    """A lock point names the class and offset, not the device: a cluster lock of device 1 past the
    end of device 0's cluster array, held by cpu0, keeps cpu1 waiting (it raised ValueError)."""
    cfg = Config(cpus=2, devices="ssd:64K:prio=10,ssd:256K:prio=5", slots_per_cluster=8, atomic_fail=0, migrate=0)
    with Model(cfg, n_workers=3) as m:
        sched = Scheduler(m, None)
        off = 2 * CI_BYTES
        assert off >= m.devices[0].nr_clusters * CI_BYTES
        t = sched.add_task(1, 1, QueueProgram())
        t.pending = (int(Point.LOCK), int(LockClass.CI_LOCK), off)
        assert sched.lock_holder(LockClass.CI_LOCK, off, 1) == -1 and sched.runnable(t)
        m.on(0)
        ci_lock(m.devices[1], 2)
        try:
            assert sched.lock_holder(LockClass.CI_LOCK, off, 1) == 0        # another worker's: wait
            assert sched.lock_holder(LockClass.CI_LOCK, off, 0) == 0        # one's own
            assert sched.lock_holder(LockClass.CI_LOCK, 0, 1) == -1         # cluster 0: free on both
            assert not sched.runnable(t) and "held by worker 0" in sched.why_not(1)
        finally:
            ci_unlock(m.devices[1], 2)
        assert sched.runnable(t)


def test_explore_finds_t5_and_prints_a_replay_that_loses_the_cluster():
    ex = explore(race("t5-explore"), schedules=20, until="finding")
    assert ex.found and ("T5" in ex.failure or "T6b" in ex.failure) and ex.schedules <= 5
    r = run_script(ex.script)
    assert r.ok, r.failures
    assert r.check["findings"]


def test_explore_finds_w12_on_two_devices_and_its_printed_replay_holds():
    """The finding is a device's (``device 1``), not a cluster's: the printed ``expect finding W12
    device 1`` must hold on replay (it was matched against ``cluster 1``)."""
    scenario = ("config cpus=2 devices=ssd:64K:prio=5,ssd:128K:prio=5 slots_per_cluster=8 atomic_fail=0.3 "
                "sleep_fail=0 migrate=0.5 alloc_table=seed seed=3 fill=0.5\nworkload 200\n")
    ex = explore(scenario, schedules=20, until="finding")
    assert ex.found and "W12" in ex.failure, ex.failure
    assert "expect finding W12 device " in ex.script
    r = run_script(ex.script)
    assert r.ok, r.failures
    assert any(b == "W12" and w.startswith("device ") for w, b in r.check["findings"])


class WindowTables(DynamicTables):
    """Test-only bug: drops and retakes ci->lock before freeing an emptied cluster's table: in
    that window another CPU's fast path can allocate in it (it still has its table and flag)."""

    def on_free_cluster(self, si, ci: int) -> None:
        ci_unlock(si, ci)
        ci_lock(si, ci)
        swap_cluster_free_table(si, ci)


def inject(model):
    system = model.system
    system.variant = dataclasses.replace(system.variant, tables=WindowTables())
    system.si.variant = system.variant


BUGGY = """config cpus=2 size=64K slots_per_cluster=8 orders=0:1 atomic_fail=0 migrate=0 seed=1 fill=0.9
workload 150
"""


def test_explore_finds_an_injected_bug_and_prints_a_replay_that_fails():
    clean = run_script(BUGGY, policy=RandomPolicy(0))
    assert clean.failure is None and not clean.check["violations"]
    ex = explore(BUGGY, schedules=200, until="violation", setup=inject, depth=30)
    assert ex.found, "the injected window was not found"
    r = run_script(ex.script, setup=inject)
    assert r.ok, r.failures               # its expectation: the violation (or crash) happens again
    assert r.failed("violation")
    assert not run_script(ex.script).failed("violation")     # and without the bug it does not


def test_a_stop_signal_ends_a_workload_in_order_and_a_second_stops_the_schedule(tmp_path):
    """``stop`` (driver.StopSignals.received) grows while the run goes: here it is given before."""
    cfg = SMALL.with_(ops=300)
    whole, _ = run_deterministic(cfg)
    run, text = run_deterministic(cfg, str(tmp_path / "s.race"), stop=[signal.SIGINT])
    # The first signal: no CPU begins an operation; the run ends clean, checked, and unrecorded.
    assert run.failure is None and run.ok and 0 < run.steps < whole.steps
    assert run.checks[-1] == {"violations": [], "findings": []}
    assert text == "" and list(tmp_path.iterdir()) == []
    run, _ = run_deterministic(cfg, stop=[signal.SIGINT, signal.SIGTERM])
    assert run.failure_kind == "interrupted" and run.failure == "interrupted by SIGINT and SIGTERM at step 0"


def test_explore_stopped_says_how_many_schedules_it_ran():
    ex = explore(race("t5-explore"), schedules=10, until="violation", stop=[signal.SIGINT])
    assert not ex.found and ex.schedules == 0 and ex.interrupted == "SIGINT"
