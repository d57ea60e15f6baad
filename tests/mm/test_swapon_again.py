"""Tests of shmswap.mm.swapon's ``swapon_again`` (a device swapped off during a run comes back as a
fresh swapon would leave it, tables from the running slab) and of ``flush_percpu_swap_cluster``
clearing only the swapped-off device's ``si[]`` entries (mm/percpu.py)."""

import numpy as np
import pytest
from conftest import CACHE_ONLY, SWAPPED, alloc_folio, assert_clean, release_all

from shmswap.checks.checker import CheckResult, check_swapoff
from shmswap.mm.swap import SWP_WRITEOK
from shmswap.mm.swapon import swapoff, swapon_again

_DEV = ("flags", "max", "pages", "inuse_pages", "on_avail", "nr_swap_pages", "total_swap_pages", "users")


def _state(s) -> dict:
    clu, dev = s.shm.clu, s.shm.dev
    return {"count": clu["count"].copy(), "flags": clu["flags"].copy(), "order": clu["order"].copy(),
            "prev": clu["prev"].copy(), "next": clu["next"].copy(), "has_table": clu["table"] != -1,
            "heads": dev["heads"].copy(), **{k: int(dev[k]) for k in _DEV}}


def _swapoff_all(s) -> None:
    cpu0, cpu1, manager = s.tasks

    def unuse(_si):
        for task in (cpu0, cpu1):
            s.switch_to(task)
            for entry in [e for e, h in s.held.items() if h.wid == task.wid]:
                s.free(entry)
        s.switch_to(manager)

    s.switch_to(manager)
    swapoff(s.si, unuse)
    s.system.run_pending_work()


@pytest.mark.parametrize("kw", [{}, {"discard": "on"}, {"tables": "static"}, {"device": "hdd"},
                                {"bad_pages": (9, 30)}])
def test_swapon_again_leaves_the_state_of_a_fresh_swapon(make_system, kw):
    s = make_system(n_workers=3, cpus=2, tail=2, orders={0: 0.5, 1: 0.5}, **kw)
    fresh = _state(s)
    eager = int(fresh["has_table"].sum())
    cpu0, cpu1, _ = s.tasks
    for task in (cpu0, cpu1):
        s.switch_to(task)
        for i in range(10):
            assert alloc_folio(s, i % 2, (SWAPPED, CACHE_ONLY)[i % 2]) > 0
    _swapoff_all(s)
    acc = check_swapoff(s.shm, CheckResult(), [], count_folios=False)
    assert (acc["tables_left"], acc["inuse_after"]) == (0, 0)
    swapon_again(s.si, s.si.prio)
    again = _state(s)
    for key, value in fresh.items():
        assert np.array_equal(again[key], value), key
    assert int(s.shm.slab_hdr["live"]) == eager               # the eager tables, from the running slab
    assert s.si.writeok() and s.si.on_avail()
    assert_clean(s)
    for task in (cpu0, cpu1):                                  # usable again
        s.switch_to(task)
        assert alloc_folio(s, 0, SWAPPED) > 0
    assert_clean(s)
    release_all(s)


def test_swapon_again_refuses_a_device_in_use(system):
    with pytest.raises(RuntimeError, match="in use"):
        swapon_again(system.si, system.si.prio)
    assert system.si.flags & SWP_WRITEOK


def test_flush_clears_only_the_devices_si(system):
    """``cmpxchg(si[order], p, NULL)``: entries naming another device stay, offsets stay."""
    pcp = system.si.pcp
    pcp.set(0, 0, 17, tag=1)
    pcp.set(1, 0, 23, tag=2)
    pcp.set(1, 1, 40, tag=1)
    pcp.flush(tag=1)
    assert [(pcp.si(c, o), pcp.offset(c, o)) for c, o in ((0, 0), (1, 0), (1, 1))] == [(0, 17), (2, 23), (0, 40)]
    pcp.flush()
    assert pcp.si(1, 0) == 0 and pcp.offset(1, 0) == 23
