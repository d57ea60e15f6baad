"""``struct percpu_swap_cluster``: each CPU's cluster cache and the local lock that guards it.

Models the per-CPU area of mm/swapfile.c: ``percpu_swap_cluster.si[order]`` (the cached device's
type + 1, 0 = NULL: one pair per CPU for all devices), ``percpu_swap_cluster.offset[order]``
(where the next allocation of that order
should look) and ``local_lock(&percpu_swap_cluster.lock)``, held across an allocation on the CPU;
and ``flush_percpu_swap_cluster``, which swapoff uses to clear ``si[]`` on every CPU while
leaving ``offset[]`` stale, exactly as the kernel does.

Each CPU's record sits on its own cache lines (layout.percpu_dtype); the word indices come from
the generated record.
"""

from __future__ import annotations

from ..substrate.layout import Record
from ..substrate.locks import LockClass
from ..substrate.state import SwapShm

__all__ = ["PercpuSwapCluster"]

_LOCAL_LOCK = int(LockClass.LOCAL_LOCK)


class PercpuSwapCluster:
    """One process's view of every CPU's ``percpu_swap_cluster``."""

    def __init__(self, shm: SwapShm) -> None:
        rec = Record(shm.pcp_dt)
        self.shm = shm               # numpy views are read through it, so closing it lets them go
        self.pq, self.pr = shm.pq, shm.pr
        self.words = rec.size
        self.si_base = rec.si
        self.offset_base = rec.offset
        self.lock_word = rec.lock

    def si(self, cpu: int, order: int) -> int:
        """``per_cpu(percpu_swap_cluster.si[order], cpu)``: the cached device's type + 1, 0 NULL."""
        return self.pq[cpu * self.words + self.si_base + order]

    def offset(self, cpu: int, order: int) -> int:
        """``per_cpu(percpu_swap_cluster.offset[order], cpu)``."""
        return self.pq[cpu * self.words + self.offset_base + order]

    def set(self, cpu: int, order: int, offset: int, tag: int = 1) -> None:
        """``this_cpu_write`` of ``offset[order]`` and ``si[order]`` (alloc_swap_scan_cluster);
        ``tag`` is the device's type + 1."""
        base = cpu * self.words
        self.pq[base + self.offset_base + order] = offset
        self.pq[base + self.si_base + order] = tag

    def local_lock(self, cpu: int) -> None:
        self.pr.lock((cpu * self.words + self.lock_word) * 8, _LOCAL_LOCK)

    def local_unlock(self, cpu: int) -> None:
        self.pr.unlock((cpu * self.words + self.lock_word) * 8, _LOCAL_LOCK)

    def local_lock_held(self, cpu: int) -> bool:
        return self.pr.held_by_me((cpu * self.words + self.lock_word) * 8)

    def flush(self, tag: int | None = None) -> None:
        """Models ``flush_percpu_swap_cluster()``: ``cmpxchg(si[order], p, NULL)`` on every CPU and
        order for the device whose ``si[]`` value is ``tag`` (type + 1), leaving offset[] stale and
        the other devices' entries alone (a swapoff during a run); ``None``: every device's."""
        if tag is None:
            self.shm.pcp["si"][:] = 0
            return
        pr, words, base = self.pr, self.words, self.si_base
        for cpu in range(len(self.shm.pcp)):
            for order in range(self.shm.pcp["si"].shape[1]):
                pr.cmpxchg(8 * (cpu * words + base + order), tag, 0)
