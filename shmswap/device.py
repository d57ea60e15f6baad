"""The swap device: ``struct swap_info_struct``, swapon and swapoff, usage and the avail list.

Models, in mm/swapfile.c: ``setup_clusters``, ``inc_cluster_info_page``, ``enable_swap_info``,
``swap_usage_add`` / ``swap_usage_sub``, ``add_to_avail_list`` / ``del_from_avail_list``,
``get_swap_device_info`` / ``put_swap_device``, ``flush_percpu_swap_cluster``,
``wait_for_allocation``, ``free_cluster_info`` and the order of the swapoff syscall.

``SwapInfo`` is one process's handle on the shared device: the views of every segment, the
variant's policy objects, the table source and the current task.  The allocator's functions take it
as their first argument, as the kernel's take ``si``.  Swapon initialises the segments with numpy
in whole-array steps: a 1 TiB device (2^28 slots, 524288 clusters) is set up without a Python loop
over clusters, and the swap_map and table memory are not touched beyond the reserved slots.

The device's percpu_ref (``si->users``) is modelled as one reference count per worker (in the
worker's record: no cache line is shared by the fast path) plus a ``dead`` word; the getter
increments its count and then checks ``dead``, the killer sets ``dead`` and then waits for the sum
to drain, a Dekker pair made safe by the C module's sequentially consistent atomics.
"""

from __future__ import annotations

import os
import time

import numpy as np

from . import _prim
from .cluster import C_COUNT, C_TABLE, CLUSTER_FLAG_FREE, CLUSTER_FLAG_NONFULL, CW, swap_cluster_free_table
from .config import Config
from .layout import LIST_FREE, list_nonfull, word
from .locks import N_CLASSES, LockClass
from .state import WORKER_REC, SwapShm
from .stats import Stat

__all__ = [
    "SWP_USED", "SWP_WRITEOK", "SWP_SOLIDSTATE", "SWP_PAGE_DISCARD", "SWP_BLKDEV",
    "SWAP_USAGE_OFFLIST_BIT", "SwapInfo", "swapon", "swapoff", "swap_usage_add", "swap_usage_sub",
    "get_swap_device_info", "put_swap_device", "vm_swap_full", "swap_usage_in_pages",
    "flush_percpu_swap_cluster",
]

SWP_USED, SWP_WRITEOK, SWP_SOLIDSTATE, SWP_PAGE_DISCARD, SWP_BLKDEV = 1, 2, 4, 8, 16
SWAP_USAGE_OFFLIST_BIT = 1 << 30
SWAP_USAGE_COUNTER_MASK = SWAP_USAGE_OFFLIST_BIT - 1
SWAP_MAP_BAD = 0x3F

_REC_OP, _REC_CPU, _REC_CLUSTER, _REC_PID = (WORKER_REC.index(n) for n in ("op", "cpu", "cluster", "pid"))
SI_LOCK, GLOBAL_LOCK, AVAIL_LOCK = LockClass.SI_LOCK, LockClass.GLOBAL_CLUSTER_LOCK, LockClass.SWAP_AVAIL_LOCK


