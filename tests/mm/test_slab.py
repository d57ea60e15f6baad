"""Tests of shmswap.mm.slab: the swap_table kmem_cache, its page pool, and both reclamation modes."""

import os
import time

import numpy as np
import pytest
from conftest import SWAPPED, alloc_folio, assert_clean, release

from shmswap.mm import slab as slab_mod
from shmswap.mm.slab import OBJ_FREE, OBJ_INUSE, OBJ_POOL, OBJ_RCU, PAGE_PENDING, PAGE_POOL, PAGE_SLAB
from shmswap.mm.system import SleepingAllocator


def hdr(system, name):
    return int(system.shm.slab_hdr[name])


def drain_atomic(system, ci=3):
    out = []
    while (h := system.slab.alloc_atomic(ci)) >= 0:
        out.append(h)
    return out


def test_geometry_and_swapon_objects(system):
    geo = system.shm.geo
    assert system.slab.mode == "slab" and geo.objs_per_page == 8
    assert geo.n_pages == 9 and geo.n_objs == 72
    objs = system.shm.objs
    assert objs["state"][0] == OBJ_INUSE and objs["owner"][0] == 0 and objs["gen"][0] == 1
    assert (objs["state"][1:8] == OBJ_FREE).all()
    assert hdr(system, "nfree") == 7 and hdr(system, "fresh") == 1 and hdr(system, "pool_free") == 8
    assert hdr(system, "live") == hdr(system, "peak") == 1
    assert system.shm.pages["state"][0] == PAGE_SLAB and system.shm.pages["inuse"][0] == 1


def test_alloc_zeroes_and_sets_the_header(system):
    s = system
    h = hdr(s, "free_head")
    s.shm.tables_np[h][:] = 0x55                      # stale bytes of a previous life
    got = s.slab.alloc_atomic(5)
    assert got == h
    assert not s.shm.tables_np[h].any()
    o = s.shm.objs[h]
    assert (int(o["state"]), int(o["owner"]), int(o["gen"])) == (OBJ_INUSE, 5, 1)
    assert hdr(s, "live") == 2 and hdr(s, "atomic_allocs") == 1 and hdr(s, "nfree") == 6


def test_slab_mode_reuses_a_freed_object_at_once(system):
    """SLAB_TYPESAFE_BY_RCU: the next allocation may hand the same object to another cluster."""
    s = system
    h = s.slab.alloc_atomic(4)
    s.slab.free(h)
    assert s.shm.objs["state"][h] == OBJ_FREE and s.shm.objs["owner"][h] == -1
    assert hdr(s, "npending") == 0 and hdr(s, "frees") == 1
    again = s.slab.alloc_atomic(9)
    assert again == h
    assert s.shm.objs["owner"][h] == 9 and s.shm.objs["gen"][h] == 2


def test_double_free_is_caught(system):
    s = system
    h = s.slab.alloc_atomic(4)
    s.slab.free(h)
    with pytest.raises(AssertionError, match=f"double free of table object {h}"):
        s.slab.free(h)
    assert s.shm.sr.load(0) == 0                      # slab_lock released


def test_forced_failures_count_down(system):
    """The test's fault plan (an observer) fails the next N allocations of each kind, as failslab."""
    s = system
    s.faults.atomic = 2
    assert s.slab.alloc_atomic(1) == -1
    assert s.slab.alloc_atomic(1) == -1
    assert s.faults.atomic == 0
    assert s.slab.alloc_atomic(1) >= 0
    s.faults.sleeping = 1
    assert s.slab.alloc_sleeping(2) == -1
    assert s.slab.alloc_sleeping(2) >= 0
    assert hdr(s, "alloc_failures") == 3
    assert hdr(s, "atomic_allocs") == 1 and hdr(s, "sleep_allocs") == 1


def test_injected_rates(make_system):
    s = make_system(atomic_fail=1.0, sleep_fail=1.0)
    assert all(s.slab.alloc_atomic(1) == -1 for _ in range(20))
    assert all(s.slab.alloc_sleeping(1) == -1 for _ in range(20))
    assert hdr(s, "alloc_failures") == 40 and hdr(s, "live") == 1


