"""Test-only faults that prove the checker can fail (DESIGN §8)."""

from __future__ import annotations

from .cluster import C_FLAGS, CLUSTER_FLAG_NONE, CW, ci_trylock, ci_unlock, list_del, list_of

__all__ = ["lose_cluster"]


def lose_cluster(si) -> int:
    """``--inject-bug lose-cluster``: take one listed cluster off its list, leave no record."""
    for ci in range(si.nr_clusters):
        if si.cq[ci * CW + C_FLAGS] != CLUSTER_FLAG_NONE and ci_trylock(si, ci):
            si.si_lock()
            list_del(si, list_of(si, ci), ci)
            si.si_unlock()
            si.cq[ci * CW + C_FLAGS] = CLUSTER_FLAG_NONE
            ci_unlock(si, ci)
            return ci
    return -1