class SwapInfo:
    """One process's handle on ``struct swap_info_struct`` and everything hanging off it."""

    def __init__(self, shm: SwapShm, variant, slab, rcu, folios, task=None) -> None:
        cfg: Config = shm.cfg
        self.shm, self.cfg, self.geo = shm, cfg, shm.geo
        self.variant = variant
        self.slab = slab
        self.rcu = rcu
        self.folios = folios
        # The sleeping table allocation: in-process by default, the manager's in a runtime run.
        self.sleep_alloc = slab.alloc_sleeping
        self.warnings: list[str] = []
        self.on_warn = None          # a worker forwards its warnings to the manager
        self.spc = cfg.slots_per_cluster
        self.spc_shift = self.spc.bit_length() - 1
        self.max = cfg.max_slots
        self.nr_clusters = cfg.nr_clusters
        self.nr_orders = cfg.nr_orders
        self.pmd_order = cfg.pmd_order
        self.ssd = cfg.ssd
        # views
        self.cq, self.cr = shm.cq, shm.cr
        self.map = shm.map
        self.tq, self.tr = shm.tq, shm.tr
        self.devq, self.devr = shm.devq, shm.devr
        self.pq, self.pr = shm.pq, shm.pr
        self.wq, self.wr = shm.wq, shm.wr
        dt = shm.dev_dt
        self.D = {name: word(dt, name) for name in dt.names}
        self.d_flags = self.D["flags"]
        self.d_inuse = self.D["inuse_pages"] * 8
        self.d_nr_swap = self.D["nr_swap_pages"] * 8
        self.d_global_next = self.D["global_next"]
        self.d_pages = self.D["pages"]
        self.d_total = self.D["total_swap_pages"]
        self.d_on_avail = self.D["on_avail"]
        self.d_users = self.D["users"] * 8
        self.d_discard_work = self.D["discard_work"] * 8
        self.d_reclaim_work = self.D["reclaim_work"] * 8
        self.d_heads = self.D["heads"]
        self.pcp_words = shm.pcp_dt.itemsize // 8
        self.wk_words = shm.wk_dt.itemsize // 8
        self.wk_rec = word(shm.wk_dt, "rec")
        self.task = None
        self.stat_base = self.rec_base = self.ref_word = 0
        if task is not None:
            self.switch_to(task)

    # -- the current task -------------------------------------------------------------------------
    def switch_to(self, task) -> None:
        """Make ``task`` current in this process: lock ownership, lockstat and counters are its."""
        self.task = task
        base = task.wid * self.wk_words
        self.stat_base = base
        self.rec_base = base + self.wk_rec
        self.ref_word = (self.rec_base + WORKER_REC.index("ref")) * 8
        _prim.set_worker(task.wid)
        if self.cfg.lockstat:
            _prim.set_stats(self.wr, (base + word(self.shm.wk_dt, "lockstat")) * 8, N_CLASSES)
        else:
            _prim.set_stats(None)
        _prim.set_abort(self.devr, self.D["abort"] * 8)
        self.rcu.set_worker(task.wid)
        self.wq[self.rec_base + _REC_PID] = os.getpid()

    def stat(self, counter: int, n: int = 1) -> None:
        self.wq[self.stat_base + counter] += n

    def warn(self, message: str) -> None:
        """WARN_ON / VM_WARN_ON: count it (a violation unless expected) and keep the text."""
        self.stat(Stat.WARNINGS)
        self.warnings.append(message)
        if self.on_warn is not None:
            self.on_warn(message)

    def set_rec_cluster(self, ci: int) -> None:
        """The cluster this task has isolated in its current operation (-1 none)."""
        self.wq[self.rec_base + _REC_CLUSTER] = ci

    def set_rec_cpu(self, cpu: int) -> None:
        self.wq[self.rec_base + _REC_CPU] = cpu

    def set_rec_op(self, op: int) -> None:
        self.wq[self.rec_base + _REC_OP] = op

    # -- per-CPU area -----------------------------------------------------------------------------
    def pcp_si(self, cpu: int, order: int) -> int:
        return self.pq[cpu * self.pcp_words + 1 + order]

    def pcp_offset(self, cpu: int, order: int) -> int:
        return self.pq[cpu * self.pcp_words + 1 + self.nr_orders + order]

    def pcp_set(self, cpu: int, order: int, offset: int) -> None:
        base = cpu * self.pcp_words
        self.pq[base + 1 + self.nr_orders + order] = offset
        self.pq[base + 1 + order] = 1

    def local_lock(self, cpu: int) -> None:
        self.pr.lock(cpu * self.pcp_words * 8, LockClass.LOCAL_LOCK)

    def local_unlock(self, cpu: int) -> None:
        self.pr.unlock(cpu * self.pcp_words * 8, LockClass.LOCAL_LOCK)

    def local_lock_held(self, cpu: int) -> bool:
        return self.pr.held_by_me(cpu * self.pcp_words * 8)

    # -- device words -----------------------------------------------------------------------------
    def si_lock(self) -> None:
        self.devr.lock(0, SI_LOCK)

    def si_unlock(self) -> None:
        self.devr.unlock(0, SI_LOCK)

    def global_cluster_lock(self) -> None:
        self.devr.lock(8, GLOBAL_LOCK)

    def writeok(self) -> bool:
        return bool(self.devq[self.d_flags] & SWP_WRITEOK)

    def global_cluster_unlock(self) -> None:
        self.devr.unlock(8, GLOBAL_LOCK)



# -- usage and the avail list (mm/swapfile.c) ---------------------------------------------------------

