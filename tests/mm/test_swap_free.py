"""Tests of shmswap.mm.swap_free: map counts, ``__swap_duplicate``, the put paths and the frees
that move clusters between lists (some through ``free_swap_and_cache_nr``, now in mm/reclaim.py)."""

import errno

import pytest
from conftest import CACHE_ONLY, CACHED, RAW, SWAPPED, alloc_folio, assert_clean, release, stat

from shmswap.mm.cluster import ci_lock, ci_unlock
from shmswap.mm.reclaim import free_swap_and_cache_nr
from shmswap.mm.swap import (
    CLUSTER_FLAG_FRAG,
    CLUSTER_FLAG_FREE,
    CLUSTER_FLAG_NONFULL,
    SWAP_HAS_CACHE,
    SWAP_MAP_BAD,
    SWAP_MAP_MAX,
    SWAP_MAP_SHMEM,
    KernelBug,
)
from shmswap.mm.swap_cache import __swap_cache_del_folio, swap_cache_del_folio, swap_cache_get_folio
from shmswap.mm.swap_free import (
    __swap_duplicate,
    put_swap_folio,
    swap_duplicate,
    swap_entries_free,
    swap_entries_put_map,
    swap_entry_put_locked,
    swapcache_prepare,
)
from shmswap.substrate.layout import DEVICE
from shmswap.substrate.stats import Stat


def mapb(system, s, n=1):
    return [int(x) for x in system.shm.map_np[s:s + n]]


def count(system, ci):
    return int(system.shm.clu["count"][ci])


# -- __swap_duplicate --------------------------------------------------------------------------------

def test_duplicate_errors(system):
    s, si = system, system.si
    assert swap_duplicate(si, 5) == -errno.ENOENT           # a free slot
    assert swapcache_prepare(si, 5) == -errno.ENOENT
    assert swap_duplicate(si, 0) == -errno.ENOENT           # the header: SWAP_MAP_BAD
    assert mapb(s, 0) == [SWAP_MAP_BAD] and mapb(s, 5) == [0]
    e = alloc_folio(s, 0, RAW)
    assert swapcache_prepare(si, e) == -errno.EEXIST        # SWAP_HAS_CACHE twice
    assert swap_duplicate(si, e) == 0
    assert mapb(s, e) == [SWAP_HAS_CACHE | 1]
    assert swapcache_prepare(si, e) == -errno.EEXIST
    assert s.si.cr.load(0) == 0                             # ci->lock released on every path


def test_duplicate_counts_up_to_the_max(system):
    s, si = system, system.si
    e = alloc_folio(s, 0, SWAPPED)
    c = count(s, 0)
    for n in range(2, SWAP_MAP_MAX + 1):
        assert swap_duplicate(si, e) == 0
        assert mapb(s, e) == [n]
    assert swap_duplicate(si, e) == -errno.EINVAL           # continuation pages not modelled
    assert mapb(s, e) == [SWAP_MAP_MAX]
    assert count(s, 0) == c                                 # duplicates do not change ci->count
    for _ in range(SWAP_MAP_MAX - 1):
        swap_entries_put_map(si, e, 1)
    assert mapb(s, e) == [1]
    assert_clean(s)


def test_duplicate_validates_every_slot_before_applying(system):
    s, si = system, system.si
    e = alloc_folio(s, 1, SWAPPED)
    release(s, e)
    a = alloc_folio(s, 0, SWAPPED)
    b = alloc_folio(s, 0, SWAPPED)
    assert (a, b) == (1, 2)
    assert __swap_duplicate(si, 1, 1, 3) == -errno.ENOENT   # slot 3 is free
    assert mapb(s, 1, 3) == [1, 1, 0]                        # nothing applied
    assert __swap_duplicate(si, 1, 1, 2) == 0
    assert mapb(s, 1, 2) == [2, 2]
    assert __swap_duplicate(si, 1, SWAP_HAS_CACHE, 2) == 0
    assert mapb(s, 1, 2) == [SWAP_HAS_CACHE | 2] * 2


# -- the put paths -------------------------------------------------------------------------------------

def test_put_map_then_cache_frees_the_slot(system):
    s, si, folios = system, system.si, system.folios
    e = alloc_folio(s, 0, CACHED)
    f = s.held.pop(e).folio
    folios.folio_lock(f)                      # held: free_swap_and_cache_nr cannot reclaim it
    free_swap_and_cache_nr(si, e, 1)
    assert mapb(s, e) == [SWAP_HAS_CACHE]     # cache-only
    assert stat(s, Stat.RECLAIMED_SLOTS) == 0
    assert swap_cache_get_folio(si, e) == f
    folios.folio_put(f)
    assert_clean(s)
    swap_cache_del_folio(si, f)               # folio_free_swap: no map count left
    folios.folio_unlock(f)
    folios.folio_put(f)
    assert mapb(s, e) == [0] and folios.ref(f) == 0
    assert stat(s, Stat.FREE) == 1
    assert_clean(s)


def test_free_swap_and_cache_reclaims_an_unlocked_cache_only_slot(system):
    s, si = system, system.si
    e = alloc_folio(s, 2, CACHED)
    f = s.held.pop(e).folio
    free_swap_and_cache_nr(si, e, 4)          # the batch: every byte HAS_CACHE|1 -> HAS_CACHE
    assert mapb(s, e, 4) == [0, 0, 0, 0]      # then reclaimed at once (unmapped, unlocked)
    assert stat(s, Stat.RECLAIMED_SLOTS) == 4
    assert s.folios.ref(f) == 1               # only our reference is left
    s.folios.folio_put(f)
    assert_clean(s)


