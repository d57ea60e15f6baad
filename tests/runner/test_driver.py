"""The multiprocess driver (shmswap/runner/driver.py) through short real runs of ``shmswap run``: variants,
oracles, faults, signals, cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import shmswap
from shmswap.substrate.shm import leftover_segments, orphaned_segments

PKG_PARENT = str(Path(shmswap.__file__).resolve().parent.parent)
SMALL = ["--size", "64M", "--seconds", "1.5", "--quiet"]
# A tiny device with fast table churn and one slow reader held in its window (the recycle window).
# The forced reader window (--reader-delay-us) on the fill-and-drain workload it was written for.
ORACLE = ["--size", "1M", "--slots-per-cluster", "8", "--orders", "0:1", "--fill", "0.05", "--seconds", "3",
          "--cache-only", "0.5", "--reader-delay-us", "5000", "--quiet", "--lifetimes", "off"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": PKG_PARENT}


def shmswap_run(args: list[str], tmp_path: Path, timeout: float = 120) -> tuple[int, str, dict | None]:
    out = tmp_path / "result.json"
    cmd = [sys.executable, "-m", "shmswap.cli", "run", *args, "--json", str(out)]
    p = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=timeout)
    data = json.loads(out.read_text()) if out.exists() and out.stat().st_size else None
    return p.returncode, p.stdout + p.stderr, data


_SESSION_TMP: list[str] = []     # this session's tmp_path root: every run here has its cwd below it


def _ours() -> list[psutil.Process]:
    """This session's shmswap processes (their cwd is below its tmp_path root): other test suites may
    run shmswap on the machine at the same time, and their processes are none of our business."""
    found = []
    for p in psutil.process_iter(["name", "cwd", "status"]):
        if not (p.info["name"] or "").startswith("shmswap-") or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if not _SESSION_TMP or (p.info["cwd"] or "").startswith(_SESSION_TMP[0]):
            found.append(p)
    return found


@pytest.fixture(autouse=True)
def nothing_left_behind(tmp_path_factory):
    _SESSION_TMP[:] = [os.path.join(str(tmp_path_factory.getbasetemp()), "")]
    yield
    deadline = time.monotonic() + 10
    while (_ours() or orphaned_segments()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ours(), f"processes left: {_ours()}"
    assert not orphaned_segments(), f"segments left by a run: {orphaned_segments()}"


def test_default_configuration_shortened(tmp_path):
    status, out, data = shmswap_run(["--seconds", "2", "--quiet"], tmp_path)
    assert status == 0, out
    for key in ("config", "variant", "duration_s", "throughput_ops_per_s", "ops", "locks", "tables",
                "migration", "rcu", "findings", "invariants"):
        assert key in data
    for key in ("alloc", "alloc_failed", "free", "lookup"):
        assert key in data["ops"]
    for key in ("si_lock", "ci_lock", "local_lock", "global_cluster_lock", "swap_avail_lock", "slab_lock"):
        assert set(data["locks"][key]) == {"acquisitions", "contentions", "trylock_failures", "wait_ns_total",
                                           "wait_ns_max"}
    for key in ("live", "peak", "static_equivalent", "bytes_peak", "atomic_allocs", "sleep_allocs",
                "alloc_failures", "frees", "deferred_frees"):
        assert key in data["tables"]
    for key in ("sleeps", "migrated", "used_percpu_cluster", "installed", "already_had_table", "returned_null",
                "lost_clusters"):
        assert key in data["migration"]
    for key in ("grace_periods", "gp_latency_us_p50", "gp_latency_us_p99", "reader_sections", "pipe_histogram",
                "freed_memory_reads", "wrong_owner_accepted"):
        assert key in data["rcu"]
    assert data["ops"]["alloc"] > 0 and data["ops"]["free"] > 0
    assert data["rcu"]["grace_periods"] > 0
    assert data["variant"]["alloc_table"] == "seed"
    assert data["swapoff"]["tables_left"] == 0
    assert "RESULT status=0" in out


@pytest.mark.parametrize("variant", ["seed", "merged"])
def test_forced_migration(variant, tmp_path):
    status, out, data = shmswap_run([*SMALL, "--atomic-fail", "0.5", "--migrate", "1", "--alloc-table", variant],
                                    tmp_path)
    assert status == 0, out
    m = data["migration"]
    assert m["sleeps"] > 0 and m["migrated"] > 0
    if variant == "seed":
        assert m["lost_clusters"] == len(data["findings"]) > 0
        assert {f["branch"] for f in data["findings"]} <= {"T5", "T6b"}
    else:
        assert data["findings"] == [] and m["lost_clusters"] == 0 and m["used_percpu_cluster"] == 0


def test_migrate_to_one_cpu(tmp_path):
    status, out, data = shmswap_run([*SMALL, "--atomic-fail", "0.5", "--migrate", "1", "--migrate-to", "2"],
                                    tmp_path)
    assert status == 0, out
    assert data["migration"]["migrated"] > 0
    assert data["locks"]["local_lock"]["acquisitions"] > data["ops"]["alloc"]


def test_strict_fails_on_findings(tmp_path):
    status, out, data = shmswap_run([*SMALL, "--atomic-fail", "0.5", "--migrate", "1", "--strict"], tmp_path)
    assert data["findings"] and status == 1, out


def test_sleep_failures_return_null(tmp_path):
    status, out, data = shmswap_run([*SMALL, "--atomic-fail", "0.5", "--sleep-fail", "1",
                                     "--alloc-table", "merged"], tmp_path)
    assert status == 0, out
    assert data["migration"]["returned_null"] > 0 and data["findings"] == []


@pytest.mark.parametrize("reclaim", ["slab", "page"])
def test_reclamation_modes(reclaim, tmp_path):
    status, out, data = shmswap_run(["--size", "4M", "--slots-per-cluster", "16", "--orders", "0:0.8,2:0.2",
                                     "--fill", "0.1", "--seconds", "1.5", "--quiet", "--reclaim", reclaim], tmp_path)
    assert status == 0, out
    assert data["tables"]["frees"] > 0
    if reclaim == "page":
        assert data["tables"]["deferred_frees"] == data["tables"]["frees"]


@pytest.mark.parametrize("args", [["--device", "hdd"], ["--tables", "static"], ["--percpu", "off"],
                                  ["--discard", "on"], ["--cpus", "1"], ["--cpus", "6"]])
def test_variants_run_clean(args, tmp_path):
    status, out, data = shmswap_run([*SMALL, *args], tmp_path)
    assert status == 0, out
    assert not data["invariants"]["violations"]
    if "--percpu" in args:
        assert data["ops"]["fast_path_hits"] == 0
    if "--tables" in args:
        assert data["tables"]["frees"] == 0 and data["tables"]["live"] == data["tables"]["static_equivalent"]
    if "hdd" in args:
        assert data["locks"]["global_cluster_lock"]["acquisitions"] > 0


def test_spawn_start_method(tmp_path):
    status, out, data = shmswap_run([*SMALL, "--start-method", "spawn", "--seconds", "1"], tmp_path)
    assert status == 0, out


def test_ops_budget(tmp_path):
    status, out, data = shmswap_run(["--size", "64M", "--ops", "4000", "--quiet"], tmp_path)
    assert status == 0, out
    assert data["ops"]["steps"] == 4000


def test_pin_records_affinity(tmp_path):
    status, out, data = shmswap_run([*SMALL, "--pin", "--seconds", "1"], tmp_path)
    assert status == 0, out
    ncores = len(psutil.Process().cpu_affinity())
    cpus = [w for w in data["workers"] if w["wid"] < 4]        # (the torture readers are not pinned)
    assert [len(w["affinity"]) for w in cpus] == [1] * 4
    assert {w["affinity"][0] for w in cpus} == set(psutil.Process().cpu_affinity()[:min(4, ncores)])


def test_broken_reader_caught_in_slab_mode(tmp_path):
    status, out, data = shmswap_run([*ORACLE, "--reader", "broken"], tmp_path)
    assert status == 1, out
    assert data["rcu"]["wrong_owner_accepted"] > 0


def test_normal_reader_rejects_recycled_tables(tmp_path):
    status, out, data = shmswap_run(ORACLE, tmp_path)
    assert status == 0, out
    assert data["oracles"]["foreign_folios_rejected"] > 0 and data["rcu"]["wrong_owner_accepted"] == 0


def test_rcu_none_caught_in_page_mode(tmp_path):
    status, out, data = shmswap_run([*ORACLE, "--reclaim", "page", "--rcu", "none"], tmp_path)
    assert status == 1, out
    assert data["rcu"]["freed_memory_reads"] > 0


def test_rcu_normal_page_mode_clean(tmp_path):
    status, out, data = shmswap_run([*ORACLE, "--reclaim", "page"], tmp_path)
    assert status == 0, out
    assert data["rcu"]["freed_memory_reads"] == 0 and data["oracles"]["pipe_too_old"] == 0


def test_inject_lose_cluster_exits_1(tmp_path):
    status, out, data = shmswap_run([*SMALL, "--inject-bug", "lose-cluster"], tmp_path)
    assert status == 1, out
    assert any("no recorded seed T5/T6b event" in v["reason"] for v in data["invariants"]["violations"])


@pytest.mark.parametrize("bad", [["--size", "12Q"], ["--size", "1K"], ["--cpus", "0"], ["--cpus", "257"],
                                 ["--orders", "0:0.5,1:0.4"], ["--orders", "12:1"], ["--slots-per-cluster", "100"],
                                 ["--fill", "1.5"], ["--migrate", "-0.1"], ["--migrate-to", "9"],
                                 ["--device", "tape"], ["--max-order", "12"], ["--atomic-fail", "x"]])
def test_bad_arguments_exit_2_and_create_nothing(bad, tmp_path):
    before = set(leftover_segments())
    status, out, data = shmswap_run(bad, tmp_path, timeout=30)
    assert status == 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("shmswap: error:"), out
    assert bad[1] in lines[0] or bad[1].split(":")[0] in lines[0]
    assert _new_segments_of_dead_creators(before) == []
    assert data is None


def _new_segments_of_dead_creators(before: set[str]) -> list[str]:
    """Segments that appeared since ``before`` and whose creator is gone.

    The bad invocation has exited by now, so whatever it created has a dead creator; a segment
    whose creator still runs belongs to another run on this machine (another test suite).
    """
    out = []
    for name in set(leftover_segments()) - before:
        try:
            pid = int(name.split("_")[1])
        except (IndexError, ValueError):
            out.append(name)
            continue
        if not psutil.pid_exists(pid):
            out.append(name)
    return out


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "shmswap.cli", "run", "--quiet", "--size", "64M", *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for(name: str, timeout: float = 30) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in _ours():
            if p.name() == name:
                return p
        time.sleep(0.05)
    raise AssertionError(f"no process {name}")


def test_worker_killed_is_reported(tmp_path):
    p = _start(["--seconds", "60"], tmp_path)
    victim = _wait_for("shmswap-cpu1")
    time.sleep(1.0)
    victim.kill()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1, out
    assert "worker 1" in out and "died" in out and "running as CPU" in out


def test_stopped_worker_is_reported_stuck(tmp_path):
    p = _start(["--seconds", "60", "--watchdog-s", "1.5"], tmp_path)
    victim = _wait_for("shmswap-cpu2")
    time.sleep(1.0)
    victim.suspend()
    try:
        out, _ = p.communicate(timeout=60)
    finally:
        if victim.is_running():
            victim.resume()
    assert p.returncode == 1, out
    assert "worker 2" in out and "no progress" in out


def test_reader_killed_in_its_section_does_not_stall_grace_periods(tmp_path):
    p = _start(["--seconds", "60", "--size", "1M", "--slots-per-cluster", "8", "--orders", "0:1", "--fill", "0.05",
                "--cache-only", "0.5", "--reader-delay-us", "500000"], tmp_path)
    victim = _wait_for("shmswap-cpu0")
    time.sleep(1.5)
    victim.kill()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1, out
    assert "worker 0" in out and "died" in out


def test_sigint_to_driver_stops_in_order(tmp_path):
    p = _start(["--seconds", "60"], tmp_path)
    _wait_for("shmswap-cpu3")
    time.sleep(1.0)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, out
    assert "stopped early" in out and "RESULT status=130" in out


def test_driver_killed_manager_cleans_up(tmp_path):
    p = _start(["--seconds", "60"], tmp_path)
    _wait_for("shmswap-cpu3")
    time.sleep(0.5)
    p.kill()
    p.wait(timeout=10)
    deadline = time.monotonic() + 20
    while _ours() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ours()


def test_manager_killed_driver_cleans_up(tmp_path):
    p = _start(["--seconds", "60"], tmp_path)
    _wait_for("shmswap-cpu3")
    time.sleep(0.5)
    _wait_for("shmswap-manager").kill()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1, out
    assert "manager died" in out


# -- start methods, and watching the driver by pid (issue 11 item 4) ----------------------------------

@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_default_run_under_every_start_method(method, tmp_path):
    """Under forkserver the parent of the manager and the workers is the fork server, not the driver:
    they watch the driver by pid and start time, and the run finishes."""
    status, out, data = shmswap_run(["--seconds", "1", "--quiet", "--start-method", method], tmp_path)
    assert status == 0, out
    assert data["config"]["start_method"] == method
    assert data["ops"]["steps"] > 0 and all(w["steps"] > 0 for w in data["workers"])  # the clock waited for them


def test_driver_killed_under_forkserver_manager_cleans_up(tmp_path):
    p = _start(["--seconds", "60", "--start-method", "forkserver"], tmp_path)
    manager = _wait_for("shmswap-manager")
    workers = [_wait_for(f"shmswap-cpu{w}") for w in range(4)]
    time.sleep(0.5)
    segments = [n for n in leftover_segments() if n.startswith(f"shmswap_{manager.pid}_")]
    assert segments
    p.kill()
    p.wait(timeout=10)
    gone, alive = psutil.wait_procs([manager, *workers], timeout=20)
    assert not alive, f"left running: {alive}"
    assert not set(segments) & set(leftover_segments())


# -- the memory of a large device (issue 11 item 6) ------------------------------------------------------

def test_a_1t_device_costs_no_more_than_the_memory_it_uses(tmp_path):
    """The checker, swapoff and the reports read only what the run wrote: a 1 TiB device's run
    (a 256 MiB swap map, 2 GiB of table memory, all sparse) peaks within 64 MiB of a 1 GiB run's
    (its 32 MiB cluster array is what swapon itself must write)."""
    peak = {}
    for size in ("1G", "1T"):
        status, out, data = shmswap_run(["--size", size, "--seconds", "1", "--quiet"], tmp_path)
        assert status == 0, out
        mem = data["memory"]
        # the 4 CPUs, the manager and the 2 torture readers
        assert mem["samples"] >= 2 and mem["processes"] == 7 and mem["peak_pss_mib"] > 0
        peak[size] = mem["peak_pss_mib"]
    assert peak["1T"] - peak["1G"] < 64, peak


def test_lockdep_run_is_clean(tmp_path):
    """``--lockdep``: every worker and the manager check the lock order; a real run breaks none."""
    rc, out, data = shmswap_run([*SMALL, "--lockdep"], tmp_path)
    assert rc == 0, out
    assert data["config"]["lockdep"] is True
    assert "I-lock-order" in data["invariants"]["checked"]
    assert not [v for v in data["invariants"]["violations"] if v["invariant"] == "I-lock-order"]


def test_reader_delays_can_be_turned_on_and_off(tmp_path):
    rc, out, data = shmswap_run([*SMALL, "--reader-delays", "off"], tmp_path)
    assert rc == 0, out
    assert data["config"]["reader_delays"] == "off" and data["oracles"]["reader_delays"]["torture_reads"] == 0
    rc, out, data = shmswap_run(SMALL, tmp_path)
    assert rc == 0, out
    assert data["config"]["reader_delays"] == "on"
    rc, out, _ = shmswap_run([*SMALL, "--reader-delays", "sometimes"], tmp_path)
    assert rc == 2 and "--reader-delays" in out


def test_lifetimes_can_be_turned_on_and_off(tmp_path):
    rc, out, data = shmswap_run([*SMALL, "--lifetimes", "off", "--reader-delays", "on"], tmp_path)
    assert rc == 0, out
    assert data["config"]["lifetimes"] == "off"
    rc, out, data = shmswap_run(SMALL, tmp_path)
    assert rc == 0, out
    assert data["config"]["lifetimes"] == "on"
    rc, out, _ = shmswap_run([*SMALL, "--lifetimes", "forever"], tmp_path)
    assert rc == 2 and "--lifetimes" in out and "forever" in out


# -- several devices in processes (issue 7 item 1) --------------------------------------------------------

# Two SSDs of equal priority (allocations round-robin) and every table allocation sleeping: the
# manager serves each device's sleeps from that device's slab, and the seed's re-check after the
# sleep reads offsets the other device left in the per-CPU cache.
TWO_DEVICES = ["--device", "ssd:64M:prio=5,ssd:32M:prio=5", "--atomic-fail", "1", "--migrate", "0.5",
               "--seconds", "1.5", "--quiet"]


def test_two_devices_run_clean_under_merged(tmp_path):
    rc, out, data = shmswap_run([*TWO_DEVICES, "--alloc-table", "merged"], tmp_path)
    assert rc == 0, out
    assert data["findings"] == [] and data["invariants"]["violations"] == []
    devices = data["devices"]
    assert [(d["type"], d["kind"], d["prio"]) for d in devices] == [(0, "ssd", 5), (1, "ssd", 5)]
    assert [d["pages"] for d in devices] == [16383, 8191]
    # Both devices were used, and each one's sleeping allocations came from its own slab.
    assert all(d["inuse_pages"] > 0 and d["sleep_allocs"] > 0 and d["atomic_allocs"] == 0 for d in devices)
    assert all(d["w12_events"] == 0 and d["lost_clusters"] == 0 for d in devices)
    # swapoff of every device: nothing left on either.
    assert [(d["type"], d["tables_left"], d["inuse_after"]) for d in data["swapoff"]["devices"]] == [(0, 0, 0),
                                                                                                    (1, 0, 0)]
    assert "devices (at the end of the workload" in out and "W12 events" in out


def test_two_devices_seed_shows_the_cross_device_recheck(tmp_path):
    """Reference §10 W12 in processes: the seed's re-check reads another device's offset."""
    rc, out, data = shmswap_run([*TWO_DEVICES, "--alloc-table", "seed"], tmp_path)
    assert rc == 0, out
    assert data["invariants"]["violations"] == []
    w12 = [f for f in data["findings"] if f["branch"] == "W12"]
    assert w12, data["findings"]
    assert sum(d["w12_events"] for d in data["devices"]) > 0
    assert "[W12]" in out and "whose si[order] is device" in out


def test_manager_killed_with_two_devices_leaves_no_segment(tmp_path):
    """The driver unlinks every device's segments when the manager dies."""
    p = _start(["--seconds", "60", "--device", "ssd:64M:prio=5,hdd:32M"], tmp_path)
    manager = _wait_for("shmswap-manager")
    _wait_for("shmswap-cpu3")
    time.sleep(0.5)
    segments = [n for n in leftover_segments() if n.startswith(f"shmswap_{manager.pid}_")]
    assert len({n.rsplit("_", 1)[0] for n in segments if n.endswith("_device")}) == 2, segments   # two devices
    manager.kill()
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1, out
    assert "manager died" in out
    assert not set(segments) & set(leftover_segments())


