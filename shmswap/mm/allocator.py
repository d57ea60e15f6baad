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
* Any number of devices (swap types): ``swap_avail_head`` is a plist of types in device 0's record
  under the one ``swap_avail_lock`` (device.py), walked by ``swap_alloc_slow`` with the requeue
  that round-robins equal priorities; ``percpu_swap_cluster.si[order]`` holds the type + 1.
  ``swp_entry_t`` is (type, offset): the allocator returns the offset and leaves the device it
  allocated from in ``current.alloc_si`` (the caller builds the entry).  With one device the slow
  path tests the one ``on_avail`` word, as before.  ``vm_swap_full`` and ``nr_swap_pages`` are kept
  per device (the kernel's are global).
* Discard never runs inside the allocator: 6.18.0's call of ``swap_do_scheduled_discard`` from
  ``cluster_alloc_swap_entry`` sleeps under the local lock (reference §10 W6), a bug fixed by
  "mm, swap: do not perform synchronous discard during allocation" (6.18.y); the model follows the
  fix: ``folio_alloc_swap`` runs ``swap_sync_discard`` after unlocking and retries order 0.
* ``alloc_swap_scan_list`` with ``scan_all`` is bounded by the list's length at entry plus one:
  in the kernel a list whose every cluster fails (after swapoff cleared WRITEOK) cycles until
  other CPUs' frees move the clusters on (reference §4.5); a single-process run would spin forever.
* Reclaim of cache-only slots (``__try_to_reclaim_swap``, the full-cluster reclaim) is in
  reclaim.py; the work items that run discard and reclaim off the allocation path are in work.py.
* ``mem_cgroup`` charging, zswap, zeromap and swap count continuations are not modelled.
"""

from __future__ import annotations

import errno

from ..substrate.layout import LIST_FREE, list_frag, list_nonfull
from ..substrate.preempt import Point, sched_point
from ..substrate.stats import Stat
from .cluster import (
    C_COUNT,
    C_FLAGS,
    C_ORDER,
    C_TABLE,
    CI_BYTES,
    CI_LOCK,
    CW,
    ci_lock,
    ci_unlock,
    cluster_is_usable,
    cluster_offset,
    isolate_lock_cluster,
    lockdep_assert_held,
    relocate_cluster,
    swap_do_scheduled_discard,
)
from .device import (
    get_swap_device_info,
    plist_requeue,
    plist_types,
    put_swap_device,
    swap_usage_add,
    vm_swap_full,
)
from .folio import F_ORDER, FOLIO_WORDS
from .reclaim import __try_to_reclaim_swap, swap_reclaim_full_clusters
from .swap import (
    CLUSTER_FLAG_USABLE,
    NULL_TABLE,
    SWAP_HAS_CACHE,
    SWP_BLKDEV,
    SWP_PAGE_DISCARD,
    SWP_SOLIDSTATE,
    SWP_WRITEOK,
    TTRS_ANYWAY,
)
from .swap_cache import swap_cache_add_folio
from .swap_table import swap_cluster_assert_table_empty
from .task import REC_CLUSTER, REC_CPU

__all__ = [
    "folio_alloc_swap", "swap_alloc_fast", "swap_alloc_slow", "cluster_alloc_swap_entry",
    "alloc_swap_scan_list", "alloc_swap_scan_cluster", "cluster_scan_range", "cluster_reclaim_range",
    "cluster_alloc_range", "swap_range_alloc", "get_swap_page_of_type", "swap_sync_discard",
]

_ALLOC, _ALLOC_FAILED, _FAST_HIT, _SLOW_PATH = (int(s) for s in (Stat.ALLOC, Stat.ALLOC_FAILED, Stat.FAST_HIT,
                                                                 Stat.SLOW_PATH))
_ALLOC_NO_DEVICE = int(Stat.ALLOC_NO_DEVICE)


def folio_alloc_swap(si, folio: int) -> int:
    """Models ``folio_alloc_swap()`` (with [fix-discard]): slots for a locked folio.

    Returns the first slot (the folio is then in the swap cache) or a negative errno; the device
    is left in ``current.alloc_si`` (the entry's type).
    """
    order = si.folios.fq[folio * FOLIO_WORDS + F_ORDER]     # folio_order(), on the hot path
    cur = si.cur
    if (1 << order) > si.spc:
        cur.warn(f"folio_alloc_swap: order {order} exceeds the cluster size")
        return -errno.EINVAL
    task, pcp = cur.task, si.pcp
    percpu = si.variant.percpu.enabled
    wq, rec = cur.wq, cur.rec_base
    while True:
        task.cpu = task.home_cpu                    # a new operation starts on the home CPU
        wq[rec + REC_CPU] = task.cpu
        pcp.local_lock(task.cpu)
        entry = swap_alloc_fast(si, order) if percpu else 0
        if not entry:
            entry = swap_alloc_slow(si, order)
        pcp.local_unlock(task.cpu)      # of the CPU the task ended on
        if entry or order or not swap_sync_discard(si):
            break
    wq[rec + REC_CLUSTER] = -1
    if not entry:
        cur.stat(_ALLOC_FAILED)
        # No device on swap_avail_head and one of them swapped off (--swapoff-every): counted apart
        # from a full swap space (the failure path only).
        if not si.availq[si.avail_base] and not all(d.writeok() for d in si.devs):
            cur.stat(_ALLOC_NO_DEVICE)
        return -errno.ENOMEM
    swap_cache_add_folio(cur.alloc_si, folio, entry)
    wq[cur.stat_base + _ALLOC] += 1
    return entry


def swap_alloc_fast(si, order: int) -> int:
    """Models ``swap_alloc_fast()``: allocate from this CPU's cached cluster."""
    cur = si.cur
    cpu = cur.task.cpu
    pcp = si.pcp
    pq, base = pcp.pq, cpu * pcp.words
    tag = pq[base + pcp.si_base + order]                    # this_cpu_read(percpu_swap_cluster.si[order])
    if not tag:
        return 0
    si = si.devs[tag - 1]
    offset = pq[base + pcp.offset_base + order]             # this_cpu_read(percpu_swap_cluster.offset[order])
    if not offset or not get_swap_device_info(si):
        return 0
    found = 0
    ci = offset >> si.spc_shift
    si.cr.lock(ci * CI_BYTES, CI_LOCK)                      # swap_cluster_lock
    b = ci * CW
    cq = si.cq
    # cluster_is_usable(), inline: listable flag, a table, a compatible order
    if cq[b + C_FLAGS] <= CLUSTER_FLAG_USABLE and cq[b + C_TABLE] != NULL_TABLE and (
            not order or not cq[b + C_COUNT] or order == cq[b + C_ORDER]):
        if not cq[b + C_COUNT]:
            offset = ci << si.spc_shift
        found = alloc_swap_scan_cluster(si, ci, offset, order, SWAP_HAS_CACHE)
        if found:
            cur.alloc_si = si
            cur.wq[cur.stat_base + _FAST_HIT] += 1
    else:
        si.cr.unlock(ci * CI_BYTES, CI_LOCK)
    put_swap_device(si)
    return found


def swap_alloc_slow(si, order: int) -> int:
    """Models ``swap_alloc_slow()``: walk ``swap_avail_head`` in priority order (reference §4.3).

    Each device is requeued behind its equal-priority peers before it is tried (round robin),
    ``swap_avail_lock`` is dropped while it is scanned, a large order never falls through to the
    next device, and the walk restarts from the head when the next device left the list.
    """
    cur = si.cur
    cur.stat(_SLOW_PATH)
    devs = si.devs
    if len(devs) == 1:                      # one device: the plist is its on_avail word
        if not si.on_avail() or not get_swap_device_info(si):
            return 0
        offset = cluster_alloc_swap_entry(si, order, SWAP_HAS_CACHE)
        put_swap_device(si)
        if offset:
            cur.alloc_si = si
        return offset
    base = si.avail_base
    si.swap_avail_lock()
    types = plist_types(si, base)
    i = 0
    budget = 4 * len(devs) + 4              # the kernel relies on failing devices leaving the list
    while i < len(types) and budget > 0:
        budget -= 1
        dev = devs[types[i]]
        nxt = types[i + 1] if i + 1 < len(types) else -1
        plist_requeue(dev, base)
        si.swap_avail_unlock()
        if get_swap_device_info(dev):
            offset = cluster_alloc_swap_entry(dev, order, SWAP_HAS_CACHE)
            put_swap_device(dev)
            if offset:
                cur.alloc_si = dev
                return offset
            if order:
                return 0
        si.swap_avail_lock()
        types = plist_types(si, base)
        if nxt < 0:
            break
        i = types.index(nxt) if nxt in types else 0      # next left the plist: start over
    si.swap_avail_unlock()
    return 0


def cluster_alloc_swap_entry(si, order: int, usage: int) -> int:
    """Models ``cluster_alloc_swap_entry()``: the ordered search (reference §4.4)."""
    flags = si.flags
    if order and not flags & SWP_BLKDEV:
        return 0
    ssd = flags & SWP_SOLIDSTATE
    found = 0
    if not ssd:
        si.global_cluster_lock()
        offset = si.devq[si.global_next + order]
        if offset:
            ci = offset >> si.spc_shift
            ci_lock(si, ci)
            if cluster_is_usable(si, ci, order):
                if not si.cq[ci * CW + C_COUNT]:
                    offset = cluster_offset(si, ci)
                found = alloc_swap_scan_cluster(si, ci, offset, order, usage)
            else:
                ci_unlock(si, ci)
    if not found:
        found = _new_cluster(si, order, usage, flags & SWP_PAGE_DISCARD, si.pmd_order)
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
    budget = si.list_len(lst) + 1
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
    if si.debug_vm:                          # lockdep_assert_held: with --lockdep and in tests
        lockdep_assert_held(si, ci)
    nr = 1 << order
    spc = si.spc
    start = ci << si.spc_shift
    end = min(start + spc, si.max)
    b = ci * CW
    cq = si.cq
    found = nxt = 0
    if end >= nr and cq[b + C_COUNT] + nr <= spc:
        end -= nr
        m = si.map
        while offset <= end:
            if nr == 1 and not m[offset]:
                ok, need_reclaim = True, False              # cluster_scan_range of one free slot
            else:
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
            if cq[b + C_COUNT] < spc and offset <= end:
                nxt = offset
            break
    relocate_cluster(si, ci)
    si.cr.unlock(ci * CI_BYTES, CI_LOCK)                    # swap_cluster_unlock
    if si.ssd:
        if si.variant.percpu.enabled:
            # this_cpu_write(percpu_swap_cluster.offset[order], next), and .si[order]
            pcp = si.pcp
            base = si.cur.task.cpu * pcp.words
            pcp.pq[base + pcp.offset_base + order] = nxt
            pcp.pq[base + pcp.si_base + order] = si.tag
    else:
        si.devq[si.global_next + order] = nxt
    return found


def cluster_scan_range(si, ci: int, start: int, nr: int) -> tuple[bool, bool]:
    """Models ``cluster_scan_range()``: (all slots usable, some need reclaim first)."""
    if not si.cq[ci * CW + C_COUNT]:
        return True, False
    m = si.map
    if nr == 1:
        v = m[start]
        if not v:
            return True, False
        return (True, True) if v == SWAP_HAS_CACHE and vm_swap_full(si) else (False, False)
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
    if not si.flags & SWP_WRITEOK:
        return False
    nr = 1 << order
    b = ci * CW
    cq = si.cq
    if si.debug_vm:
        lockdep_assert_held(si, ci)
        swap_cluster_assert_table_empty(si, ci, start, nr)
    if not cq[b + C_COUNT]:
        cq[b + C_ORDER] = order
    elif order and cq[b + C_ORDER] != order:
        # Reference §9 I-order-0-only-mixing: only order 0 may land in a cluster of another order.
        si.cur.warn(f"cluster_alloc_range: order-{order} allocation at slot {start} in cluster {ci} of order "
                    f"{cq[b + C_ORDER]} with count {cq[b + C_COUNT]} (I-order-0-only-mixing)")
    if nr == 1:
        si.map[start] = usage
    else:
        si.map[start:start + nr] = bytes((usage,)) * nr
    swap_range_alloc(si, nr)
    cq[b + C_COUNT] += nr
    return True


def swap_range_alloc(si, nr: int) -> None:
    """Models ``swap_range_alloc()``."""
    if swap_usage_add(si, nr) and vm_swap_full(si):
        si.schedule_reclaim_work()
    si.nr_swap_pages_add(-nr)


def get_swap_page_of_type(si) -> int:
    """Models ``get_swap_page_of_type()`` (hibernation), with the seed's local lock.

    Kept as the kernel writes it, including its ``atomic_long_dec(&nr_swap_pages)`` on top of the
    one ``swap_range_alloc`` already did (reference §4.9): the checker's I-nr-swap shows the
    difference.
    """
    offset = 0
    if get_swap_device_info(si):
        if si.writeok():
            cur = si.cur
            task = cur.task
            task.start_op()
            si.pcp.local_lock(task.cpu)
            offset = cluster_alloc_swap_entry(si, 0, 1)
            si.pcp.local_unlock(task.cpu)
            cur.set_rec_cluster(-1)
            if offset:
                si.nr_swap_pages_add(-1)
        put_swap_device(si)
    return offset


def swap_sync_discard(si) -> bool:
    """Models ``swap_sync_discard()`` of [fix-discard]: discard now, outside the local lock."""
    ret = False
    for dev in si.devs:
        if dev.on_avail() and get_swap_device_info(dev):
            if dev.flags & SWP_PAGE_DISCARD:
                ret = swap_do_scheduled_discard(dev) or ret
            put_swap_device(dev)
            if ret:
                break
    return ret
