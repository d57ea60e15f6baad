"""Tests of shmswap.mm.swapon: swapon's initial state (header, tail and bad slots, eager and static
tables, device flags), swapoff (per-CPU caches flushed, every table freed, device refs drained),
and ``SwapSystem.create`` around swapon (a failure leaves no segment; the system is a context
manager)."""

import errno

import numpy as np
import pytest
from conftest import (
    CACHE_ONLY,
    CACHED,
    SWAPPED,
    alloc_folio,
    assert_clean,
    release,
    release_all,
    run_check,
    small_config,
    stat,
)
from helpers import walk

from shmswap.checks.checker import CheckResult, check_swapoff
from shmswap.config import Config
from shmswap.mm import system as system_mod
from shmswap.mm.device import (
    add_to_avail_list,
    del_from_avail_list,
    get_swap_device_info,
    plist_types,
    put_swap_device,
    swap_usage_in_pages,
)
from shmswap.mm.slab import OBJ_INUSE
from shmswap.mm.swap import (
    CLUSTER_FLAG_FREE,
    CLUSTER_FLAG_NONFULL,
    SWAP_MAP_BAD,
    SWAP_USAGE_OFFLIST_BIT,
    SWP_BLKDEV,
    SWP_PAGE_DISCARD,
    SWP_SOLIDSTATE,
    SWP_USED,
    SWP_WRITEOK,
    KernelBug,
)
from shmswap.mm.swapon import swapoff
from shmswap.mm.system import SwapSystem
from shmswap.substrate.layout import LIST_DISCARD, LIST_FREE, list_nonfull
from shmswap.substrate.observe import Observer
from shmswap.substrate.shm import leftover_segments
from shmswap.substrate.stats import Stat

# -- swapon -----------------------------------------------------------------------------------------

def test_swapon_header_and_tail_clusters_get_eager_tables(make_system):
    s = make_system(clusters=16, tail=3)
    clu, dev = s.shm.clu, s.shm.dev
    assert s.cfg.max_slots == 125 and s.cfg.nr_clusters == 16
    assert walk(s, list_nonfull(0)) == [0, 15]
    assert walk(s, LIST_FREE) == list(range(1, 15))
    assert clu["flags"][0] == clu["flags"][15] == CLUSTER_FLAG_NONFULL
    assert clu["count"][0] == 1 and clu["count"][15] == 3    # header; tail slots 125..127
    assert (clu["table"][[0, 15]] != -1).all()
    assert clu["table"][0] != clu["table"][15]
    free = np.arange(1, 15)
    assert (clu["flags"][free] == CLUSTER_FLAG_FREE).all()
    assert (clu["table"][free] == -1).all() and (clu["count"][free] == 0).all()
    assert (clu["order"] == 0).all() and (clu["lost"] == 0).all()
    assert int(s.shm.slab_hdr["live"]) == 2
    assert (s.shm.objs["state"][clu["table"][[0, 15]]] == OBJ_INUSE).all()
    assert list(s.shm.objs["owner"][clu["table"][[0, 15]]]) == [0, 15]
    assert s.shm.map_np[0] == SWAP_MAP_BAD and not s.shm.map_np[1:].any()
    assert int(dev["flags"]) == SWP_USED | SWP_BLKDEV | SWP_SOLIDSTATE | SWP_WRITEOK
    assert int(dev["max"]) == 125 and int(dev["pages"]) == 124
    assert int(dev["inuse_pages"]) == 0 and int(dev["on_avail"]) == 1
    assert int(dev["nr_swap_pages"]) == int(dev["total_swap_pages"]) == 124
    assert not s.shm.pcp["si"].any() and not s.shm.pcp["offset"].any()
    assert_clean(s)


def test_swapon_without_tail(system):
    assert walk(system, list_nonfull(0)) == [0]
    assert walk(system, LIST_FREE) == list(range(1, 16))
    assert int(system.shm.slab_hdr["live"]) == 1


