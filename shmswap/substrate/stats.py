"""Per-worker statistics counters: one writer each, summed for reports (DESIGN §1 "Identities").

Every branch the allocator takes that a report or a test needs is a named counter here.  Counters
live in the worker's record of the workers segment; a worker increments its own with a plain
memoryview store (one writer, so no atomic is needed), and readers sum them at quiescence.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Stat", "N_STATS"]


class Stat(IntEnum):
    # workload operations
    ALLOC = 0                # folio_alloc_swap succeeded
    ALLOC_FAILED = 1         # folio_alloc_swap found nothing
    FREE = 2                 # slots freed by swap_entries_free (per slot, any caller)
    LOOKUP = 3               # lockless swap-cache lookups
    FAST_HIT = 4             # swap_alloc_fast found a slot
    SLOW_PATH = 5            # swap_alloc_slow entered
    # swap_cluster_alloc_table branches
    TABLE_ATOMIC = 6         # atomic attempt succeeded
    TABLE_ATOMIC_FAIL = 7    # atomic attempt failed (the sleep follows)
    SLEEPS = 8               # sleeping attempts (locks dropped)
    SLEEP_FAIL = 9           # sleeping attempt returned NULL
    MIGRATED = 10            # woke on another CPU
    USED_PERCPU = 11         # seed step 4: the per-CPU cluster was used instead (T5)
    INSTALLED = 12           # the new table was installed in the isolated cluster (T6)
    ALREADY_HAD_TABLE = 13   # WARN_ON_ONCE: the dangling cluster had a table already
    RETURNED_NULL = 14       # NULL returned (T6b in seed; merged puts the cluster back first)
    LOST_CLUSTERS = 15       # seed T5/T6b: the isolated cluster left on no list
    TABLE_UNUSED_FREED = 16  # a freshly allocated table freed unused
    TABLE_FREES = 17         # swap_cluster_free_table
    # list walking and reclaim
    TRYLOCK_SKIPS = 18       # isolate_lock_cluster skipped a busy cluster
    RECLAIM_FULL = 19        # swap_reclaim_full_clusters passes
    RECLAIMED_SLOTS = 20     # slots reclaimed from HAS_CACHE-only
    DISCARDS = 21            # clusters discarded
    # --sleep-reclaim (mm/vmscan.py): direct reclaim from the sleeping table allocation
    NESTED_RECLAIM = 22      # the sleeping allocation entered direct reclaim (a nested swap-out)
    FREED_MEMORY_READS = 23  # a reader touched a poisoned table object (oracle)
    WRONG_OWNER_ACCEPTED = 24  # a reader accepted a folio not for its entry (oracle)
    FOREIGN_REJECTED = 25    # a reader saw a foreign folio and rejected it (correct behaviour)
    NESTED_ALLOC = 26        # the nested folio_alloc_swap got slots
    OPS = 27                 # workload steps done
    WARNINGS = 28            # WARN / VM_WARN conditions met (each is a violation unless expected)
    NULL_TABLE_FREES = 29    # swap_cluster_free_table on a cluster whose table is NULL (§10 W2)
    PIPE_TOO_OLD = 30        # a reader saw a table freed two or more grace periods earlier
    FREE_OPS = 31            # workload free operations (one allocation record released)
    NESTED_ALLOC_FAILED = 32  # the nested swap-out got no folio or no slot
    # swap_cluster_alloc_table branches taken inside nested swap-outs (also counted above)
    NESTED_TABLE_ATOMIC = 33
    NESTED_SLEEPS = 34
    NESTED_USED_PERCPU = 35
    NESTED_INSTALLED = 36
    NESTED_RETURNED_NULL = 37
    NESTED_LOST = 38
    # the branch the outer swap_cluster_alloc_table took after its nested swap-out (also counted above)
    OUTER_USED_PERCPU = 39
    OUTER_INSTALLED = 40
    OUTER_RETURNED_NULL = 41
    OUTER_ALREADY = 42
    OUTER_LOST = 43
    # --reader-delays on (checks/delays.py): the readers' rcutorture-style delays
    READER_DELAYS_SHORT = 44  # short delays taken
    READER_DELAYS_LONG = 45   # long delays taken
    READER_DELAY_US = 46      # microseconds spent in both
    # --swapoff-every: folio_alloc_swap failed while swap_avail_head was empty (a device swapped off)
    ALLOC_NO_DEVICE = 47
    LONG_DELAY_FREED = 48     # long delays under which the reader's table was freed
    LONG_DELAY_GONE = 49      # ... and then went back to the page pool or to another cluster
    TORTURE_READS = 50        # lookups made by the torture reader processes (workers/reader.py)


N_STATS = 52  # room for a few more without changing the layout
