"""Clusters: flags, predicates, locking, the lists and every transition between them.

Models, in mm/swapfile.c: ``cluster_is_empty``, ``cluster_is_discard``,
``cluster_table_is_alloced``, ``cluster_is_usable``, ``swap_cluster_lock``, ``move_cluster``,
``isolate_lock_cluster``, ``relocate_cluster``, ``partial_free_cluster``, ``free_cluster``,
``__free_cluster``, ``swap_cluster_schedule_discard``, ``swap_do_scheduled_discard`` and
``swap_cluster_free_table``.

Locking, as in the kernel: ``ci->lock`` protects a cluster's count, flags, order, table pointer,
table contents and swap_map bytes; ``si->lock`` protects list membership, so moving a cluster
between lists needs both, taken ci → si.  The reverse order appears only as the trylock in
``isolate_lock_cluster``, which skips a busy cluster instead of waiting.

A cluster is named by its index ``ci``.  Its record is ``CW`` int64 words at ``ci * CW`` in the
flat view ``si.cq`` (layout.CLUSTER, generated from layout.CLUSTER_DTYPE); its lock word is at
byte ``ci * CI_BYTES``.  A list
is a doubly linked list of indices whose head (first, last, length) lives in swap_info.  The list
a listed cluster is on is named by its flag (and order), which is exactly the kernel's rule
"cluster flag must be in sync with list status"; the checker walks the lists from their heads to
hold the code to it.
"""

from __future__ import annotations

from ..substrate.layout import CLUSTER, LIST_DISCARD, LIST_FREE, LIST_FULL, list_frag, list_nonfull
from ..substrate.locks import LockClass
from ..substrate.preempt import Point, sched_point
from ..substrate.stats import Stat
from .device import CI_BYTES, SI_LOCK_OFF
from .swap import (
    CLUSTER_FLAG_DISCARD,
    CLUSTER_FLAG_FRAG,
    CLUSTER_FLAG_FREE,
    CLUSTER_FLAG_FULL,
    CLUSTER_FLAG_NONE,
    CLUSTER_FLAG_NONFULL,
    CLUSTER_FLAG_USABLE,
    FLAG_NAMES,
    NULL_TABLE,
    SWP_PAGE_DISCARD,
    SWP_WRITEOK,
    KernelBug,
)

__all__ = [
    "CW", "C_LOCK", "C_COUNT", "C_FLAGS", "C_ORDER", "C_TABLE", "C_PREV", "C_NEXT", "C_LOST", "CI_BYTES",
    "cluster_is_empty", "cluster_is_discard", "cluster_table_is_alloced", "cluster_is_usable",
    "cluster_offset", "swap_cluster_lock", "swap_cluster_unlock", "ci_lock", "ci_trylock", "ci_unlock",
    "lockdep_assert_held", "move_cluster", "isolate_lock_cluster", "relocate_cluster", "partial_free_cluster",
    "free_cluster", "__free_cluster", "swap_cluster_schedule_discard", "swap_do_scheduled_discard",
    "swap_cluster_free_table", "list_of", "list_add_tail", "list_del",
]

# Word indices in a cluster record (generated from the dtype).
CW = CLUSTER.size
C_LOCK, C_COUNT, C_FLAGS, C_ORDER = CLUSTER.lock, CLUSTER.count, CLUSTER.flags, CLUSTER.order
C_TABLE, C_PREV, C_NEXT, C_LOST = CLUSTER.table, CLUSTER.prev, CLUSTER.next, CLUSTER.lost

CI_LOCK = int(LockClass.CI_LOCK)
_SI_LOCK = int(LockClass.SI_LOCK)
_WRITEOK_DISCARD = SWP_WRITEOK | SWP_PAGE_DISCARD
_TRYLOCK_SKIPS, _DISCARDS, _TABLE_FREES = int(Stat.TRYLOCK_SKIPS), int(Stat.DISCARDS), int(Stat.TABLE_FREES)
_NULL_TABLE_FREES = int(Stat.NULL_TABLE_FREES)


# -- predicates (all with ci->lock held) ------------------------------------------------------------

def cluster_is_empty(si, ci: int) -> bool:
    return si.cq[ci * CW + C_COUNT] == 0


def cluster_count(si, ci: int) -> int:
    """``ci->count``: slots in use (a lockless read outside ``ci->lock``: a snapshot)."""
    return int(si.cq[ci * CW + C_COUNT])


