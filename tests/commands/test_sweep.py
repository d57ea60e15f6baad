"""``shmswap sweep`` as a user runs it: the files, --resume, --shard and --merge, --dask, bad input.

Every run goes through ``cli_helper.run_cli``, which also asserts that the sweep left no process
and no segment in /dev/shm behind.
"""

from __future__ import annotations

import json

import pytest
from cli_helper import run_cli

SMALL = ["--cpus", "1,2", "--percpu", "on", "--alloc-table", "seed,merged", "--size", "16M", "--ops", "3000",
         "--warmup", "0", "--quiet"]
FILES = ["lock_wait.png", "results.csv", "results.json", "tables.png", "throughput.png"]
# Columns that are the same in any run of the same point (the rest are measured).
IDENTICAL = ("point", "key", "repeat", "run_seed", "cpus", "percpu", "alloc_table", "size", "size_bytes", "ops",
             "seconds", "seed", "orders", "fill")


def _doc(path) -> dict:
    return json.loads((path / "results.json").read_text())


def _one_error_line(run, *needles: str) -> None:
    assert run.returncode == 2, (run.returncode, run.stderr)
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shmswap: error:"), run.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("full")
    run = run_cli(["sweep", *SMALL, "--out", "all", "--json"], cwd)
    assert run.returncode == 0, run.stderr
    return cwd, run


def test_help_shows_the_defaults(tmp_path):
    run = run_cli(["sweep", "--help"], tmp_path)
    assert run.returncode == 0
    for text in ("--cpus", "1,2,4", "--percpu", "on,off", "--repeat", "--resume", "--shard", "--dask", "--merge",
                 "sweep-results", "default: 0.5"):
        assert text in run.stdout, text
    assert list(tmp_path.iterdir()) == []


