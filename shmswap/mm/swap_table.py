"""Swap table entries and their accessors: mm/swap_table.h of the seed.

Encoding (phase I): each entry is one int64.

| value                 | type   | meaning                                                     |
|-----------------------|--------|-------------------------------------------------------------|
| 0                     | null   | no folio, no shadow                                         |
| ``(cookie << 1) | 1`` | shadow | an XArray value entry: the workingset eviction cookie       |
| ``(folio + 1) << 3``  | folio  | the model's folio id, shifted as an 8-byte-aligned pointer   |

Writers hold ``ci->lock`` (``__swap_table_set`` and ``__swap_table_xchg`` assert it).  The one
lockless reader is ``swap_table_get``: inside an RCU read section it loads the cluster's table
pointer and, if it is not NULL, the entry.  It is also where the oracles look, as observers
(``reader_window`` before the entry is read, ``reader_read`` after: checks/oracles.py), and where
fault injection can hold a reader in its window (the ``READER`` preemption point).
"""

from __future__ import annotations

from ..substrate.preempt import Point, sched_point
from .cluster import C_TABLE, CI_BYTES, CW
from .swap import NULL_TABLE, KernelBug

__all__ = [
    "null_to_swp_tb", "shadow_swp_to_tb", "folio_to_swp_tb", "swp_tb_is_null", "swp_tb_is_shadow",
    "swp_tb_is_folio", "swp_tb_to_folio", "swp_tb_to_shadow", "__swap_table_set", "__swap_table_xchg",
    "__swap_table_get", "swap_table_get", "__swap_cache_clear_shadow", "swap_cluster_assert_table_empty",
]

_TABLE_OFF = C_TABLE * 8
_READER = int(Point.READER)


def null_to_swp_tb() -> int:
    return 0


def shadow_swp_to_tb(cookie: int) -> int:
    return (cookie << 1) | 1


def folio_to_swp_tb(folio: int) -> int:
    return (folio + 1) << 3


def swp_tb_is_null(tb: int) -> bool:
    return tb == 0


def swp_tb_is_shadow(tb: int) -> bool:
    return bool(tb & 1)


def swp_tb_is_folio(tb: int) -> bool:
    return tb != 0 and not tb & 1


def swp_tb_to_folio(tb: int) -> int:
    return (tb >> 3) - 1


def swp_tb_to_shadow(tb: int) -> int:
    return tb >> 1


def _entry_byte(si, ci: int, off: int) -> int:
    """Byte offset of entry ``off`` of cluster ``ci``'s table, ``ci->lock`` held."""
    if not si.cr.held_by_me(ci * CI_BYTES):
        raise KernelBug(f"swap table write: ci->lock of cluster {ci} not held")
    table = si.cq[ci * CW + C_TABLE]
    if table == NULL_TABLE:
        raise KernelBug(f"swap table access on cluster {ci}, whose table is NULL")
    return (table * si.spc + off) * 8


def __swap_table_set(si, ci: int, off: int, tb: int) -> None:
    """Models ``__swap_table_set()``: store an entry, ``ci->lock`` held."""
    si.tr.store(_entry_byte(si, ci, off), tb)


def __swap_table_xchg(si, ci: int, off: int, tb: int) -> int:
    """Models ``__swap_table_xchg()``: exchange an entry, ``ci->lock`` held."""
    # _entry_byte(), inline: this is the swap cache's hottest write
    if not si.cr.held_by_me(ci * CI_BYTES):
        raise KernelBug(f"__swap_table_xchg: ci->lock of cluster {ci} not held")
    table = si.cq[ci * CW + C_TABLE]
    if table == NULL_TABLE:
        raise KernelBug(f"swap table access on cluster {ci}, whose table is NULL")
    return si.tr.xchg((table * si.spc + off) * 8, tb)


def __swap_table_get(si, ci: int, off: int) -> int:
    """Models ``__swap_table_get()``: read an entry under ``ci->lock``.

    The kernel's has no NULL check (it would oops); the model raises rather than let the index
    -1 read the end of another table.
    """
    table = si.cq[ci * CW + C_TABLE]
    if table == NULL_TABLE:
        raise KernelBug(f"swap table access on cluster {ci}, whose table is NULL")
    return si.tq[table * si.spc + off]


def swap_table_get(si, ci: int, off: int) -> int:
    """Models ``swap_table_get()``: the lockless reader, inside an RCU read section.

    Between loading the table pointer and reading the entry is the reader's window (reference
    §10 W3): observers hear of it (``reader_window``, ``reader_read``) and a preemption point
    sits in it.  In slab mode a table may be reused for another cluster meanwhile
    (SLAB_TYPESAFE_BY_RCU): it is the caller's validation that must catch a foreign folio.
    """
    rcu = si.rcu
    rcu.read_lock()
    table = si.cr.load(ci * CI_BYTES + _TABLE_OFF)
    if table == NULL_TABLE:
        tb = 0
    else:
        obs = si.obs
        cur = si.cur
        wid = cur.wid
        cur.reader_si = si        # the hooks' table index is this device's (each device has its slab)
        loaded = None
        for hook in obs.reader_window:
            if (v := hook(wid, ci, table, off)) is not None:
                loaded = v
        sched_point(_READER, table, off)
        tb = si.tr.load((table * si.spc + off) * 8) if loaded is None else loaded
        for hook in obs.reader_read:
            tb = hook(wid, ci, table, off, tb)
    rcu.read_unlock()
    return tb


def __swap_cache_clear_shadow(si, ci: int, entry: int, nr: int) -> None:
    """Models ``__swap_cache_clear_shadow()`` (mm/swap_state.c): null the entries of freed slots.

    ``ci->lock`` held.  It lives here, with the entry accessors, because the free path
    (swap_free.py) calls it and the swap cache (swap_cache.py) sits above the free path.
    """
    off = entry & (si.spc - 1)
    tr = si.tr
    for i in range(nr):
        old = tr.xchg(_entry_byte(si, ci, off + i), 0)
        if old and not old & 1:
            si.cur.warn(f"__swap_cache_clear_shadow: freed slot {entry + i} still held folio {swp_tb_to_folio(old)}")


def swap_cluster_assert_table_empty(si, ci: int, start: int, nr: int) -> None:
    """Models ``swap_cluster_assert_table_empty()`` (CONFIG_DEBUG_VM): slots about to be allocated
    have null entries (``VM_WARN_ON_ONCE(!swp_tb_is_null(swp_tb))``).  ``ci->lock`` held."""
    table = si.cq[ci * CW + C_TABLE]
    if table == NULL_TABLE:
        raise KernelBug(f"swap_cluster_assert_table_empty: cluster {ci} has a NULL table")
    off = start & (si.spc - 1)
    tq, base = si.tq, table * si.spc
    for i in range(off, off + nr):
        if tq[base + i]:
            si.cur.warn(f"swap_cluster_assert_table_empty: slot {start + i - off} of cluster {ci} being "
                        f"allocated has entry {tq[base + i]:#x}, not null")
            return
