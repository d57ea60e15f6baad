"""--sample-ms (samples in the result), shmswap plot (PNG, self-contained HTML), --trace (trace-event JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import pytest

from shmswap import Config, ConfigError
from shmswap.trace import TraceRecorder, trace_document

RUN = [sys.executable, "-m", "shmswap.cli", "run", "--seconds", "1", "--size", "64M", "--cpus", "2", "--quiet"]
REQUIRED = {"X": {"name", "ph", "pid", "tid", "ts", "dur"}, "i": {"name", "ph", "pid", "tid", "ts", "s"},
            "C": {"name", "ph", "pid", "tid", "ts", "args"}, "M": {"name", "ph", "pid", "tid", "args"}}


# Run from outside the repository: its source tree has no compiled module, the installed package has.
OUTSIDE = tempfile.gettempdir()


def _cli(*args, timeout=120):
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=timeout, cwd=OUTSIDE)


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    d = tmp_path_factory.mktemp("ts")
    res, trace = d / "r.json", d / "t.json"
    p = _cli("--sample-ms", "50", "--trace", str(trace), "--json", str(res), "--atomic-fail", "0.3")
    assert p.returncode == 0, p.stderr
    return d, json.loads(res.read_text()), json.loads(trace.read_text())


def _schema(doc: dict) -> list[dict]:
    assert set(doc) >= {"traceEvents", "displayTimeUnit"}
    events = doc["traceEvents"]
    for e in events:
        assert e["ph"] in REQUIRED, e
        assert REQUIRED[e["ph"]] <= set(e), e
        assert isinstance(e["pid"], int) and isinstance(e["tid"], int)
        if e["ph"] != "M":
            assert isinstance(e["ts"], float) and e["ts"] >= 0
        if e["ph"] == "X":
            assert e["dur"] >= 0
    return events


def test_samples(traced):
    _, res, _ = traced
    samples = res["samples"]
    assert len(samples) >= 10 and res["sampling"]["count"] == len(samples)
    ts = [s["t"] for s in samples]
    assert ts == sorted(ts) and len(set(ts)) == len(ts)
    for s in samples:
        assert set(res["sampling"]["fields"]) <= set(s)
        assert "free_clusters" in s["lists"] and "ci_lock" in s["lock_wait_ns"]
        assert s["tables_live"] >= 0 and s["ops_per_s"] >= 0
    ops = [s["ops"] for s in samples]
    assert ops == sorted(ops) and ops[-1] > 0
    assert max(s["ops_per_s"] for s in samples) > 0


def test_trace(traced):
    _, res, doc = traced
    events = _schema(doc)
    names = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert names == {0: "CPU 0", 1: "CPU 1", 2: "manager"}
    assert {e["tid"] for e in events if e["ph"] != "M"} <= set(names)
    kinds = {e["name"] for e in events}
    assert "grace period" in kinds and "table alloc" in kinds and "tables live" in kinds
    assert len(events) <= 200_000 and res["trace"]["events"] == len(events)
    assert res["trace"]["bytes"] > 0 and doc["otherData"]["missing_workers"] == []


def test_trace_limit(tmp_path):
    trace = tmp_path / "t.json"
    p = _cli("--trace", str(trace), "--trace-limit", "150", "--trace-lock-ns", "0")
    assert p.returncode == 0, p.stderr
    doc = json.loads(trace.read_text())
    events = _schema(doc)
    assert len(events) <= 150 and doc["otherData"]["dropped"] > 0
    assert {e["args"]["name"] for e in events if e["name"] == "thread_name"} == {"CPU 0", "CPU 1", "manager"}


def test_plot(traced, tmp_path):
    d, _, _ = traced
    out = tmp_path / "pics"
    p = subprocess.run([sys.executable, "-m", "shmswap.cli", "plot", str(d / "r.json"), "--out", str(out), "--html"],
                       cwd=OUTSIDE, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    png = (out / "r.timeseries.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    page = (out / "r.timeseries.html").read_text()
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


@pytest.mark.parametrize("args, word", [(["missing.json"], "cannot read"), (["notjson.json"], "not JSON"),
                                        (["nosamples.json"], "no samples")])
def test_plot_bad_input(tmp_path, args, word):
    (tmp_path / "notjson.json").write_text("{")
    (tmp_path / "nosamples.json").write_text(json.dumps({"config": {}}))
    before = set(tmp_path.iterdir())
    p = subprocess.run([sys.executable, "-m", "shmswap.cli", "plot", str(tmp_path / args[0]),
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=60, cwd=OUTSIDE)
    assert p.returncode == 2 and word in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert set(tmp_path.iterdir()) == before


@pytest.mark.parametrize("args, word", [(["--sample-ms", "-1"], "--sample-ms"),
                                        (["--trace-limit", "5"], "--trace-limit"),
                                        (["--trace", "/nonexistent-dir/t.json"], "--trace")])
def test_run_bad_options(args, word):
    p = _cli(*args, timeout=30)
    assert p.returncode == 2 and word in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_config_fields():
    assert Config().sample_ms == 0 and Config().trace is None
    for bad in ({"sample_ms": -1}, {"sample_ms": 10**9}, {"trace_limit": 1}, {"trace_lock_ns": -5},
                {"sample_ms": 1.5}):
        with pytest.raises(ConfigError):
            Config(**bad)


def test_recorder_bounded():
    r = TraceRecorder(tid=3, budget=5, lock_ns=100)
    for i in range(20):
        r.lock_wait(1, 50 if i % 2 else 500)
    assert len(r.events) == 5 and r.dropped == 5
    doc = trace_document([r.shipment()], {3: "CPU 3", 4: "manager"}, t0_ns=0, limit=6)
    assert len(doc["traceEvents"]) <= 6 and doc["otherData"]["dropped"] >= 5
