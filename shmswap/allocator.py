"""The swap-slot allocator: mm/swapfile.c's allocation half, as at Linux 6.18 with the seed.

Design essay.  ``folio_alloc_swap`` takes the local lock of the CPU the task runs on, tries the
per-CPU fast path (``swap_alloc_fast``: the cluster this CPU last allocated from, at its cached
``offset``) and falls back to the slow path (``swap_alloc_slow`` → ``cluster_alloc_swap_entry``),
which searches the cluster lists in the kernel's order (reference §4.4):

    HDD: the global cluster (global_cluster_lock held throughout)
    free_clusters first if the device discards     nonfull_clusters[order] (all)
    free_clusters                                   one FULL cluster reclaimed if swap is > 50% full
    one frag_clusters[order]                        order 0 only: steal from higher orders' frag, nonfull

Every list step isolates a cluster with ``isolate_lock_cluster`` (trylock, skip busy ones); a
cluster taken from ``free_clusters`` has no table and gets one from the variant's
``swap_cluster_alloc_table``, which may sleep and migrate (alloc_table.py).  The scan of one
cluster (``alloc_swap_scan_cluster``) always ends by relocating the cluster to the list its count
calls for, unlocking it, and rewriting this CPU's cache (or, on HDD, the global cursor).

What is simplified, and why:
* One device per run, so the avail list is a flag under ``swap_avail_lock`` and ``plist_requeue``
  has nothing to rotate; ``swp_entry_t`` is the slot offset.
* Discard never runs inside the allocator: 6.18.0's call of ``swap_do_scheduled_discard`` from
  ``cluster_alloc_swap_entry`` sleeps under the local lock (reference §10 W6), a bug fixed by
  "mm, swap: do not perform synchronous discard during allocation" (6.18.y); the model follows the
  fix: ``folio_alloc_swap`` runs ``swap_sync_discard`` after unlocking and retries order 0.
* ``alloc_swap_scan_list`` with ``scan_all`` is bounded by the list's length at entry plus one:
  in the kernel a list whose every cluster fails (after swapoff cleared WRITEOK) cycles until
  other CPUs' frees move the clusters on (reference §4.5); a single-process run would spin forever.
* ``mem_cgroup`` charging, zswap, zeromap and swap count continuations are not modelled.
"""

from __future__ import annotations

import errno

from .cluster import (
    C_COUNT,
    C_ORDER,
    CW,
    ci_lock,
    ci_unlock,
    cluster_is_usable,
    cluster_offset,
    isolate_lock_cluster,
    lockdep_assert_held,
    relocate_cluster,
    swap_cluster_lock,
    swap_cluster_unlock,
    swap_do_scheduled_discard,
)
from .device import (
    SWP_BLKDEV,
    SWP_PAGE_DISCARD,
    SWP_SOLIDSTATE,
    SWP_WRITEOK,
    get_swap_device_info,
    put_swap_device,
    swap_usage_add,
    swap_usage_in_pages,
    vm_swap_full,
)
from .layout import LIST_FREE, LIST_FULL, list_frag, list_nonfull
from .locks import LockClass
from .preempt import Point, sched_point
from .stats import Stat
from .swap_cache import swap_cache_add_folio, swap_cache_del_folio, swap_cache_get_folio
from .swap_free import SWAP_HAS_CACHE, TTRS_ANYWAY, TTRS_FULL, TTRS_UNMAPPED

__all__ = [
    "folio_alloc_swap", "swap_alloc_fast", "swap_alloc_slow", "cluster_alloc_swap_entry",
    "alloc_swap_scan_list", "alloc_swap_scan_cluster", "cluster_scan_range", "cluster_reclaim_range",
    "cluster_alloc_range", "swap_range_alloc", "swap_reclaim_full_clusters", "__try_to_reclaim_swap",
    "get_swap_page_of_type", "swap_sync_discard", "swap_discard_work", "swap_reclaim_work",
    "flush_scheduled_work",
]

_RECLAIM_RETRIES = 8


