"""Tests of shmswap.mm.swap_table: entry encoding and the accessors (locked writers, lockless reader)."""

import pytest
from conftest import CACHED, SWAPPED, alloc_folio
from hypothesis import given
from hypothesis import strategies as st

from shmswap.mm.cluster import ci_lock, ci_unlock
from shmswap.mm.swap import KernelBug
from shmswap.mm.swap_table import (
    __swap_table_get,
    __swap_table_set,
    __swap_table_xchg,
    folio_to_swp_tb,
    null_to_swp_tb,
    shadow_swp_to_tb,
    swap_table_get,
    swp_tb_is_folio,
    swp_tb_is_null,
    swp_tb_is_shadow,
    swp_tb_to_folio,
    swp_tb_to_shadow,
)
from shmswap.substrate.observe import Observer

INT64 = st.integers(-(2**63), 2**63 - 1)


def kinds(tb):
    return (swp_tb_is_null(tb), swp_tb_is_shadow(tb), swp_tb_is_folio(tb))


def test_null():
    assert null_to_swp_tb() == 0
    assert kinds(0) == (True, False, False)


@given(st.integers(0, 2**59))
def test_folio_round_trip(folio):
    tb = folio_to_swp_tb(folio)
    assert tb != 0 and tb % 8 == 0                      # an 8-byte aligned "pointer"
    assert kinds(tb) == (False, False, True)
    assert swp_tb_to_folio(tb) == folio


@given(st.integers(0, 2**62 - 1))
def test_shadow_round_trip(cookie):
    tb = shadow_swp_to_tb(cookie)
    assert tb & 1
    assert kinds(tb) == (False, True, False)
    assert swp_tb_to_shadow(tb) == cookie


@given(INT64)
def test_every_value_has_exactly_one_kind(tb):
    assert sum(kinds(tb)) == 1


def test_model_encoding_examples():
    assert folio_to_swp_tb(0) == 8 and folio_to_swp_tb(5) == 48
    assert shadow_swp_to_tb(0) == 1 and shadow_swp_to_tb(21) == 43


def test_swap_table_get_is_zero_for_a_null_table(system):
    si = system.si
    assert int(system.shm.clu["table"][3]) == -1
    sections = int(system.shm.readers["sections"][0])
    assert swap_table_get(si, 3, 0) == 0
    assert swap_table_get(si, 3, 7) == 0
    assert int(system.shm.readers["sections"][0]) == sections + 2   # inside an RCU read section
    assert int(system.shm.readers["ctr"][0]) == 0 and system.rcu.nest == 0


def test_locked_accessors(system):
    si = system.si
    table = int(system.shm.clu["table"][0])
    with pytest.raises(KernelBug, match="swap table write: ci->lock of cluster 0 not held"):
        __swap_table_set(si, 0, 3, 5)
    with pytest.raises(KernelBug, match="__swap_table_xchg: ci->lock of cluster 0 not held"):
        __swap_table_xchg(si, 0, 3, 5)
    ci_lock(si, 0)
    __swap_table_set(si, 0, 3, shadow_swp_to_tb(9))
    assert int(system.shm.tables_np[table][3]) == 19
    assert __swap_table_xchg(si, 0, 3, 0) == 19
    assert __swap_table_get(si, 0, 3) == 0
    with pytest.raises(KernelBug, match="cluster 4, whose table is NULL"):
        __swap_table_get(si, 4, 0)                       # no NULL check under the lock
    ci_unlock(si, 0)


def test_swap_table_get_reads_entries(system):
    si = system.si
    e = alloc_folio(system, 0, CACHED)
    folio = system.held[e].folio
    assert swap_table_get(si, 0, e) == folio_to_swp_tb(folio)
    s = alloc_folio(system, 1, SWAPPED)
    ci, off = s >> si.spc_shift, s & 7
    assert swap_table_get(si, ci, off) == shadow_swp_to_tb(s + 1)
    assert swap_table_get(si, ci, off + 1) == shadow_swp_to_tb(s + 1)
    assert swap_table_get(si, ci, off + 2) == 0
    assert int(system.shm.readers["pipe"][0][0]) == 4     # live tables: age 0


def test_a_window_hook_may_end_the_window_with_the_readers_load(system):
    """A hook that holds the reader in its window (checks/delays.py) returns the entry it loaded when
    the window ended: that is what the reader read, whatever the slot holds by the time it returns."""
    e = alloc_folio(system, state=CACHED)
    seen = folio_to_swp_tb(system.held[alloc_folio(system, state=CACHED)].folio)     # another entry's

    class LoadsInTheWindow(Observer):
        def reader_window(self, wid, ci, table, off):
            return seen

    hook = system.system.observers.add(LoadsInTheWindow())
    try:
        assert swap_table_get(system.si, 0, e) == seen
    finally:
        system.system.observers.remove(hook)
    assert swap_table_get(system.si, 0, e) != seen