def test_sleep_reclaim_nested_swap_outs_clean_under_merged(tmp_path):
    """--sleep-reclaim 1 with every atomic table allocation failing: each sleep swaps out a folio
    from inside the sleeping allocation (workers' mailboxes wrapped, mm/vmscan.py); merged ends with
    no violation and no finding, and the nested slots are freed before swapoff's account."""
    status, out, data = shmswap_run(["--sleep-reclaim", "1", "--atomic-fail", "1", "--seconds", "1",
                                     "--alloc-table", "merged", "--quiet"], tmp_path)
    assert status == 0, out
    n = data["nested_reclaim"]
    assert data["config"]["sleep_reclaim"] == 1.0
    assert n["reclaims"] > 0 and n["allocations"] > 0 and n["outer_after"]["lost_clusters"] == 0
    assert data["invariants"]["violations"] == [] and data["findings"] == []
    assert data["swapoff"]["inuse_after"] == 0


def test_three_devices_tables_and_report_are_summed_over_the_devices(tmp_path):
    """The audit's run: ``tables`` (JSON and the "swap tables" line) are the devices' sum, as ``migration``
    is; the rows keep each device's figures and discard; the first line runs it again."""
    rc, out, data = shmswap_run(["--device", "ssd:64M:prio=5,hdd:128M,ssd:32M:prio=5:discard=on",
                                 "--alloc-table", "merged", "--atomic-fail", "0.5", "--seconds", "1.5", "--quiet"],
                                tmp_path)
    assert rc == 0, out
    rows, t, m = data["devices"], data["tables"], data["migration"]
    assert [(d["kind"], d["discard"]) for d in rows] == [("ssd", "off"), ("hdd", "off"), ("ssd", "on")]
    assert t["static_equivalent"] == 32 + 64 + 16
    for key, row_key in (("live", "live_tables"), ("peak", "peak_tables"), ("atomic_allocs", "atomic_allocs"),
                         ("sleep_allocs", "sleep_allocs"), ("frees", "table_frees")):
        assert t[key] == sum(d[row_key] for d in rows), key
    assert sum(d["sleep_allocs"] > 0 for d in rows) >= 2
    assert t["sleep_allocs"] == m["sleeps"] and t["alloc_failures"] == m["atomic_failures"]
    assert (f"swap tables (summed over the 3 devices; peak: the sum of their peaks): live {t['live']:,}, "
            f"peak {t['peak']:,}") in out and "vs static 112 " in out
    assert f"slept {m['sleeps']:,}," in out
    first = out.splitlines()[0]
    assert first.startswith("shmswap run --cpus 4 --device ssd:64M:prio=5,hdd:128M,ssd:32M:prio=5:discard=on ")
    assert "--devices" not in first and "--size" not in first and "--discard" not in first
    assert "devices: 3, see the devices table" in out