def folio_alloc_swap(si, folio: int) -> int:
    """Models ``folio_alloc_swap()`` (with [fix-discard]): slots for a locked folio.

    Returns the first slot (the folio is then in the swap cache) or a negative errno.
    """
    order = si.folios.order(folio)
    if (1 << order) > si.spc:
        si.warn(f"folio_alloc_swap: order {order} exceeds the cluster size")
        return -errno.EINVAL
    task = si.task
    while True:
        task.start_op()
        si.set_rec_cpu(task.cpu)
        si.local_lock(task.cpu)
        entry = swap_alloc_fast(si, order) if si.variant.percpu.enabled else 0
        if not entry:
            entry = swap_alloc_slow(si, order)
        si.local_unlock(task.cpu)      # of the CPU the task ended on
        if entry or order or not swap_sync_discard(si):
            break
    si.set_rec_cluster(-1)
    if not entry:
        si.stat(Stat.ALLOC_FAILED)
        return -errno.ENOMEM
    swap_cache_add_folio(si, folio, entry)
    si.stat(Stat.ALLOC)
    return entry


def swap_alloc_fast(si, order: int) -> int:
    """Models ``swap_alloc_fast()``: allocate from this CPU's cached cluster."""
    cpu = si.task.cpu
    if not si.pcp_si(cpu, order):
        return 0
    offset = si.pcp_offset(cpu, order)
    if not offset or not get_swap_device_info(si):
        return 0
    found = 0
    ci = swap_cluster_lock(si, offset)
    if cluster_is_usable(si, ci, order):
        if not si.cq[ci * CW + C_COUNT]:
            offset = cluster_offset(si, ci)
        found = alloc_swap_scan_cluster(si, ci, offset, order, SWAP_HAS_CACHE)
        if found:
            si.stat(Stat.FAST_HIT)
    else:
        swap_cluster_unlock(si, ci)
    put_swap_device(si)
    return found


def swap_alloc_slow(si, order: int) -> int:
    """Models ``swap_alloc_slow()`` for the one device on the avail list."""
    si.stat(Stat.SLOW_PATH)
    si.devr.lock(16, LockClass.SWAP_AVAIL_LOCK)
    on_avail = si.devq[si.d_on_avail]
    si.devr.unlock(16, LockClass.SWAP_AVAIL_LOCK)
    if not on_avail or not get_swap_device_info(si):
        return 0
    offset = cluster_alloc_swap_entry(si, order, SWAP_HAS_CACHE)
    put_swap_device(si)
    return offset


def cluster_alloc_swap_entry(si, order: int, usage: int) -> int:
    """Models ``cluster_alloc_swap_entry()``: the ordered search (reference §4.4)."""
    flags = si.devq[si.d_flags]
    if order and not flags & SWP_BLKDEV:
        return 0
    ssd = flags & SWP_SOLIDSTATE
    discard = flags & SWP_PAGE_DISCARD
    pmd = si.pmd_order
    found = 0
    if not ssd:
        si.global_cluster_lock()
        offset = si.devq[si.d_global_next + order]
        if offset:
            ci = swap_cluster_lock(si, offset)
            if cluster_is_usable(si, ci, order):
                if not si.cq[ci * CW + C_COUNT]:
                    offset = cluster_offset(si, ci)
                found = alloc_swap_scan_cluster(si, ci, offset, order, usage)
            else:
                swap_cluster_unlock(si, ci)
    if not found:
        found = _new_cluster(si, order, usage, discard, pmd)
    if not ssd:
        si.global_cluster_unlock()
    return found


def _new_cluster(si, order: int, usage: int, discard: int, pmd: int) -> int:
    """The ``new_cluster:`` part of ``cluster_alloc_swap_entry``."""
    if discard and (found := alloc_swap_scan_list(si, LIST_FREE, order, usage, False)):
        return found
    if order < pmd and (found := alloc_swap_scan_list(si, list_nonfull(order), order, usage, True)):
        return found
    if not discard and (found := alloc_swap_scan_list(si, LIST_FREE, order, usage, False)):
        return found
    if vm_swap_full(si):
        swap_reclaim_full_clusters(si, False)
    if order < pmd and (found := alloc_swap_scan_list(si, list_frag(order), order, usage, False)):
        return found
    if order:
        return 0
    for o in range(1, si.nr_orders):
        if found := alloc_swap_scan_list(si, list_frag(o), 0, usage, True):
            return found
        if found := alloc_swap_scan_list(si, list_nonfull(o), 0, usage, True):
            return found
    return 0


def alloc_swap_scan_list(si, lst: int, order: int, usage: int, scan_all: bool) -> int:
    """Models ``alloc_swap_scan_list()``: isolate clusters off ``lst`` and scan each."""
    budget = si.devq[si.d_heads + 3 * lst + 2] + 1
    found = 0
    while budget > 0:
        budget -= 1
        ci = isolate_lock_cluster(si, lst, order)
        if ci < 0:
            break
        found = alloc_swap_scan_cluster(si, ci, cluster_offset(si, ci), order, usage)
        if found or not scan_all:
            break
    return found


