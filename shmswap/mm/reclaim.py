"""Reclaim of swap-cache-only slots: the part of mm/swapfile.c that gives slots back early.

A slot whose only reference is ``SWAP_HAS_CACHE`` (its folio is in the swap cache, no page table
points at the entry) can be reclaimed: delete the folio from the swap cache, which drops the cache
reference and frees the slot.  Three callers do it:

* ``free_swap_and_cache_nr``, when a page-table zap leaves slots cache-only
  (``TTRS_UNMAPPED | TTRS_FULL``);
* the allocator's scan (``cluster_reclaim_range`` in allocator.py) when swap is over half full;
* ``swap_reclaim_full_clusters``: one FULL cluster from the slow path, every FULL cluster from
  the reclaim work item (``swap_reclaim_work``) that a filling allocation schedules.

Models ``__try_to_reclaim_swap``, ``free_swap_and_cache_nr``, ``swap_reclaim_full_clusters`` and
``swap_reclaim_work``.  ``folio_mapped`` is always false in the model (a swap-cache folio being
reclaimed has been unmapped), and the "again" loop is bounded.
"""

from __future__ import annotations

from ..substrate.layout import LIST_FULL
from ..substrate.preempt import Point, sched_point
from ..substrate.stats import Stat
from .cluster import (
    C_FLAGS,
    CW,
    ci_lock,
    ci_unlock,
    cluster_offset,
    isolate_lock_cluster,
    relocate_cluster,
    swap_cluster_lock,
    swap_cluster_unlock,
)
from .device import get_swap_device_info, put_swap_device, swap_usage_in_pages, vm_swap_full
from .swap import CLUSTER_FLAG_NONE, SWAP_HAS_CACHE, TTRS_ANYWAY, TTRS_FULL, TTRS_UNMAPPED
from .swap_cache import swap_cache_del_folio, swap_cache_get_folio
from .swap_free import swap_entries_put_map

__all__ = ["__try_to_reclaim_swap", "free_swap_and_cache_nr", "swap_reclaim_full_clusters",
           "swap_reclaim_work"]

_RECLAIM_RETRIES = 8
_RECLAIMED_SLOTS, _RECLAIM_FULL = int(Stat.RECLAIMED_SLOTS), int(Stat.RECLAIM_FULL)


def __try_to_reclaim_swap(si, offset: int, flags: int) -> int:
    """Models ``__try_to_reclaim_swap()``: >0 pages reclaimed, <0 folio busy, 0 no folio."""
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
                si.cur.stat(_RECLAIMED_SLOTS, nr)
        folios.folio_unlock(folio)
        folios.folio_put(folio)
        return ret
    return 0


def free_swap_and_cache_nr(si, entry: int, nr: int) -> None:
    """Models ``free_swap_and_cache_nr()``: a page-table zap of ``nr`` entries (one cluster).

    Slots left with only SWAP_HAS_CACHE are then reclaimed (``TTRS_UNMAPPED | TTRS_FULL``; the
    model's folios are never mapped, so that is whenever the folio lock can be had); a folio whose
    lock is held, as its owner's is until writeback, stays cache-only for reclaim to find later.
    """
    if not get_swap_device_info(si):
        return
    swap_entries_put_map(si, entry, nr)
    m = si.map
    offset, end = entry, entry + nr
    while offset < end:
        step = 1
        if m[offset] == SWAP_HAS_CACHE:
            n = abs(__try_to_reclaim_swap(si, offset, TTRS_UNMAPPED | TTRS_FULL)) or 1
            step = -(-(offset + 1) // n) * n - offset          # ALIGN(offset + 1, n) - offset
        offset += step
    put_swap_device(si)


def swap_reclaim_full_clusters(si, force: bool) -> None:
    """Models ``swap_reclaim_full_clusters()``: free the cache-only slots of FULL clusters."""
    si.cur.stat(_RECLAIM_FULL)
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
        si.cur.set_rec_cluster(-1)
        if to_scan <= 0:
            break


def swap_reclaim_work(si) -> None:
    """Models ``swap_reclaim_work()``: reclaim every FULL cluster's cache-only slots."""
    si.take_reclaim_work()
    swap_reclaim_full_clusters(si, True)
