"""The task that runs an allocation, the CPU it runs on, and where it wakes after sleeping.

DESIGN §1: worker *i* is CPU *i* and is also the one task that runs there.  Inside an allocation
the task can leave its CPU only while it sleeps for a table (every lock dropped); on waking, the
migration policy picks the CPU it now runs on, and every per-CPU access until the end of that
allocation call is that CPU's.  The next operation starts on the home CPU again.

The migration policy is seeded: ``--migrate P`` is the probability of moving after a sleep,
``--migrate-to random|N`` where to.  Tests replace ``Task.migrate_hook`` to force a destination.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Task", "MigrationPolicy"]


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
    """``current``: a worker (the lock owner) and the CPU it runs on right now."""

    def __init__(self, wid: int, home_cpu: int | None = None, migration: MigrationPolicy | None = None) -> None:
        self.wid = wid
        self.home_cpu = wid if home_cpu is None else home_cpu
        self.cpu = self.home_cpu
        self.migration = migration or MigrationPolicy(1)
        self.migrate_hook: Callable[[int], int] | None = None

    def start_op(self) -> None:
        """A new operation starts on the home CPU."""
        self.cpu = self.home_cpu

    def wake_after_sleep(self) -> int:
        """Pick the CPU this task wakes on after sleeping; returns it (also in ``self.cpu``)."""
        hook = self.migrate_hook
        self.cpu = hook(self.cpu) if hook is not None else self.migration.wake_cpu(self.cpu)
        return self.cpu
