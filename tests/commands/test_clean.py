"""``shmswap clean`` and the orphan removal at every run's start: a run killed with its whole process
tree (SIGKILL to its process group, resource tracker included) leaves its segments; they are
removed, and a live run's segments survive.

Only the segments of the runs these tests start are looked at (by their manager's pid): other test
suites may run on the same machine at the same time, and their orphans may be removed too.  Their
runs also remove *our* orphans when they start, as they should: a test that sees its orphans vanish
by another hand before it looked starts over (``Raced``), a few times.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from cli_helper import PKG_PARENT, finish_cli, run_cli, start_cli, wait_for_child

N_SEGMENTS = 11
ATTEMPTS = 5


class Raced(Exception):
    """A concurrent run (another test suite's) removed our orphans before we could."""


def _retrying(scenario) -> None:
    for _ in range(ATTEMPTS - 1):
        try:
            return scenario()
        except Raced:
            continue
    return scenario()


def _gone(names: list[str]) -> list[str]:
    return [n for n in names if not os.path.exists(f"/dev/shm/{n}")]


def _segments_of(pid: int) -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"shmswap_{pid}_"))


def _manager_of(run, timeout: float = 30.0) -> int:
    """The pid of the run's manager (it creates the segments), once all its segments exist."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for c in psutil.Process(run.proc.pid).children(recursive=True):
                if c.name().startswith("shmswap-m") and len(_segments_of(c.pid)) == N_SEGMENTS:
                    return c.pid
        except psutil.Error:
            pass
        time.sleep(0.05)
    raise AssertionError("the run's manager did not create its segments")


def _killed_run(tmp_path) -> list[str]:
    """Start a run in its own process group, SIGKILL the whole group; the segments it left."""
    run = start_cli(["run", "--size", "64M", "--seconds", "60", "--quiet"], tmp_path, start_new_session=True)
    try:
        wait_for_child(run, "shmswap-cpu0")
        manager = _manager_of(run)
        procs = [psutil.Process(run.proc.pid), *psutil.Process(run.proc.pid).children(recursive=True)]
    finally:
        os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.communicate(timeout=30)
    psutil.wait_procs(procs, timeout=10)
    left = _segments_of(manager)
    if len(left) < N_SEGMENTS:
        raise Raced(f"the killed run's segments went before we looked: {left}")
    return left


def _clean(*args: str, tmp_path) -> tuple[int, dict]:
    p = subprocess.run([sys.executable, "-m", "shmswap.cli", "clean", "--json", *args], cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": PKG_PARENT}, capture_output=True, text=True, timeout=60)
    return p.returncode, json.loads(p.stdout)


def _unlink(names: list[str]) -> None:
    for n in names:
        try:
            os.unlink(f"/dev/shm/{n}")
        except FileNotFoundError:
            pass


def test_help_shows_defaults_and_json(tmp_path):
    p = subprocess.run([sys.executable, "-m", "shmswap.cli", "clean", "--help"], cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": PKG_PARENT}, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    assert "--dry-run" in p.stdout and "--json" in p.stdout and "default: False" in p.stdout


def test_clean_removes_a_killed_runs_segments_and_not_a_live_runs(tmp_path):
    live = start_cli(["run", "--size", "64M", "--seconds", "60", "--quiet"], tmp_path)
    try:
        wait_for_child(live, "shmswap-cpu0")
        live_segments = _segments_of(_manager_of(live))

        def scenario() -> None:
            orphans = _killed_run(tmp_path)
            try:
                status, doc = _clean("--dry-run", tmp_path=tmp_path)
                assert status == 0 and doc["dry_run"] is True and doc["removed"] == []
                assert not set(live_segments) & set(doc["orphaned"])
                if not set(orphans) <= set(doc["orphaned"]):
                    raise Raced(f"not listed and gone: {_gone(orphans)}") if _gone(orphans) else AssertionError(doc)
                status, doc = _clean(tmp_path=tmp_path)
                assert status == 0 and doc["failed"] == []
                assert not set(live_segments) & set(doc["removed"])
                assert set(live_segments) <= set(doc["kept"])
                assert _gone(orphans) == orphans                      # removed, by us or by a concurrent run
                if not set(orphans) <= set(doc["removed"]):
                    raise Raced("a concurrent run removed them between the dry run and the clean")
                assert all(os.path.exists(f"/dev/shm/{n}") for n in live_segments)
            finally:
                _unlink(orphans)

        _retrying(scenario)
        status, doc = _clean(tmp_path=tmp_path)                        # the live run is still untouched
        assert status == 0 and not set(live_segments) & set(doc["removed"])
        assert all(os.path.exists(f"/dev/shm/{n}") for n in live_segments)
    finally:
        live.proc.send_signal(signal.SIGINT)
    finish_cli(live)            # nothing of the live run left behind either
    assert "violations=0" in live.stdout, live.stdout + live.stderr     # stopped in order (status 0 or 130)


def test_a_run_removes_the_orphans_at_its_start_and_says_so(tmp_path):
    def scenario() -> None:
        orphans = _killed_run(tmp_path)
        out = tmp_path / "result.json"
        try:
            run = run_cli(["run", "--size", "64M", "--seconds", "1", "--quiet", "--json", str(out)], tmp_path)
        finally:
            _unlink(orphans)
        assert run.returncode == 0, run.stdout + run.stderr
        data = json.loads(out.read_text())
        assert _gone(orphans) == orphans
        if not set(orphans) <= set(data.get("orphans_removed", [])):
            raise Raced("a concurrent run removed them first")
        assert any("orphaned segments" in n and orphans[0] in n for n in data["notes"])

    _retrying(scenario)


@pytest.mark.parametrize("flag", ["--dry-run", None])
def test_plain_output(flag, tmp_path):
    args = [sys.executable, "-m", "shmswap.cli", "clean"] + ([flag] if flag else [])
    p = subprocess.run(args, cwd=tmp_path, env={**os.environ, "PYTHONPATH": PKG_PARENT}, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("shmswap clean: ")
