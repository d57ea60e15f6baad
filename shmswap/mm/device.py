"""The swap device: ``struct swap_info_struct``, its usage counters, the avail list and its refs.

Models, in mm/swapfile.c: ``swap_usage_add`` / ``swap_usage_sub``, ``swap_usage_in_pages``,
``vm_swap_full``, ``add_to_avail_list`` / ``del_from_avail_list``, ``get_swap_device_info`` /
``put_swap_device``.  Swapon and swapoff are in swapon.py.

``SwapInfo`` is one process's handle on the shared device: the device's words (``si->lock``,
``global_cluster_lock``, flags, counters, list heads) and the views of the segments hanging off
it (cluster array, swap_map, tables), the variant's policy objects and the table source.  The
per-CPU area is ``si.pcp`` (percpu.py) and the running task is ``si.cur`` (task.py, the kernel's
``current``): the allocator's functions take ``si`` as their first argument, as the kernel's do,
and reach ``this_cpu`` and ``current`` through it.

The device's percpu_ref (``si->users``) is modelled as one reference count per worker (in the
worker's record: no cache line is shared by the fast path) plus a ``dead`` word; the getter
increments its count and then checks ``dead``, the killer sets ``dead`` and then waits for the sum
to drain, a Dekker pair made safe by the C module's sequentially consistent atomics.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import Config
from ..substrate.layout import CLUSTER, DEVICE, Record
from ..substrate.locks import LockClass
from ..substrate.observe import Observers
from ..substrate.preempt import Point, sched_point
from ..substrate.state import SwapShm
from .folio import Folios
from .percpu import PercpuSwapCluster
from .rcu import Rcu
from .slab import TableSlab
from .swap import SWAP_USAGE_COUNTER_MASK, SWAP_USAGE_OFFLIST_BIT, SWP_WRITEOK, KernelBug
from .task import Current

__all__ = [
    "SwapInfo", "swap_usage_add", "swap_usage_sub", "get_swap_device_info", "put_swap_device",
    "vm_swap_full", "swap_usage_in_pages", "add_to_avail_list", "del_from_avail_list",
    "SI_LOCK_OFF", "GLOBAL_LOCK_OFF", "AVAIL_LOCK_OFF", "CI_BYTES", "plist_types", "plist_add", "plist_del",
    "plist_requeue", "avail_prio",
]

# Byte offsets of the device's lock words and hot counters, from the generated record.
SI_LOCK_OFF, GLOBAL_LOCK_OFF, AVAIL_LOCK_OFF = 8 * DEVICE.si_lock, 8 * DEVICE.global_lock, 8 * DEVICE.avail_lock
_INUSE_OFF, _NR_SWAP_OFF, _USERS_OFF = 8 * DEVICE.inuse_pages, 8 * DEVICE.nr_swap_pages, 8 * DEVICE.users
_DISCARD_WORK_OFF, _RECLAIM_WORK_OFF = 8 * DEVICE.discard_work, 8 * DEVICE.reclaim_work
_FLAGS, _PAGES, _TOTAL, _ON_AVAIL = DEVICE.flags, DEVICE.pages, DEVICE.total_swap_pages, DEVICE.on_avail
_PRIO = DEVICE.prio
CI_BYTES = 8 * CLUSTER.size          # a cluster's record, and so the stride of its lock word
_SI_LOCK, _GLOBAL_LOCK, _AVAIL_LOCK = (int(c) for c in (LockClass.SI_LOCK, LockClass.GLOBAL_CLUSTER_LOCK,
                                                        LockClass.SWAP_AVAIL_LOCK))

_DEVICE_REF = int(Point.DEVICE_REF)

SleepAlloc = Callable[[int], int]


class SwapInfo:
    """One process's handle on ``struct swap_info_struct`` and the segments hanging off it."""

    def __init__(self, shm: SwapShm, variant, slab: TableSlab, rcu: Rcu, folios: Folios, cur: Current,
                 observers: Observers, sleep_alloc: SleepAlloc | None = None) -> None:
        cfg: Config = shm.cfg
        self.shm, self.cfg, self.geo = shm, cfg, shm.geo
        self.variant = variant
        self.slab, self.rcu, self.folios = slab, rcu, folios
        self.cur = cur
        self.obs = observers
        self.pcp = PercpuSwapCluster(shm)
        # kmem_cache_zalloc(GFP_KERNEL) for swap_cluster_alloc_table: the slab's own in a
        # single process, the manager's (through a worker's mailbox) in a multiprocess run.
        self.sleep_alloc: SleepAlloc = sleep_alloc or slab.alloc_sleeping
        self.spc = cfg.slots_per_cluster
        self.spc_shift = self.spc.bit_length() - 1
        self.max = cfg.max_slots
        self.nr_clusters = cfg.nr_clusters
        self.nr_orders = cfg.nr_orders
        self.pmd_order = cfg.pmd_order
        self.ssd = cfg.ssd
        # CONFIG_DEBUG_VM / CONFIG_LOCKDEP: the kernel's asserts that cost on the hot path (--lockdep)
        self.debug_vm = cfg.lockdep
        self.cq, self.cr = shm.cq, shm.cr
        self.map = shm.map
        self.tq, self.tr = shm.tq, shm.tr
        self.devq, self.devr = shm.devq, shm.devr
        dev = Record(shm.dev_dt)
        self.heads = dev.heads
        self.global_next = dev.global_next
        # si->type, and what percpu_swap_cluster.si[order] holds for this device (0 is NULL)
        self.type = shm.type
        self.tag = shm.type + 1
        # every device by type (``swap_info[]``), shared by the handles of one process
        self.devs: list[SwapInfo] = [self]
        # this device's percpu_ref counts (one per worker, in its own workers segment)
        self.refr = shm.wr
        # swap_avail_lock and the avail/active plists live in the first device's record
        first = shm.primary or shm
        self.availq, self.availr = first.devq, first.devr
        self.avail_base, self.active_base = dev.avail, dev.active
        self.xdev_log = dev.xdev_log

    # -- device locks -----------------------------------------------------------------------------
    def si_lock(self) -> None:
        self.devr.lock(SI_LOCK_OFF, _SI_LOCK)

    def si_unlock(self) -> None:
        self.devr.unlock(SI_LOCK_OFF, _SI_LOCK)

    def global_cluster_lock(self) -> None:
        self.devr.lock(GLOBAL_LOCK_OFF, _GLOBAL_LOCK)

    def global_cluster_unlock(self) -> None:
        self.devr.unlock(GLOBAL_LOCK_OFF, _GLOBAL_LOCK)

    def swap_avail_lock(self) -> None:
        self.availr.lock(AVAIL_LOCK_OFF, _AVAIL_LOCK)

    def swap_avail_unlock(self) -> None:
        self.availr.unlock(AVAIL_LOCK_OFF, _AVAIL_LOCK)

    # -- device words -----------------------------------------------------------------------------
    @property
    def flags(self) -> int:
        return self.devq[_FLAGS]

    def writeok(self) -> bool:
        return bool(self.devq[_FLAGS] & SWP_WRITEOK)

    def on_avail(self) -> bool:
        """On ``swap_avail_head`` (read under ``swap_avail_lock``, as ``swap_alloc_slow`` walks it)."""
        self.availr.lock(AVAIL_LOCK_OFF, _AVAIL_LOCK)
        on = self.devq[_ON_AVAIL]
        self.availr.unlock(AVAIL_LOCK_OFF, _AVAIL_LOCK)
        return bool(on)

    @property
    def prio(self) -> int:
        return self.devq[_PRIO]

    def nr_swap_pages_add(self, nr: int) -> None:
        """``atomic_long_add(nr, &nr_swap_pages)``."""
        self.devr.fetch_add(_NR_SWAP_OFF, nr)

    # -- the device's work items (run by the manager, never under the local lock) -------------------
    def schedule_discard_work(self) -> None:
        """``schedule_work(&si->discard_work)``."""
        self.devr.fetch_add(_DISCARD_WORK_OFF, 1)

    def schedule_reclaim_work(self) -> None:
        """``schedule_work(&si->reclaim_work)``."""
        self.devr.fetch_add(_RECLAIM_WORK_OFF, 1)

    def take_discard_work(self) -> bool:
        """The discard work runs: True if it was scheduled (the schedule is consumed)."""
        return bool(self.devr.xchg(_DISCARD_WORK_OFF, 0))

    def take_reclaim_work(self) -> bool:
        return bool(self.devr.xchg(_RECLAIM_WORK_OFF, 0))

    def list_head(self, lst: int) -> int:
        """First cluster of list ``lst`` (-1: empty)."""
        return self.devq[self.heads + 3 * lst]

    def list_len(self, lst: int) -> int:
        return self.devq[self.heads + 3 * lst + 2]


