"""Tests of shmswap.mm.swap_cache: add / delete / lookup on swap tables, shadows, and validation of
what a lockless lookup returns."""

import errno

from conftest import CACHED, RAW, SWAPPED, alloc_folio, assert_clean, release, run_check

from shmswap.mm.cluster import ci_lock, ci_unlock
from shmswap.mm.folio import PG_SWAPCACHE
from shmswap.mm.reclaim import free_swap_and_cache_nr
from shmswap.mm.swap import SWAP_HAS_CACHE
from shmswap.mm.swap_cache import (
    __swap_cache_del_folio,
    swap_cache_add_folio,
    swap_cache_del_folio,
    swap_cache_get_folio,
    swap_cache_get_shadow,
)
from shmswap.mm.swap_free import put_swap_folio, swapcache_prepare
from shmswap.mm.swap_table import __swap_cache_clear_shadow, folio_to_swp_tb, swap_table_get
from shmswap.substrate import preempt
from shmswap.substrate.preempt import Point


def test_add_and_get(system):
    s, folios = system, system.folios
    e = alloc_folio(s, 0, RAW)                       # folio_alloc_swap added it to the cache
    f = s.held[e].folio
    assert folios.ref(f) == 2                        # the owner's and the cache's
    assert folios.flags(f) & PG_SWAPCACHE and folios.swap(f) == e
    assert s.shm.map_np[e] == SWAP_HAS_CACHE
    got = swap_cache_get_folio(s.si, e)
    assert got == f and folios.ref(f) == 3           # a speculative reference
    assert folios.folio_matches_swap_entry(got, e)
    folios.folio_put(got)
    assert swap_cache_get_shadow(s.si, e) is None
    assert swap_cache_get_folio(s.si, e + 1) == -1
    assert_clean(s)


def test_large_folio_occupies_aligned_entries(system):
    s, folios = system, system.folios
    e = alloc_folio(s, 2, RAW)
    f = s.held[e].folio
    assert e % 4 == 0 and folios.ref(f) == 1 + 4
    table = int(s.shm.clu["table"][e >> 3])
    assert list(s.shm.tables_np[table][e & 7:(e & 7) + 4]) == [folio_to_swp_tb(f)] * 4
    for i in range(4):
        got = swap_cache_get_folio(s.si, e + i)
        assert got == f and folios.folio_matches_swap_entry(got, e + i)
        folios.folio_put(got)
    assert_clean(s)
    release(s, e)
    assert not s.shm.map_np[e:e + 4].any() and folios.ref(f) == 0
    assert_clean(s)


def test_delete_with_shadow_then_swap_in(system):
    s, si, folios = system, system.si, system.folios
    e = alloc_folio(s, 0, CACHED)                    # HAS_CACHE | 1 map count, folio cached
    f = s.held.pop(e).folio
    ci = e >> 3
    folios.folio_lock(f)
    ci_lock(si, ci)
    __swap_cache_del_folio(si, ci, f, e, 77)        # vmscan: a shadow stays
    ci_unlock(si, ci)
    assert swap_cache_get_folio(si, e) == -1
    assert swap_cache_get_shadow(si, e) == 77
    assert not folios.flags(f) & PG_SWAPCACHE and folios.swap(f) == 0
    assert s.shm.map_np[e] == SWAP_HAS_CACHE | 1     # the map is not touched
    put_swap_folio(si, f, e)
    folios.folio_unlock(f)
    folios.folio_put(f, 2)
    assert s.shm.map_np[e] == 1 and swap_cache_get_shadow(si, e) == 77
    assert_clean(s)
    # swap-in: pin the slot, add a new folio, get the old shadow back
    assert swapcache_prepare(si, e) == 0
    assert swapcache_prepare(si, e) == -errno.EEXIST
    g = folios.folio_alloc(0, 0)
    folios.folio_lock(g)
    assert swap_cache_add_folio(si, g, e) == 77
    assert swap_cache_get_shadow(si, e) is None
    got = swap_cache_get_folio(si, e)
    assert got == g
    folios.folio_put(got)
    folios.folio_unlock(g)
    assert_clean(s)
    # the last map reference goes while cached; then the cache lets go and the slot is free
    folios.folio_lock(g)
    swap_cache_del_folio(si, g)
    folios.folio_unlock(g)
    assert s.shm.map_np[e] == 1
    folios.folio_put(g)
    free_swap_and_cache_nr(si, e, 1)
    assert s.shm.map_np[e] == 0 and swap_table_get(si, ci, e & 7) == 0
    assert_clean(s)


