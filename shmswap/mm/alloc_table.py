"""``swap_cluster_alloc_table``: the two variants, as policy objects (reference §5.2, §5.3).

Both start the same way, under ``ci->lock``, the local lock and (HDD) ``global_cluster_lock``,
with ``ci`` just isolated from ``free_clusters``: an atomic allocation; if that fails, drop every
lock, sleep for a table (the task may migrate), and take the local lock of the CPU it now runs on.

* ``seed`` (patch v2 14/15, the default): re-check the per-CPU cluster of the CPU the task now
  runs on (SSD only; after every sleep, migrated or not) and use it instead if it is usable and
  not full: branch T5.  Otherwise, NULL if the sleep failed (T6b), else relock ``ci`` and install.
  On T5 and T6b the isolated cluster stays flag NONE, count 0, table NULL, on no list: lost until
  swapoff.  The model records each such event (``cluster.lost``) so the checker can attribute it.
* ``merged`` (Linux 6.18, commit 07adc4cf): no per-CPU re-check; relock ``ci``; if the sleep
  failed, put ``ci`` back on ``free_clusters`` and return NULL.

Every branch is counted (``stats.Stat``).
"""

from __future__ import annotations

from ..substrate.layout import DEVICE, LIST_FREE, XDEV_LOG
from ..substrate.preempt import Point, sched_point
from ..substrate.stats import Stat
from .cluster import (
    C_COUNT,
    C_LOST,
    C_TABLE,
    CI_BYTES,
    CW,
    ci_lock,
    ci_unlock,
    cluster_is_usable,
    lockdep_assert_held,
    move_cluster,
    swap_cluster_lock,
    swap_cluster_unlock,
)
from .device import GLOBAL_LOCK_OFF, SI_LOCK_OFF
from .swap import CLUSTER_FLAG_FREE, KernelBug

__all__ = ["SeedAllocTable", "MergedAllocTable", "LOST_T5", "LOST_T6B", "LOST_W12", "LOST_NAMES", "lost_word",
           "decode_lost", "lost_device", "XDEV_TAKEN", "XDEV_UNUSABLE", "XDEV_OUT_OF_RANGE", "XDEV_NAMES",
           "xdev_word", "decode_xdev", "w12_lost_reason", "w12_event_reason"]

LOST_T5, LOST_T6B, LOST_W12 = 1, 2, 3
LOST_NAMES = {LOST_T5: "T5", LOST_T6B: "T6b", LOST_W12: "W12"}

# W12 (reference §10): the seed's re-check read an offset[order] whose si[order] is not the device
# it allocates from.  What it did with it:
XDEV_TAKEN, XDEV_UNUSABLE, XDEV_OUT_OF_RANGE = 1, 2, 3
XDEV_NAMES = {XDEV_TAKEN: "took the cluster at that offset in its own device",
              XDEV_UNUSABLE: "locked the cluster at that offset in its own device (not usable: unlocked)",
              XDEV_OUT_OF_RANGE: "would have locked a cluster past the end of its own device's cluster_info"}


def lost_word(branch: int, wid: int, cpu: int, other: int, tag: int = 0) -> int:
    """Pack a lost-cluster record: branch, worker, CPU, the cluster used instead (T5, W12) + 1, and
    (W12) the si[order] the offset came from (type + 1, 0 NULL)."""
    return branch | (wid << 8) | (cpu << 20) | ((other + 1) << 32) | (tag << 56)


def decode_lost(word: int) -> tuple[int, int, int, int]:
    return word & 0xFF, (word >> 8) & 0xFFF, (word >> 20) & 0xFFF, ((word >> 32) & 0xFFFFFF) - 1


def lost_device(word: int) -> int:
    """The si[order] tag a W12 record names (type + 1, 0 NULL)."""
    return (word >> 56) & 0x7F


def xdev_word(kind: int, wid: int, cpu: int, tag: int, isolated: int) -> int:
    """Pack a W12 event: what happened, worker, CPU, si[order] (type + 1), the isolated cluster + 1."""
    return kind | (wid << 8) | (cpu << 20) | (tag << 32) | ((isolated + 1) << 40)


def decode_xdev(word: int) -> tuple[int, int, int, int, int]:
    return word & 0xFF, (word >> 8) & 0xFFF, (word >> 20) & 0xFFF, (word >> 32) & 0xFF, (word >> 40) - 1


def _dev_name(tag: int) -> str:
    return f"device {tag - 1}" if tag else "no device (si[] NULL: an offset left stale by a swapoff's flush)"