def alloc_swap_scan_cluster(si, ci: int, offset: int, order: int, usage: int) -> int:
    """Models ``alloc_swap_scan_cluster()``: find 2^order free slots in a locked cluster.

    Always relocates and unlocks the cluster, then rewrites the cache: this CPU's offset[order]
    (SSD; even when nothing was found, which clears it) or the global cursor (HDD).
    """
    lockdep_assert_held(si, ci)
    nr = 1 << order
    start = cluster_offset(si, ci)
    end = min(start + si.spc, si.max)
    b = ci * CW
    cq = si.cq
    found = nxt = 0
    if end >= nr and cq[b + C_COUNT] + nr <= si.spc:
        end -= nr
        while offset <= end:
            ok, need_reclaim = cluster_scan_range(si, ci, offset, nr)
            if not ok:
                offset += nr
                continue
            if need_reclaim:
                ret = cluster_reclaim_range(si, ci, offset, offset + nr)
                if not cluster_is_usable(si, ci, order):
                    break
                if not cq[b + C_COUNT]:
                    offset = start
                if not ret:
                    offset += nr
                    continue
            if not cluster_alloc_range(si, ci, offset, usage, order):
                break
            found = offset
            offset += nr
            if cq[b + C_COUNT] < si.spc and offset <= end:
                nxt = offset
            break
    relocate_cluster(si, ci)
    swap_cluster_unlock(si, ci)
    if si.ssd:
        if si.variant.percpu.enabled:
            si.pcp_set(si.task.cpu, order, nxt)
    else:
        si.devq[si.d_global_next + order] = nxt
    return found


def cluster_scan_range(si, ci: int, start: int, nr: int) -> tuple[bool, bool]:
    """Models ``cluster_scan_range()``: (all slots usable, some need reclaim first)."""
    if not si.cq[ci * CW + C_COUNT]:
        return True, False
    m = si.map
    need_reclaim = False
    full = None
    for off in range(start, start + nr):
        v = m[off]
        if v == 0:
            continue
        if v == SWAP_HAS_CACHE:
            if full is None:
                full = vm_swap_full(si)
            if not full:
                return False, False
            need_reclaim = True
            continue
        return False, False
    return True, need_reclaim


def cluster_reclaim_range(si, ci: int, start: int, end: int) -> bool:
    """Models ``cluster_reclaim_range()``: drop ci->lock, reclaim cache-only slots, relock."""
    m = si.map
    offset = start
    ci_unlock(si, ci)
    sched_point(Point.RECLAIM_WINDOW, ci, start)
    while offset < end:
        v = m[offset]
        if v == 0:
            offset += 1
        elif v == SWAP_HAS_CACHE:
            n = __try_to_reclaim_swap(si, offset, TTRS_ANYWAY)
            if n <= 0:
                break
            offset += n
        else:
            break
    ci_lock(si, ci)
    return all(m[off] == 0 for off in range(start, end))


def cluster_alloc_range(si, ci: int, start: int, usage: int, order: int) -> bool:
    """Models ``cluster_alloc_range()``: the only SWP_WRITEOK test on the folio path."""
    lockdep_assert_held(si, ci)
    if not si.devq[si.d_flags] & SWP_WRITEOK:
        return False
    nr = 1 << order
    b = ci * CW
    if not si.cq[b + C_COUNT]:
        si.cq[b + C_ORDER] = order
    m = si.map
    m[start:start + nr] = bytes((usage,)) * nr
    swap_range_alloc(si, nr)
    si.cq[b + C_COUNT] += nr
    return True


def swap_range_alloc(si, nr: int) -> None:
    """Models ``swap_range_alloc()``."""
    if swap_usage_add(si, nr) and vm_swap_full(si):
        si.devr.fetch_add(si.d_reclaim_work, 1)      # schedule_work(&si->reclaim_work)
    si.devr.fetch_add(si.d_nr_swap, -nr)


