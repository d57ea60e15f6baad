"""The swap cache on swap tables: mm/swap_state.c of phase I, as the seed leaves it.

Entries are slot offsets (one device per run, so ``swp_entry_t`` is its offset).  Every writer
takes the cluster lock; lookups are lockless through ``swap_table_get`` and must then validate what
they got, because with ``SLAB_TYPESAFE_BY_RCU`` a recycled table can show a folio of another
cluster: ``swap_cache_get_folio`` takes a speculative reference and callers lock the folio and
check ``folio_matches_swap_entry``.

Models: ``swap_cache_get_folio``, ``swap_cache_get_shadow``, ``swap_cache_add_folio``,
``__swap_cache_del_folio``, ``swap_cache_del_folio``.  (``__swap_cache_clear_shadow`` is in
swap_table.py: the free path below needs it.)
"""

from __future__ import annotations

from .cluster import CI_BYTES, CI_LOCK
from .folio import F_ORDER, FOLIO_WORDS
from .swap_free import put_swap_folio
from .swap_table import (
    __swap_table_xchg,
    folio_to_swp_tb,
    swap_table_get,
    swp_tb_is_folio,
    swp_tb_is_shadow,
    swp_tb_to_folio,
    swp_tb_to_shadow,
)

__all__ = ["swap_cache_get_folio", "swap_cache_get_shadow", "swap_cache_add_folio",
           "__swap_cache_del_folio", "swap_cache_del_folio"]

_TRY_GET_RETRIES = 8


def swap_cache_get_folio(si, entry: int) -> int:
    """Models ``swap_cache_get_folio()``: a referenced folio, or -1; the caller must validate it.

    The kernel retries a failed ``folio_try_get`` for as long as it takes; the model gives up after
    ``_TRY_GET_RETRIES`` and reports no folio (a lookup that then finds nothing).
    """
    ci, off = entry >> si.spc_shift, entry & (si.spc - 1)
    for _ in range(_TRY_GET_RETRIES):
        tb = swap_table_get(si, ci, off)
        if not swp_tb_is_folio(tb):
            return -1
        folio = swp_tb_to_folio(tb)
        if si.folios.folio_try_get(folio):
            return folio
    return -1


def swap_cache_get_shadow(si, entry: int) -> int | None:
    """Models ``swap_cache_get_shadow()``."""
    tb = swap_table_get(si, entry >> si.spc_shift, entry & (si.spc - 1))
    return swp_tb_to_shadow(tb) if swp_tb_is_shadow(tb) else None


def swap_cache_add_folio(si, folio: int, entry: int) -> int | None:
    """Models ``swap_cache_add_folio()``: install the folio in its 2^order entries.

    The caller holds the folio lock and has set SWAP_HAS_CACHE on the slots.  Returns the old
    shadow, if any.
    """
    folios = si.folios
    nr = 1 << folios.fq[folio * FOLIO_WORDS + F_ORDER]        # folio_nr_pages(), on the hot path
    ci, off = entry >> si.spc_shift, entry & (si.spc - 1)
    tb = folio_to_swp_tb(folio)
    shadow = None
    cr = si.cr
    cr.lock(ci * CI_BYTES, CI_LOCK)
    for i in range(nr):
        old = __swap_table_xchg(si, ci, off + i, tb)
        if old & 1:
            shadow = swp_tb_to_shadow(old)
        elif old:
            si.cur.warn(f"swap_cache_add_folio: slot {entry + i} already held folio {swp_tb_to_folio(old)}")
    folios.folio_ref_add(folio, nr)
    folios.set_swapcache(folio, entry)
    cr.unlock(ci * CI_BYTES, CI_LOCK)
    return shadow


def __swap_cache_del_folio(si, ci: int, folio: int, entry: int, shadow: int | None) -> None:
    """Models ``__swap_cache_del_folio()``: ``ci->lock`` held; leaves swap_map and refs alone."""
    folios = si.folios
    nr = 1 << folios.fq[folio * FOLIO_WORDS + F_ORDER]        # folio_nr_pages(), on the hot path
    off = entry & (si.spc - 1)
    new = 0 if shadow is None else (shadow << 1) | 1
    mine = folio_to_swp_tb(folio)
    for i in range(nr):
        old = __swap_table_xchg(si, ci, off + i, new)
        if old != mine:
            si.cur.warn(f"__swap_cache_del_folio: slot {entry + i} held {old:#x}, not folio {folio}")
    folios.clear_swapcache(folio)


def swap_cache_del_folio(si, folio: int) -> None:
    """Models ``swap_cache_del_folio()``: delete, drop SWAP_HAS_CACHE, drop the cache's refs."""
    folios = si.folios
    entry = folios.swap(folio)
    nr = 1 << folios.order(folio)
    ci = entry >> si.spc_shift
    si.cr.lock(ci * CI_BYTES, CI_LOCK)
    __swap_cache_del_folio(si, ci, folio, entry, None)
    si.cr.unlock(ci * CI_BYTES, CI_LOCK)
    put_swap_folio(si, folio, entry)
    folios.folio_put(folio, nr)