# -- usage and the avail list (mm/swapfile.c) ---------------------------------------------------------

def swap_usage_in_pages(si: SwapInfo) -> int:
    """Models ``swap_usage_in_pages()``: inuse_pages without the OFFLIST bit."""
    return si.devr.load(_INUSE_OFF) & SWAP_USAGE_COUNTER_MASK


def vm_swap_full(si: SwapInfo) -> bool:
    """Models ``vm_swap_full()``: more than half of the swap space is in use."""
    return si.devr.load(_NR_SWAP_OFF) * 2 < si.devq[_TOTAL]


# -- the priority lists (plists of device types in device 0's record, under swap_avail_lock) -----------

def plist_types(si: SwapInfo, base: int) -> list[int]:
    """The device types on the plist at ``base`` (avail or active), head first."""
    q = si.availq
    return [q[base + 1 + i] for i in range(q[base])]


def avail_prio(dev: SwapInfo) -> int:
    """The device's rank on ``swap_avail_heads[nid]``, in swap order (higher first).

    ``setup_swap_info`` at 07adc4cf: ``if (si->prio >= 0) si->avail_lists[i].prio = -si->prio;
    else { if (swap_node(si) == i) si->avail_lists[i].prio = 1; else ... = -si->prio; }``.  The
    model has one NUMA node and takes it as every device's ``swap_node`` (a disk that reports
    ``NUMA_NO_NODE`` would keep ``-si->prio`` on every node, and its default-priority devices
    would not rotate): every device without a priority ranks equal (plist prio 1), below every
    device with one (plist prio ``-prio`` <= 0), so ``swap_alloc_slow``'s requeue rotates
    between them.  Swapoff's ``if (si->avail_lists[nid].prio != 1) ...prio--`` leaves that rank.
    """
    prio = dev.prio
    return prio if prio >= 0 else -1