def test_sleep_latency(make_system):
    """The configured latency is added where the device calls the sleeping allocation
    (``si.sleep_alloc``: mm/system.py's ``SleepingAllocator`` around ``slab.alloc_sleeping``)."""
    s = make_system(sleep_latency_us=30_000)
    assert isinstance(s.si.sleep_alloc, SleepingAllocator)
    t0 = time.monotonic()
    assert s.si.sleep_alloc(1) >= 0
    assert time.monotonic() - t0 >= 0.025
    assert hdr(s, "sleep_allocs") == 1


def test_atomic_keeps_the_reserve_sleeping_uses_it(system):
    s = system
    atomic = drain_atomic(s)
    # 7 left on page 0, then pages while the pool stays above its reserve (8 -> 2)
    assert len(atomic) == 7 + (8 - slab_mod.POOL_RESERVE_PAGES) * 8
    assert hdr(s, "pool_free") == slab_mod.POOL_RESERVE_PAGES
    sleeping = []
    while (h := s.slab.alloc_sleeping(3)) >= 0:
        sleeping.append(h)
    assert len(sleeping) == slab_mod.POOL_RESERVE_PAGES * 8
    assert hdr(s, "pool_free") == 0 and hdr(s, "live") == 72
    assert len(set(atomic + sleeping)) == 71 and 0 not in atomic + sleeping
    assert s.slab.alloc_atomic(3) == -1
    for h in atomic + sleeping:
        s.slab.free(h)
    assert hdr(s, "live") == 1
    assert_clean(s)                               # objects, freelist and pages all accounted


def test_slab_mode_returns_empty_pages_after_a_grace_period(system):
    s = system
    got = drain_atomic(s)
    assert hdr(s, "fresh") == 7
    for h in got:
        s.slab.free(h)
    # keeps SLAB_KEEP_FREE_PAGES (+1) pages' worth of free objects; the rest wait for a GP
    pending = hdr(s, "npending")
    assert pending > 0 and hdr(s, "deferred_frees") == pending
    assert hdr(s, "nfree") <= (slab_mod.SLAB_KEEP_FREE_PAGES + 1) * 8
    waiting = np.flatnonzero(s.shm.pages["state"] == PAGE_PENDING)
    assert len(waiting) == pending
    assert (s.shm.objs["state"][waiting[0] * 8:(waiting[0] + 1) * 8] == OBJ_RCU).all()
    assert s.slab.process_deferred() == 0          # no grace period yet
    s.rcu.synchronize_rcu()
    assert s.slab.process_deferred() == pending
    assert hdr(s, "npending") == 0 and hdr(s, "pages_returned") == pending
    assert (s.shm.pages["state"][waiting] == PAGE_POOL).all()
    assert (s.shm.objs["state"][waiting[0] * 8:(waiting[0] + 1) * 8] == OBJ_POOL).all()
    assert_clean(s)
    # a returned page is taken again from the pool (pool_head) before fresh ones
    again = drain_atomic(s)
    assert len(again) == len(got)


