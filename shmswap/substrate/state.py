"""The shared state of one swap device: every segment, created by one owner, attached by the rest.

Segments (DESIGN §2), each named ``<run prefix><segment>``:

| segment  | holds                                                                        |
|----------|------------------------------------------------------------------------------|
| device   | swap_info: locks, flags, counters, list heads, HDD global cluster cursor     |
| clusters | swap_cluster_info[nr_clusters] (layout.CLUSTER_DTYPE)                        |
| swap_map | one byte per slot                                                            |
| percpu   | per CPU: local lock, si[order], offset[order] (layout.percpu_dtype)          |
| slab     | slab header words, table object headers, slab page records                   |
| tables   | table memory: objects x slots_per_cluster x int64 (sparse: touched on use)   |
| folios   | the folio model (layout.FOLIO_DTYPE), a range of ids per worker              |
| rcu      | grace-period words and one reader record per worker                          |
| workers  | per worker: statistics counters, lockstat block, in-progress record          |
| handoff  | allocations published for other CPUs to free: a bounded ring under its lock  |
| control  | run control: stop, release and abort words, per-worker run state            |

Every segment is sized at swapon for the largest state it can reach; /dev/shm backs only the pages
that are touched, so an idle 1 TiB device costs its cluster array and little else.  ``SwapShm``
holds three views of each segment: the numpy structured view (readable, used by the checker and the
reports), a flat ``memoryview.cast('q')`` for the hot path, and a ``_prim.Region`` for atomics and
locks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..config import Config
from . import _prim
from .layout import (
    CLUSTER_DTYPE,
    FOLIO_DTYPE,
    OBJ_DTYPE,
    PAGE_DTYPE,
    Record,
    device_dtype,
    percpu_dtype,
    words_dtype,
)
from .locks import LOCKSTAT_FIELDS, N_CLASSES
from .shm import Segment, new_run_prefix
from .stats import N_STATS

__all__ = ["Geometry", "SwapShm", "SLAB_HDR", "RCU_HDR", "WORKER_REC", "worker_dtype", "rcu_dtype",
           "SLAB", "RCU", "READER", "WORKER", "WREC", "HANDOFF", "CONTROL", "CONTROL_W",
           "HANDOFF_SLOTS", "HANDOFF_REC"]

# Slab header words (first record of the slab segment).
#   lock         slab_lock: freelist, pages, pool
#   free_head    first free object (LIFO freelist), -1 none
#   nfree        objects on the freelist
#   fresh        pages never used yet start at this index (the untouched part of the pool)
#   pool_head    returned pages (a stack linked by page.next), -1 none
#   pool_free    pages in the pool (fresh + returned)
#   pending_head pages waiting for a grace period before returning to the pool (FIFO), -1 none
#   pending_tail
#   live         table objects in use
#   peak         maximum of live
#   atomic_allocs / sleep_allocs / alloc_failures / frees / deferred_frees / pages_returned
#   poisoned_reads  reads of an object whose page went back to the pool (oracle)
SLAB_HDR = ("lock", "free_head", "nfree", "fresh", "pool_head", "pool_free", "pending_head",
            "pending_tail", "live", "peak", "atomic_allocs", "sleep_allocs", "alloc_failures",
            "frees", "deferred_frees", "pages_returned", "npending", "madvised", "pad0", "pad1",
            "pad2", "pad3", "pad4", "pad5")

# RCU header words.
#   gp_lock   serialises grace periods
#   gp_ctr    liburcu memb: the phase bit readers snapshot
#   gp_seq    rcu_seq: low bit set while a grace period runs; +2 per completed grace period
#   gps       completed grace periods
#   gp_ns_total / gp_ns_max   grace-period latency
RCU_HDR = ("gp_lock", "gp_ctr", "gp_seq", "gps", "gp_ns_total", "gp_ns_max", "pad0", "pad1")

# Worker in-progress record (read by the checker and the watchdog).
#   op        what the worker is doing (workload.OP_*), 0 = parked outside any operation
#   cpu       the CPU the worker currently runs on (differs from its own after a migration)
#   cluster   cluster it has isolated in an unfinished operation, -1 none
#   phase     where inside the operation (allocator.PH_*)
#   pid       process id
#   delaying  1 while the worker's reader is in a long read-side delay (checks/delays.py)
#   ref       this worker's share of the device's percpu_ref (si->users)
#   exiting   a swap entry (type << SWP_TYPE_SHIFT | offset; 0 none) of the process this CPU ends
#             next (--lifetimes on): where another CPU's readahead reads, and a reader's long delay
#             can see a table go
WORKER_REC = ("op", "cpu", "cluster", "phase", "pid", "delaying", "ref", "exiting")

# Hand-off ring header words, then HANDOFF_SLOTS records of HANDOFF_REC words.
#   lock   handoff lock   head   next record to take   tail   next free record   count   records held
# A record: entry, order, folio (-1 none), state (workload.SWAPPED / CACHE_ONLY).
HANDOFF_HDR = ("lock", "head", "tail", "count", "pushed", "taken", "pad0", "pad1")
HANDOFF_SLOTS = 1024
HANDOFF_REC = 4

# Run control header words, then one CONTROL_REC record per worker.
#   stop      1: finish the current operation and park     release   1: parked workers release all
#   started   CLOCK_MONOTONIC ns at the start of the workload
#   driver_pid / manager_pid   the two supervisors, each watching the other
#   state     W_* (control.py)   steps   workload steps done (the heartbeat)
#   affinity  CPU affinity mask obtained with --pin (0 = not pinned)
#   unuse     --swapoff-every: the manager's try_to_unuse request, generation << 16 | swap type (0: none yet)
#   unuse_ack the last request generation the worker has served (its records on that device released)
CONTROL_HDR = ("stop", "release", "started", "driver_pid", "manager_pid", "unuse", "pad1", "pad2")
CONTROL_REC = ("state", "steps", "affinity", "unuse_ack")


def worker_dtype() -> np.dtype:
    fields = [("stats", "<i8", (N_STATS,)),
              ("lockstat", "<i8", (N_CLASSES, len(LOCKSTAT_FIELDS))),
              ("rec", words_dtype(WORKER_REC))]
    size = N_STATS * 8 + N_CLASSES * len(LOCKSTAT_FIELDS) * 8 + len(WORKER_REC) * 8
    pad = (-size) % 64
    if pad:
        fields.append(("pad", "<i8", (pad // 8,)))
    return np.dtype(fields)


def rcu_dtype() -> np.dtype:
    """Per-worker RCU reader record, one cache line each.

    ctr       0 outside a read section; else the gp_ctr phase snapshot | nesting
    sections  read sections entered
    dead      set by the watchdog: the worker died, count it as quiescent
    pipe[5]   pipe-age histogram (rcutorture): for each table read, grace periods completed
              since it was freed (0 = not freed, or freed in the current grace period), 4 = 4+
    """
    return np.dtype([("ctr", "<i8"), ("sections", "<i8"), ("dead", "<i8"), ("pipe", "<i8", (5,))])


# Generated word indices of every header and per-worker record (layout.Record).
SLAB = Record(words_dtype(SLAB_HDR))
RCU = Record(words_dtype(RCU_HDR))
READER = Record(rcu_dtype())
WORKER = Record(worker_dtype())
WREC = Record(words_dtype(WORKER_REC))
HANDOFF = Record(words_dtype(HANDOFF_HDR))
CONTROL = Record(words_dtype(CONTROL_HDR))
CONTROL_W = Record(words_dtype(CONTROL_REC))


@dataclass(frozen=True)
class Geometry:
    """Sizes every process derives from the configuration and the worker count."""

    nr_clusters: int
    nr_orders: int
    spc: int
    max_slots: int
    n_workers: int
    n_objs: int
    n_pages: int
    objs_per_page: int
    folios_per_worker: int

    @classmethod
    def of(cls, cfg: Config, n_workers: int) -> Geometry:
        per_page = 1 if cfg.reclaim == "page" else cfg.objs_per_slab_page
        # Never more tables than clusters, plus one in flight per worker, plus slab slack for
        # partially used pages and pages waiting for a grace period.
        objs = cfg.nr_clusters + 2 * n_workers + 4 * per_page
        pages = -(-objs // per_page) + 2
        folios = min(1 << 15, max(256, cfg.max_slots // max(1, n_workers)))
        return cls(cfg.nr_clusters, cfg.nr_orders, cfg.slots_per_cluster, cfg.max_slots, n_workers,
                   pages * per_page, pages, per_page, folios)


class SwapShm:
    """All segments of one device, with their views.  Create with ``create()``, attach by names."""

    SEGMENTS = ("device", "clusters", "swap_map", "percpu", "slab", "tables", "folios", "rcu", "workers",
                "handoff", "control")
    segs: dict[str, Segment] = {}
    _regions: list = []
    _views: list = []

    # A further device (swap type > 0) has its own device, cluster, map, slab and table segments
    # and its own workers segment (its percpu_ref counts); the per-CPU caches, folios, RCU,
    # hand-off ring and run control are the first device's (one per system, as in the kernel).
    DEVICE_SEGMENTS = ("device", "clusters", "swap_map", "slab", "tables", "workers")
    SHARED_VIEWS = ("pcp", "pq", "pr", "folios", "fq", "fr", "rcu_hdr", "readers", "rq", "rr", "hq", "hr",
                    "ctlq", "ctlr")

    def __init__(self, cfg: Config, n_workers: int, names: dict[str, str] | None = None,
                 primary: SwapShm | None = None, type: int = 0) -> None:  # noqa: A002 - si->type
        self.cfg = cfg
        self.type = type
        self.primary = primary
        self.geo = geo = Geometry.of(cfg, n_workers)
        self.segs = {}
        self._regions = []
        self._views = []
        self.dev_dt = device_dtype(geo.nr_orders)
        self.pcp_dt = percpu_dtype(geo.nr_orders)
        self.slab_hdr_dt = words_dtype(SLAB_HDR)
        self.rcu_hdr_dt = words_dtype(RCU_HDR)
        self.wk_dt = worker_dtype()
        self.rcu_dt = rcu_dtype()
        sizes = {
            "device": self.dev_dt.itemsize,
            "clusters": geo.nr_clusters * CLUSTER_DTYPE.itemsize,
            "swap_map": geo.max_slots,
            "percpu": n_workers * self.pcp_dt.itemsize,
            "slab": self.slab_hdr_dt.itemsize + geo.n_objs * OBJ_DTYPE.itemsize
            + geo.n_pages * PAGE_DTYPE.itemsize + n_workers * 8,       # + each CPU's active slab page
            "tables": geo.n_objs * geo.spc * 8,
            "folios": n_workers * geo.folios_per_worker * FOLIO_DTYPE.itemsize,
            "rcu": self.rcu_hdr_dt.itemsize + n_workers * self.rcu_dt.itemsize,
            "workers": n_workers * self.wk_dt.itemsize,
            "handoff": (len(HANDOFF_HDR) + HANDOFF_SLOTS * HANDOFF_REC) * 8,
            "control": (len(CONTROL_HDR) + n_workers * len(CONTROL_REC)) * 8,
        }
        self.owner = names is None
        prefix = new_run_prefix() if names is None else None
        try:
            for seg in (self.SEGMENTS if primary is None else self.DEVICE_SEGMENTS):
                if names is None:
                    self.segs[seg] = Segment(prefix + seg, sizes[seg], create=True)
                else:
                    self.segs[seg] = Segment(names[seg])
            self._map_views(geo)
        except BaseException:
            self.close()
            self.unlink()
            raise

    @classmethod
    def create(cls, cfg: Config, n_workers: int | None = None) -> SwapShm:
        return cls(cfg, cfg.cpus if n_workers is None else n_workers)

    @classmethod
    def attach(cls, cfg: Config, n_workers: int, names: dict[str, str]) -> SwapShm:
        return cls(cfg, n_workers, names)

    @classmethod
    def create_device(cls, cfg: Config, primary: SwapShm, type: int) -> SwapShm:  # noqa: A002
        """A further device's segments (swap type ``type``), sharing ``primary``'s per-system ones."""
        return cls(cfg, primary.geo.n_workers, None, primary, type)

    @classmethod
    def attach_device(cls, cfg: Config, primary: SwapShm, type: int, names: dict[str, str]) -> SwapShm:  # noqa: A002
        return cls(cfg, primary.geo.n_workers, names, primary, type)

    def names(self) -> dict[str, str]:
        return {k: s.name for k, s in self.segs.items()}

    # -- views ----------------------------------------------------------------------------------------
    def _region(self, seg: str):
        r = _prim.Region(self.segs[seg].buf)
        self._regions.append(r)
        return r

    def _q(self, seg: str, fmt: str = "q") -> memoryview:
        v = self.segs[seg].buf.cast(fmt)
        self._views.append(v)
        return v

    def _np(self, seg: str, dtype, count: int, offset: int = 0) -> np.ndarray:
        return np.frombuffer(self.segs[seg].buf, dtype=dtype, count=count, offset=offset)

    def _map_views(self, geo: Geometry) -> None:
        if self.primary is not None:
            self._map_device_views(geo)
            for attr in self.SHARED_VIEWS:
                setattr(self, attr, getattr(self.primary, attr))
            return
        self._map_device_views(geo)
        self.pcp = self._np("percpu", self.pcp_dt, geo.n_workers)
        self.pq, self.pr = self._q("percpu"), self._region("percpu")
        self.folios = self._np("folios", FOLIO_DTYPE, geo.n_workers * geo.folios_per_worker)
        self.fq, self.fr = self._q("folios"), self._region("folios")
        self.rcu_hdr = self._np("rcu", self.rcu_hdr_dt, 1)[0]
        self.readers = self._np("rcu", self.rcu_dt, geo.n_workers, self.rcu_hdr_dt.itemsize)
        self.rq, self.rr = self._q("rcu"), self._region("rcu")
        self.hq, self.hr = self._q("handoff"), self._region("handoff")
        self.ctlq, self.ctlr = self._q("control"), self._region("control")

    def _map_device_views(self, geo: Geometry) -> None:
        self.dev = self._np("device", self.dev_dt, 1)[0]
        self.devq, self.devr = self._q("device"), self._region("device")
        self.clu = self._np("clusters", CLUSTER_DTYPE, geo.nr_clusters)
        self.cq, self.cr = self._q("clusters"), self._region("clusters")
        self.map = self._q("swap_map", "B")
        self.map_np = self._np("swap_map", np.uint8, geo.max_slots)
        hdr = self.slab_hdr_dt.itemsize
        self.slab_hdr = self._np("slab", self.slab_hdr_dt, 1)[0]
        self.objs = self._np("slab", OBJ_DTYPE, geo.n_objs, hdr)
        self.pages = self._np("slab", PAGE_DTYPE, geo.n_pages, hdr + geo.n_objs * OBJ_DTYPE.itemsize)
        self.cpu_slab = self._np("slab", np.int64, geo.n_workers,
                                 hdr + geo.n_objs * OBJ_DTYPE.itemsize + geo.n_pages * PAGE_DTYPE.itemsize)
        self.sq, self.sr = self._q("slab"), self._region("slab")
        self.tq, self.tr = self._q("tables"), self._region("tables")
        self.tables_np = self._np("tables", np.int64, geo.n_objs * geo.spc).reshape(geo.n_objs, geo.spc)
        self.workers = self._np("workers", self.wk_dt, geo.n_workers)
        self.wq, self.wr = self._q("workers"), self._region("workers")

    # -- lifetime -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Release every view, then this process's mappings."""
        for r in self._regions:
            r.release()
        for v in self._views:
            v.release()
        self._regions, self._views = [], []
        for attr in self.SHARED_VIEWS if self.primary is not None else ():
            self.__dict__.pop(attr, None)
        for attr in ("dev", "clu", "map_np", "pcp", "slab_hdr", "objs", "pages", "cpu_slab", "folios", "rcu_hdr",
                     "readers", "workers", "tables_np", "devq", "cq", "map", "pq", "sq", "tq", "fq", "rq", "wq",
                     "hq", "ctlq"):
            self.__dict__.pop(attr, None)
        for s in self.segs.values():
            s.close()

    def unlink(self) -> None:
        """Remove the segments from /dev/shm (owner only)."""
        for s in self.segs.values():
            s.unlink()

    def touched(self, seg: str, offset: int, itemsize: int, count: int) -> np.ndarray:
        """Which of ``count`` records of ``itemsize`` bytes at ``offset`` in segment ``seg`` may hold a
        non-zero byte: a boolean mask.  The others lie in holes (never written: all zeros), and
        whoever reads only the masked records sees the same values without touching memory the run
        never used (reading a tmpfs hole through a mapping allocates a page).  All True when the
        file system cannot tell."""
        ranges = self.segs[seg].data_ranges()
        if ranges is None:
            return np.ones(count, dtype=bool)
        mask = np.zeros(count, dtype=bool)
        for start, end in ranges:
            first = max(0, (start - offset) // itemsize)
            last = min(count, -(-(end - offset) // itemsize))
            if last > first:
                mask[first:last] = True
        return mask

    def shm_bytes_touched(self) -> int:
        """Real memory behind our segments: allocated blocks in /dev/shm."""
        total = 0
        for s in self.segs.values():
            try:
                total += os.stat(f"/dev/shm/{s.name}").st_blocks * 512
            except FileNotFoundError:
                pass
        return total