def test_free_clears_the_shadow(system):
    s, si = system, system.si
    e = alloc_folio(s, 0, SWAPPED)
    assert swap_cache_get_shadow(si, e) == e + 1
    release(s, e)
    assert swap_cache_get_shadow(si, e) is None
    assert_clean(s)


def test_adding_over_a_folio_warns(system):
    s, si, folios = system, system.si, system.folios
    e = alloc_folio(s, 0, RAW)
    g = folios.folio_alloc(0, 0)
    folios.folio_lock(g)
    swap_cache_add_folio(si, g, e)
    assert len(si.cur.warnings) == 1 and f"slot {e} already held folio" in si.cur.warnings[0]
    assert [v.invariant for v in run_check(s).violations] == ["no kernel WARN"]


def test_clearing_a_folio_as_a_shadow_warns(system):
    s, si = system, system.si
    e = alloc_folio(s, 0, RAW)
    ci_lock(si, 0)
    __swap_cache_clear_shadow(si, 0, e, 1)
    ci_unlock(si, 0)
    assert len(si.cur.warnings) == 1 and "still held folio" in si.cur.warnings[0]


def test_deleting_the_wrong_folio_warns(system):
    s, si, folios = system, system.si, system.folios
    e = alloc_folio(s, 0, RAW)
    g = folios.folio_alloc(0, 0)
    ci_lock(si, 0)
    __swap_cache_del_folio(si, 0, g, e, None)
    ci_unlock(si, 0)
    assert len(si.cur.warnings) == 1 and f"not folio {g}" in si.cur.warnings[0]


def test_lookup_of_a_null_table(system):
    assert swap_cache_get_folio(system.si, 40) == -1
    assert swap_cache_get_shadow(system.si, 40) is None


def test_freed_folio_is_not_returned(system):
    """folio_try_get fails on a folio whose last reference is gone; the lookup gives up."""
    s, folios = system, system.folios
    e = alloc_folio(s, 0, RAW)
    f = s.held[e].folio
    ref = folios.ref(f)
    s.shm.folios["ref"][f] = 0
    assert swap_cache_get_folio(s.si, e) == -1
    s.shm.folios["ref"][f] = ref


def test_foreign_folio_from_a_recycled_table_is_rejected(system):
    """W3, slab mode: a reader paused after loading the table pointer; meanwhile the cluster is
    freed and its table object recycled at once for another cluster and filled.  The lookup
    returns that cluster's folio; ``folio_matches_swap_entry`` rejects it."""
    s, si, folios = system, system.si, system.folios
    e = alloc_folio(s, 1, SWAPPED)                    # cluster 1, slots 8-9, a shadow each
    table = int(s.shm.clu["table"][1])
    other = []

    def hook(kind, a, b):
        if kind != Point.READER:
            return
        preempt.install(None)
        release(s, e)                                 # cluster 1 FREE: its table to the freelist
        other.append(alloc_folio(s, 1, RAW))          # cluster 2 takes the same object
        assert int(s.shm.clu["table"][2]) == table

    preempt.install(hook)
    try:
        got = swap_cache_get_folio(si, e)
    finally:
        preempt.install(None)
    assert other == [16]
    foreign = s.held[16].folio
    assert got == foreign                             # what the recycled table holds
    assert not folios.folio_matches_swap_entry(got, e)   # and what a reader must reject
    folios.folio_put(got)
    assert int(s.shm.readers["pipe"][0][0]) >= 1
    assert_clean(s)
