"""Helpers shared by the test modules (importable: tests/ is on sys.path through its conftest)."""

from __future__ import annotations

from shmswap.mm.cluster import ci_lock, ci_unlock
from shmswap.substrate.observe import Observer


def walk(system, lst: int) -> list[int]:
    """Cluster indices on list ``lst``, head to tail; the head's length must agree."""
    out = []
    c = int(system.shm.dev["heads"][lst][0])
    while c != -1:
        out.append(c)
        c = int(system.shm.clu["next"][c])
    assert len(out) == int(system.shm.dev["heads"][lst][2])
    return out


def hold_cluster_lock(system, ci: int, held, done) -> None:
    """In a child process: take cluster ``ci``'s lock as worker 1 until ``done`` is set."""
    system.switch_to(system.tasks[1])
    ci_lock(system.si, ci)
    held.set()
    done.wait(20)
    ci_unlock(system.si, ci)


class OnPoint(Observer):
    """Calls ``fn(kind, a, b)`` at every preemption point until ``remove``."""

    def __init__(self, system, fn) -> None:
        self.system = system
        self.fn = fn

    def sched_point(self, kind, a, b):
        self.fn(kind, a, b)

    def remove(self) -> None:
        """Stop calling ``fn`` (and drop it: a closure that names this observer makes a cycle)."""
        if self in self.system.system.observers:
            self.system.system.observers.remove(self)
        self.fn = None
