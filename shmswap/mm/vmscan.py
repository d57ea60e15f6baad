"""Direct reclaim from the sleeping table allocation: a nested swap-out (``--sleep-reclaim P``).

What the sources say.  ``swap_cluster_alloc_table`` drops ``ci->lock``, the local lock and (HDD)
``global_cluster_lock``, then allocates with

    seed    kmem_cache_zalloc(swap_table_cachep, __GFP_HIGH | GFP_KERNEL)
    merged  kmem_cache_zalloc(swap_table_cachep, __GFP_HIGH | __GFP_NOMEMALLOC | GFP_KERNEL)

Both masks carry ``GFP_KERNEL``, hence ``__GFP_DIRECT_RECLAIM``: neither forbids direct reclaim,
and direct reclaim swaps out (``shrink_folio_list`` -> ``folio_alloc_swap``) while the caller's
isolated cluster dangles (flag NONE, count 0, table NULL, on no list).  ``__GFP_NOMEMALLOC`` is
about reserves, not reclaim: it makes ``__gfp_pfmemalloc_flags`` return 0, so a task with
``PF_MEMALLOC`` or an OOM victim gets no ``ALLOC_NO_WATERMARKS`` / ``ALLOC_OOM``.  Whether the sleeping
allocation may reclaim depends on the *caller's* ``PF_MEMALLOC``, the same in both variants:
``__alloc_pages_slowpath`` skips direct reclaim for a ``PF_MEMALLOC`` task ("Avoid recursion of direct
reclaim").  The swap-outs of kswapd (``PF_MEMALLOC`` set at start), direct reclaim, memcg reclaim
(``memory.reclaim`` too), ``reclaim_pages`` (``MADV_PAGEOUT``) and ``shrink_all_memory`` all run with it
(``memalloc_noreclaim_save``): for them neither variant nests, and the difference is the reserves
(seed: ``ALLOC_NO_WATERMARKS``; merged: none, so it fails sooner and takes its NULL branch).  The model
does not make that difference: ``--sleep-fail`` is one rate for both.  ``--sleep-reclaim`` models the
case the masks leave open in both variants, a swap-out by a task without ``PF_MEMALLOC``:

* such a swap-out may nest one swap-out inside its sleeping allocation;
* the nested swap-out runs with ``PF_MEMALLOC`` (direct reclaim set it), so its own sleeping table
  allocation cannot reclaim again: the nesting is one level deep (the seed's comment, kept in
  merged: "the potential recursive allocation is limited");
* the nested allocation takes the variant's own branches: seed atomic, T5 (the per-CPU cluster),
  T6b (NULL, cluster lost), installed (or W12 with several devices); merged atomic, NULL with the
  cluster back on ``free_clusters``, installed.

Inside the nesting too, the one GFP difference is the nested (``PF_MEMALLOC``) allocation's reserves:
the seed's sleeping attempt may use ``ALLOC_NO_WATERMARKS`` (it fails only when the reserves are gone
too), merged's may not (it fails as soon as the free pages are under the min watermark, and cannot
reclaim).  The model has no watermarks: the nested sleeping attempt fails at the configured
``--sleep-fail`` rate in both variants, so the reserves difference is stated, not modelled.  What
the model shows is the interaction the variants' code makes different: the nested swap-out leaves
this CPU's ``percpu_swap_cluster`` pointing at the cluster it used, and the seed's re-check after the
sleep then takes that cluster (T5) and loses the one it isolated; merged ignores the per-CPU cluster
and installs its table.

How.  ``DirectReclaim`` wraps any ``SleepAlloc`` (the in-process ``SleepingAllocator``, a CPU
worker's ``Mailbox``): with probability P (a seeded stream per worker) it runs
``shrink_folio_list``'s allocation for an order-0 folio on the CPU the task is on, with no lock held,
then the allocation proper.  The slot goes to the task's sink (``bind_swap_out``: the workload's, or
``Model``'s, which holds it in ``Model.held``), which takes the map count and writes the folio back as
for its own allocations and frees the slot later like any other.  A task with no sink does not
reclaim.

Counted per worker: nested reclaims and allocations, the ``swap_cluster_alloc_table`` branches
taken inside them, and the branch the outer allocation took after its nested reclaim (``settle``).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..substrate.stats import Stat
from .allocator import folio_alloc_swap
from .device import SleepAlloc
from .task import REC_CLUSTER, Current, Task

__all__ = ["DirectReclaim", "TaskReclaim", "direct_reclaim", "bind_swap_out", "settle", "shrink_folio_list",
           "SwapOut", "NESTED_BRANCHES", "OUTER_BRANCHES"]

# sink(si of the entry, folio (locked, in the swap cache), entry): what shrink_folio_list does next
SwapOut = Callable[[object, int, int], None]

# (counted in the table call, counted again for the nested allocation) and (.., for the outer one)
NESTED_BRANCHES = ((Stat.TABLE_ATOMIC, Stat.NESTED_TABLE_ATOMIC), (Stat.SLEEPS, Stat.NESTED_SLEEPS),
                   (Stat.USED_PERCPU, Stat.NESTED_USED_PERCPU), (Stat.INSTALLED, Stat.NESTED_INSTALLED),
                   (Stat.RETURNED_NULL, Stat.NESTED_RETURNED_NULL), (Stat.LOST_CLUSTERS, Stat.NESTED_LOST))
OUTER_BRANCHES = ((Stat.USED_PERCPU, Stat.OUTER_USED_PERCPU), (Stat.INSTALLED, Stat.OUTER_INSTALLED),
                  (Stat.RETURNED_NULL, Stat.OUTER_RETURNED_NULL), (Stat.ALREADY_HAD_TABLE, Stat.OUTER_ALREADY),
                  (Stat.LOST_CLUSTERS, Stat.OUTER_LOST))


class TaskReclaim:
    """A task's reclaim state: ``PF_MEMALLOC``, its sink and stream, the outer branch to settle."""

    __slots__ = ("memalloc", "si", "sink", "rng", "pending")

    def __init__(self, si, sink: SwapOut, seed: int) -> None:
        self.memalloc = False         # current->flags & PF_MEMALLOC
        self.si = si                  # where folio_alloc_swap starts (device 0's handle: it walks them all)
        self.sink = sink
        self.rng = random.Random(seed)
        self.pending: list[int] | None = None


