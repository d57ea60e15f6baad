"""Shared-memory layouts: the records every process sees, as numpy dtypes (DESIGN §2).

Each record is a row of little-endian int64 words, so the hot path can index a flat
``memoryview.cast('q')`` (about 0.05 µs an item) while the checker and the reports use the numpy
structured view of the same bytes.  Every shared word is addressed one way: by name, through a
``Record`` generated from the dtype (``CLUSTER.count`` is the word index of ``count`` in a cluster
record, ``CLUSTER.size`` the record's length in words); nothing keeps an offset by hand.  Lock
words are 8 bytes (``u32 state``, ``i32 owner+1``) and are
driven only through the C module (``shmswap._prim``).

Models the kernel structures of mm/swap.h and include/linux/swap.h: ``struct swap_cluster_info``,
``struct swap_info_struct``, ``struct percpu_swap_cluster``; and the model's own records (slab
object headers, folios, worker records).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CACHELINE", "MAX_SWAPFILES", "XDEV_LOG", "CLUSTER_DTYPE", "FOLIO_DTYPE",
    "OBJ_DTYPE", "PAGE_DTYPE", "Record", "words_dtype",
    "CLUSTER", "FOLIO", "OBJ", "PAGE", "DEVICE",
    "device_dtype", "percpu_dtype", "word", "nr_lists", "list_nonfull", "list_frag",
    "LIST_FREE", "LIST_FULL", "LIST_DISCARD", "LIST_NAMES",
]

CACHELINE = 64
MAX_SWAPFILES = 32      # include/linux/swap.h (with no special types configured)
XDEV_LOG = 64           # W12 events kept per device (the count in ``xdev`` goes on)


def _i64(*names: str) -> list[tuple[str, str]]:
    return [(n, "<i8") for n in names]


# struct swap_cluster_info: one 64-byte record (one cache line) per cluster.
#   off  field  meaning
#   0    lock   ci->lock: protects count, flags, order, table and the cluster's swap_map bytes
#   8    count  slots not free (map counts, SWAP_HAS_CACHE, bad marks, the tail beyond si->max)
#   16   flags  CLUSTER_FLAG_*: which list the cluster is on (NONE = isolated, on no list)
#   24   order  allocation order owning the cluster (set on first allocation into an empty cluster)
#   32   table  slab object handle of the swap table, -1 = NULL (read locklessly by swap_table_get)
#   40   prev   list link (cluster index, -1 = none); list links are protected by si->lock
#   48   next   list link (cluster index, -1 = none)
#   56   lost   model annotation, not kernel state: why the seed left this cluster on no list
#               (0 = not lost; see allocator.LOST_*), with the worker and CPU packed in
CLUSTER_DTYPE = np.dtype(_i64("lock", "count", "flags", "order", "table", "prev", "next", "lost"))

# Cluster list ids: index of the list head in swap_info.heads.
LIST_FREE, LIST_FULL, LIST_DISCARD = 0, 1, 2


def list_nonfull(order: int) -> int:
    """Head index of si->nonfull_clusters[order]."""
    return 3 + 2 * order


def list_frag(order: int) -> int:
    """Head index of si->frag_clusters[order]."""
    return 4 + 2 * order


def nr_lists(nr_orders: int) -> int:
    return 3 + 2 * nr_orders


def LIST_NAMES(nr_orders: int) -> list[str]:  # noqa: N802 - a table, named like one
    names = ["free_clusters", "full_clusters", "discard_clusters"]
    for o in range(nr_orders):
        names += [f"nonfull_clusters[{o}]", f"frag_clusters[{o}]"]
    return names


def device_dtype(nr_orders: int) -> np.dtype:
    """struct swap_info_struct (the fields the model needs), one record.

    off  field              meaning
    0    si_lock            si->lock: all cluster lists
    8    global_lock        si->global_cluster_lock: serialises HDD allocation
    16   avail_lock         swap_avail_lock: the avail list (a one-device list here: `on_avail`)
    24   flags              SWP_* flags
    32   max                slots in swap_map (offsets 0..max-1)
    40   pages              usable slots: max - 1 - bad pages
    48   inuse_pages        allocated slots, plus SWAP_USAGE_OFFLIST_BIT while off the avail list
    56   nr_swap_pages      free slots (the global counter; one device)
    64   total_swap_pages   usable slots of active devices
    72   users              percpu_ref state of si->users: 1 once killed (the counts are per worker)
    80   on_avail           1 while the device is on swap_avail_heads
    88   discard_work       discard work scheduled (a count of schedule_work calls not yet run)
    96   reclaim_work       reclaim work scheduled (count)
    104  abort              set by a supervisor: lock waiters raise instead of waiting on
    112  prio               the device's priority (swap_info_struct.prio)
    120  xdev               model annotation: seed re-checks that read another device's offset (W12)
    128  least_priority     device 0's record only: mm/swapfile.c's ``static int least_priority``
                        (-1 at boot; the next swapon without a priority gets ``--least_priority``)
    136  global_next[o]     si->global_cluster->next[o] (HDD only), 0 = SWAP_ENTRY_INVALID
    ...  heads[l][3]        cluster list l: first, last (cluster index, -1 none), length
    ...  avail[1 + MAX_SWAPFILES]   device 0's record only: swap_avail_head as a plist, avail[0]
                        entries, then device types in priority order (equal priorities rotate);
                        its swap_avail_lock is device 0's avail_lock word
    ...  active[1 + MAX_SWAPFILES]  device 0's record only: swap_active_head, the same way
    ...  xdev_log[XDEV_LOG][2]      seed W12 events: (packed word, cluster/offset)
    """
    fields = _i64("si_lock", "global_lock", "avail_lock", "flags", "max", "pages", "inuse_pages",
                  "nr_swap_pages", "total_swap_pages", "users", "on_avail", "discard_work",
                  "reclaim_work", "abort", "prio", "xdev", "least_priority")
    fields.append(("global_next", "<i8", (nr_orders,)))
    fields.append(("heads", "<i8", (nr_lists(nr_orders), 3)))
    fields.append(("avail", "<i8", (1 + MAX_SWAPFILES,)))
    fields.append(("active", "<i8", (1 + MAX_SWAPFILES,)))
    fields.append(("xdev_log", "<i8", (XDEV_LOG, 2)))
    return np.dtype(fields)


def percpu_dtype(nr_orders: int) -> np.dtype:
    """struct percpu_swap_cluster, one record per CPU on its own cache lines.

    field    meaning
    lock     local_lock(&percpu_swap_cluster.lock): held across an allocation on this CPU
    si[o]    cached device for order o: its type + 1, 0 = NULL (one pair per CPU for all devices)
    offset[o] the likely next slot for order o, 0 = SWAP_ENTRY_INVALID
    """
    used = 8 * (1 + 2 * nr_orders)
    pad = (-used) % CACHELINE
    fields = [("lock", "<i8"), ("si", "<i8", (nr_orders,)), ("offset", "<i8", (nr_orders,))]
    if pad:
        fields.append(("pad", "<i8", (pad // 8,)))
    return np.dtype(fields)


# Slab object header, one per table object, kept apart from the table memory so that giving
# the memory back to the OS cannot erase the evidence (DESIGN §5).
#   field    meaning
#   state    OBJ_* (slab.py): pool (poisoned), free in slab, in use, waiting for a grace period
#   owner    cluster index the table is installed in, -1 none
#   gen      generation: bumped at every allocation, so a reader can tell a recycled object
#   prev     slab freelist link (object index, -1 none); protected by slab_lock
#   next     slab freelist link
#   page     slab page holding the object
#   gp       grace-period sequence at the time it was freed (pipe-age origin)
#   pad
OBJ_DTYPE = np.dtype(_i64("state", "owner", "gen", "prev", "next", "page", "gp", "pad"))

# Slab page: a group of objects that comes from and goes back to the page pool together.
#   state    PAGE_* (slab.py): in the pool, in the slab, waiting for a grace period
#   inuse    objects of the page in use
#   next     pool / pending-list link (page index, -1 none)
#   gp       grace-period sequence the page waits for
#   cpu      the CPU whose active slab (SLUB's kmem_cache_cpu.slab) the page is, -1 none
PAGE_DTYPE = np.dtype(_i64("state", "inuse", "next", "gp", "cpu", "pad0", "pad1", "pad2"))

# The folio model (DESIGN §2 and §6): what the swap cache points at.
#   ref      folio refcount (folio_try_get fails at 0)
#   flags    FOLIO_* (folio.py): swapcache, locked, allocated
#   swap     folio->swap: the first swap entry (slot offset), 0 = none
#   order    folio order
#   owner    worker that allocated the folio
#   gen      generation, bumped at every reuse of the id
#   lock     folio lock word (folio_trylock)
#   pad
FOLIO_DTYPE = np.dtype(_i64("ref", "flags", "swap", "order", "owner", "gen", "lock", "pad"))


def word(dtype: np.dtype, name: str) -> int:
    """Index of an int64 field in a flat 'q' view of one record."""
    return dtype.fields[name][1] // 8


def words_dtype(names: tuple[str, ...]) -> np.dtype:
    """A record of int64 words named ``names``, in that order."""
    return np.dtype(_i64(*names))


class Record:
    """Word indices of a record's fields, generated from its dtype.

    ``rec.<field>`` is the index of the field's first int64 word in a flat ``'q'`` view of one
    record; ``rec.size`` is the record's length in words.  Byte offsets (for the C atomics and
    locks) are ``8 * rec.<field>``.  Hot code copies the indices it needs into module constants
    at import time, which costs nothing per access and still comes from here.
    """

    def __init__(self, dtype: np.dtype) -> None:
        if dtype.itemsize % 8:
            raise ValueError(f"record of {dtype.itemsize} bytes is not whole int64 words")
        self.dtype = dtype
        self.size = dtype.itemsize // 8
        self.names = dtype.names
        for name in dtype.names:
            setattr(self, name, dtype.fields[name][1] // 8)

    def __repr__(self) -> str:
        return "Record(" + ", ".join(f"{n}={getattr(self, n)}" for n in self.names) + ")"


CLUSTER = Record(CLUSTER_DTYPE)
OBJ = Record(OBJ_DTYPE)
PAGE = Record(PAGE_DTYPE)
FOLIO = Record(FOLIO_DTYPE)
# The scalar fields of swap_info come before its per-order arrays, so their indices do not depend
# on the number of orders; ``Record(device_dtype(n))`` adds ``global_next`` and ``heads`` for n.
DEVICE = Record(device_dtype(1))