def test_swapon_bad_pages(make_system):
    s = make_system(clusters=16, bad_pages=(9, 20, 21, 100))
    clu = s.shm.clu
    assert walk(s, list_nonfull(0)) == [0, 1, 2, 12]
    assert walk(s, LIST_FREE) == [c for c in range(16) if c not in (0, 1, 2, 12)]
    assert list(clu["count"][[0, 1, 2, 12]]) == [1, 1, 2, 1]
    assert (clu["table"][[0, 1, 2, 12]] != -1).all()
    assert int(s.shm.slab_hdr["live"]) == 4
    m = s.shm.map_np
    assert [int(m[b]) for b in (0, 9, 20, 21, 100)] == [SWAP_MAP_BAD] * 5
    assert np.count_nonzero(m) == 5
    assert int(s.shm.dev["pages"]) == 128 - 1 - 4
    assert_clean(s)


def test_bad_pages_are_never_allocated(make_system):
    bad = (3, 9, 20, 21, 127)
    s = make_system(clusters=16, bad_pages=bad)
    pages = int(s.shm.dev["pages"])
    got = [alloc_folio(s, 0, SWAPPED) for _ in range(pages)]
    assert all(e > 0 for e in got)
    assert len(set(got)) == pages and not set(got) & set(bad)
    assert alloc_folio(s, 0) == -errno.ENOMEM
    assert int(s.shm.dev["on_avail"]) == 0
    assert int(s.shm.dev["inuse_pages"]) == pages | SWAP_USAGE_OFFLIST_BIT
    assert [int(s.shm.map_np[b]) for b in bad] == [SWAP_MAP_BAD] * len(bad)
    assert_clean(s)


def test_swapon_static_tables(make_system):
    s = make_system(clusters=16, tail=5, tables="static")
    clu = s.shm.clu
    assert (clu["table"] != -1).all()
    assert len(set(clu["table"].tolist())) == 16
    assert int(s.shm.slab_hdr["live"]) == 16
    assert (s.shm.objs["owner"][clu["table"]] == np.arange(16)).all()
    assert walk(s, LIST_FREE) == list(range(1, 15))
    assert_clean(s)


def test_swapon_hdd_and_discard_flags(make_system):
    hdd = make_system(device="hdd", discard="on")
    flags = int(hdd.shm.dev["flags"])
    assert not flags & SWP_SOLIDSTATE and flags & SWP_PAGE_DISCARD and flags & SWP_WRITEOK
    assert not hdd.shm.dev["global_next"].any()
    assert_clean(hdd)


def test_one_tib_device_swapons(make_system):
    s = make_system(size="1T", slots_per_cluster=512)
    try:
        assert s.cfg.nr_clusters == 524288
        clu = s.shm.clu
        assert len(clu) == 524288
        assert int(s.shm.dev["heads"][LIST_FREE][2]) == 524287
        assert int(s.shm.dev["heads"][list_nonfull(0)][0]) == 0
        assert int(s.shm.slab_hdr["live"]) == 1
        assert int(np.count_nonzero(clu["table"] != -1)) == 1
        e0 = alloc_folio(s, 0, SWAPPED)
        e9 = alloc_folio(s, 9, SWAPPED)
        assert e0 == 1 and e9 == 512              # a whole cluster from free_clusters
        assert int(clu["count"][1]) == 512 and int(s.shm.slab_hdr["live"]) == 2
        release_all(s)
        assert int(clu["table"][1]) == -1 and int(s.shm.slab_hdr["live"]) == 1
        assert swap_usage_in_pages(s.si) == 0
    finally:
        s.close()


# -- swapoff --------------------------------------------------------------------------------------------

def _unuse_everything(system, manager):
    def try_to_unuse(si):
        for task in system.tasks:
            system.switch_to(task)
            for entry in [e for e, h in system.held.items() if h.wid == task.wid]:
                release(system, entry)
        system.switch_to(manager)
        system.system.run_pending_work()
    return try_to_unuse


