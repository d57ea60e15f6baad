"""``shmswap race migration``: JSON, CSV and PNG outputs, reproducing seeds, bad input (exit 2)."""

from __future__ import annotations

import json
import shlex

import pytest

from shmswap.cli import main

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = ["--trials", "2", "--size", "16M", "--mode", "inprocess", "--ops", "2000", "--latency-samples", "10",
         "--quiet"]


def test_json_csv_png_and_a_printed_seed_replays(tmp_path, capsys) -> None:
    out = tmp_path / "race"
    assert main(["race", "migration", *SMALL, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lost per 1000 sleeps" in text and "replays it exactly" in text
    assert sorted(p.name for p in out.iterdir()) == ["branches.png", "latency.csv", "latency.png", "study.json",
                                                     "summary.csv", "trials.csv"]
    assert (out / "branches.png").read_bytes().startswith(PNG) and (out / "latency.png").read_bytes().startswith(PNG)
    assert len((out / "trials.csv").read_text().splitlines()) == 1 + 4
    doc = json.loads((out / "study.json").read_text())
    assert set(doc) >= {"study", "parameters", "mode", "reproducibility", "ci_method", "latency_method", "variants",
                        "trials", "files"}
    assert doc["variants"]["seed"]["branches"]["lost_clusters"] > 0
    assert doc["variants"]["merged"]["branches"]["lost_clusters"] == 0
    for v in doc["variants"].values():
        assert set(v) >= {"branches", "tables", "lost_per_1000_sleeps", "outcomes", "checks", "latency_us"}
        assert set(v["tables"]) == {"allocated", "atomic_allocs", "sleep_allocs", "unused_freed"}
    # every trial printed its reproducing command; run the seed variant's second trial again
    trial = next(t for t in doc["trials"] if t["variant"] == "seed" and t["trial"] == 1)
    assert trial["reproduce"] in text
    argv = shlex.split(trial["reproduce"])
    assert argv[:3] == ["shmswap", "race", "migration"] and "--seed" in argv
    assert main(argv[1:] + ["--json", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)
    [t] = again["trials"]
    assert (t["seed"], t["outcome"], t["branches"]) == (trial["seed"], trial["outcome"], trial["branches"])


def test_process_mode_says_statistical(capsys) -> None:
    assert main(["race", "migration", "--trials", "1", "--size", "16M", "--seconds", "0.3", "--latency-samples", "0",
                 "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mode"] == "process" and "statistically" in doc["reproducibility"]
    assert [t["reproduce"].split()[:2] for t in doc["trials"]] == [["shmswap", "run"]] * 2
    assert doc["variants"]["merged"]["branches"]["lost_clusters"] == 0


@pytest.mark.parametrize("args, word", [(["--trials", "0"], "--trials"), (["--mode", "thread"], "--mode"),
                                        (["--size", "3X"], "--size"), (["--atomic-fail", "1.5"], "--atomic-fail"),
                                        (["--variants", "seed,bogus"], "--variants"), (["--cpus", "x"], "--cpus"),
                                        (["--migrate-to", "9"], "--migrate-to")])
def test_bad_input_exit_2_nothing_created(tmp_path, capsys, args, word) -> None:
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["race", "migration", *SMALL, "--out", str(out), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and word in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_out_dir(tmp_path, capsys) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["race", "migration", *SMALL, "--out", str(f)])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["race", "migration", *SMALL, "--out", str(tmp_path / "no" / "dir")])
    assert e.value.code == 2 and not (tmp_path / "no").exists()
