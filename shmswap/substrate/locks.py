"""Lock classes and lockstat: the names under which every lock's contention is counted (DESIGN §3).

The lock itself is the C module's (``shmswap._prim``): a word in a shared segment, taken with a
short spin, then yield and futex wait.  The C call counts, per worker and per class,
acquisitions, contentions (first try failed), trylock failures and the total and maximum wait in
ns, straight into the worker's lockstat block in the workers segment: one writer per counter, no
Python on the counting path.  This module names the classes and reads the blocks back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

__all__ = ["LockClass", "N_CLASSES", "LOCKSTAT_FIELDS", "LockStat", "lockstat_by_class"]


class LockClass(IntEnum):
    """Lock classes, as lockdep would name them."""

    SI_LOCK = 0              # si->lock: the cluster lists
    CI_LOCK = 1              # ci->lock: one per cluster
    LOCAL_LOCK = 2           # percpu_swap_cluster.lock, one per CPU
    GLOBAL_CLUSTER_LOCK = 3  # si->global_cluster_lock (HDD)
    SWAP_AVAIL_LOCK = 4      # swap_avail_lock
    SLAB_LOCK = 5            # the swap_table kmem_cache's lock (freelist, pages)
    RCU_GP_LOCK = 6          # serialises grace periods
    HANDOFF_LOCK = 7         # the cross-CPU free ring
    FOLIO_LOCK = 8           # folio_trylock in reclaim

    @property
    def label(self) -> str:
        return self.name.lower()


N_CLASSES = len(LockClass)
LOCKSTAT_FIELDS = ("acquisitions", "contentions", "trylock_failures", "wait_ns_total", "wait_ns_max")


@dataclass(frozen=True)
class LockStat:
    """lockstat figures of one lock class, summed over workers (max for wait_ns_max)."""

    acquisitions: int = 0
    contentions: int = 0
    trylock_failures: int = 0
    wait_ns_total: int = 0
    wait_ns_max: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in LOCKSTAT_FIELDS}


def lockstat_by_class(blocks: np.ndarray) -> dict[str, LockStat]:
    """Sum per-worker blocks shaped [workers][N_CLASSES][5] into one LockStat per class."""
    blocks = np.asarray(blocks).reshape(-1, N_CLASSES, len(LOCKSTAT_FIELDS))
    sums = blocks.sum(axis=0)
    maxes = blocks.max(axis=0) if len(blocks) else sums
    out = {}
    for cls in LockClass:
        row = sums[cls]
        out[cls.label] = LockStat(int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(maxes[cls][4]))
    return out
