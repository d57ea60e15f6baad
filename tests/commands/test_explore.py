"""``shmswap explore``: bad input refused up front, results written whole, Ctrl-C prints what was searched."""

from __future__ import annotations

import signal
import time

import pytest
from cli_helper import finish_cli, run_cli, start_cli


@pytest.mark.parametrize("args,needle", [
    (["--schedules", "0"], "--schedules: 0"),
    (["--schedules", "-3"], "--schedules: -3"),
    (["--depth", "0"], "--depth: 0"),
    (["--depth", "-5"], "--depth: -5"),
    (["--out", "/nonexistent/x.race"], "/nonexistent"),
    (["--out", ""], "--out"),
])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, args, needle):
    run = run_cli(["explore", "t5-explore", *args], tmp_path)
    assert run.returncode == 2, run.stdout + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shmswap: error:") and needle in lines[0], run.stderr
    assert run.stdout == "" and list(tmp_path.iterdir()) == []


def test_a_found_failure_is_written_whole_and_replays(tmp_path):
    run = run_cli(["explore", "t5-explore", "--until", "finding", "--schedules", "50", "--out", "f.race"], tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    text = (tmp_path / "f.race").read_text()
    assert text.startswith("# shmswap-script 2\n") and text.splitlines()[-1].startswith("end ")
    assert [p.name for p in tmp_path.iterdir()] == ["f.race"]
    again = run_cli(["replay", "f.race"], tmp_path)
    assert again.returncode == 0 and "every expectation held" in again.stdout, again.stdout + again.stderr


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_prints_what_was_searched_and_exits_128_plus_it(tmp_path, sig, status):
    run = start_cli(["explore", "t5-explore", "--schedules", "1000000", "--out", "f.race"], tmp_path)
    time.sleep(3.0)
    run.proc.send_signal(sig)
    finish_cli(run)
    assert run.returncode == status, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    assert f"interrupted by {sig.name}: nothing found in " in run.stdout and "(of 1000000)" in run.stdout
    assert list(tmp_path.iterdir()) == []