def _rank(si: SwapInfo, base: int) -> Callable[[SwapInfo], int]:
    """How plist ``base`` orders devices: ``avail_lists[0].prio`` on the avail list,
    ``list.prio`` (``-si->prio``) on ``swap_active_head``; both negated to swap order."""
    return avail_prio if base == si.avail_base else _swap_prio


def _swap_prio(dev: SwapInfo) -> int:
    return dev.prio


def plist_add(si: SwapInfo, base: int) -> None:
    """``plist_add``: after every device of a higher or equal priority (see ``_rank``)."""
    q, devs = si.availq, si.devs
    n = q[base]
    types = [q[base + 1 + i] for i in range(n)]
    if si.type in types:
        return
    rank = _rank(si, base)
    prio = rank(si)
    pos = n
    for i, t in enumerate(types):
        if rank(devs[t]) < prio:
            pos = i
            break
    types.insert(pos, si.type)
    for i, t in enumerate(types):
        q[base + 1 + i] = t
    q[base] = n + 1


def plist_del(si: SwapInfo, base: int) -> None:
    """``plist_del``."""
    q = si.availq
    types = [q[base + 1 + i] for i in range(q[base])]
    if si.type not in types:
        return
    types.remove(si.type)
    for i, t in enumerate(types):
        q[base + 1 + i] = t
    q[base] = len(types)


def plist_requeue(si: SwapInfo, base: int) -> None:
    """``plist_requeue``: move the device behind the last device of its priority."""
    q, devs = si.availq, si.devs
    n = q[base]
    types = [q[base + 1 + i] for i in range(n)]
    if si.type not in types:
        return
    i = types.index(si.type)
    rank = _rank(si, base)
    prio = rank(si)
    j = i
    while j + 1 < n and rank(devs[types[j + 1]]) == prio:
        j += 1
    if j == i:
        return
    del types[i]
    types.insert(j, si.type)
    for k, t in enumerate(types):
        q[base + 1 + k] = t


def _assert_si_lock_held(si: SwapInfo, where: str) -> None:
    """``lockdep_assert_held(&si->lock)`` of the swapon / swapoff branches (not on the hot path)."""
    if not si.devr.held_by_me(SI_LOCK_OFF):
        raise KernelBug(f"lockdep: {where} without si->lock held by worker {si.cur.wid}")


