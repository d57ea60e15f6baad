"""examples/: each script runs in under a minute and prints what its README section shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run(script: str, *args: str) -> tuple[list[str], dict]:
    p = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script), *args], capture_output=True,
                       text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1].startswith("RESULT "), lines[-1]
    return lines, json.loads(lines[-1][len("RESULT "):])


def _png(path) -> None:
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


@pytest.mark.timeout(90)
def test_contention(tmp_path):
    out = tmp_path / "c.png"
    lines, res = _run("contention.py", "--seconds", "0.5", "--out", str(out))
    assert res["example"] == "contention"
    assert {(r["cpus"], r["percpu"]) for r in res["rows"]} == {(1, "on"), (2, "on"), (1, "off"), (2, "off")}
    for r in res["rows"]:
        assert r["status"] == 0 and r["ops_per_s"] > 0
        assert r["ci_lock_wait_ns_per_op"] >= 0 and r["si_lock_wait_ns_per_op"] >= 0
    assert sum(line.startswith("cpus=") for line in lines) == 4
    _png(out)


def test_migration_race():
    lines, res = _run("migration_race.py", "--ops", "20000")
    seed, merged = res["variants"]["seed"], res["variants"]["merged"]
    assert seed["lost_clusters"] > 0 and seed["findings"] == seed["lost_clusters"]
    assert merged["lost_clusters"] == 0 and merged["findings"] == 0
    assert seed["violations"] == merged["violations"] == 0
    assert seed["migrated"] == seed["sleeps"] > 0


def test_percpu_walkthrough(tmp_path):
    out = tmp_path / "p.png"
    lines, res = _run("percpu_walkthrough.py", "--out", str(out))
    assert res["check_ok"] is True
    steps = res["steps"]
    assert [s["step"] for s in steps] == list(range(1, len(steps) + 1))
    allocs = [s for s in steps if s["op"] == "alloc"]
    assert allocs and all(len(s["offsets"]) == 2 for s in steps)
    for s in allocs:   # the allocating CPU caches the slot after the one it got (or 0 at a cluster's end)
        assert s["offsets"][s["cpu"]] in (s["entry"] + 1, 0)
    assert sum(line.startswith("  cluster ") for line in lines) == 4 * len(steps)
    _png(out)
