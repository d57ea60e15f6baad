"""The deterministic scheduler's processes mode (shmswap.runner.detproc; shmswap run --deterministic
--processes): every task an OS process, the same schedule as the threads mode, bit for bit."""

import os
import signal
import time

import psutil
import pytest

from shmswap.config import Config
from shmswap.runner.deterministic import PCTPolicy, RandomPolicy, ScheduleFailure
from shmswap.runner.detproc import run_deterministic_processes, run_processes
from shmswap.runner.script import deterministic_script, run_deterministic, run_script
from shmswap.substrate.shm import leftover_segments

SMALL = Config(cpus=2, size="256K", slots_per_cluster=8, orders="0:1", atomic_fail=0.3, migrate=0.5, seed=3,
               fill=0.5, ops=300)


def mine() -> list[str]:
    """This process's segments (other runs on the machine may have theirs)."""
    return [n for n in leftover_segments() if n.startswith(f"shmswap_{os.getpid()}_")]


def no_children_left() -> bool:
    """No task process left (the resource tracker, started once, stays for the whole session)."""
    left = []
    for c in psutil.Process().children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(c.cmdline()):
                left.append(c)
        except psutil.NoSuchProcess:
            continue
    return not left


def same(a, b) -> None:
    assert a.failure is None and b.failure is None, (a.failure, b.failure)
    assert b.steps == a.steps and b.trace == a.trace and b.choices == a.choices
    assert b.digest == a.digest and b.checkpoints == a.checkpoints
    assert b.state == a.state and b.checks == a.checks and b.warnings == a.warnings


@pytest.mark.parametrize("seed", [3, 4, 11])
def test_processes_give_the_threads_trace_state_and_check_bit_for_bit(seed):
    cfg = SMALL.with_(seed=seed)
    threads = run_script(deterministic_script(cfg))
    procs = run_processes(deterministic_script(cfg))
    assert threads.steps > 1000
    same(threads, procs)
    assert not mine() and no_children_left()


def test_pct_and_more_cpus_too():
    # 3 CPUs, failing atomic and sleeping table allocations (the slab's failslab stream moves with
    # control), migrations after sleeps, cache-only slots for reclaim, several orders
    cfg = Config(cpus=3, size="512K", slots_per_cluster=8, orders="0:0.7,1:0.2,2:0.1", atomic_fail=0.3,
                 sleep_fail=0.2, migrate=0.5, seed=2, fill=0.8, ops=600, cache_only=0.3)
    same(run_script(deterministic_script(cfg), policy=PCTPolicy(2, 3, 3000)),
         run_processes(deterministic_script(cfg), policy=PCTPolicy(2, 3, 3000)))


def test_a_recording_made_with_processes_replays_in_threads(tmp_path):
    path = tmp_path / "p.race"
    run, text = run_deterministic_processes(SMALL, record=str(path))
    assert path.read_text() == text and text.startswith("# shmswap-script 2")
    _, threads_text = run_deterministic(SMALL)
    assert text == threads_text                      # the same recording, byte for byte
    again = run_script(text)
    assert again.ok, again.failures
    assert again.state == run.state and again.trace == run.trace


class DieAt(RandomPolicy):
    """Kills the task process that evaluates step ``at`` (as a segfault would)."""

    def __init__(self, seed: int, at: int, driver: int) -> None:
        super().__init__(seed)
        self.at, self.driver = at, driver

    def choose(self, sched, runnable, cur):
        if sched.step == self.at and os.getpid() != self.driver:
            os._exit(3)
        return super().choose(sched, runnable, cur)


class StallAt(DieAt):
    def choose(self, sched, runnable, cur):
        if sched.step == self.at and os.getpid() != self.driver:
            time.sleep(60)
        return RandomPolicy.choose(self, sched, runnable, cur)


def test_a_dead_task_process_stops_the_run_and_leaves_nothing():
    t0 = time.monotonic()
    run = run_processes(deterministic_script(SMALL), policy=DieAt(3, 200, os.getpid()))
    assert run.failure_kind == "died" and "died (exit status 3)" in run.failure, run.failure
    assert not run.ok and time.monotonic() - t0 < 20
    assert not mine() and no_children_left()


def test_a_stuck_task_process_is_declared_stuck():
    t0 = time.monotonic()
    run = run_processes(deterministic_script(SMALL), policy=StallAt(3, 100, os.getpid()), stall_s=1.0)
    assert run.failure_kind == "stuck" and "no scheduling step for 1 s" in run.failure, run.failure
    assert time.monotonic() - t0 < 20
    assert not mine() and no_children_left()


def test_only_workload_scripts_run_as_processes():
    with pytest.raises(ScheduleFailure, match="workload scripts only"):
        run_processes("config cpus=2 size=64K slots_per_cluster=8 orders=0:1\ncpu0: alloc\n")
    assert not mine()


def test_a_stop_signal_ends_the_processes_in_order_and_a_second_stops_the_schedule():
    run, text = run_deterministic_processes(SMALL, stop=[signal.SIGTERM])
    assert run.failure is None and run.ok and text == ""      # ended in order, unrecorded
    assert run.checks[-1]["violations"] == []
    run, _ = run_deterministic_processes(SMALL, stop=[signal.SIGINT, signal.SIGINT])
    assert run.failure_kind == "interrupted" and run.failure.startswith("interrupted by SIGINT and SIGINT")
    assert mine() == [] and no_children_left()
