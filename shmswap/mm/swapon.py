"""Swapon and swapoff: a device's setup and its teardown in the kernel's order (reference §8).

Models, in mm/swapfile.c: ``setup_clusters`` with ``inc_cluster_info_page``, ``setup_swap_map``,
``setup_swap_info`` / ``enable_swap_info``; and for swapoff, in SYSCALL swapoff's order at
07adc4cf: under ``si->lock`` ``del_from_avail_list``, the default priorities moved up and
``plist_del`` from ``swap_active_head``; then ``wait_for_allocation``, ``try_to_unuse`` (the
caller's), ``percpu_ref_kill``, ``synchronize_rcu``, the wait for ``si->users``
(``wait_for_completion``), the ``flush_work`` of both work items, ``flush_percpu_swap_cluster``
and ``free_cluster_info``.

Swapon initialises the segments with numpy in whole-array steps: a 1 TiB device (2^28 slots,
524288 clusters) is set up without a Python loop over clusters, and the swap_map and table memory
are not touched beyond the reserved slots.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..config import Config
from ..substrate.layout import DEVICE, LIST_FREE, list_nonfull
from ..substrate.state import SwapShm
from .cluster import C_COUNT, C_TABLE, CW, ci_lock, ci_unlock, swap_cluster_free_table
from .device import SwapInfo, add_to_avail_list, del_from_avail_list, plist_add, plist_del
from .slab import TableSlab
from .swap import (
    CLUSTER_FLAG_FREE,
    CLUSTER_FLAG_NONFULL,
    SWAP_MAP_BAD,
    SWAP_USAGE_OFFLIST_BIT,
    SWP_BLKDEV,
    SWP_PAGE_DISCARD,
    SWP_SOLIDSTATE,
    SWP_USED,
)
from .work import flush_scheduled_work

__all__ = ["swapon", "enable_swap_info", "swapoff", "wait_for_allocation", "free_cluster_info",
           "reserved_slots_per_cluster", "swapon_again"]

_USERS_OFF = 8 * DEVICE.users
_PRIO, _LEAST = DEVICE.prio, DEVICE.least_priority


def reserved_slots_per_cluster(cfg: Config) -> np.ndarray:
    """Slots ``inc_cluster_info_page`` counts at swapon: the header, bad pages, the last cluster's tail."""
    spc, nrc = cfg.slots_per_cluster, cfg.nr_clusters
    reserved = np.zeros(nrc, dtype=np.int64)
    reserved[0] += 1
    np.add.at(reserved, np.unique(np.asarray(cfg.bad_pages, dtype=np.int64)) // spc, 1)
    reserved[-1] += nrc * spc - cfg.max_slots
    return reserved


def swapon(shm: SwapShm, slab: TableSlab) -> None:
    """Initialise a fresh device in the owner's segments (the swapon syscall, one device).

    Models ``setup_clusters`` (eager tables and counts for the header, bad pages and the tail of the
    last cluster through ``inc_cluster_info_page``; every other cluster on ``free_clusters`` in
    index order) and ``setup_swap_map``, leaving the device as ``alloc_swap_info`` does (off the
    avail list, ``users`` dead, ``SWP_WRITEOK`` clear) for ``enable_swap_info``.
    """
    cfg = shm.cfg
    nrc, maxp = cfg.nr_clusters, cfg.max_slots
    clu = shm.clu
    reserved = reserved_slots_per_cluster(cfg)
    bad = np.unique(np.asarray(cfg.bad_pages, dtype=np.int64))
    clu["count"] = reserved
    clu["order"] = 0
    clu["table"] = -1
    clu["lost"] = 0
    has = reserved > 0
    clu["flags"] = np.where(has, CLUSTER_FLAG_NONFULL, CLUSTER_FLAG_FREE)
    shm.dev["heads"][:] = (-1, -1, 0)
    _link_in_order(shm, LIST_FREE, np.flatnonzero(~has))
    _link_in_order(shm, list_nonfull(0), np.flatnonzero(has))
    # Tables: eagerly for reserved clusters (dynamic), or for every cluster (static).
    eager = np.arange(nrc) if cfg.tables == "static" else np.flatnonzero(has)
    clu["table"][eager] = slab.alloc_at_swapon(eager)
    # setup_swap_map: header and bad pages are SWAP_MAP_BAD; the rest stays zero (untouched).
    shm.map[0] = SWAP_MAP_BAD
    for b in bad:
        shm.map[int(b)] = SWAP_MAP_BAD
    pages = maxp - 1 - len(bad)
    dev = shm.dev
    flags = SWP_USED | SWP_BLKDEV | (SWP_SOLIDSTATE if cfg.ssd else 0)
    if cfg.discard == "on":
        flags |= SWP_PAGE_DISCARD
    dev["flags"] = flags             # SWP_WRITEOK comes with enable_swap_info's add_to_avail_list
    dev["max"] = maxp
    dev["pages"] = pages
    dev["inuse_pages"] = SWAP_USAGE_OFFLIST_BIT      # alloc_swap_info: off the avail list
    dev["on_avail"] = 0
    dev["nr_swap_pages"] = pages
    dev["total_swap_pages"] = pages
    dev["users"] = 1                 # PERCPU_REF_INIT_DEAD until enable_swap_info resurrects it
    dev["global_next"][:] = 0


def setup_swap_info(si: SwapInfo, prio: int) -> None:
    """Models ``setup_swap_info()``'s priority (caller holds ``si->lock``)::

        if (prio >= 0) si->prio = prio; else si->prio = --least_priority;

    with ``static int least_priority = -1`` (07adc4cf): the first device swapped on without a
    priority gets -2, the next -3.  ``least_priority`` is a word of device 0's record (the
    kernel's ``swap_lock`` guards it; here only the manager swaps on and off, one at a time).
    The plists' own priorities follow from ``si->prio`` (device.py ``avail_prio``).
    """
    if prio >= 0:
        si.devq[_PRIO] = prio
    else:
        least = int(si.availq[_LEAST]) - 1
        si.availq[_LEAST] = least
        si.devq[_PRIO] = least


def enable_swap_info(si: SwapInfo, prio: int) -> None:
    """Models ``enable_swap_info()`` / ``_enable_swap_info()`` for a device whose segments are set
    up, off the avail list (``inuse_pages`` = OFFLIST, ``SWP_WRITEOK`` clear)::

        spin_lock(&swap_lock); spin_lock(&si->lock); setup_swap_info(si, prio, ...); unlock both;
        percpu_ref_resurrect(&si->users);
        spin_lock(&swap_lock); spin_lock(&si->lock);
        _enable_swap_info(si): ... plist_add(&si->list, &swap_active_head); add_to_avail_list(si, true);
        spin_unlock(&si->lock); spin_unlock(&swap_lock);

    ``prio`` < 0: no priority given (the swapon syscall's -1), ``--least_priority``.  The model
    has no ``swap_lock`` (swapon and swapoff are the manager's, one at a time); its
    ``swap_active_head`` is kept under ``swap_avail_lock``, taken inside ``si->lock`` as
    ``add_to_avail_list`` takes it (reference §2.6: si->lock → swap_avail_lock).  The counters are
    the callers' (``swapon``, ``swapon_again``).
    """
    si.si_lock()
    setup_swap_info(si, prio)
    si.si_unlock()
    si.devr.store(_USERS_OFF, 0)                     # percpu_ref_resurrect(&si->users)
    si.si_lock()
    si.swap_avail_lock()
    plist_add(si, si.active_base)
    si.swap_avail_unlock()
    add_to_avail_list(si, True)                      # SWP_WRITEOK, then on swap_avail_head
    si.si_unlock()


def _link_in_order(shm: SwapShm, lst: int, idx: np.ndarray) -> None:
    """Link clusters ``idx`` (ascending) as list ``lst``, all at once."""
    clu, heads = shm.clu, shm.dev["heads"]
    n = len(idx)
    if n:
        clu["prev"][idx[1:]] = idx[:-1]
        clu["next"][idx[:-1]] = idx[1:]
        clu["prev"][idx[0]] = -1
        clu["next"][idx[-1]] = -1
    heads[lst] = (idx[0] if n else -1, idx[-1] if n else -1, n)


def swapoff(si: SwapInfo, try_to_unuse: Callable[[SwapInfo], None], drain_timeout_s: float = 10.0,
            idle: Callable[[], None] | None = None) -> None:
    """The swapoff syscall, in the kernel's order (reference §8).

    ``try_to_unuse(si)`` must free every slot still in use (the caller owns the folios and map
    counts); the tables of the clusters that keep reserved slots are freed last, by
    ``free_cluster_info``.  ``idle()``, if given, runs while the refs drain instead of a sleep:
    a manager swapping off during a run keeps serving the sleeping allocations that hold them.
    ``flush_percpu_swap_cluster`` clears only the ``si[]`` entries naming this device.
    """
    dev = si.shm.dev
    si.si_lock()
    del_from_avail_list(si, True)
    si.swap_avail_lock()                 # the model's swap_active_head lock (no swap_lock)
    if si.prio < 0:
        _raise_lower_priorities(si)
    plist_del(si, si.active_base)        # plist_del(&p->list, &swap_active_head)
    si.swap_avail_unlock()
    si.nr_swap_pages_add(-int(dev["pages"]))
    dev["total_swap_pages"] -= dev["pages"]
    si.si_unlock()
    wait_for_allocation(si)
    try_to_unuse(si)
    si.devr.store(_USERS_OFF, 1)         # percpu_ref_kill(&p->users)
    si.rcu.synchronize_rcu()
    _wait_for_users(si, drain_timeout_s, idle)      # wait_for_completion(&p->comp)
    flush_scheduled_work(si)
    si.pcp.flush(si.tag)
    free_cluster_info(si)
    dev["flags"] = 0


def _raise_lower_priorities(p: SwapInfo) -> None:
    """Swapoff of a device without a given priority (07adc4cf)::

        if (p->prio < 0) {
            plist_for_each_entry_continue(si, &swap_active_head, list) {
                si->prio++; si->list.prio--;
                for_each_node(nid) if (si->avail_lists[nid].prio != 1) si->avail_lists[nid].prio--;
            }
            least_priority++;
        }

    Every device after ``p`` on ``swap_active_head`` has a lower, so default, priority: each
    moves up by one and the next default-priority swapon reuses the freed value.  The avail
    rank of those devices is the node-local 1 (device.py ``avail_prio``) and does not change.
    """
    q, base, devs = p.availq, p.active_base, p.devs
    types = [int(q[base + 1 + i]) for i in range(int(q[base]))]
    for t in types[types.index(p.type) + 1:]:
        devs[t].devq[_PRIO] += 1
    q[_LEAST] += 1


def wait_for_allocation(si: SwapInfo) -> None:
    """Models ``wait_for_allocation()``: lock and unlock every cluster."""
    for ci in range(si.nr_clusters):
        ci_lock(si, ci)
        ci_unlock(si, ci)


def _wait_for_users(si: SwapInfo, timeout_s: float, idle: Callable[[], None] | None = None) -> None:
    """``wait_for_completion(&p->comp)``: the killed ref drains (a sleeping allocator holds one)."""
    refs = si.shm.workers["rec"]["ref"]
    deadline = time.monotonic() + timeout_s
    while refs.sum() != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"swapoff: device references did not drain: {refs.tolist()}")
        if idle is not None:
            idle()
        else:
            time.sleep(0.001)


