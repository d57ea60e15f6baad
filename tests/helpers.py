"""Helpers shared by the test modules (importable: tests/ is on sys.path through its conftest)."""

from __future__ import annotations


def walk(system, lst: int) -> list[int]:
    """Cluster indices on list ``lst``, head to tail; the head's length must agree."""
    out = []
    c = int(system.shm.dev["heads"][lst][0])
    while c != -1:
        out.append(c)
        c = int(system.shm.clu["next"][c])
    assert len(out) == int(system.shm.dev["heads"][lst][2])
    return out