def w12_lost_reason(wid: int, cpu: int, other: int, tag: int) -> str:
    """Why a W12 cluster is lost (the checker's finding text)."""
    return (f"isolated from free_clusters by worker {wid}; its atomic table allocation failed, and after the "
            f"sleep the seed read CPU {cpu}'s offset[order], whose si[order] is {_dev_name(tag)}, and took "
            f"cluster {other} of its own device at that offset (seed W12, cross-device re-check): left flag "
            f"NONE, count 0, table NULL, on no list")


def w12_event_reason(kind: int, wid: int, cpu: int, tag: int, isolated: int, offset: int, spc: int,
                     nr_clusters: int) -> str:
    """A W12 event that lost nothing (the checker's finding text)."""
    return (f"worker {wid}, its table allocation for cluster {isolated} asleep, woke on CPU {cpu} and the seed "
            f"read offset[order] = {offset}, whose si[order] is {_dev_name(tag)}: it {XDEV_NAMES[kind]} "
            f"(cluster {offset // spc}; this device has {nr_clusters})")


def _install(si, ci: int, table: int) -> None:
    """``rcu_assign_pointer(ci->table, table)``, under ``ci->lock`` (reference §9 I-writer-lock)."""
    lockdep_assert_held(si, ci)
    si.cr.store((ci * CW + C_TABLE) * 8, table)


def _free_unused(si, ci: int, table: int) -> None:
    if table >= 0:
        si.slab.free(table)
        si.cur.stat(Stat.TABLE_UNUSED_FREED)
        for hook in si.obs.table_freed_unused:
            hook(si.cur.wid, ci, table)


def _check_entry(si, ci: int) -> None:
    lockdep_assert_held(si, ci)
    cpu = si.cur.task.cpu
    if not si.pcp.local_lock_held(cpu):
        raise KernelBug(f"swap_cluster_alloc_table: local lock of CPU {cpu} not held")


def _table_allocated(si, ci: int, table: int, sleeping: bool) -> None:
    for hook in si.obs.table_alloc:
        hook(si.cur.wid, ci, table, sleeping)


def _atomic_attempt(si, ci: int) -> bool:
    table = si.slab.alloc_atomic(ci)
    if table < 0:
        si.cur.stat(Stat.TABLE_ATOMIC_FAIL)
        return False
    _install(si, ci, table)
    si.cur.stat(Stat.TABLE_ATOMIC)
    _table_allocated(si, ci, table, False)
    return True


def _sleep_for_table(si, ci: int) -> int:
    """Drop ci->lock, global_cluster_lock (HDD), the local lock; sleep; wake, maybe elsewhere.

    Returns the table (or -1) with the local lock of the CPU the task now runs on held, and
    global_cluster_lock on HDD; no cluster lock.
    """
    cur, obs = si.cur, si.obs
    before = cur.task.cpu
    ci_unlock(si, ci)
    if not si.ssd:
        si.global_cluster_unlock()
    si.pcp.local_unlock(before)
    _might_sleep(si, ci, before)
    cur.stat(Stat.SLEEPS)
    for hook in obs.sleep:
        hook(cur.wid, ci, before)
    sched_point(Point.TABLE_SLEEP, ci, before)
    table = si.sleep_alloc(ci)
    if table < 0:
        cur.stat(Stat.SLEEP_FAIL)
    else:
        _table_allocated(si, ci, table, True)
    now = cur.wake_after_sleep()
    cur.set_rec_cpu(now)
    if now != before:
        cur.stat(Stat.MIGRATED)
    for hook in obs.wake:
        hook(cur.wid, now, before)
    sched_point(Point.TABLE_WAKE, now, before)
    si.pcp.local_lock(now)
    if not si.ssd:
        si.global_cluster_lock()
    return table


def _might_sleep(si, ci: int, cpu: int) -> None:
    """``might_sleep()``: no spinlock and no local lock may be held across the sleeping allocation."""
    held = [name for name, yes in (("ci->lock", si.cr.held_by_me(ci * CI_BYTES)),
                                   ("local lock", si.pcp.local_lock_held(cpu)),
                                   ("si->lock", si.devr.held_by_me(SI_LOCK_OFF)),
                                   ("global_cluster_lock", si.devr.held_by_me(GLOBAL_LOCK_OFF))) if yes]
    if held:
        si.cur.warn(f"swap_cluster_alloc_table: sleeping with {', '.join(held)} held (cluster {ci})")