def test_sweep_writes_csv_json_and_plots(full):
    cwd, run = full
    out = cwd / "all"
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert sorted(p.name for p in cwd.iterdir()) == ["all"]           # nothing left beside it
    doc = json.loads(run.stdout)
    assert doc == _doc(out)
    assert doc["complete"] and doc["exit_status"] == 0 and doc["runs"] == 4
    assert {"cores", "affinity", "python", "numpy", "shmswap", "git_commit"} <= set(doc["machine"])
    assert [(s["cpus"], s["alloc_table"]) for s in doc["summary"]] == [(1, "seed"), (1, "merged"), (2, "seed"),
                                                                      (2, "merged")]
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"cpus", "percpu", "alloc_table", "throughput_ops_per_s", "locks_ci_lock_wait_ns_total",
            "tables_bytes_peak", "violations", "findings", "status", "oversubscribed"} <= set(header)
    for png in ("throughput.png", "lock_wait.png", "tables.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_table_on_a_terminal_less_run(tmp_path):
    run = run_cli(["sweep", *SMALL[:-1], "--alloc-table", "seed", "--cpus", "1", "--out", "o"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert "ops/s (median)" in run.stdout and "machine:" in run.stdout


def test_resume_skips_the_runs_already_there(full, tmp_path):
    cwd, _ = full
    doc = _doc(cwd / "all")
    partial = dict(doc, rows=doc["rows"][:3], complete=False)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "results.json").write_text(json.dumps(partial))
    run = run_cli(["sweep", *SMALL, "--out", "o", "--resume"], tmp_path)
    assert run.returncode == 0, run.stderr
    again = _doc(tmp_path / "o")
    assert again["complete"] and len(again["rows"]) == 4
    assert again["rows"][:3] == doc["rows"][:3]                     # kept, not run again
    assert {c: again["rows"][3][c] for c in IDENTICAL} == {c: doc["rows"][3][c] for c in IDENTICAL}
    # everything there: nothing runs
    run = run_cli(["sweep", *SMALL, "--out", "o", "--resume"], tmp_path)
    assert run.returncode == 0 and _doc(tmp_path / "o")["rows"] == again["rows"]
    # another grid is refused, and the directory is left as it was
    run = run_cli(["sweep", *SMALL, "--ops", "4000", "--out", "o", "--resume"], tmp_path)
    _one_error_line(run, "--resume", "different sweep")
    assert _doc(tmp_path / "o")["rows"] == again["rows"]


def test_shards_merged_equal_the_unsharded_sweep(full, tmp_path):
    cwd, _ = full
    for i in range(2):
        run = run_cli(["sweep", *SMALL, "--shard", f"{i}/2", "--out", f"s{i}"], tmp_path)
        assert run.returncode == 0, run.stderr
        assert len(_doc(tmp_path / f"s{i}")["rows"]) == 2
    run = run_cli(["sweep", "--merge", "s0", "s1", "--out", "merged", "--quiet"], tmp_path)
    assert run.returncode == 0, run.stderr
    merged, whole = _doc(tmp_path / "merged"), _doc(cwd / "all")
    assert merged["complete"] and sorted(p.name for p in (tmp_path / "merged").iterdir()) == FILES
    assert [{c: r[c] for c in IDENTICAL} for r in merged["rows"]] == [{c: r[c] for c in IDENTICAL}
                                                                     for r in whole["rows"]]
    assert [sorted(r) for r in merged["rows"]] == [sorted(r) for r in whole["rows"]]
    assert merged["grid"] == whole["grid"]


def test_a_violation_fails_the_sweep(tmp_path):
    # The broken reader's oracle failure needs a recycle inside the forced window: 3 s, as the
    # driver's own oracle tests use (0.5 s missed it now and then).
    run = run_cli(["sweep", "--cpus", "2", "--percpu", "on", "--alloc-table", "seed", "--size", "1M",
                   "--slots-per-cluster", "8", "--orders", "0:1", "--fill", "0.05", "--cache-only", "0.5",
                   "--reader", "broken", "--reader-delay-us", "5000", "--seconds", "3", "--warmup", "0",
                   "--quiet", "--out", "o"], tmp_path)
    assert run.returncode == 1, run.stderr
    row = _doc(tmp_path / "o")["rows"][0]
    assert row["status"] == 1 and row["oracle_failures"] + row["violations"] > 0


def test_dask_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        run = run_cli(["sweep", *SMALL, "--alloc-table", "seed", "--dask", cluster.scheduler_address,
                       "--out", "o"], tmp_path)
    assert run.returncode == 0, run.stderr
    doc = _doc(tmp_path / "o")
    assert doc["complete"] and [r["cpus"] for r in doc["rows"]] == [1, 2]
    assert all(r["status"] == 0 and r["throughput_ops_per_s"] > 0 for r in doc["rows"])


@pytest.mark.parametrize("args, needles", [
    (["--cpus", "1,0"], ["--cpus", "0"]),
    (["--cpus", "1,x"], ["--cpus", "'x'"]),
    (["--size", "16M,3Q"], ["--size", "3Q"]),
    (["--percpu", "sometimes"], ["--percpu", "sometimes"]),
    (["--shard", "2/2"], ["--shard", "2/2"]),
    (["--repeat", "0"], ["--repeat", "0"]),
    (["--warmup", "-1"], ["--warmup"]),
    (["--out", "missing/o"], ["--out", "missing"]),
    (["--merge", "nowhere"], ["nowhere"]),
])
def test_bad_input_exits_2_and_creates_nothing(tmp_path, args, needles):
    run = run_cli(["sweep", *SMALL, *args], tmp_path)
    _one_error_line(run, *needles)
    assert list(tmp_path.iterdir()) == []


def test_an_existing_out_is_not_overwritten(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "mine.txt").write_text("keep")
    run = run_cli(["sweep", *SMALL, "--out", "o"], tmp_path)
    _one_error_line(run, "--out", "exists")
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["mine.txt"]


def test_an_unreachable_dask_scheduler_is_bad_input(tmp_path):
    pytest.importorskip("distributed")
    run = run_cli(["sweep", *SMALL, "--dask", "tcp://127.0.0.1:9", "--out", "o"], tmp_path)
    _one_error_line(run, "--dask", "127.0.0.1:9")
    assert list(tmp_path.iterdir()) == []