def swap_usage_in_pages(si: SwapInfo) -> int:
    """Models ``swap_usage_in_pages()``: inuse_pages without the OFFLIST bit."""
    return si.devr.load(si.d_inuse) & SWAP_USAGE_COUNTER_MASK


def vm_swap_full(si: SwapInfo) -> bool:
    """Models ``vm_swap_full()``: more than half of the swap space is in use."""
    return si.devr.load(si.d_nr_swap) * 2 < si.devq[si.d_total]


def del_from_avail_list(si: SwapInfo, swapoff: bool) -> None:
    """Models ``del_from_avail_list()``: take the device off the avail list, setting OFFLIST."""
    si.devr.lock(16, AVAIL_LOCK)
    if swapoff:
        si.devq[si.d_flags] &= ~SWP_WRITEOK
        # atomic_long_or: the bit only ever changes under swap_avail_lock, held here
        if not si.devr.load(si.d_inuse) & SWAP_USAGE_OFFLIST_BIT:
            si.devr.fetch_add(si.d_inuse, SWAP_USAGE_OFFLIST_BIT)
        si.devq[si.d_on_avail] = 0
    else:
        pages = si.devq[si.d_pages]
        if si.devr.cmpxchg(si.d_inuse, pages, pages | SWAP_USAGE_OFFLIST_BIT) == pages:
            si.devq[si.d_on_avail] = 0
    si.devr.unlock(16, AVAIL_LOCK)


def add_to_avail_list(si: SwapInfo, swapon: bool) -> None:
    """Models ``add_to_avail_list()``: put the device back, clearing OFFLIST."""
    si.devr.lock(16, AVAIL_LOCK)
    if swapon:
        si.devq[si.d_flags] |= SWP_WRITEOK
    if si.devq[si.d_flags] & SWP_WRITEOK and si.devr.load(si.d_inuse) & SWAP_USAGE_OFFLIST_BIT:
        si.devr.fetch_add(si.d_inuse, -SWAP_USAGE_OFFLIST_BIT)
        si.devq[si.d_on_avail] = 1
    si.devr.unlock(16, AVAIL_LOCK)


def swap_usage_add(si: SwapInfo, nr: int) -> bool:
    """Models ``swap_usage_add()``; returns True if the device just became full."""
    new = si.devr.fetch_add(si.d_inuse, nr) + nr
    if new == si.devq[si.d_pages]:
        del_from_avail_list(si, False)
        return True
    return False


def swap_usage_sub(si: SwapInfo, nr: int) -> None:
    """Models ``swap_usage_sub()``: a free may put the device back on the avail list."""
    new = si.devr.fetch_add(si.d_inuse, -nr) - nr
    if new & SWAP_USAGE_OFFLIST_BIT:
        add_to_avail_list(si, False)


def get_swap_device_info(si: SwapInfo) -> bool:
    """Models ``get_swap_device_info()``: ``percpu_ref_tryget_live(&si->users)``."""
    si.wr.fetch_add(si.ref_word, 1)
    if si.devr.load(si.d_users):
        si.wr.fetch_add(si.ref_word, -1)
        return False
    return True


def put_swap_device(si: SwapInfo) -> None:
    """Models ``put_swap_device()``."""
    si.wr.fetch_add(si.ref_word, -1)


def flush_percpu_swap_cluster(si: SwapInfo) -> None:
    """Models ``flush_percpu_swap_cluster()``: clear si[] on every CPU, leave offset[] stale."""
    pcp = si.shm.pcp
    pcp["si"][:] = 0


# -- swapon ---------------------------------------------------------------------------------------------