def swap_reclaim_full_clusters(si, force: bool) -> None:
    """Models ``swap_reclaim_full_clusters()``: free the cache-only slots of FULL clusters."""
    from .cluster import C_FLAGS, CLUSTER_FLAG_NONE
    si.stat(Stat.RECLAIM_FULL)
    to_scan = swap_usage_in_pages(si) // si.spc if force else 1
    m = si.map
    while (ci := isolate_lock_cluster(si, LIST_FULL, 0)) >= 0:
        offset = cluster_offset(si, ci)
        end = min(si.max, offset + si.spc)
        to_scan -= 1
        while offset < end:
            if m[offset] == SWAP_HAS_CACHE:
                ci_unlock(si, ci)
                sched_point(Point.RECLAIM_WINDOW, ci, offset)
                n = __try_to_reclaim_swap(si, offset, TTRS_ANYWAY)
                ci_lock(si, ci)
                if n:
                    offset += abs(n)
                    continue
            offset += 1
        if si.cq[ci * CW + C_FLAGS] == CLUSTER_FLAG_NONE:
            relocate_cluster(si, ci)
        swap_cluster_unlock(si, ci)
        si.set_rec_cluster(-1)
        if to_scan <= 0:
            break


def __try_to_reclaim_swap(si, offset: int, flags: int) -> int:
    """Models ``__try_to_reclaim_swap()``: >0 pages reclaimed, <0 folio busy, 0 no folio.

    ``folio_mapped`` is always false in the model (a swap-cache folio being reclaimed has been
    unmapped); the "again" loop is bounded.
    """
    folios = si.folios
    for _ in range(_RECLAIM_RETRIES):
        folio = swap_cache_get_folio(si, offset)
        if folio < 0:
            return 0
        nr = 1 << folios.order(folio)
        if not folios.folio_trylock(folio):
            folios.folio_put(folio)
            return -nr
        if not folios.folio_matches_swap_entry(folio, offset):
            folios.folio_unlock(folio)
            folios.folio_put(folio)
            continue
        start = folios.swap(folio)
        need = bool(flags & (TTRS_ANYWAY | TTRS_UNMAPPED)) or bool(flags & TTRS_FULL and vm_swap_full(si))
        ret = -nr
        if need:
            ci = swap_cluster_lock(si, start)
            only_cache = all(si.map[s] == SWAP_HAS_CACHE for s in range(start, start + nr))
            swap_cluster_unlock(si, ci)
            if only_cache:
                swap_cache_del_folio(si, folio)
                ret = nr
                si.stat(Stat.RECLAIMED_SLOTS, nr)
        folios.folio_unlock(folio)
        folios.folio_put(folio)
        return ret
    return 0


def get_swap_page_of_type(si) -> int:
    """Models ``get_swap_page_of_type()`` (hibernation), with the seed's local lock.

    Kept as the kernel writes it, including its ``atomic_long_dec(&nr_swap_pages)`` on top of the
    one ``swap_range_alloc`` already did (reference §4.9): the checker's I-nr-swap shows the
    difference.
    """
    offset = 0
    if get_swap_device_info(si):
        if si.devq[si.d_flags] & SWP_WRITEOK:
            task = si.task
            task.start_op()
            si.local_lock(task.cpu)
            offset = cluster_alloc_swap_entry(si, 0, 1)
            si.local_unlock(task.cpu)
            si.set_rec_cluster(-1)
            if offset:
                si.devr.fetch_add(si.d_nr_swap, -1)
        put_swap_device(si)
    return offset


def swap_sync_discard(si) -> bool:
    """Models ``swap_sync_discard()`` of [fix-discard]: discard now, outside the local lock."""
    si.devr.lock(16, LockClass.SWAP_AVAIL_LOCK)
    on_avail = si.devq[si.d_on_avail]
    si.devr.unlock(16, LockClass.SWAP_AVAIL_LOCK)
    ret = False
    if on_avail and get_swap_device_info(si):
        if si.devq[si.d_flags] & SWP_PAGE_DISCARD:
            ret = swap_do_scheduled_discard(si)
        put_swap_device(si)
    return ret


def swap_discard_work(si) -> bool:
    """Models ``swap_discard_work()``: the discard workqueue item."""
    si.devr.store(si.d_discard_work, 0)
    return swap_do_scheduled_discard(si)


def flush_scheduled_work(si) -> None:
    """``flush_work`` of both work items: run whichever a free or an allocation scheduled."""
    if si.devr.load(si.d_discard_work):
        swap_discard_work(si)
    if si.devr.load(si.d_reclaim_work):
        swap_reclaim_work(si)


def swap_reclaim_work(si) -> None:
    """Models ``swap_reclaim_work()``: reclaim every FULL cluster's cache-only slots."""
    si.devr.store(si.d_reclaim_work, 0)
    swap_reclaim_full_clusters(si, True)

