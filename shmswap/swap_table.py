"""Swap table entries and their accessors: mm/swap_table.h of the seed.

Encoding (phase I): each entry is one int64.

| value                 | type   | meaning                                                     |
|-----------------------|--------|-------------------------------------------------------------|
| 0                     | null   | no folio, no shadow                                         |
| ``(cookie << 1) | 1`` | shadow | an XArray value entry: the workingset eviction cookie       |
| ``(folio + 1) << 3``  | folio  | the model's folio id, shifted as an 8-byte-aligned pointer   |

Writers hold ``ci->lock`` (``__swap_table_set`` and ``__swap_table_xchg`` assert it).  The one
lockless reader is ``swap_table_get``: inside an RCU read section it loads the cluster's table
pointer and, if it is not NULL, the entry.  That reader is also where the oracles look: the object
header tells whether the table it reached was poisoned (back in the page pool), and how many grace
periods ago it was freed (the pipe-age histogram).
"""

from __future__ import annotations

from .cluster import C_TABLE, CW, NULL_TABLE, KernelBug
from .preempt import Point, sched_point
from .slab import OBJ_POOL, OBJ_RCU
from .stats import Stat

__all__ = [
    "null_to_swp_tb", "shadow_swp_to_tb", "folio_to_swp_tb", "swp_tb_is_null", "swp_tb_is_shadow",
    "swp_tb_is_folio", "swp_tb_to_folio", "swp_tb_to_shadow", "__swap_table_set", "__swap_table_xchg",
    "__swap_table_get", "swap_table_get",
]


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


def _entry_word(si, ci: int, off: int) -> int:
    table = si.cq[ci * CW + C_TABLE]
    if table == NULL_TABLE:
        raise KernelBug(f"swap table access on cluster {ci}, whose table is NULL")
    return table * si.spc + off


def __swap_table_set(si, ci: int, off: int, tb: int) -> None:
    """Models ``__swap_table_set()``: store an entry, ``ci->lock`` held."""
    if not si.cr.held_by_me(ci * CW * 8):
        raise KernelBug(f"__swap_table_set: ci->lock of cluster {ci} not held")
    si.tr.store(_entry_word(si, ci, off) * 8, tb)


def __swap_table_xchg(si, ci: int, off: int, tb: int) -> int:
    """Models ``__swap_table_xchg()``: exchange an entry, ``ci->lock`` held."""
    if not si.cr.held_by_me(ci * CW * 8):
        raise KernelBug(f"__swap_table_xchg: ci->lock of cluster {ci} not held")
    return si.tr.xchg(_entry_word(si, ci, off) * 8, tb)


def __swap_table_get(si, ci: int, off: int) -> int:
    """Models ``__swap_table_get()``: read an entry under ``ci->lock`` (no NULL check)."""
    return si.tq[_entry_word(si, ci, off)]


def swap_table_get(si, ci: int, off: int) -> int:
    """Models ``swap_table_get()``: the lockless reader, inside an RCU read section.

    The oracle: a read is of freed memory if the object went back to the page pool, or, in page
    mode (where nothing may reuse a table before the reader's grace period ends), if it was
    reallocated since the reader loaded the pointer.  In slab mode reuse is allowed
    (SLAB_TYPESAFE_BY_RCU) and it is the caller's validation that must catch a foreign folio.
    """
    rcu, slab = si.rcu, si.slab
    rcu.read_lock()
    table = si.cr.load(ci * CW * 8 + C_TABLE * 8)
    if table == NULL_TABLE:
        tb = 0
    else:
        gen = slab.obj_gen_live(table)
        sched_point(Point.READER, table, off)
        tb = si.tr.load((table * si.spc + off) * 8)
        state = slab.obj_state(table)
        if state == OBJ_POOL or (slab.mode == "page" and slab.obj_gen_live(table) != gen):
            si.stat(Stat.FREED_MEMORY_READS)
            tb = 0
        elif state == OBJ_RCU:
            age = rcu.completed() - slab.obj_gp(table)
            rcu.pipe_record(age)
            if age >= 2:
                si.stat(Stat.PIPE_TOO_OLD)
        else:
            rcu.pipe_record(0)
    rcu.read_unlock()
    return tb