@pytest.mark.parametrize("kw", [{}, {"discard": "on"}, {"tables": "static"}, {"alloc_table": "merged"}])
def test_swapoff_flushes_percpu_and_frees_every_table(make_system, kw):
    s = make_system(n_workers=3, cpus=2, tail=2, orders={0: 0.5, 1: 0.5}, **kw)
    si = s.si
    cpu0, cpu1, manager = s.tasks
    for task, states in ((cpu0, (SWAPPED, CACHE_ONLY, CACHED)), (cpu1, (CACHED, SWAPPED))):
        s.switch_to(task)
        for i in range(6):
            assert alloc_folio(s, i % 2, states[i % len(states)]) > 0
    pcp = s.shm.pcp
    assert pcp["si"][:2].any(axis=1).all()
    offsets = pcp["offset"].copy()
    assert offsets[0].any() and offsets[1].any()
    assert int(s.shm.slab_hdr["live"]) > 2
    s.switch_to(manager)
    swapoff(si, _unuse_everything(s, manager))
    s.system.run_pending_work()
    assert not pcp["si"].any()                              # every CPU's si[] cleared
    assert (pcp["offset"] == offsets).all()                  # offset[] left stale
    assert int(s.shm.slab_hdr["live"]) == 0                  # no table object allocated
    assert (s.shm.clu["table"] == -1).all()
    assert int(s.shm.dev["flags"]) == 0
    assert int(s.shm.dev["users"]) == 1
    assert swap_usage_in_pages(si) == 0
    assert not s.shm.workers["rec"]["ref"].any()
    assert s.held == {}
    assert stat(s, Stat.WARNINGS, "all") == 0


def test_swapoff_frees_go_straight_to_free_with_discard(make_system):
    s = make_system(n_workers=2, cpus=1, discard="on")
    si = s.si
    e = alloc_folio(s, 0, SWAPPED)
    ci = e >> si.spc_shift
    seen = []

    def try_to_unuse(si_):
        assert not si.writeok()
        release(s, e)
        seen.append((int(s.shm.clu["flags"][ci]), int(s.shm.clu["table"][ci])))

    swapoff(si, try_to_unuse)
    assert int(s.shm.dev["discard_work"]) == 0
    assert seen == [(CLUSTER_FLAG_FREE, -1)]                 # not DISCARD: WRITEOK is clear
    assert int(s.shm.dev["heads"][LIST_DISCARD][2]) == 0
    assert int(s.shm.slab_hdr["live"]) == 0


def test_swapoff_waits_for_device_refs(system):
    si = system.si
    system.shm.workers["rec"]["ref"][1] = 1        # worker 1 is inside an allocation (asleep, say)
    with pytest.raises(TimeoutError, match="did not drain"):
        swapoff(si, lambda si_: None, drain_timeout_s=0.05)
    assert not si.writeok()
    system.shm.workers["rec"]["ref"][1] = 0


class _GracePeriods(Observer):
    """Each grace period: (``si->users`` killed?, device references held) at its end."""

    def __init__(self, system) -> None:
        self.system, self.seen = system, []

    def grace_period(self, gp_seq, ns) -> None:
        self.seen.append((int(self.system.shm.dev["users"]), int(self.system.shm.workers["rec"]["ref"].sum())))


