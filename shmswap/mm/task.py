"""``current``: the task that runs an allocation, the CPU it runs on, and where it wakes.

DESIGN §1: worker *i* is CPU *i* and is also the one task that runs there.  Inside an allocation
the task can leave its CPU only while it sleeps for a table (every lock dropped); on waking, the
migration policy picks the CPU it now runs on, and every per-CPU access until the end of that
allocation call is that CPU's.  The next operation starts on the home CPU again.

``Current`` is one process's ``current``: the task now running in this process, its worker
record (the "in progress" words the checker and the watchdog read), its statistics counters and
the WARNs it met.  A process that plays several CPUs (the single-process runner, the tests)
switches it with ``SwapSystem.switch_to``.

The migration policy is seeded: ``--migrate P`` is the probability of moving after a sleep,
``--migrate-to random|N`` where to.  An observer's ``wake_cpu`` (a fault plan, the deterministic
scheduler) may choose the CPU instead.
"""

from __future__ import annotations

import os
import random

from ..substrate.observe import Observers
from ..substrate.state import WORKER, WREC, SwapShm
from ..substrate.stats import Stat

__all__ = ["Task", "MigrationPolicy", "Current", "REC_OP", "REC_CPU", "REC_CLUSTER", "REC_EXITING",
           "REC_DELAYING"]

_WARNINGS = int(Stat.WARNINGS)
# Word indices in a worker's "in progress" record (generated from state.WORKER_REC).
REC_OP, REC_CPU, REC_CLUSTER, _REC_PID, _REC_REF = WREC.op, WREC.cpu, WREC.cluster, WREC.pid, WREC.ref
REC_EXITING, REC_DELAYING = WREC.exiting, WREC.delaying


class MigrationPolicy:
    """Where a task wakes after the sleeping table allocation."""

    def __init__(self, ncpus: int, probability: float = 0.0, to: str = "random", seed: int = 0) -> None:
        self.ncpus = ncpus
        self.probability = probability
        self.to = to
        self.rng = random.Random(seed)

    def wake_cpu(self, cpu: int) -> int:
        if self.ncpus < 2 or not self.probability or self.rng.random() >= self.probability:
            return cpu
        if self.to == "random":
            other = self.rng.randrange(self.ncpus - 1)
            return other if other < cpu else other + 1
        return int(self.to)


class Task:
    """A worker (the lock owner) and the CPU it runs on right now."""

    def __init__(self, wid: int, home_cpu: int | None = None, migration: MigrationPolicy | None = None) -> None:
        self.wid = wid
        self.home_cpu = wid if home_cpu is None else home_cpu
        self.cpu = self.home_cpu
        self.migration = migration or MigrationPolicy(1)
        # PF_MEMALLOC and the sink of its nested swap-outs (--sleep-reclaim, mm/vmscan.py); None: none
        self.reclaim = None
        # Kept here while another task is current in this process (Current.set_task swaps them):
        # a task preempted between its allocation and its use of alloc_si must find its own.
        self.alloc_si = None
        self.reader_si = None
        self.read_foreign = False

    def start_op(self) -> None:
        """A new operation starts on the home CPU."""
        self.cpu = self.home_cpu


class Current:
    """This process's ``current``: the running task, its worker record, counters and WARNs."""

    task: Task | None = None

    def __init__(self, shm: SwapShm, observers: Observers) -> None:
        self.wq, self.wr = shm.wq, shm.wr
        self.obs = observers
        self.warnings: list[str] = []
        self.alloc_si = None          # the device the last successful allocation came from (its type)
        self.reader_si = None         # the device whose table the lockless reader in its window loaded
        self.read_foreign = False     # the oracle saw that reader read a folio cached for another entry
        self.stat_base = self.rec_base = self.ref_off = 0
        self.wid = -1

    def set_task(self, task: Task) -> None:
        """Make ``task`` this process's current task (its record, counters and device reference)."""
        old = self.task
        if old is not None:
            old.alloc_si, old.reader_si, old.read_foreign = self.alloc_si, self.reader_si, self.read_foreign
        self.alloc_si, self.reader_si, self.read_foreign = task.alloc_si, task.reader_si, task.read_foreign
        self.task = task
        self.wid = task.wid
        self.stat_base = task.wid * WORKER.size + WORKER.stats
        self.rec_base = task.wid * WORKER.size + WORKER.rec
        self.ref_off = (self.rec_base + _REC_REF) * 8
        self.wq[self.rec_base + _REC_PID] = os.getpid()

    def stat(self, counter: int, n: int = 1) -> None:
        """Count ``n`` at statistics counter ``counter`` (one writer: a plain store)."""
        self.wq[self.stat_base + counter] += n

    def warn(self, message: str) -> None:
        """WARN_ON / VM_WARN_ON: count it (a violation unless expected), keep it, tell observers."""
        self.wq[self.stat_base + _WARNINGS] += 1
        self.warnings.append(message)
        for hook in self.obs.warn:
            hook(self.wid, message)

    def set_rec_cluster(self, ci: int) -> None:
        """The cluster this task has isolated in its current operation (-1 none)."""
        self.wq[self.rec_base + REC_CLUSTER] = ci

    def set_rec_cpu(self, cpu: int) -> None:
        self.wq[self.rec_base + REC_CPU] = cpu

    def set_rec_op(self, op: int) -> None:
        self.wq[self.rec_base + REC_OP] = op

    def set_rec_exiting(self, swp: int) -> None:
        """A swap entry of the process this task's CPU ends next (0: none); see ``exiting``."""
        self.wq[self.rec_base + REC_EXITING] = swp

    def exiting(self, wid: int) -> int:
        """The swap entry worker ``wid`` published with ``set_rec_exiting`` (0: none)."""
        return int(self.wq[wid * WORKER.size + WORKER.rec + REC_EXITING])

    def set_rec_delaying(self, on: bool) -> None:
        """This task's reader is (or no longer is) in a long read-side delay (checks/delays.py)."""
        self.wq[self.rec_base + REC_DELAYING] = int(on)

    def delaying(self, wid: int) -> bool:
        return bool(self.wq[wid * WORKER.size + WORKER.rec + REC_DELAYING])

    def wake_after_sleep(self) -> int:
        """Pick the CPU the task wakes on after sleeping; returns it (also in ``task.cpu``).

        An observer's ``wake_cpu`` decides first (a fault plan, a scheduler); otherwise the
        task's seeded migration policy.
        """
        task = self.task
        cpu = task.cpu
        for hook in self.obs.wake_cpu:
            chosen = hook(self.wid, cpu)
            if chosen is not None:
                task.cpu = chosen
                return chosen
        task.cpu = task.migration.wake_cpu(cpu)
        return task.cpu