def cluster_is_discard(si, ci: int) -> bool:
    return si.cq[ci * CW + C_FLAGS] == CLUSTER_FLAG_DISCARD


def cluster_table_is_alloced(si, ci: int) -> bool:
    """Models ``cluster_table_is_alloced()``."""
    return si.cq[ci * CW + C_TABLE] != NULL_TABLE


def cluster_is_usable(si, ci: int, order: int) -> bool:
    """Models ``cluster_is_usable()``: listable flag, a table, and a compatible order."""
    b = ci * CW
    cq = si.cq
    if cq[b + C_FLAGS] > CLUSTER_FLAG_USABLE or cq[b + C_TABLE] == NULL_TABLE:
        return False
    return not order or cq[b + C_COUNT] == 0 or order == cq[b + C_ORDER]


def cluster_offset(si, ci: int) -> int:
    return ci << si.spc_shift


# -- locking ----------------------------------------------------------------------------------------

def ci_lock(si, ci: int) -> None:
    """``spin_lock(&ci->lock)``."""
    si.cr.lock(ci * CI_BYTES, CI_LOCK)


def ci_trylock(si, ci: int) -> bool:
    return si.cr.trylock(ci * CI_BYTES, CI_LOCK)


def ci_unlock(si, ci: int) -> None:
    si.cr.unlock(ci * CI_BYTES, CI_LOCK)


def lockdep_assert_held(si, ci: int) -> None:
    """``lockdep_assert_held(&ci->lock)``.  Where it would cost the order-0 pair a call
    (``move_cluster``, ``relocate_cluster``, ``partial_free_cluster``, ``free_cluster``,
    ``cluster_alloc_range``) it runs only with ``si.debug_vm`` (``--lockdep``, the tests)."""
    if not si.cr.held_by_me(ci * CI_BYTES):
        raise KernelBug(f"lockdep: ci->lock of cluster {ci} not held by worker {si.cur.wid}")


def swap_cluster_lock(si, offset: int) -> int:
    """Models ``swap_cluster_lock()``: lock the cluster holding ``offset`` and return it."""
    ci = offset >> si.spc_shift
    si.cr.lock(ci * CI_BYTES, CI_LOCK)
    return ci


swap_cluster_unlock = ci_unlock


# -- lists (si->lock held) ----------------------------------------------------------------------------

def list_of(si, ci: int) -> int:
    """The list a listed cluster is on, named by its flag (and order)."""
    b = ci * CW
    flags = si.cq[b + C_FLAGS]
    if flags == CLUSTER_FLAG_NONFULL:
        return list_nonfull(si.cq[b + C_ORDER])
    if flags == CLUSTER_FLAG_FRAG:
        return list_frag(si.cq[b + C_ORDER])
    if flags == CLUSTER_FLAG_FREE:
        return LIST_FREE
    if flags == CLUSTER_FLAG_FULL:
        return LIST_FULL
    if flags == CLUSTER_FLAG_DISCARD:
        return LIST_DISCARD
    raise KernelBug(f"cluster {ci}: flag NONE names no list")


def list_add_tail(si, lst: int, ci: int) -> None:
    cq, dq = si.cq, si.devq
    h = si.heads + 3 * lst
    last = dq[h + 1]
    b = ci * CW
    cq[b + C_PREV] = last
    cq[b + C_NEXT] = -1
    if last == -1:
        dq[h] = ci
    else:
        cq[last * CW + C_NEXT] = ci
    dq[h + 1] = ci
    dq[h + 2] += 1


def list_del(si, lst: int, ci: int) -> None:
    cq, dq = si.cq, si.devq
    h = si.heads + 3 * lst
    b = ci * CW
    prev, nxt = cq[b + C_PREV], cq[b + C_NEXT]
    if prev == -1:
        if dq[h] != ci:
            raise KernelBug(f"list_del: cluster {ci} is not the head of list {lst}")
        dq[h] = nxt
    else:
        cq[prev * CW + C_NEXT] = nxt
    if nxt == -1:
        dq[h + 1] = prev
    else:
        cq[nxt * CW + C_PREV] = prev
    cq[b + C_PREV] = cq[b + C_NEXT] = -1
    dq[h + 2] -= 1