def _already_had_table(si, ci: int) -> None:
    """``WARN_ON_ONCE(cluster_table_is_alloced(ci))``: someone installed a table while this task
    slept, i.e. the cluster it isolated was freed and re-isolated meanwhile (reference §10 W2)."""
    si.cur.stat(Stat.ALREADY_HAD_TABLE)
    si.cur.warn(f"swap_cluster_alloc_table: cluster {ci} already has table {si.cq[ci * CW + C_TABLE]} after the "
                f"sleep (reference §10 W2)")


def _lose(si, ci: int, branch: int, other: int = -1, tag: int = 0) -> None:
    """Record that the seed left ``ci`` isolated on no list (T5, T6b or W12)."""
    si.cq[ci * CW + C_LOST] = lost_word(branch, si.cur.wid, si.cur.task.cpu, other, tag)
    si.cur.stat(Stat.LOST_CLUSTERS)


def _xdev_event(si, kind: int, tag: int, ci: int, offset: int) -> None:
    """Record a W12 event in the device's record: counted, the first XDEV_LOG kept."""
    n = si.devr.fetch_add(8 * DEVICE.xdev, 1)
    if n < XDEV_LOG:
        base = si.xdev_log + 2 * n
        si.devq[base] = xdev_word(kind, si.cur.wid, si.cur.task.cpu, tag, ci)
        si.devq[base + 1] = offset


class SeedAllocTable:
    """``swap_cluster_alloc_table`` as the seed writes it."""

    name = "seed"

    def swap_cluster_alloc_table(self, si, ci: int, order: int) -> int:
        """Models ``swap_cluster_alloc_table()`` of patch v2 14/15 (mm/swapfile.c)."""
        _check_entry(si, ci)
        if _atomic_attempt(si, ci):
            return ci
        table = _sleep_for_table(si, ci)
        # Back to atomic context: the per-CPU cluster of the CPU we now run on (SSD only).  As
        # the seed writes it: offset[order] is read without si[order], so with several devices
        # (or after a swapoff's flush) it may be another device's offset (W12).
        cpu = si.cur.task.cpu
        offset = si.pcp.offset(cpu, order)
        if si.ssd and offset:
            tag = si.pcp.si(cpu, order)
            foreign = tag != si.tag and (tag or len(si.devs) > 1)
            if foreign and offset >> si.spc_shift >= si.nr_clusters:
                # The kernel would lock memory past the end of cluster_info: recorded, not done.
                _xdev_event(si, XDEV_OUT_OF_RANGE, tag, ci, offset)
            else:
                pcp_ci = swap_cluster_lock(si, offset)
                if cluster_is_usable(si, pcp_ci, order) and si.cq[pcp_ci * CW + C_COUNT] < si.spc:
                    si.cur.stat(Stat.USED_PERCPU)
                    if foreign:
                        _xdev_event(si, XDEV_TAKEN, tag, ci, offset)
                        _lose(si, ci, LOST_W12, pcp_ci, tag)
                    else:
                        _lose(si, ci, LOST_T5, pcp_ci)
                    _free_unused(si, ci, table)
                    si.cur.set_rec_cluster(pcp_ci)
                    return pcp_ci
                if foreign:
                    _xdev_event(si, XDEV_UNUSABLE, tag, ci, offset)
                swap_cluster_unlock(si, pcp_ci)
        if table < 0:
            si.cur.stat(Stat.RETURNED_NULL)
            _lose(si, ci, LOST_T6B)
            si.cur.set_rec_cluster(-1)
            return -1
        ci_lock(si, ci)
        if si.cq[ci * CW + C_TABLE] != -1:
            _already_had_table(si, ci)
            _free_unused(si, ci, table)
            return ci
        _install(si, ci, table)
        si.cur.stat(Stat.INSTALLED)
        return ci


class MergedAllocTable:
    """``swap_cluster_alloc_table`` as merged for Linux 6.18."""

    name = "merged"

    def swap_cluster_alloc_table(self, si, ci: int, order: int) -> int:
        """Models ``swap_cluster_alloc_table()`` at commit 07adc4cf (mm/swapfile.c)."""
        _check_entry(si, ci)
        if _atomic_attempt(si, ci):
            return ci
        table = _sleep_for_table(si, ci)
        ci_lock(si, ci)
        if si.cq[ci * CW + C_TABLE] != -1:
            _already_had_table(si, ci)
            _free_unused(si, ci, table)
            return ci
        if table < 0:
            move_cluster(si, ci, LIST_FREE, CLUSTER_FLAG_FREE)
            ci_unlock(si, ci)
            si.cur.stat(Stat.RETURNED_NULL)
            si.cur.set_rec_cluster(-1)
            return -1
        _install(si, ci, table)
        si.cur.stat(Stat.INSTALLED)
        return ci