def test_cache_only_state(system):
    s = system
    e = alloc_folio(s, 1, CACHE_ONLY)
    assert mapb(s, e, 2) == [SWAP_HAS_CACHE] * 2
    assert s.folios.ref(s.held[e].folio) == 1 + 2
    assert_clean(s)
    release(s, e)
    assert mapb(s, e, 2) == [0, 0]
    assert_clean(s)


def test_put_swap_folio_per_slot_when_mixed(system):
    s, si, folios = system, system.si, system.folios
    e = alloc_folio(s, 1, RAW)
    f = s.held.pop(e).folio
    assert swap_duplicate(si, e + 1) == 0      # the second slot also has a map count
    swap_cache_del_folio(si, f)                # put_swap_folio: not all HAS_CACHE -> per slot
    folios.folio_unlock(f)
    folios.folio_put(f)
    assert mapb(s, e, 2) == [0, 1]
    assert count(s, e >> 3) == 1
    assert_clean(s)
    swap_entries_put_map(si, e + 1, 1)
    assert count(s, e >> 3) == 0
    assert int(s.shm.clu["flags"][e >> 3]) == CLUSTER_FLAG_FREE
    assert_clean(s)


def test_put_locked_shmem_and_bugs(system):
    s, si = system, system.si
    e = alloc_folio(s, 0, SWAPPED)
    ci_lock(si, 0)
    with pytest.raises(KernelBug, match=f"slot {e} has no SWAP_HAS_CACHE"):
        swap_entry_put_locked(si, 0, e, SWAP_HAS_CACHE)
    s.shm.map_np[e] = SWAP_MAP_SHMEM
    assert swap_entry_put_locked(si, 0, e, 1) == 0           # SHMEM counts as the last reference
    assert mapb(s, e) == [0]
    ci_unlock(si, 0)
    s.held.pop(e)
    assert_clean(s)


def test_entries_free_bugs(system):
    s, si = system, system.si
    a = alloc_folio(s, 0, SWAPPED)
    ci_lock(si, 0)
    with pytest.raises(KernelBug, match="slots 7\\+2"):
        swap_entries_free(si, 0, 7, 2)                       # crosses into cluster 1
    with pytest.raises(KernelBug, match="count 2"):
        swap_entries_free(si, 0, 1, 3)                       # more than the count
    s.shm.map_np[a] = 2
    with pytest.raises(KernelBug, match=f"slot {a} has map byte 0x2, not a last reference"):
        swap_entries_free(si, 0, a, 1)
    ci_unlock(si, 0)


# -- frees move clusters and counters -----------------------------------------------------------------

def test_frees_move_clusters_and_counters(system):
    s, dev = system, system.shm.dev
    got = [alloc_folio(s, 1, SWAPPED) for _ in range(4)]
    assert got == [8, 10, 12, 14]
    clu = s.shm.clu
    assert count(s, 1) == 8 and int(clu["order"][1]) == 1
    assert int(dev["inuse_pages"]) == 8 and int(dev["nr_swap_pages"]) == 127 - 8
    release(s, 10)
    assert int(clu["flags"][1]) == CLUSTER_FLAG_NONFULL and count(s, 1) == 6
    assert int(dev["inuse_pages"]) == 6 and int(dev["nr_swap_pages"]) == 127 - 6
    assert_clean(s)
    assert alloc_folio(s, 1, SWAPPED) == 10              # nonfull_clusters[1] first
    assert int(clu["flags"][1]) != CLUSTER_FLAG_FRAG     # full again
    for e in (8, 10, 12, 14):
        release(s, e)
    assert int(clu["flags"][1]) == CLUSTER_FLAG_FREE
    assert int(clu["order"][1]) == 0 and int(clu["table"][1]) == -1
    assert int(dev["inuse_pages"]) == 0 and int(dev["nr_swap_pages"]) == 127
    assert stat(s, Stat.FREE) == 2 + 8 and stat(s, Stat.TABLE_FREES) == 1
    assert_clean(s)


def test_free_without_a_device_ref_does_nothing(system):
    s, si = system, system.si
    e = alloc_folio(s, 0, SWAPPED)
    si.devr.store(8 * DEVICE.users, 1)
    free_swap_and_cache_nr(si, e, 1)
    assert mapb(s, e) == [1]
    si.devr.store(8 * DEVICE.users, 0)
    release(s, e)
    assert mapb(s, e) == [0]


def test_put_swap_folio_after_a_failed_charge(system):
    """mem_cgroup charge failure at allocation: ``put_swap_folio`` gives the slots straight back."""
    s, si, folios = system, system.si, system.folios
    e = alloc_folio(s, 2, RAW)
    f = s.held.pop(e).folio
    ci_lock(si, e >> 3)
    __swap_cache_del_folio(si, e >> 3, f, e, None)
    ci_unlock(si, e >> 3)
    put_swap_folio(si, f, e)
    folios.folio_unlock(f)
    folios.folio_put(f, 5)
    assert mapb(s, e, 4) == [0] * 4 and int(s.shm.clu["flags"][e >> 3]) == CLUSTER_FLAG_FREE
    assert_clean(s)