def reserved_slots_per_cluster(cfg: Config) -> np.ndarray:
    """Slots ``inc_cluster_info_page`` counts at swapon: the header, bad pages, the last cluster's tail."""
    spc, nrc = cfg.slots_per_cluster, cfg.nr_clusters
    reserved = np.zeros(nrc, dtype=np.int64)
    reserved[0] += 1
    np.add.at(reserved, np.unique(np.asarray(cfg.bad_pages, dtype=np.int64)) // spc, 1)
    reserved[-1] += nrc * spc - cfg.max_slots
    return reserved


def swapon(shm: SwapShm, slab) -> None:
    """Initialise a fresh device in the owner's segments (the swapon syscall, one device).

    Models ``setup_clusters`` (eager tables and counts for the header, bad pages and the tail of the
    last cluster through ``inc_cluster_info_page``; every other cluster on ``free_clusters`` in
    index order), ``setup_swap_map`` and ``enable_swap_info``.
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
    dev["flags"] = flags | SWP_WRITEOK
    dev["max"] = maxp
    dev["pages"] = pages
    dev["inuse_pages"] = 0           # enable_swap_info: on the avail list, OFFLIST clear
    dev["on_avail"] = 1
    dev["nr_swap_pages"] = pages
    dev["total_swap_pages"] = pages
    dev["users"] = 0
    dev["global_next"][:] = 0


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


# -- swapoff --------------------------------------------------------------------------------------------

def swapoff(si: SwapInfo, try_to_unuse, drain_timeout_s: float = 10.0) -> None:
    """The swapoff syscall, in the kernel's order (reference §8).

    ``try_to_unuse(si)`` must free every slot still in use (the caller owns the folios and map
    counts); the tables of the clusters that keep reserved slots are freed last, by
    ``free_cluster_info``.
    """
    si.si_lock()
    del_from_avail_list(si, True)
    si.devr.fetch_add(si.d_nr_swap, -si.devq[si.D["pages"]])
    si.devq[si.D["total_swap_pages"]] -= si.devq[si.D["pages"]]
    si.si_unlock()
    wait_for_allocation(si)
    try_to_unuse(si)
    _kill_users(si, drain_timeout_s)
    si.rcu.synchronize_rcu()
    from .allocator import flush_scheduled_work  # the allocator needs this module first
    flush_scheduled_work(si)
    flush_percpu_swap_cluster(si)
    free_cluster_info(si)
    si.devq[si.d_flags] = 0


def wait_for_allocation(si: SwapInfo) -> None:
    """Models ``wait_for_allocation()``: lock and unlock every cluster."""
    for ci in range(si.nr_clusters):
        si.cr.lock(ci * CW * 8, LockClass.CI_LOCK)
        si.cr.unlock(ci * CW * 8, LockClass.CI_LOCK)


def _kill_users(si: SwapInfo, timeout_s: float) -> None:
    """``percpu_ref_kill`` + wait for the refs to drain (a sleeping allocator holds one)."""
    si.devr.store(si.D["users"] * 8, 1)
    refs = si.shm.workers["rec"]["ref"]
    deadline = time.monotonic() + timeout_s
    while refs.sum() != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"swapoff: device references did not drain: {refs.tolist()}")
        time.sleep(0.001)


def free_cluster_info(si: SwapInfo) -> None:
    """Models ``free_cluster_info()``: free the tables clusters still hold (reserved slots)."""
    clu = si.shm.clu
    for ci in np.flatnonzero(clu["table"] != -1):
        ci = int(ci)
        si.cr.lock(ci * CW * 8, LockClass.CI_LOCK)
        if si.cq[ci * CW + C_TABLE] != -1:
            si.cq[ci * CW + C_COUNT] = 0
            swap_cluster_free_table(si, ci)
        si.cr.unlock(ci * CW * 8, LockClass.CI_LOCK)



def account_swapoff(system, check, new_warnings: list[str]) -> dict:
    """After swapoff, nothing of the device may remain: tables, slots, folio references, WARNs.

    Adds a violation to ``check`` for each thing left; returns the figures.
    """
    from .checker import Violation
    shm = system.shm
    live = int(shm.slab_hdr["live"])
    inuse = int(shm.dev["inuse_pages"]) & SWAP_USAGE_COUNTER_MASK
    folios = int((shm.folios["ref"] != 0).sum())
    bad = check.violations
    if live:
        bad.append(Violation("swapoff", f"{live} table objects still allocated after free_cluster_info",
                             "I-swapoff-tables"))
    if inuse:
        bad.append(Violation("swapoff", f"{inuse} slots still in use after try_to_unuse", "I-swapoff-slots"))
    if folios:
        bad.append(Violation("swapoff", f"{folios} folios still referenced after every worker released its "
                             "slots", "I-swapoff-folios"))
    for w in new_warnings:
        bad.append(Violation("swapoff", w, "no kernel WARN"))
    return {"tables_left": live, "inuse_after": inuse, "folios_referenced": folios,
            "warnings": len(new_warnings)}