def del_from_avail_list(si: SwapInfo, swapoff: bool) -> None:
    """Models ``del_from_avail_list()``: take the device off the avail list, setting OFFLIST."""
    if swapoff:                          # lockdep_assert_held(&si->lock), checked before locking
        _assert_si_lock_held(si, "del_from_avail_list(si, true)")
    si.swap_avail_lock()
    if swapoff:
        si.devq[_FLAGS] &= ~SWP_WRITEOK
        # atomic_long_or: the bit only ever changes under swap_avail_lock, held here
        if not si.devr.load(_INUSE_OFF) & SWAP_USAGE_OFFLIST_BIT:
            si.devr.fetch_add(_INUSE_OFF, SWAP_USAGE_OFFLIST_BIT)
        si.devq[_ON_AVAIL] = 0
        plist_del(si, si.avail_base)
    else:
        pages = si.devq[_PAGES]
        if si.devr.cmpxchg(_INUSE_OFF, pages, pages | SWAP_USAGE_OFFLIST_BIT) == pages:
            si.devq[_ON_AVAIL] = 0
            plist_del(si, si.avail_base)
    si.swap_avail_unlock()


def add_to_avail_list(si: SwapInfo, swapon: bool) -> None:
    """Models ``add_to_avail_list()``: put the device back, clearing OFFLIST.

    As at 07adc4cf, line for line::

        if (swapon) { lockdep_assert_held(&si->lock); si->flags |= SWP_WRITEOK; }
        else if (!(READ_ONCE(si->flags) & SWP_WRITEOK)) goto skip;
        if (!(atomic_long_read(&si->inuse_pages) & SWAP_USAGE_OFFLIST_BIT)) goto skip;
        val = atomic_long_fetch_and_relaxed(~SWAP_USAGE_OFFLIST_BIT, &si->inuse_pages);
        pages = si->pages;
        if (val == pages) { if (atomic_long_try_cmpxchg(&si->inuse_pages, &pages,
                                                         pages | SWAP_USAGE_OFFLIST_BIT)) goto skip; }
        for_each_node(nid) plist_add(&si->avail_lists[nid], &swap_avail_heads[nid]);

    ``val`` is the value *before* the bit was cleared (``fetch_and`` returns the old value), and
    the bit was seen set under ``swap_avail_lock``, which every setter and clearer of the bit holds:
    ``val`` always carries the bit, ``val == pages`` never holds, and a device that an allocator
    filled between the freer's ``swap_usage_sub`` and this lock goes back on the list full
    (reference §2.5).  The model keeps the kernel's test as written, so it does not fire either;
    ``swap_alloc_slow`` then finds the full device on the list, fails on it and moves on.
    """
    if swapon:                           # lockdep_assert_held(&si->lock), checked before locking
        _assert_si_lock_held(si, "add_to_avail_list(si, true)")
    si.swap_avail_lock()
    if swapon:
        si.devq[_FLAGS] |= SWP_WRITEOK
    if si.devq[_FLAGS] & SWP_WRITEOK and si.devr.load(_INUSE_OFF) & SWAP_USAGE_OFFLIST_BIT:
        val = si.devr.fetch_add(_INUSE_OFF, -SWAP_USAGE_OFFLIST_BIT)     # the old value, bit set
        pages = si.devq[_PAGES]
        if val == pages and si.devr.cmpxchg(_INUSE_OFF, pages, pages | SWAP_USAGE_OFFLIST_BIT) == pages:
            si.swap_avail_unlock()
            return
        si.devq[_ON_AVAIL] = 1
        plist_add(si, si.avail_base)
    si.swap_avail_unlock()


def swap_usage_add(si: SwapInfo, nr: int) -> bool:
    """Models ``swap_usage_add()``; returns True if the device just became full."""
    if si.devr.fetch_add(_INUSE_OFF, nr) + nr == si.devq[_PAGES]:
        del_from_avail_list(si, False)
        return True
    return False


def swap_usage_sub(si: SwapInfo, nr: int) -> None:
    """Models ``swap_usage_sub()``: a free may put the device back on the avail list."""
    if (si.devr.fetch_add(_INUSE_OFF, -nr) - nr) & SWAP_USAGE_OFFLIST_BIT:
        add_to_avail_list(si, False)


def get_swap_device_info(si: SwapInfo) -> bool:
    """Models ``get_swap_device_info()``: ``percpu_ref_tryget_live(&si->users)``.

    The reference is taken before ``users`` is read (the Dekker pair with swapoff's kill and
    drain): a preemption point between the two lets a test run swapoff's kill right there.
    """
    wr, ref = si.refr, si.cur.ref_off
    wr.fetch_add(ref, 1)
    sched_point(_DEVICE_REF)
    if si.devr.load(_USERS_OFF):
        wr.fetch_add(ref, -1)
        return False
    return True


def put_swap_device(si: SwapInfo) -> None:
    """Models ``put_swap_device()``."""
    si.refr.fetch_add(si.cur.ref_off, -1)