def test_swapoff_follows_the_kernels_order(system):
    """SYSCALL swapoff at 07adc4cf: under ``si->lock`` ``del_from_avail_list(p, true)`` and
    ``plist_del(&p->list, &swap_active_head)`` before ``try_to_unuse``; after it
    ``percpu_ref_kill(&p->users); synchronize_rcu(); wait_for_completion(&p->comp);``: the grace
    period ends with the ref killed and still held, and only then does swapoff wait for it."""
    s, si = system, system.si
    cpu0, manager = s.tasks[0], s.tasks[-1]
    entry = alloc_folio(s, 0, SWAPPED)
    assert entry > 0
    assert get_swap_device_info(si)                 # worker 0 keeps a device reference
    obs = s.add_observer(_GracePeriods(s))
    seen: dict = {}
    unuse = _unuse_everything(s, manager)

    def try_to_unuse(si_) -> None:
        seen.update(active=plist_types(si, si.active_base), writeok=si.writeok(), users=int(s.shm.dev["users"]))
        unuse(si_)
        seen["gps"] = len(obs.seen)

    waits: list[int] = []

    def idle() -> None:                               # swapoff waits for the reference
        waits.append(len(obs.seen))
        s.switch_to(cpu0)
        put_swap_device(si)
        s.switch_to(manager)

    s.switch_to(manager)
    try:
        swapoff(si, try_to_unuse, idle=idle)
    finally:
        s.system.observers.remove(obs)
    s.system.run_pending_work()
    assert seen["active"] == [] and not seen["writeok"] and seen["users"] == 0
    assert waits and waits[0] == seen["gps"] + 1, (waits, seen)     # synchronize_rcu, then the wait
    assert obs.seen[seen["gps"]] == (1, 1)          # its grace period: ref killed, still held
    assert int(s.shm.workers["rec"]["ref"].sum()) == 0 and int(s.shm.slab_hdr["live"]) == 0


def test_add_to_avail_list_at_swapon_needs_si_lock(system):
    """``add_to_avail_list(si, true)``: ``lockdep_assert_held(&si->lock)``, which
    ``enable_swap_info`` holds (the model took none before: swapon_again called it bare)."""
    s, si = system, system.si
    with pytest.raises(KernelBug, match="add_to_avail_list"):
        add_to_avail_list(si, True)
    si.si_lock()
    add_to_avail_list(si, True)                      # already on the list: nothing changes
    si.si_unlock()
    assert si.on_avail()
    assert_clean(s)



# -- SwapSystem.create: segments, then swapon -------------------------------------------------------

def test_create_failure_leaves_nothing(monkeypatch):
    before = set(leftover_segments())

    def boom(shm, slab):
        raise RuntimeError("swapon failed")

    monkeypatch.setattr(system_mod, "swapon", boom)
    with pytest.raises(RuntimeError, match="swapon failed"):
        SwapSystem.create(small_config(), n_workers=2)
    assert set(leftover_segments()) <= before


def test_system_is_a_context_manager():
    with SwapSystem.create(Config(size="1M", slots_per_cluster=8, orders={0: 1.0}, cpus=1)) as s:
        names = set(s.shm.names().values())
        assert names <= set(leftover_segments())
    assert not names & set(leftover_segments())
    s.close()                                     # idempotent


def test_a_free_during_swapoff_leaves_the_device_off_the_avail_list(system):
    """Issue 7 item 6b: swapoff's ``del_from_avail_list`` clears SWP_WRITEOK and sets OFFLIST; the
    frees of ``try_to_unuse`` then see OFFLIST, and ``add_to_avail_list`` must leave the device off
    the list because SWP_WRITEOK is clear (reference §2.5).  I-avail holds at the quiescence after
    the first free, and the swapoff account (``check_swapoff``) says so too."""
    s, si = system, system.si
    entries = [alloc_folio(s, 0, SWAPPED) for _ in range(3)]
    assert si.on_avail()
    si.si_lock()                                         # as swapoff holds it
    del_from_avail_list(si, True)                        # swapoff's first step
    si.si_unlock()
    release(s, entries[0])                               # a free while swapoff runs: swap_usage_sub
    assert not si.on_avail()
    assert int(s.shm.dev["inuse_pages"]) & SWAP_USAGE_OFFLIST_BIT
    assert "I-avail" not in {v.invariant for v in run_check(s).violations}
    manager = s.tasks[-1]
    s.switch_to(manager)
    swapoff(si, _unuse_everything(s, manager))           # the rest freed by try_to_unuse
    s.system.run_pending_work()
    assert not si.on_avail()
    res = CheckResult()
    check_swapoff(s.shm, res, [])
    assert res.violations == [], res.violations