def free_cluster_info(si: SwapInfo) -> None:
    """Models ``free_cluster_info()``: free the tables clusters still hold (reserved slots)."""
    clu = si.shm.clu
    for ci in np.flatnonzero(clu["table"] != -1):
        ci = int(ci)
        ci_lock(si, ci)
        if si.cq[ci * CW + C_TABLE] != -1:
            si.cq[ci * CW + C_COUNT] = 0
            swap_cluster_free_table(si, ci)
        ci_unlock(si, ci)


def swapon_again(si: SwapInfo, prio: int) -> None:
    """The swapon syscall for a device swapped off during the run (``--swapoff-every``), with its
    size, kind, discard setting and requested priority, while the CPUs run.  ``prio`` is what the
    swapon asks for, not what the device had: -1 (none given) gets ``--least_priority``, the new
    lowest default priority, as ``setup_swap_info`` gives it.

    Models ``alloc_swap_info`` reusing the type (``inuse_pages = OFFLIST``, the ``users`` ref
    dead until resurrected), ``setup_clusters`` (every cluster re-initialised and relisted; eager
    tables from the running slab), ``setup_swap_map`` (after ``try_to_unuse`` only the BAD marks
    are left in the map, as swapon writes them) and ``enable_swap_info``: publish,
    ``percpu_ref_resurrect``, then the counters, ``swap_active_head`` and
    ``add_to_avail_list(si, true)``, which sets ``SWP_WRITEOK`` last.  Until then no CPU reaches
    the device's clusters: it is on no list, ``SWP_WRITEOK`` is clear, and swapoff's flush
    cleared every ``si[]`` naming it.  The per-CPU ``offset[]`` values swapoff left stale stay,
    as in the kernel.  The device's lost-cluster words are cleared with the clusters: the caller
    records them first.
    """
    shm = si.shm
    cfg, dev, clu = shm.cfg, shm.dev, shm.clu
    if int(dev["flags"]):
        raise RuntimeError(f"swapon: swap type {si.type} is in use (flags {int(dev['flags']):#x})")
    reserved = reserved_slots_per_cluster(cfg)
    has = reserved > 0
    clu["count"] = reserved
    clu["order"] = 0
    clu["table"] = -1
    clu["lost"] = 0
    clu["flags"] = np.where(has, CLUSTER_FLAG_NONFULL, CLUSTER_FLAG_FREE)
    dev["heads"][:] = (-1, -1, 0)
    _link_in_order(shm, LIST_FREE, np.flatnonzero(~has))
    _link_in_order(shm, list_nonfull(0), np.flatnonzero(has))
    eager = np.arange(cfg.nr_clusters) if cfg.tables == "static" else np.flatnonzero(has)
    for ci in eager:
        table = si.slab.alloc_at_swapon_again(int(ci))
        if table < 0:
            raise RuntimeError(f"swapon: no table for cluster {int(ci)} of swap type {si.type} (pool exhausted)")
        clu["table"][ci] = table
    pages = cfg.max_slots - 1 - len(np.unique(np.asarray(cfg.bad_pages, dtype=np.int64)))
    flags = SWP_USED | SWP_BLKDEV | (SWP_SOLIDSTATE if cfg.ssd else 0)
    if cfg.discard == "on":
        flags |= SWP_PAGE_DISCARD
    dev["inuse_pages"] = SWAP_USAGE_OFFLIST_BIT      # alloc_swap_info: off the avail list
    dev["on_avail"] = 0
    dev["global_next"][:] = 0
    dev["max"] = cfg.max_slots
    dev["pages"] = pages
    dev["flags"] = flags                             # SWP_WRITEOK comes with add_to_avail_list
    dev["users"] = 1                                 # still dead: enable_swap_info resurrects it
    si.nr_swap_pages_add(pages)
    dev["total_swap_pages"] += pages
    enable_swap_info(si, prio)                       # priority, ref, active list, avail list
