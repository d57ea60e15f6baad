"""The free path and map counts: the slot half of mm/swapfile.c.

Models ``swap_entries_free``, ``swap_range_free``, ``swap_entry_put_locked``,
``swap_entries_put_cache`` (``put_swap_folio``), ``swap_entries_put_map``, ``swap_is_last_map``,
``__swap_duplicate`` with ``swap_duplicate`` and ``swapcache_prepare``.

The ordering that makes "a table is all-null when its cluster is freed" hold: a cached folio's
entries become a shadow or null (``__swap_cache_del_folio``) before SWAP_HAS_CACHE is dropped,
and shadows are nulled by ``swap_range_free`` when a slot's last reference goes, so by the time
``count`` reaches 0 every entry is null.
"""

from __future__ import annotations

import errno

from ..substrate.stats import Stat
from .cluster import (
    C_COUNT,
    CI_BYTES,
    CI_LOCK,
    CW,
    ci_lock,
    ci_unlock,
    free_cluster,
    lockdep_assert_held,
    partial_free_cluster,
)
from .device import swap_usage_sub
from .swap import SWAP_HAS_CACHE, SWAP_MAP_BAD, SWAP_MAP_MAX, SWAP_MAP_SHMEM, KernelBug
from .swap_table import __swap_cache_clear_shadow

__all__ = [
    "swap_entries_free", "swap_range_free", "swap_entry_put_locked", "put_swap_folio",
    "swap_entries_put_cache", "swap_entries_put_map", "swap_duplicate", "swapcache_prepare",
    "__swap_duplicate",
]

_FREE = int(Stat.FREE)
_LAST_REF = (SWAP_HAS_CACHE, 1, SWAP_MAP_SHMEM)


def swap_entries_free(si, ci: int, entry: int, nr: int) -> None:
    """Models ``swap_entries_free()``: the last references of ``nr`` slots in one cluster go."""
    if si.debug_vm:                          # lockdep_assert_held: with --lockdep and in tests
        lockdep_assert_held(si, ci)
    b = ci * CW
    count = si.cq[b + C_COUNT]
    if (entry >> si.spc_shift) != ((entry + nr - 1) >> si.spc_shift) or count < nr:
        raise KernelBug(f"swap_entries_free: slots {entry}+{nr} in cluster {ci} of count {count}")
    si.cq[b + C_COUNT] = count - nr
    m = si.map
    for s in range(entry, entry + nr):
        v = m[s]
        if v not in _LAST_REF:
            raise KernelBug(f"swap_entries_free: slot {s} has map byte {v:#x}, not a last reference")
        m[s] = 0
    swap_range_free(si, ci, entry, nr)
    si.cur.stat(_FREE, nr)
    if count == nr:
        free_cluster(si, ci)
    else:
        partial_free_cluster(si, ci)


def swap_range_free(si, ci: int, entry: int, nr: int) -> None:
    """Models ``swap_range_free()``: clear shadows, give the slots back to the counters."""
    __swap_cache_clear_shadow(si, ci, entry, nr)
    si.nr_swap_pages_add(nr)
    swap_usage_sub(si, nr)


def swap_entry_put_locked(si, ci: int, entry: int, usage: int) -> int:
    """Models ``swap_entry_put_locked()``: drop one reference of one slot (``ci->lock`` held)."""
    v = si.map[entry]
    has_cache = v & SWAP_HAS_CACHE
    count = v & ~SWAP_HAS_CACHE
    if usage == SWAP_HAS_CACHE:
        if not has_cache:
            raise KernelBug(f"swap_entry_put_locked: slot {entry} has no SWAP_HAS_CACHE")
        has_cache = 0
    elif count == SWAP_MAP_SHMEM:
        count = 0
    elif count <= SWAP_MAP_MAX:
        if not count:
            raise KernelBug(f"swap_entry_put_locked: slot {entry} has no map count")
        count -= 1
    new = count | has_cache
    if new:
        si.map[entry] = new
    else:
        swap_entries_free(si, ci, entry, 1)
    return new


def swap_entries_put_cache(si, entry: int, nr: int) -> None:
    """Models ``swap_entries_put_cache()``: drop SWAP_HAS_CACHE of ``nr`` slots, freeing the last."""
    ci = entry >> si.spc_shift
    cr = si.cr
    cr.lock(ci * CI_BYTES, CI_LOCK)
    m = si.map
    if nr == 1 and m[entry] == SWAP_HAS_CACHE or all(m[s] == SWAP_HAS_CACHE for s in range(entry, entry + nr)):
        swap_entries_free(si, ci, entry, nr)
    else:
        for s in range(entry, entry + nr):
            swap_entry_put_locked(si, ci, s, SWAP_HAS_CACHE)
    cr.unlock(ci * CI_BYTES, CI_LOCK)


def put_swap_folio(si, folio: int, entry: int) -> None:
    """Models ``put_swap_folio()``."""
    swap_entries_put_cache(si, entry, 1 << si.folios.order(folio))


def _swap_is_last_map(si, entry: int, nr: int) -> tuple[bool, bool]:
    """Models ``swap_is_last_map()``: every slot has one map reference, the same byte."""
    m = si.map
    first = m[entry]
    count = first & ~SWAP_HAS_CACHE
    if count != 1 and count != SWAP_MAP_SHMEM:
        return False, False
    for s in range(entry + 1, entry + nr):
        if m[s] != first:
            return False, False
    return True, bool(first & SWAP_HAS_CACHE)


def swap_entries_put_map(si, entry: int, nr: int) -> None:
    """Models ``swap_entries_put_map()``: drop one map reference from each of ``nr`` slots."""
    ci = entry >> si.spc_shift
    ci_lock(si, ci)
    last, has_cache = _swap_is_last_map(si, entry, nr) if nr > 1 else (False, False)
    if last:
        if not has_cache:
            swap_entries_free(si, ci, entry, nr)
        else:
            for s in range(entry, entry + nr):
                si.map[s] = SWAP_HAS_CACHE
    else:
        for s in range(entry, entry + nr):
            swap_entry_put_locked(si, ci, s, 1)
    ci_unlock(si, ci)


def __swap_duplicate(si, entry: int, usage: int, nr: int) -> int:
    """Models ``__swap_duplicate()``: validate every slot first, then apply. 0 or -errno."""
    ci = entry >> si.spc_shift
    ci_lock(si, ci)
    m = si.map
    err = 0
    for s in range(entry, entry + nr):
        v = m[s]
        count, has_cache = v & ~SWAP_HAS_CACHE, v & SWAP_HAS_CACHE
        if v == SWAP_MAP_BAD or (not count and not has_cache):
            err = -errno.ENOENT
        elif usage == SWAP_HAS_CACHE and has_cache:
            err = -errno.EEXIST
        elif usage != SWAP_HAS_CACHE and count >= SWAP_MAP_MAX:
            err = -errno.EINVAL   # count continuation pages are not modelled
        if err:
            break
    if not err:
        for s in range(entry, entry + nr):
            v = m[s]
            if usage == SWAP_HAS_CACHE:
                m[s] = v | SWAP_HAS_CACHE
            else:
                m[s] = v + usage
    ci_unlock(si, ci)
    return err


def swap_duplicate(si, entry: int, nr: int = 1) -> int:
    """Models ``swap_duplicate()``: one more map reference (a PTE now points at the entry)."""
    return __swap_duplicate(si, entry, 1, nr)


def swapcache_prepare(si, entry: int, nr: int = 1) -> int:
    """Models ``swapcache_prepare()``: pin the slots for a swap-in's cache folio."""
    return __swap_duplicate(si, entry, SWAP_HAS_CACHE, nr)
