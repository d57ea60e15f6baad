"""Tests of shmswap.mm.device: usage and the avail list (with the reclaim work a full device
schedules), and the device reference (``get_swap_device_info`` / ``put_swap_device``).  Swapon and
swapoff are in test_swapon.py."""

import errno

from conftest import alloc_folio, assert_clean, release

from shmswap.mm.device import get_swap_device_info, put_swap_device, swap_usage_in_pages, vm_swap_full
from shmswap.mm.swap import SWAP_USAGE_OFFLIST_BIT
from shmswap.substrate.layout import DEVICE

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
