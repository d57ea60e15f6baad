"""The swap-table slab: ``kmem_cache "swap_table"`` and the page pool behind it (DESIGN §5).

What it models.  Table objects come from slab pages of several objects (8 by default, as SLUB uses
order-3 slabs for 4 KiB objects), and pages come from a page pool of fixed size, the model's page
allocator.  Two reclamation modes:

* ``slab`` (the seed: ``SLAB_TYPESAFE_BY_RCU``): a freed object goes straight back on the
  freelist and the next allocation may hand it to another cluster at once; only a page whose
  objects are all free, and which the slab does not need, waits for a grace period before
  returning to the pool.
* ``page`` (patch 15/15, ``SWP_TABLE_USE_PAGE``): each table is a page of its own, freed with
  ``call_rcu``: it returns to the pool only after a grace period.

A page back in the pool is *poisoned*: its objects' headers say POOL and its memory is given back
to the OS (``madvise(MADV_REMOVE)``), so real memory follows the model and a reader that reaches
it is caught by the header, not by bytes that may have vanished.

Allocation: ``alloc_atomic`` is ``kmem_cache_zalloc(__GFP_HIGH|__GFP_NOMEMALLOC|__GFP_NOWARN)``:
an object as SLUB's ``slab_alloc`` finds one (``_get_object``): from the allocating CPU's active
slab page (``kmem_cache_cpu.slab``, one word per CPU after the page records), else from a partial
page no CPU has active (``get_partial``: the page of the most recently freed such object), else
from a fresh page (``new_slab``) only while the pool stays above its reserve, else from another
CPU's active page rather than failing.  So the tables one CPU allocates share pages, and a page
empties when their clusters do; an empty page that is a CPU's active slab stays.  An injected
failure rate applies on top, as failslab does.  ``alloc_sleeping`` is the in-process
backing of ``kmem_cache_zalloc(__GFP_HIGH|GFP_KERNEL)``: it may wait for grace periods to bring
pages back and may dip into the reserve, then fail (injected rate, or the pool is exhausted).  The
runtime puts the manager process behind the same call.

Everything lives in the slab segment under ``slab_lock``: a worker serves its own atomic
allocations; nothing here takes a lock shared by every process besides that one.
"""

from __future__ import annotations

import mmap
import random

import numpy as np

from ..substrate.layout import OBJ, PAGE
from ..substrate.locks import LockClass
from ..substrate.observe import Observers
from ..substrate.state import SLAB, SLAB_HDR, SwapShm

__all__ = ["TableSlab", "OBJ_POOL", "OBJ_FREE", "OBJ_INUSE", "OBJ_RCU",
           "PAGE_POOL", "PAGE_SLAB", "PAGE_PENDING", "OBJ_STATE_NAMES"]

OBJ_POOL, OBJ_FREE, OBJ_INUSE, OBJ_RCU = 0, 1, 2, 3
OBJ_STATE_NAMES = {OBJ_POOL: "pool (poisoned)", OBJ_FREE: "free in slab", OBJ_INUSE: "in use",
                   OBJ_RCU: "waiting for a grace period"}
PAGE_POOL, PAGE_SLAB, PAGE_PENDING = 0, 1, 2

_SLAB_LOCK = int(LockClass.SLAB_LOCK)
_LOCK_OFF = 8 * SLAB.lock
# Word indices of object and page records (generated from their dtypes).
_OW = OBJ.size
O_STATE, O_OWNER, O_GEN, O_PREV = OBJ.state, OBJ.owner, OBJ.gen, OBJ.prev
O_NEXT, O_PAGE, O_GP = OBJ.next, OBJ.page, OBJ.gp
_PW = PAGE.size
P_STATE, P_INUSE, P_NEXT, P_GP, P_CPU = PAGE.state, PAGE.inuse, PAGE.next, PAGE.gp, PAGE.cpu

# Named so tests can override them.
POOL_RESERVE_PAGES = 2      # atomic allocations may not take the pool below this
SLAB_KEEP_FREE_PAGES = 2    # empty slab pages kept in the slab before returning one to the pool