def bind_swap_out(task: Task, si, sink: SwapOut, seed: int) -> TaskReclaim:
    """Give ``task`` a sink for its nested swap-outs (the workload, a test); its stream is ``seed``."""
    task.reclaim = TaskReclaim(si, sink, seed * 7_368_787 + task.wid)
    return task.reclaim


def _read(cur: Current, pairs) -> list[int]:
    wq, base = cur.wq, cur.stat_base
    return [wq[base + int(src)] for src, _ in pairs]


def _add_deltas(cur: Current, pairs, before: list[int]) -> None:
    for (_, dst), b, a in zip(pairs, before, _read(cur, pairs), strict=True):
        if a != b:
            cur.stat(int(dst), a - b)


def settle(cur: Current) -> None:
    """Count the branch the outer allocation took after its nested reclaim.

    Every branch counter moves only after a sleep, and every sleep enters ``DirectReclaim`` (which
    settles first): between the snapshot and the next settle exactly one branch was counted, the
    outer call's.  The workload settles after each ``folio_alloc_swap``.
    """
    tr = cur.task.reclaim
    if tr is not None and tr.pending is not None:
        _add_deltas(cur, OUTER_BRANCHES, tr.pending)
        tr.pending = None


def shrink_folio_list(cur: Current, tr: TaskReclaim) -> bool:
    """Models direct reclaim's swap-out of one folio (``shrink_folio_list`` -> ``folio_alloc_swap``).

    Runs where the task is now (its locks all dropped by the sleeping allocation), with
    ``PF_MEMALLOC`` set (``__perform_reclaim``'s ``memalloc_noreclaim_save``), so its own sleeping
    table allocation does not reclaim again.  The outer allocation's ``current`` state (home CPU,
    recorded cluster, ``alloc_si``) is kept; the CPU the task ends on is not: it is where it is.
    """
    si, task = tr.si, cur.task
    cur.stat(int(Stat.NESTED_RECLAIM))
    folios = si.folios
    folio = folios.folio_alloc(task.wid, 0)
    if folio < 0:
        cur.stat(int(Stat.NESTED_ALLOC_FAILED))
        return False
    folios.folio_lock(folio)
    before = _read(cur, NESTED_BRANCHES)
    home, alloc_si = task.home_cpu, cur.alloc_si
    rec_cluster = cur.wq[cur.rec_base + REC_CLUSTER]
    task.home_cpu = task.cpu          # folio_alloc_swap starts "on the home CPU": here, this one
    tr.memalloc = True
    try:
        entry = folio_alloc_swap(si, folio)
        dev = cur.alloc_si
    finally:
        tr.memalloc = False
        task.home_cpu = home
        cur.alloc_si = alloc_si
        cur.set_rec_cluster(rec_cluster)
    _add_deltas(cur, NESTED_BRANCHES, before)
    if entry < 0:
        folios.folio_unlock(folio)
        folios.folio_put(folio)
        cur.stat(int(Stat.NESTED_ALLOC_FAILED))
        return False
    cur.stat(int(Stat.NESTED_ALLOC))
    tr.sink(dev, folio, entry)
    return True


class DirectReclaim:
    """A ``SleepAlloc`` that may enter direct reclaim first (``kmem_cache_zalloc(GFP_KERNEL)``)."""

    def __init__(self, inner: SleepAlloc, cur: Current, probability: float) -> None:
        self.inner = inner
        self.cur = cur
        self.probability = probability

    def __call__(self, ci: int) -> int:
        cur = self.cur
        tr = cur.task.reclaim
        if tr is not None and not tr.memalloc:       # PF_MEMALLOC: "Avoid recursion of direct reclaim"
            settle(cur)
            if tr.rng.random() < self.probability:
                shrink_folio_list(cur, tr)
                tr.pending = _read(cur, OUTER_BRANCHES)
        return self.inner(ci)


def direct_reclaim(inner: SleepAlloc, cur: Current, probability: float) -> SleepAlloc:
    """``inner`` wrapped for ``--sleep-reclaim P`` (itself when P is 0: nothing on the sleep path)."""
    return DirectReclaim(inner, cur, probability) if probability else inner
