"""``shmswap run`` as a user runs it: results written whole or not at all, signals, bad input, names.

Every run goes through ``cli_helper.run_cli``, which also asserts that the run left no process and
no segment in /dev/shm behind.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cli_helper import finish_cli, run_cli, start_cli, wait_for_child

SMALL = ["--size", "64M", "--seconds", "1", "--quiet"]


def _one_error_line(run, *needles: str) -> str:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shmswap: error:"), run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert len(lines[0]) < 300, lines[0]
    return lines[0]


# -- 1. results whole or not at all -----------------------------------------------------------------

def test_json_to_a_full_device_keeps_the_report_and_exits_1(tmp_path):
    run = run_cli(["run", *SMALL, "--json", "/dev/full"], tmp_path)
    assert run.returncode == 1, run.stderr
    assert "RESULT status=" in run.stdout
    assert "Traceback" not in run.stderr
    _one_error_line(run, "--json", "/dev/full")


def test_empty_json_path_is_bad_input(tmp_path):
    run = run_cli(["run", *SMALL, "--json", ""], tmp_path)
    assert run.returncode == 2
    _one_error_line(run, "--json")
    assert list(tmp_path.iterdir()) == []


def test_json_in_a_missing_directory_is_bad_input_and_creates_nothing(tmp_path):
    run = run_cli(["run", *SMALL, "--json", str(tmp_path / "no" / "r.json")], tmp_path)
    assert run.returncode == 2
    _one_error_line(run, "r.json")
    assert list(tmp_path.iterdir()) == []


def test_aborted_run_writes_its_partial_result(tmp_path):
    run = start_cli(["run", "--size", "64M", "--seconds", "30", "--quiet", "--json", "r.json"], tmp_path)
    wait_for_child(run, "shmswap-cpu0")
    time.sleep(0.5)
    # the manager: the process named shmswap-manager among this run's descendants
    manager = next(pid for pid, name in run.names.items() if name == "shmswap-manager")
    os.kill(manager, signal.SIGKILL)
    finish_cli(run)
    assert run.returncode == 1
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["run_status"] == "aborted" and data["exit_status"] == 1
    assert data["invariants"]["violations"]
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


# -- 2. signals --------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_in_order_with_report_json_and_status(tmp_path, sig, status):
    run = start_cli(["run", "--size", "64M", "--seconds", "30", "--quiet", "--json", "r.json"], tmp_path)
    wait_for_child(run, "shmswap-cpu0")
    time.sleep(0.5)
    run.proc.send_signal(sig)
    finish_cli(run)
    assert run.returncode == status, run.stdout + run.stderr
    assert f"RESULT status={status}" in run.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["interrupted"] == sig.name and data["exit_status"] == status
    assert data["swapoff"]["tables_left"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_sigterm_to_the_whole_process_group_stops_in_order(tmp_path):
    """systemd and container runtimes signal every process of the unit: still an orderly stop."""
    run = start_cli(["run", "--size", "64M", "--seconds", "30", "--quiet", "--json", "r.json"], tmp_path,
                    start_new_session=True)
    wait_for_child(run, "shmswap-cpu0")
    time.sleep(0.5)
    os.killpg(run.proc.pid, signal.SIGTERM)
    finish_cli(run)
    assert run.returncode == 143, run.stdout + run.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["interrupted"] == "SIGTERM" and not data["invariants"]["violations"]
    assert data["swapoff"]["tables_left"] == 0


def test_background_driver_with_sigint_ignored_stops_on_sigterm(tmp_path):
    def ignore_sigint():
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    run = start_cli(["run", "--size", "64M", "--seconds", "30", "--quiet", "--json", "r.json"], tmp_path,
                    preexec_fn=ignore_sigint)
    wait_for_child(run, "shmswap-cpu0")
    time.sleep(0.5)
    run.proc.send_signal(signal.SIGINT)      # ignored, as for a background job
    time.sleep(0.5)
    assert run.proc.poll() is None
    run.proc.send_signal(signal.SIGTERM)
    finish_cli(run)
    assert run.returncode == 143, run.stdout + run.stderr
    assert json.loads((tmp_path / "r.json").read_text())["interrupted"] == "SIGTERM"


# -- 5. bad input: exit 2, one line naming the value, nothing created ---------------------------------

@pytest.mark.parametrize("args,needle", [
    (["--size", "9" * 5000], "--size"),
    (["--orders", "0:1,0:1"], "order 0 given twice"),
    (["--watchdog-s", "inf"], "inf"),
    (["--seconds", "-5", "--ops", "100"], "-5"),
    (["--size", "\uff11G"], "\uff11G"),
    (["--cpus", "\u0662"], "\u0662"),
    (["--size", "-1G"], "-1G"),
    (["--size=-1G"], "-1G"),
    (["--orders", "-1:1"], "-1:1"),
    (["--orders", "0:1e400"], "1e400"),
    (["--seconds", "1e7"], "10000000"),
    (["--device", "x" * 100_000], "--device"),
])
def test_bad_input(tmp_path, args, needle):
    run = run_cli(["run", "--quiet", "--json", "r.json", *args], tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    line = _one_error_line(run, needle)
    assert "Traceback" not in run.stderr and "expected one argument" not in line
    assert "probability inf" not in line and "must be positive" not in line
    assert list(tmp_path.iterdir()) == []


def test_default_order_mix_fits_a_small_device(tmp_path):
    # No sleeping table allocations: on 8 clusters the reference §10 W2 race (a WARN, so exit 1)
    # would otherwise turn up now and then; this test is about the order mix.
    run = run_cli(["run", "--size", "64K", "--slots-per-cluster", "8", "--seconds", "1", "--quiet",
                   "--atomic-fail", "0", "--json", "r.json"], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["config"]["orders"] == {"0": 0.7, "2": 0.2, "3": 0.1}
    assert "folded" in run.stdout


def test_choices_are_case_insensitive(tmp_path):
    run = run_cli(["run", *SMALL, "--device", "SSD", "--alloc-table", "Merged", "--json", "r.json"], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["config"]["device"] == "ssd" and data["config"]["alloc_table"] == "merged"


# -- 8. names ----------------------------------------------------------------------------------------

def test_processes_are_named_as_documented(tmp_path):
    run = start_cli(["run", "--size", "64M", "--seconds", "2", "--quiet", "--cpus", "2"], tmp_path)
    for name in ("shmswap-cpu0", "shmswap-cpu1", "shmswap-manager"):
        wait_for_child(run, name)
    assert set(run.names.values()) >= {"shmswap-manager", "shmswap-cpu0", "shmswap-cpu1"}
    ps = subprocess.run(["ps", "-o", "comm=", "-p", ",".join(map(str, run.pids))], capture_output=True,
                        text=True).stdout.split()
    finish_cli(run)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "shmswap-manager" in ps
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "shmswap-manager" in readme and "shmswap-mgr" not in readme


def test_torture_readers_run_as_named_processes_and_leave_nothing(tmp_path):
    run = start_cli(["run", "--size", "64M", "--seconds", "2", "--quiet", "--cpus", "2", "--torture-readers", "2",
                     "--json", "r.json"], tmp_path)
    for name in ("shmswap-rdr0", "shmswap-rdr1"):
        wait_for_child(run, name)
    finish_cli(run)
    assert run.returncode == 0, run.stdout + run.stderr
    delays = json.loads((tmp_path / "r.json").read_text())["oracles"]["reader_delays"]
    assert delays["torture_readers"] == 2 and delays["torture_reads"] > 0


def test_a_deterministic_run_turns_the_reader_delays_off(tmp_path):
    run = run_cli(["run", "--deterministic", "--cpus", "2", "--size", "256K", "--slots-per-cluster", "8", "--ops",
                   "200", "--quiet", "--json", "r.json", "--reader-delays", "off", "--torture-readers", "0"],
                  tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    cfg = json.loads((tmp_path / "r.json").read_text())["config"]
    assert cfg["reader_delays"] == "off" and cfg["torture_readers"] == 0
    run = run_cli(["run", "--deterministic", "--cpus", "2", "--size", "256K", "--slots-per-cluster", "8", "--ops",
                   "200", "--quiet", "--json", "d.json"], tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads((tmp_path / "d.json").read_text())["config"]["reader_delays"] == "off"


# -- 8b. the deterministic scheduler's processes mode --------------------------------------------------

def test_processes_without_deterministic_is_bad_input(tmp_path):
    run = run_cli(["run", "--processes", "--ops", "10", "--json", "r.json"], tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--processes" in _one_error_line(run, "--deterministic")
    assert list(tmp_path.iterdir()) == []


def test_deterministic_processes_equal_threads_and_record_the_same_schedule(tmp_path):
    args = ["run", "--deterministic", "--cpus", "2", "--size", "256K", "--slots-per-cluster", "8", "--ops", "400",
            "--seed", "7", "--quiet", "--json", "r.json", "--record", "s.race"]
    out = {}
    for mode, extra in (("threads", []), ("processes", ["--processes"])):
        (tmp_path / mode).mkdir()
        run = run_cli([*args, *extra], tmp_path / mode)    # checks that no process or segment is left
        assert run.returncode == 0, run.stdout + run.stderr
        out[mode] = json.loads((tmp_path / mode / "r.json").read_text())
        assert out[mode]["deterministic"]["mode"] == mode
    t, p = out["threads"], out["processes"]
    assert p["deterministic"]["digest"] == t["deterministic"]["digest"]
    for key in ("config", "ops", "tables", "findings", "invariants", "swapoff"):
        assert p[key] == t[key], key
    assert (tmp_path / "processes" / "s.race").read_text() == (tmp_path / "threads" / "s.race").read_text()


def test_deterministic_processes_end_when_the_driver_is_killed(tmp_path):
    run = start_cli(["run", "--deterministic", "--processes", "--cpus", "2", "--size", "1M", "--slots-per-cluster",
                     "16", "--ops", "1000000", "--quiet"], tmp_path)
    wait_for_child(run, "shmswap-d-mgr")
    time.sleep(0.5)                                     # inside the schedule
    run.watch()
    os.kill(run.proc.pid, signal.SIGKILL)
    finish_cli(run)                                     # no task process, no segment left
    assert run.returncode == -signal.SIGKILL


# -- 8c. the echoed command line runs the same run again ---------------------------------------------

def test_echoed_command_line_reproduces_a_deterministic_run_with_several_devices(tmp_path):
    """The report's first line, pasted (with --json added), runs the same schedule: same digest, same
    configuration, same tables and findings (report.command_line)."""
    args = ["run", "--deterministic", "--cpus", "2", "--device", "ssd:256K:prio=5,ssd:128K:prio=5:discard=on",
            "--slots-per-cluster", "8", "--ops", "400", "--seed", "7", "--atomic-fail", "0.5", "--quiet"]
    first = run_cli([*args, "--json", "a.json"], tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    echoed = first.stdout.splitlines()[0]
    assert echoed.startswith("shmswap run ") and " --deterministic" in echoed and "--processes" not in echoed
    assert "--devices" not in echoed and "--size" not in echoed and echoed.count("--device ") == 1
    again = run_cli([*shlex.split(echoed)[1:], "--quiet", "--json", "b.json"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert dict(a["config"], json="") == dict(b["config"], json="") and a["deterministic"] == b["deterministic"]
    for key in ("ops", "tables", "migration", "findings", "devices"):
        assert a[key] == b[key], key
    assert [d["discard"] for d in a["devices"]] == ["off", "on"]
    assert again.stdout.splitlines()[0] == echoed


# -- 9. a hang fails a test, never CI ------------------------------------------------------------------

def test_every_test_has_a_time_limit(pytestconfig):
    assert float(pytestconfig.getini("timeout") or 0) > 0


# -- 8c. the deterministic modes: signals, a dead task process, bad input ----------------------------

DET = ["run", "--deterministic", "--cpus", "2", "--size", "1M", "--slots-per-cluster", "16", "--ops", "1000000",
       "--quiet", "--json", "r.json"]


@pytest.mark.parametrize("mode,sig,status", [
    ("threads", signal.SIGINT, 130), ("threads", signal.SIGTERM, 143),
    ("processes", signal.SIGINT, 130), ("processes", signal.SIGTERM, 143),
])
def test_deterministic_signal_stops_in_order_with_report_json_and_status(tmp_path, mode, sig, status):
    run = start_cli([*DET, "--record", "s.race", *(["--processes"] if mode == "processes" else [])], tmp_path)
    if mode == "processes":
        wait_for_child(run, "shmswap-d-mgr")
    time.sleep(1.5)                                     # inside the schedule
    run.proc.send_signal(sig)
    finish_cli(run)                                     # no process, no segment left
    assert run.returncode == status, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and f"RESULT status={status}" in run.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["run_status"] == "interrupted" and data["exit_status"] == status
    assert data["interrupted"] == sig.name and data["deterministic"]["mode"] == mode
    assert 0 < data["ops"]["steps"] < 1_000_000
    assert data["invariants"]["violations"] == [] and data["swapoff"]["tables_left"] == 0
    # an interrupted schedule would not replay (its operation count is not the script's): unrecorded
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_deterministic_killed_task_process_writes_a_failed_result(tmp_path):
    run = start_cli([*DET, "--processes"], tmp_path)
    wait_for_child(run, "shmswap-d-cpu1")
    time.sleep(1.0)
    cpu1 = next(pid for pid, name in run.names.items() if name == "shmswap-d-cpu1")
    os.kill(cpu1, signal.SIGKILL)
    finish_cli(run)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "cpu1's process died" in run.stderr and "Traceback" not in run.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["run_status"] == "aborted" and data["exit_status"] == 1
    assert any("cpu1's process died" in str(v) for v in data["invariants"]["violations"])


@pytest.mark.parametrize("args,needle", [
    (["--record", "x.race", "--seconds", "1"], "--record"),                  # without --deterministic
    (["--deterministic", "--record", "/nonexistent/x.race"], "/nonexistent"),
    (["--deterministic", "--trace", "tr.json"], "--trace"),
    (["--deterministic", "--sample-ms", "5"], "--sample-ms"),
    (["--deterministic", "--seconds", "1"], "--seconds"),
    (["--deterministic", "--pin"], "--pin"),
    (["--deterministic", "--watchdog-s", "3"], "--watchdog-s"),
    (["--deterministic", "--reader-delay-us", "5"], "--reader-delay-us"),
    (["--deterministic", "--sleep-latency-us", "5"], "--sleep-latency-us"),
    (["--deterministic", "--trace-limit", "100000"], "--trace-limit"),
    (["--deterministic", "--start-method", "spawn"], "--start-method"),
    (["--deterministic", "--swapoff-every", "1"], "--swapoff-every"),
    (["--deterministic", "--reader-delays", "on"], "--reader-delays"),        # on by default, off here
    (["--deterministic", "--torture-readers", "2"], "--torture-readers"),
    (["--torture-readers", "65"], "--torture-readers: 65"),
])
def test_deterministic_bad_input_and_ignored_options_are_refused(tmp_path, args, needle):
    run = run_cli(["run", "--quiet", "--ops", "10", "--json", "r.json", *args], tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    _one_error_line(run, needle)
    assert list(tmp_path.iterdir()) == []


def test_deterministic_help_texts_agree(tmp_path):
    run = run_cli(["run", "--help"], tmp_path)
    text = " ".join(run.stdout.split())
    assert "real processes are not scheduled deterministically" not in text
    assert "(default: off, " not in text
    assert text.count("(default: off)") == text.count("(default: off")
    for option, following in (("--reader-delays READER_DELAYS", "--torture-readers TORTURE_READERS"),
                              ("--torture-readers TORTURE_READERS", "--lifetimes LIFETIMES"),
                              ("--lifetimes LIFETIMES", "--lockdep check")):
        helptext = text.rsplit(option, 1)[1].split(following)[0]
        assert helptext.count("(default") == 1, helptext