class TableSlab:
    """One process's handle on the table slab."""

    def __init__(self, shm: SwapShm, rcu, observers: Observers, atomic_fail: float = 0.0,
                 sleep_fail: float = 0.0, seed: int = 0, cur=None) -> None:
        geo = shm.geo
        self.shm = shm
        self.rcu = rcu
        self.sq, self.sr = shm.sq, shm.sr
        self.tq, self.tr = shm.tq, shm.tr
        self.per_page = geo.objs_per_page
        self.n_pages = geo.n_pages
        self.spc = geo.spc
        self.obj0 = shm.slab_hdr_dt.itemsize // 8
        self.page0 = self.obj0 + geo.n_objs * _OW
        self.mode = "page" if self.per_page == 1 and shm.cfg.reclaim == "page" else "slab"
        self.atomic_fail = atomic_fail
        self.sleep_fail = sleep_fail
        self.rng = random.Random(seed)
        self.obs = observers
        self.cur = cur                          # the running task: its CPU picks the active slab
        self.n_cpus = geo.n_workers
        self.cpu0 = self.page0 + geo.n_pages * _PW     # word of CPU 0's active slab page (shm.cpu_slab)

    # -- header words -------------------------------------------------------------------------------
    def _h(self, word: int) -> int:
        return self.sq[word]

    def _hset(self, word: int, v: int) -> None:
        self.sq[word] = v

    def _hadd(self, word: int, v: int = 1) -> None:
        self.sq[word] += v

    def _o(self, h: int) -> int:
        return self.obj0 + h * _OW

    def _p(self, page: int) -> int:
        return self.page0 + page * _PW

    def lock(self) -> None:
        self.sr.lock(_LOCK_OFF, _SLAB_LOCK)

    def unlock(self) -> None:
        self.sr.unlock(_LOCK_OFF, _SLAB_LOCK)

    # -- allocation -----------------------------------------------------------------------------------
    def _steered_to_fail(self, kind: str) -> bool:
        """An observer (a test's fault plan) fails this allocation, as failslab would."""
        return any(hook(kind) for hook in self.obs.fail_table_alloc)

    def alloc_atomic(self, ci: int) -> int:
        """``kmem_cache_zalloc(swap_table_cachep, __GFP_HIGH|__GFP_NOMEMALLOC|__GFP_NOWARN)``."""
        if self.obs.fail_table_alloc and self._steered_to_fail("atomic"):
            return self._fail()
        if self.atomic_fail and self.rng.random() < self.atomic_fail:
            return self._fail()
        self.lock()
        h = self._get_object(POOL_RESERVE_PAGES)
        if h >= 0:
            self._hadd(SLAB.atomic_allocs)
        self.unlock()
        return self._zero(h, ci) if h >= 0 else self._fail()

    def alloc_sleeping(self, ci: int, cpu: int | None = None) -> int:
        """``kmem_cache_zalloc(swap_table_cachep, __GFP_HIGH|GFP_KERNEL)``, served where it runs.

        Called with every lock dropped (by the task itself in one process, by the manager for a
        worker's mailbox).  Waits for grace periods to return pending pages if the pool is empty,
        may use the reserve, fails on the injected rate or an exhausted pool.  The latency a
        configuration adds is the caller's (``SleepingAllocator``, or the manager's queue).  ``cpu``:
        the sleeping task's CPU, whose active slab page serves it (default: the running task's).
        """
        if self.obs.fail_table_alloc and self._steered_to_fail("sleeping"):
            return self._fail()
        if self.sleep_fail and self.rng.random() < self.sleep_fail:
            return self._fail()
        h = self._alloc_waiting(ci, SLAB.sleep_allocs, cpu)
        return h if h >= 0 else self._fail()

    def _alloc_waiting(self, ci: int, counter: int | None = None, cpu: int | None = None) -> int:
        """One object for ``ci`` as GFP_KERNEL gets it: if the pool is empty, wait for grace periods
        to bring pending pages back (three tries); counts ``counter`` on success; -1 if none came."""
        for _attempt in range(3):
            self.lock()
            h = self._get_object(0, cpu)
            if h >= 0 and counter is not None:
                self._hadd(counter)
            self.unlock()
            if h >= 0:
                return self._zero(h, ci)
            if not self._h(SLAB.npending):
                break
            self.rcu.synchronize_rcu()
            self.process_deferred()
        return -1

    def _fail(self) -> int:
        self.sr.fetch_add(8 * SLAB.alloc_failures, 1)
        return -1

    def _zero(self, h: int, ci: int) -> int:
        """The zeroing of kmem_cache_zalloc, done outside slab_lock as the kernel does."""
        o = self._o(h)
        self.sq[o + O_OWNER] = ci
        self.shm.tables_np[h].fill(0)
        return h

    def _get_object(self, reserve: int, cpu: int | None = None) -> int:
        """An object as SLUB's ``slab_alloc`` finds one (slab_lock held): from this CPU's active slab
        page, else from a partial page no other CPU is using (``get_partial``), else from a new page
        taken from the pool (``new_slab``); with the pool at its reserve, from any page at all."""
        cpu = self._cpu() if cpu is None else cpu % self.n_cpus
        h = self._from_cpu_slab(cpu)
        if h < 0:
            h = self._from_partial(cpu)
        if h < 0:
            self._reclaim_expired_locked()
            if self._h(SLAB.pool_free) > reserve and self._grow_locked():
                h = self._h(SLAB.free_head)     # the new page's last object
                self._set_cpu_slab(cpu, self.sq[self._o(h) + O_PAGE])
        if h < 0 and self._h(SLAB.nfree):
            h = self._h(SLAB.free_head)         # another CPU's active page: better than failing
        if h < 0:
            return -1
        self._freelist_del(h)
        o = self._o(h)
        self.sq[o + O_STATE] = OBJ_INUSE
        self.sq[o + O_GEN] += 1
        self.sq[self._p(self.sq[o + O_PAGE]) + P_INUSE] += 1
        live = self._h(SLAB.live) + 1
        self._hset(SLAB.live, live)
        if live > self._h(SLAB.peak):
            self._hset(SLAB.peak, live)
        return h

    def _cpu(self) -> int:
        task = self.cur.task if self.cur is not None else None
        return task.cpu % self.n_cpus if task is not None else 0

    def _set_cpu_slab(self, cpu: int, page: int) -> None:
        old = self.sq[self.cpu0 + cpu]
        if old >= 0:
            self.sq[self._p(old) + P_CPU] = -1
        self.sq[self.cpu0 + cpu] = page
        if page >= 0:
            self.sq[self._p(page) + P_CPU] = cpu

    def _from_cpu_slab(self, cpu: int) -> int:
        """A free object of ``cpu``'s active page, the one freed last if it is at the freelist's head
        (a table freed and allocated again on one CPU is the same object, as SLUB's LIFO freelist
        gives); -1 if the page is full or gone."""
        page = self.sq[self.cpu0 + cpu]
        if page < 0:
            return -1
        p = self._p(page)
        if self.sq[p + P_STATE] != PAGE_SLAB or self.sq[p + P_INUSE] == self.per_page:
            self._set_cpu_slab(cpu, -1)
            return -1
        head = self._h(SLAB.free_head)
        if self._h(SLAB.nfree) and self.sq[self._o(head) + O_PAGE] == page:
            return head
        for h in range(page * self.per_page, (page + 1) * self.per_page):
            if self.sq[self._o(h) + O_STATE] == OBJ_FREE:
                return h
        return -1

    def _from_partial(self, cpu: int) -> int:
        """The most recently freed object on a page no CPU has as its active slab; that page becomes
        ``cpu``'s.  -1 if every free object is on another CPU's active page."""
        h = self._h(SLAB.free_head) if self._h(SLAB.nfree) else -1
        while h >= 0:
            o = self._o(h)
            page = self.sq[o + O_PAGE]
            if self.sq[self._p(page) + P_CPU] < 0:
                self._set_cpu_slab(cpu, page)
                return h
            h = self.sq[o + O_NEXT]
        return -1

    def _grow_locked(self) -> bool:
        """Take a page from the pool and put its objects on the freelist."""
        page = self._h(SLAB.pool_head)
        if page >= 0:
            self._hset(SLAB.pool_head, self.sq[self._p(page) + P_NEXT])
        else:
            page = self._h(SLAB.fresh)
            if page >= self.n_pages:
                return False
            self._hset(SLAB.fresh, page + 1)
        self._hadd(SLAB.pool_free, -1)
        p = self._p(page)
        self.sq[p + P_STATE] = PAGE_SLAB
        self.sq[p + P_INUSE] = 0
        self.sq[p + P_NEXT] = -1
        self.sq[p + P_CPU] = -1
        for h in range(page * self.per_page, (page + 1) * self.per_page):
            o = self._o(h)
            self.sq[o + O_PAGE] = page
            self.sq[o + O_STATE] = OBJ_FREE
            self.sq[o + O_OWNER] = -1
            self._freelist_push(h)
        return True

    def _freelist_push(self, h: int) -> None:
        o = self._o(h)
        head = self._h(SLAB.free_head) if self._h(SLAB.nfree) else -1
        self.sq[o + O_PREV] = -1
        self.sq[o + O_NEXT] = head
        if head >= 0:
            self.sq[self._o(head) + O_PREV] = h
        self._hset(SLAB.free_head, h)
        self._hadd(SLAB.nfree)

    def _freelist_del(self, h: int) -> None:
        o = self._o(h)
        prev, nxt = self.sq[o + O_PREV], self.sq[o + O_NEXT]
        if prev >= 0:
            self.sq[self._o(prev) + O_NEXT] = nxt
        else:
            self._hset(SLAB.free_head, nxt)
        if nxt >= 0:
            self.sq[self._o(nxt) + O_PREV] = prev
        self.sq[o + O_PREV] = self.sq[o + O_NEXT] = -1
        self._hadd(SLAB.nfree, -1)

    # -- free -------------------------------------------------------------------------------------------
    def free(self, h: int) -> None:
        """``kmem_cache_free`` (slab mode) or ``swap_table_free`` via ``call_rcu`` (page mode)."""
        o = self._o(h)
        self.lock()
        if self.sq[o + O_STATE] != OBJ_INUSE:
            self.unlock()
            raise AssertionError(f"slab: double free of table object {h}")
        self.sq[o + O_OWNER] = -1
        self.sq[o + O_GP] = self.rcu.completed()
        self._hadd(SLAB.live, -1)
        self._hadd(SLAB.frees)
        page = self.sq[o + O_PAGE]
        p = self._p(page)
        self.sq[p + P_INUSE] -= 1
        if self.mode == "page":
            self.sq[o + O_STATE] = OBJ_RCU
            self._defer_page_locked(page)
        else:
            self.sq[o + O_STATE] = OBJ_FREE
            self._freelist_push(h)
            # An empty page goes back (after a grace period) unless it is a CPU's active slab or the
            # slab would keep too few free objects (SLUB keeps min_partial slabs).
            if (self.sq[p + P_INUSE] == 0 and self.sq[p + P_CPU] < 0
                    and self._h(SLAB.nfree) > (SLAB_KEEP_FREE_PAGES + 1) * self.per_page):
                for obj in range(page * self.per_page, (page + 1) * self.per_page):
                    self._freelist_del(obj)
                    self.sq[self._o(obj) + O_STATE] = OBJ_RCU
                self._defer_page_locked(page)
        self.unlock()

    def _defer_page_locked(self, page: int) -> None:
        """call_rcu: the page waits on the pending list for a full grace period."""
        p = self._p(page)
        self.sq[p + P_STATE] = PAGE_PENDING
        self.sq[p + P_GP] = self.rcu.get_state_synchronize_rcu()
        self.sq[p + P_NEXT] = -1
        tail = self._h(SLAB.pending_tail)
        if self._h(SLAB.npending):
            self.sq[self._p(tail) + P_NEXT] = page
        else:
            self._hset(SLAB.pending_head, page)
        self._hset(SLAB.pending_tail, page)
        self._hadd(SLAB.npending)
        self._hadd(SLAB.deferred_frees)

    def process_deferred(self) -> int:
        """Return the pages whose grace period has elapsed to the pool (the RCU callbacks)."""
        self.lock()
        n = self._reclaim_expired_locked()
        self.unlock()
        return n

    def _reclaim_expired_locked(self) -> int:
        n = 0
        while self._h(SLAB.npending):
            page = self._h(SLAB.pending_head)
            p = self._p(page)
            if not self.rcu.poll_state_synchronize_rcu(self.sq[p + P_GP]):
                break
            self._hset(SLAB.pending_head, self.sq[p + P_NEXT])
            self._hadd(SLAB.npending, -1)
            self._return_page_locked(page)
            n += 1
        return n

    def _return_page_locked(self, page: int) -> None:
        p = self._p(page)
        for h in range(page * self.per_page, (page + 1) * self.per_page):
            self.sq[self._o(h) + O_STATE] = OBJ_POOL
        self.sq[p + P_STATE] = PAGE_POOL
        self.sq[p + P_NEXT] = self._h(SLAB.pool_head)
        self._hset(SLAB.pool_head, page)
        self._hadd(SLAB.pool_free)
        self._hadd(SLAB.pages_returned)
        self._give_back(page)

    def _give_back(self, page: int) -> None:
        """madvise(MADV_REMOVE) the whole OS pages of a pool page: real memory follows the model."""
        nbytes = self.per_page * self.spc * 8
        start, end = page * nbytes, (page + 1) * nbytes
        start = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        end = end // mmap.PAGESIZE * mmap.PAGESIZE
        mm = getattr(self.shm.segs["tables"]._shm, "_mmap", None)
        if end > start and mm is not None and hasattr(mmap, "MADV_REMOVE"):
            mm.madvise(mmap.MADV_REMOVE, start, end - start)
            self._hadd(SLAB.madvised)

    # -- swapon, reads, accounting -------------------------------------------------------------------
    def alloc_at_swapon(self, clusters: np.ndarray) -> np.ndarray:
        """Tables for ``clusters`` at swapon (GFP_KERNEL), all at once: objects 0..n-1."""
        n = len(clusters)
        if n == 0:
            self.sq[SLAB.pool_free] = self.n_pages
            self.sq[SLAB.free_head] = -1
            self.shm.pages["cpu"][:] = -1
            self.shm.cpu_slab[:] = -1
            return np.zeros(0, dtype=np.int64)
        shm = self.shm
        pages = -(-n // self.per_page)
        objs, pg = shm.objs, shm.pages
        total = pages * self.per_page
        objs["page"][:total] = np.arange(total) // self.per_page
        objs["state"][:n] = OBJ_INUSE
        objs["owner"][:n] = clusters
        objs["gen"][:n] = 1
        objs["prev"][:total] = -1
        objs["next"][:total] = -1
        pg["state"][:pages] = PAGE_SLAB
        pg["inuse"][:pages] = self.per_page
        pg["next"][:pages] = -1
        pg["cpu"][:] = -1
        shm.cpu_slab[:] = -1
        hdr = shm.slab_hdr
        hdr["fresh"] = pages
        hdr["pool_free"] = self.n_pages - pages
        hdr["pool_head"] = -1
        hdr["free_head"] = -1
        hdr["live"] = hdr["peak"] = n
        for h in range(n, total):
            pg["inuse"][h // self.per_page] -= 1
            objs["state"][h] = OBJ_FREE
            self._freelist_push(h)
        return np.arange(n, dtype=np.int64)

    def alloc_at_swapon_again(self, ci: int) -> int:
        """A table for ``ci`` at a later swapon of the device (``setup_clusters``, GFP_KERNEL): the
        slab already runs, so one object the ordinary way, never failed by injection, waiting for
        grace periods to bring pages back as GFP_KERNEL may; -1 only if the pool is exhausted."""
        return self._alloc_waiting(ci)

    def init_empty(self) -> None:
        self.shm.pages["cpu"][:] = -1
        self.shm.cpu_slab[:] = -1
        hdr = self.shm.slab_hdr
        hdr["pool_free"] = self.n_pages
        hdr["free_head"] = hdr["pool_head"] = hdr["pending_head"] = hdr["pending_tail"] = -1

    def pending(self) -> int:
        """Slab pages waiting for a grace period before they return to the pool."""
        return self.sq[SLAB.npending]

    def obj_state(self, h: int) -> int:
        return self.sq[self._o(h) + O_STATE]

    def obj_gen_live(self, h: int) -> int:
        """The object's generation, read atomically (it changes under a lockless reader)."""
        return self.sr.load((self._o(h) + O_GEN) * 8)

    def obj_gp(self, h: int) -> int:
        return self.sq[self._o(h) + O_GP]

    def last_on_its_page(self, h: int) -> bool:
        """Object ``h`` is the only one in use on its page, and the page is no CPU's active slab:
        freeing it empties a page that goes back (in page mode, every table; a lockless read)."""
        p = self._p(self.sq[self._o(h) + O_PAGE])
        return self.sq[p + P_INUSE] == 1 and (self.mode == "page" or self.sq[p + P_CPU] < 0)

    def table_has_entries(self, h: int) -> bool:
        return bool(self.shm.tables_np[h].any())

    def statistics(self) -> dict[str, int]:
        hdr = self.shm.slab_hdr
        return {name: int(hdr[name]) for name in SLAB_HDR if not name.startswith("pad") and name != "lock"}