# -- transitions ----------------------------------------------------------------------------------------

def move_cluster(si, ci: int, lst: int, new_flags: int) -> None:
    """Models ``move_cluster()``: relist under si->lock, then set the flag under ci->lock only.

    A lister that meets the node before its flag changes cannot take it: the mover still holds
    ``ci->lock``, and the lister only trylocks.
    """
    if si.debug_vm:
        lockdep_assert_held(si, ci)
    b = ci * CW
    cq = si.cq
    flags = cq[b + C_FLAGS]
    if flags == new_flags:
        si.cur.warn(f"move_cluster: cluster {ci} already has flag {FLAG_NAMES[new_flags]}")
    devr = si.devr
    devr.lock(SI_LOCK_OFF, _SI_LOCK)
    if flags == CLUSTER_FLAG_NONE:
        list_add_tail(si, lst, ci)
        cq[b + C_LOST] = 0            # listed again: no longer lost, whatever lost it (§10 W2)
    else:
        list_del(si, list_of(si, ci), ci)
        list_add_tail(si, lst, ci)
    devr.unlock(SI_LOCK_OFF, _SI_LOCK)
    cq[b + C_FLAGS] = new_flags


def isolate_lock_cluster(si, lst: int, order: int) -> int:
    """Models ``isolate_lock_cluster()`` as the seed writes it: no early SWP_WRITEOK test.

    Walk ``lst`` under si->lock, trylock each cluster and skip a busy one; take the first that
    locks off its list with flag NONE.  A cluster without a table (it came from free_clusters)
    then gets one through the variant's ``swap_cluster_alloc_table``.  Returns the cluster, locked,
    or -1: for an empty list, for one whose every node is contended, or when no table was had.
    """
    found = -1
    cq, cr = si.cq, si.cr
    si.si_lock()
    ci = si.devq[si.heads + 3 * lst]
    while ci != -1:
        if not cr.trylock(ci * CI_BYTES, CI_LOCK):
            si.cur.stat(_TRYLOCK_SKIPS)
            ci = cq[ci * CW + C_NEXT]
            continue
        flags = cq[ci * CW + C_FLAGS]
        if not flags or not (flags <= CLUSTER_FLAG_USABLE or flags == CLUSTER_FLAG_FULL):
            si.cur.warn(f"isolate_lock_cluster: cluster {ci} on list {lst} has flag {FLAG_NAMES.get(flags)}")
        list_del(si, lst, ci)
        cq[ci * CW + C_FLAGS] = CLUSTER_FLAG_NONE
        found = ci
        break
    si.si_unlock()
    if found == -1:
        return -1
    si.cur.set_rec_cluster(found)
    if cq[found * CW + C_TABLE] == NULL_TABLE:
        if lst != LIST_FREE or cq[found * CW + C_COUNT]:
            si.cur.warn(f"isolate_lock_cluster: table-less cluster {found} not an empty free cluster")
        return si.variant.alloc_table.swap_cluster_alloc_table(si, found, order)
    return found


def relocate_cluster(si, ci: int) -> None:
    """Models ``relocate_cluster()``: after allocation, list the cluster by its count."""
    if si.debug_vm:
        lockdep_assert_held(si, ci)
    b = ci * CW
    cq = si.cq
    flags = cq[b + C_FLAGS]
    if flags == CLUSTER_FLAG_DISCARD:
        return
    count = cq[b + C_COUNT]
    if not count:
        if flags != CLUSTER_FLAG_FREE:
            free_cluster(si, ci)
    elif count != si.spc:
        if flags != CLUSTER_FLAG_FRAG:
            move_cluster(si, ci, list_frag(cq[b + C_ORDER]), CLUSTER_FLAG_FRAG)
    elif flags != CLUSTER_FLAG_FULL:
        move_cluster(si, ci, LIST_FULL, CLUSTER_FLAG_FULL)


def partial_free_cluster(si, ci: int) -> None:
    """Models ``partial_free_cluster()``: a free left 0 < count < SWAPFILE_CLUSTER."""
    if si.debug_vm:
        lockdep_assert_held(si, ci)
    b = ci * CW
    count = si.cq[b + C_COUNT]
    if not 0 < count < si.spc:
        raise KernelBug(f"partial_free_cluster: cluster {ci} has count {count}")
    if si.cq[b + C_FLAGS] != CLUSTER_FLAG_NONFULL:
        move_cluster(si, ci, list_nonfull(si.cq[b + C_ORDER]), CLUSTER_FLAG_NONFULL)


