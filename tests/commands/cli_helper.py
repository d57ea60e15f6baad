"""Run ``shmswap`` as a subprocess and check that it left nothing behind.

``run_cli(args, cwd)`` starts ``python -m shmswap.cli ARGS``, notes every descendant process while
it runs (the manager and the CPU workers), and after it exits asserts that none of them is still
alive and that no segment named after one of them (``shmswap_<pid>_...``, the manager creates the
segments) is left in /dev/shm.  Only this run's processes and segments are looked at: other test
suites may run on the same machine at the same time.  ``start_cli`` / ``finish_cli`` split the
same thing for a test that signals the run while it goes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

import shmswap

__all__ = ["CliRun", "run_cli", "start_cli", "finish_cli", "wait_for_child"]

PKG_PARENT = str(Path(shmswap.__file__).resolve().parent.parent)


@dataclass
class CliRun:
    proc: subprocess.Popen
    pids: set[int] = field(default_factory=set)
    names: dict[int, str] = field(default_factory=dict)
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""

    def watch(self) -> None:
        """Note the run's descendants (the manager, the workers) as they appear."""
        try:
            for c in psutil.Process(self.proc.pid).children(recursive=True):
                self.pids.add(c.pid)
                try:
                    self.names[c.pid] = c.name()
                except psutil.Error:
                    pass
        except psutil.Error:
            pass


def start_cli(args: list[str], cwd: Path, **popen) -> CliRun:
    env = {**os.environ, "PYTHONPATH": PKG_PARENT}
    proc = subprocess.Popen([sys.executable, "-m", "shmswap.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)
    return CliRun(proc)


def wait_for_child(run: CliRun, name: str, timeout: float = 30.0) -> None:
    """Wait until a descendant called ``name`` (a comm name, e.g. ``shmswap-cpu0``) runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.watch()
        if name in run.names.values():
            return
        time.sleep(0.02)
    raise AssertionError(f"no process {name} (saw {sorted(set(run.names.values()))})")


def _ours_left(run: CliRun) -> tuple[list[int], list[str]]:
    alive = []
    for pid in run.pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    prefixes = tuple(f"shmswap_{pid}_" for pid in run.pids | {run.proc.pid})
    try:
        segments = sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefixes))
    except FileNotFoundError:
        segments = []
    return alive, segments


def finish_cli(run: CliRun, timeout: float = 120.0) -> CliRun:
    """Wait for the run (noting its processes), then assert it left no process and no segment."""
    deadline = time.monotonic() + timeout
    out: list[str] = []
    err: list[str] = []
    while run.proc.poll() is None:
        run.watch()
        if time.monotonic() > deadline:
            run.proc.kill()
            raise AssertionError("the run did not end in time")
        time.sleep(0.02)
    o, e = run.proc.communicate()
    out.append(o)
    err.append(e)
    run.returncode, run.stdout, run.stderr = run.proc.returncode, "".join(out), "".join(err)
    settle = time.monotonic() + 10.0
    alive, segments = _ours_left(run)
    while (alive or segments) and time.monotonic() < settle:
        time.sleep(0.1)
        alive, segments = _ours_left(run)
    assert not alive, f"processes left behind: {alive}"
    assert not segments, f"segments left in /dev/shm: {segments}"
    return run


def run_cli(args: list[str], cwd: Path, timeout: float = 120.0) -> CliRun:
    return finish_cli(start_cli(args, cwd), timeout)