def test_sleeping_allocation_waits_for_pending_pages(system):
    s = system
    atomic = drain_atomic(s)
    sleeping = []
    while (h := s.slab.alloc_sleeping(3)) >= 0:
        sleeping.append(h)
    every = atomic + sleeping
    by_page = {}
    for h in every:
        by_page.setdefault(h // 8, []).append(h)
    freed = [h for page in sorted(by_page)[-4:] for h in by_page[page]]   # four whole pages
    for h in freed:
        s.slab.free(h)
    assert hdr(s, "npending") == 1 and hdr(s, "pool_free") == 0
    while hdr(s, "nfree"):
        assert s.slab.alloc_atomic(3) >= 0
    gps = s.rcu.completed()
    h = s.slab.alloc_sleeping(3)
    assert h >= 0                                  # after a grace period gave the page back
    assert s.rcu.completed() == gps + 1
    assert hdr(s, "npending") == 0 and hdr(s, "pages_returned") == 1


def test_page_mode_frees_after_a_grace_period(make_system):
    s = make_system(reclaim="page")
    assert s.slab.mode == "page" and s.shm.geo.objs_per_page == 1
    h = s.slab.alloc_atomic(2)
    s.slab.free(h)
    assert s.shm.objs["state"][h] == OBJ_RCU and hdr(s, "npending") == 1
    assert s.slab.alloc_atomic(2) != h         # not reused before a grace period
    assert s.slab.process_deferred() == 0
    s.rcu.synchronize_rcu()
    assert s.slab.process_deferred() == 1
    assert s.shm.objs["state"][h] == OBJ_POOL and hdr(s, "npending") == 0


def test_objs_per_slab_page_is_ignored_in_page_mode(make_system):
    s = make_system(reclaim="page", objs_per_slab_page=4)
    assert s.shm.geo.objs_per_page == 1
    s2 = make_system(objs_per_slab_page=4)
    assert s2.shm.geo.objs_per_page == 4 and s2.slab.mode == "slab"


def test_returned_pages_give_memory_back(make_system):
    """MADV_REMOVE: real memory follows the model (4 KiB tables, 32 KiB slab pages)."""
    s = make_system(clusters=8, slots_per_cluster=512)
    name = s.shm.segs["tables"].name

    def blocks():
        return os.stat(f"/dev/shm/{name}").st_blocks

    got = drain_atomic(s)
    for h in got:
        s.shm.tables_np[h][:] = 1                     # touch the memory
        s.shm.tables_np[h][:] = 0
    before = blocks()
    for h in got:
        s.slab.free(h)
    s.rcu.synchronize_rcu()
    n = s.slab.process_deferred()
    assert n > 0 and hdr(s, "madvised") == n
    assert blocks() < before
    assert_clean(s)


def test_tables_follow_clusters(system):
    """Through the allocator: a cluster's table comes and goes with its first and last slot."""
    s = system
    e = alloc_folio(s, 1, SWAPPED)
    h = int(s.shm.clu["table"][1])
    assert hdr(s, "live") == 2 and s.shm.objs["owner"][h] == 1
    release(s, e)
    assert int(s.shm.clu["table"][1]) == -1 and hdr(s, "live") == 1 and hdr(s, "peak") == 2
    assert s.shm.objs["state"][h] == OBJ_FREE
    assert_clean(s)


def test_each_cpu_allocates_from_its_own_active_slab_page(make_system):
    """SLUB's kmem_cache_cpu: a CPU takes objects from its active page; another CPU takes a page no
    CPU is using (a partial one, else a new one), so tables allocated on one CPU share pages."""
    s = make_system(n_workers=3)
    per_page = s.shm.geo.objs_per_page
    s.switch_to(s.tasks[0])
    mine = [s.slab.alloc_atomic(1) for _ in range(3)]
    s.switch_to(s.tasks[1])
    theirs = [s.slab.alloc_atomic(2) for _ in range(3)]
    pages = s.shm.objs["page"]
    assert len({int(pages[h]) for h in mine}) == 1 and len({int(pages[h]) for h in theirs}) == 1
    assert pages[mine[0]] != pages[theirs[0]]
    assert s.shm.cpu_slab[0] == pages[mine[0]] and s.shm.cpu_slab[1] == pages[theirs[0]]
    assert s.shm.pages["cpu"][pages[theirs[0]]] == 1
    s.switch_to(s.tasks[1])
    s.slab.free(mine[1])                              # freed on another CPU: back on its own page ...
    assert s.slab.alloc_atomic(3) != mine[1]          # ... which this CPU does not take
    s.switch_to(s.tasks[0])
    assert s.slab.alloc_atomic(4) == mine[1]          # its own CPU takes it back at once
    assert per_page == 8


def test_an_empty_page_that_is_a_cpus_active_slab_stays(make_system, monkeypatch):
    monkeypatch.setattr(slab_mod, "SLAB_KEEP_FREE_PAGES", 0)
    s = make_system(n_workers=2, rcu="none")
    s.switch_to(s.tasks[1])
    objs = [s.slab.alloc_atomic(1) for _ in range(2)]
    page = int(s.shm.objs["page"][objs[0]])
    assert s.slab.last_on_its_page(objs[0]) is False and s.shm.cpu_slab[1] == page
    for h in objs:
        s.slab.free(h)
    assert s.shm.pages["state"][page] == PAGE_SLAB     # emptied, but cpu1 allocates from it