def free_cluster(si, ci: int) -> None:
    """Models ``free_cluster()``: to DISCARD (table kept) or straight to FREE."""
    if si.debug_vm:
        lockdep_assert_held(si, ci)
    b = ci * CW
    if si.cq[b + C_COUNT] or si.cq[b + C_FLAGS] == CLUSTER_FLAG_FREE:
        raise KernelBug(f"free_cluster: cluster {ci} count {si.cq[b + C_COUNT]} "
                        f"flag {FLAG_NAMES[si.cq[b + C_FLAGS]]}")
    if si.flags & _WRITEOK_DISCARD == _WRITEOK_DISCARD:
        swap_cluster_schedule_discard(si, ci)
        return
    __free_cluster(si, ci)


def __free_cluster(si, ci: int) -> None:
    """Models ``__free_cluster()``: the table goes (dynamic tables), the cluster to FREE."""
    si.variant.tables.on_free_cluster(si, ci)
    move_cluster(si, ci, LIST_FREE, CLUSTER_FLAG_FREE)
    si.cq[ci * CW + C_ORDER] = 0


def swap_cluster_schedule_discard(si, ci: int) -> None:
    """Models ``swap_cluster_schedule_discard()``: to the discard list, then schedule the work."""
    if si.cq[ci * CW + C_FLAGS] == CLUSTER_FLAG_FREE:        # VM_BUG_ON(ci->flags == CLUSTER_FLAG_FREE)
        raise KernelBug(f"swap_cluster_schedule_discard: cluster {ci} is FREE")
    move_cluster(si, ci, LIST_DISCARD, CLUSTER_FLAG_DISCARD)
    si.schedule_discard_work()


def swap_do_scheduled_discard(si) -> bool:
    """Models ``swap_do_scheduled_discard()``: discard each listed cluster, then free it.

    The cluster leaves the list but keeps its DISCARD flag while the I/O runs with si->lock
    dropped, so per-CPU pointers and ``relocate_cluster`` leave it alone.  Run by the discard work
    (the manager), never inside the allocator under the local lock.
    """
    ret = False
    cur = si.cur
    si.si_lock()
    while (ci := si.list_head(LIST_DISCARD)) != -1:
        list_del(si, LIST_DISCARD, ci)
        cur.set_rec_cluster(ci)
        si.si_unlock()
        sched_point(Point.DISCARD_WINDOW, ci, 0)
        ci_lock(si, ci)
        si.cq[ci * CW + C_FLAGS] = CLUSTER_FLAG_NONE
        __free_cluster(si, ci)
        ci_unlock(si, ci)
        cur.set_rec_cluster(-1)
        cur.stat(_DISCARDS)
        ret = True
        si.si_lock()
    si.si_unlock()
    return ret


def swap_cluster_free_table(si, ci: int) -> None:
    """Models ``swap_cluster_free_table()``: detach an empty, all-null table and free it.

    Readers that load the pointer after the store see NULL; one that loaded it before reads the
    detached table, which is all-null, until the slab reuses it (slab mode) or a grace period
    passes (page mode).
    """
    lockdep_assert_held(si, ci)
    b = ci * CW
    cur = si.cur
    if si.cq[b + C_COUNT]:
        cur.warn(f"swap_cluster_free_table: cluster {ci} is not empty (count {si.cq[b + C_COUNT]})")
    table = si.cq[b + C_TABLE]
    if table == NULL_TABLE:
        # Reference §10 W2: a stale isolator frees a cluster whose table a sleeper dropped.  The
        # kernel's DEBUG_VM loop dereferences NULL here; kmem_cache_free(NULL) is a no-op.
        cur.stat(_NULL_TABLE_FREES)
        cur.warn(f"swap_cluster_free_table: cluster {ci} has a NULL table (reference §10 W2)")
        return
    if si.slab.table_has_entries(table):
        cur.warn(f"swap_cluster_free_table: table {table} of cluster {ci} still has entries")
    si.cr.store((b + C_TABLE) * 8, NULL_TABLE)
    si.slab.free(table)
    cur.stat(_TABLE_FREES)
    for hook in si.obs.table_free:
        hook(cur.wid, ci, table)
