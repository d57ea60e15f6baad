"""Tests of shmswap.mm.device: usage and the avail list (with the reclaim work a full device
schedules), and the device reference (``get_swap_device_info`` / ``put_swap_device``).  Swapon and
swapoff are in test_swapon.py."""

import errno

from conftest import alloc_folio, assert_clean, release

from shmswap.mm.device import (
    add_to_avail_list,
    get_swap_device_info,
    put_swap_device,
    swap_usage_add,
    swap_usage_in_pages,
    vm_swap_full,
)
from shmswap.mm.swap import SWAP_USAGE_OFFLIST_BIT
from shmswap.substrate.layout import DEVICE
from shmswap.substrate.observe import Observer
from shmswap.substrate.preempt import Point

# -- usage, avail list and vm_swap_full ----------------------------------------------------------------

def test_usage_avail_list_and_reclaim_work(system):
    s = system
    si, dev = s.si, s.shm.dev
    pages = int(dev["pages"])
    entries = [alloc_folio(s, 0) for _ in range(pages // 2)]
    assert swap_usage_in_pages(si) == pages // 2
    assert not vm_swap_full(si)
    entries.append(alloc_folio(s, 0))
    assert vm_swap_full(si)                          # more than half in use
    while len(entries) < pages:
        entries.append(alloc_folio(s, 0))
    assert int(dev["on_avail"]) == 0
    assert int(dev["inuse_pages"]) & SWAP_USAGE_OFFLIST_BIT
    assert int(dev["reclaim_work"]) == 1             # filled while swap was full: work scheduled
    assert int(dev["nr_swap_pages"]) == 0
    assert_clean(s)
    release(s, entries[40])
    assert int(dev["on_avail"]) == 1
    assert int(dev["inuse_pages"]) == pages - 1
    assert int(dev["nr_swap_pages"]) == 1
    assert_clean(s)


def test_add_to_avail_list_puts_a_device_filled_again_back_on_the_list(system):
    """The race of reference §2.5, as mm/swapfile.c has it at 07adc4cf: a freer's
    ``swap_usage_sub`` sees OFFLIST and goes for ``swap_avail_lock``; meanwhile an allocator fills
    the device again (its ``swap_usage_add`` sees ``pages | OFFLIST``, not ``pages``: no
    ``del_from_avail_list``).  The freer's ``add_to_avail_list(si, false)`` then compares
    ``val == pages`` with ``val`` the value ``atomic_long_fetch_and`` returned, from before the bit
    was cleared, so the re-check never fires and the full device goes back on the list.  The model
    does what the kernel does; the checker's I-avail reports the state and names the race."""
    s = system
    si, dev = s.si, s.shm.dev
    pages = int(dev["pages"])
    entries = [alloc_folio(s, 0) for _ in range(pages)]
    assert min(entries) > 0 and int(dev["on_avail"]) == 0
    assert int(dev["inuse_pages"]) == pages | SWAP_USAGE_OFFLIST_BIT
    # the freer: atomic_long_sub_return_relaxed(1, &si->inuse_pages) sees the bit ...
    assert (si.devr.fetch_add(8 * DEVICE.inuse_pages, -1) - 1) & SWAP_USAGE_OFFLIST_BIT
    # ... the allocator fills the device again: pages | OFFLIST != pages, no del_from_avail_list
    assert swap_usage_add(si, 1) is False
    assert int(dev["inuse_pages"]) == pages | SWAP_USAGE_OFFLIST_BIT
    add_to_avail_list(si, False)                     # ... the freer goes on
    assert int(dev["on_avail"]) == 1 and int(dev["inuse_pages"]) == pages
    res = s.check()
    assert [v.invariant for v in res.violations] == ["I-avail"]
    assert "compares the value read before the bit was cleared" in res.violations[0].reason
    # the next allocation finds the full device on the list, fails on it; a free and a refill
    # take it off again through swap_usage_add's del_from_avail_list
    assert alloc_folio(s, 0) == -errno.ENOMEM
    release(s, entries[3])
    assert alloc_folio(s, 0) > 0
    assert int(dev["on_avail"]) == 0 and int(dev["inuse_pages"]) == pages | SWAP_USAGE_OFFLIST_BIT


def test_device_ref(system):
    si = system.si
    ref = system.shm.workers["rec"]["ref"]
    assert get_swap_device_info(si)
    assert int(ref[0]) == 1
    put_swap_device(si)
    assert int(ref[0]) == 0
    si.devr.store(8 * DEVICE.users, 1)               # percpu_ref_kill
    assert not get_swap_device_info(si)
    assert int(ref[0]) == 0
    assert alloc_folio(system, 0) == -errno.ENOMEM


class KillAtDeviceRef(Observer):
    """At ``get_swap_device_info``'s preemption point, run swapoff's ``percpu_ref_kill`` and look
    whether the references have drained, as ``_kill_users`` would (once)."""

    def __init__(self, system) -> None:
        self.system = system
        self.drained: bool | None = None

    def sched_point(self, kind, a, b) -> None:
        if kind != Point.DEVICE_REF or self.drained is not None:
            return
        self.system.si.devr.store(8 * DEVICE.users, 1)                       # percpu_ref_kill
        self.drained = int(self.system.shm.workers["rec"]["ref"].sum()) == 0   # swapoff would go on


def test_device_ref_is_taken_before_users_is_read(system):
    """Issue 7 item 6c: swapoff's kill lands between the getter's reference and its read of
    ``users``.  The getter must then either be seen by the drain or see the kill; never both
    missed (a getter that reads ``users`` first and then takes its reference uses a device that
    swapoff believes has no users)."""
    si = system.si
    obs = system.add_observer(KillAtDeviceRef(system))
    try:
        got = get_swap_device_info(si)
    finally:
        system.system.observers.remove(obs)
    assert obs.drained is not None, "no preemption point inside get_swap_device_info"
    assert not (obs.drained and got), "swapoff saw no user, yet the getter took the device"
    assert obs.drained is False and got is False
    assert int(system.shm.workers["rec"]["ref"].sum()) == 0
