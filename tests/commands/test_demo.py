"""Tests of ``shmswap demo``: golden outputs for fixed seeds (SimPy-style: documentation that
cannot drift), ``-c`` changing only the answers, the pictures and the page, bad arguments.

Regenerate the golden files after an intended change with ``SHMSWAP_UPDATE_GOLDEN=1 pytest
tests/commands/test_demo.py`` and read their diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cli_helper import run_cli
from PIL import Image

from shmswap.cli import main
from shmswap.experiments.lessons import LESSONS

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SEEDS = {"paths": 1, "sharing": 2, "emptying": 3, "sleep": 3, "reader": 0}


def demo(capsys, monkeypatch, *argv):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    status = main(["demo", *argv])
    return status, capsys.readouterr().out


@pytest.mark.parametrize("name", list(LESSONS))
def test_golden(capsys, monkeypatch, name):
    status, out = demo(capsys, monkeypatch, name, "-s", str(SEEDS[name]), "-c")
    assert status == 0
    path = GOLDEN / f"demo-{name}.out"
    if os.environ.get("SHMSWAP_UPDATE_GOLDEN"):
        path.write_text(out)
    assert out == path.read_text(), f"{path.name} differs: rerun with SHMSWAP_UPDATE_GOLDEN=1 and read the diff"


@pytest.mark.parametrize("name", list(LESSONS))
def test_solve_changes_only_the_answers(capsys, monkeypatch, name):
    _, asked = demo(capsys, monkeypatch, name, "-s", "4")
    _, solved = demo(capsys, monkeypatch, name, "-s", "4", "-c")
    a, s = asked.splitlines(), solved.splitlines()
    assert len(a) == len(s)
    differ = [(x, y) for x, y in zip(a, s, strict=True) if x != y]
    assert differ
    for x, y in differ:
        if x.startswith("ARG solve"):
            assert (x, y) == ("ARG solve False", "ARG solve True")
        elif x.startswith("RESULT "):
            ra, rs = json.loads(x[7:]), json.loads(y[7:])
            assert "answers" not in ra and "findings" not in ra and rs["answers"]
            assert {k: v for k, v in rs.items() if k not in ("answers", "findings")} == {**ra, "solve": True}
        else:
            head, _, hidden = x.partition(" => ")
            assert hidden == "?" and y.startswith(head + " => ") and y != x
    assert asked.count(" => ?") == solved.count(" => ")
    assert " => ?" not in solved


@pytest.mark.parametrize("name", ["sleep", "reader"])
def test_the_same_seed_gives_the_same_output(capsys, monkeypatch, name):
    _, first = demo(capsys, monkeypatch, name, "-s", "6", "-c")
    _, again = demo(capsys, monkeypatch, name, "-s", "6", "-c")
    assert first == again
    result = json.loads(first.splitlines()[-1].removeprefix("RESULT "))
    assert result["scheduler"] == "deterministic" and result["sched_points"] > 0 and result["schedules"]
    for n, lines in result["during"].items():                 # every stop is a line of its step's script
        assert lines and set(lines) <= set(result["schedules"][n])
        assert first.count(f"during step {n}, the schedule stopped after `") == len(lines)


def test_output_shape(capsys, monkeypatch):
    _, out = demo(capsys, monkeypatch, "paths")
    lines = out.splitlines()
    assert lines[0] == "ARG lesson paths" and lines[1] == "ARG seed 0"
    assert any(x.startswith("step 1  CPU ") and "folio_alloc_swap" in x for x in lines)
    assert any(x.startswith("  cluster 3 [") for x in lines)
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["demo"] == "paths" and result["check_ok"] and result["steps"] >= 5


def test_pictures_and_page(capsys, monkeypatch, tmp_path):
    status, out = demo(capsys, monkeypatch, "sleep", "-s", "1", "--png", str(tmp_path / "png"),
                       "--svg", str(tmp_path / "svg"), "--gif", str(tmp_path / "a.gif"),
                       "--html", str(tmp_path / "a.html"))
    assert status == 0
    result = json.loads(out.splitlines()[-1].removeprefix("RESULT "))
    pngs = sorted((tmp_path / "png").iterdir())
    # 4 steps on 2 devices, and each device's sleep drawn in the middle
    assert [p.name for p in pngs] == [f"step-{i:02}.png" for i in range(8)] and result["pictures"] == 8
    assert result["during"] == {"1": ["run cpu0 until sleep in swap_cluster_alloc_table"],
                                "3": ["run cpu0 until sleep in swap_cluster_alloc_table"]}
    assert len(list((tmp_path / "svg").glob("step-*.svg"))) == 8
    assert "during step 1" in (tmp_path / "svg" / "step-01.svg").read_text()
    assert Image.open(tmp_path / "a.gif").n_frames == 8
    assert (tmp_path / "a.html").read_text().startswith("<!DOCTYPE html>")
    assert len(result["files"]) == 18


def test_bad_arguments(tmp_path):
    for argv, words in ((["nosuch"], "invalid choice"), (["-s", "x"], "not an integer"),
                        (["--gif", str(tmp_path / "no" / "a.gif")], "does not exist"),
                        (["--png", str(tmp_path / "no" / "dir")], "does not exist")):
        r = run_cli(["demo", *argv], tmp_path)
        assert r.returncode == 2, argv
        assert len(r.stderr.splitlines()) == 1 and words in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_runs_in_a_process(tmp_path):
    r = run_cli(["demo", "reader", "-s", "2"], tmp_path)
    assert r.returncode == 0
    assert r.stdout.splitlines()[-1].startswith("RESULT {")
