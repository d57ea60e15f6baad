"""A CPU's workload: a seeded stream of operations following a swap slot's life (DESIGN §6).

Allocate 2^order slots for a locked folio (``folio_alloc_swap``: the slots get SWAP_HAS_CACHE and
the folio enters the swap cache), take a map count (the PTE that now points at the entry), then:

* usually, the folio goes to writeback, which completes a few allocations later
  (``WRITEBACK_DEPTH``: meanwhile the folio sits in the swap cache, where a lockless reader of its
  slot finds it): the folio leaves the swap cache with a shadow left in its entries,
  SWAP_HAS_CACHE is dropped, the folio is freed; the slots live on by their map count;
* for a fraction ``cache_only``, the page-table reference goes first (``free_swap_and_cache_nr``
  while the folio is still locked, so it cannot be reclaimed at once) and the slots stay
  SWAP_HAS_CACHE-only: honest work for full-cluster and scan reclaim, which never touch a slot
  with a map count.

Later the slots are freed (the map count drops to 0, the shadow is cleared; a cache-only folio is
deleted from the swap cache), oldest first most of the time so that clusters empty out and cycle
between free and used, and tables are allocated and freed all the time.  Lookups probe random
entries locklessly, including entries just freed, as swap-in would (the RCU readers), and
validate what they get unless the reader is the broken variant.

With ``--lifetimes on`` the slots belong to processes instead: each CPU runs one process after
another; a process swaps out ``PROC_CLUSTERS`` clusters' worth of folios (they land together in
the CPU's per-CPU clusters, whose tables are allocated one after another), lives the same number
of steps as every other (``LIFETIME`` times the mean growth; one in ``LONG_LIVED_EVERY``
``LONG_LIVED`` times longer: the long-lived background), then exits and frees all its slots in one
step, as ``exit_mmap`` → ``zap_pte_range`` → ``free_swap_and_cache_nr`` does.  Whole clusters empty
at once, their tables are freed together and the next process's clusters take them again (LIFO):
the churn the lockless readers must survive.  A CPU that sees the fill drop by more than
``JOB_DROP`` clusters' worth (another CPU's process exiting) ends its own oldest process too, as a
job's processes end together: tables allocated at the same time by all CPUs, neighbours on the
same slab pages, are freed together, and whole pages go back to the pool.  Above the fill target
the oldest processes exit, down to half of it (memory pressure).

The stream is fixed by (seed, worker); what other CPUs do meanwhile is not.
"""

from __future__ import annotations

import random
from collections import deque

from shmswap.config import Config
from shmswap.mm.allocator import folio_alloc_swap
from shmswap.mm.cluster import cluster_count
from shmswap.mm.device import swap_usage_in_pages
from shmswap.mm.reclaim import free_swap_and_cache_nr
from shmswap.mm.swap import SWP_OFFSET_MASK as _OFFSET_MASK  # a record's entry: (type << SWP_TYPE_SHIFT) | offset
from shmswap.mm.swap_cache import swap_cache_get_folio
from shmswap.mm.swap_free import swap_duplicate
from shmswap.mm.system import SwapSystem
from shmswap.mm.vmscan import bind_swap_out, settle
from shmswap.model import CACHE_ONLY, SWAPPED, SWP_TYPE_SHIFT, release_allocation, writeback_folio
from shmswap.substrate.handoff import HandoffRing
from shmswap.substrate.stats import Stat

__all__ = ["Workload", "release_record", "drain_handoff", "validate_lookup", "OP_IDLE", "OP_ALLOC", "OP_FREE",
           "OP_LOOKUP", "OP_NAMES"]

OP_IDLE, OP_ALLOC, OP_FREE, OP_LOOKUP = 0, 1, 2, 3
OP_NAMES = {OP_IDLE: "idle", OP_ALLOC: "allocating", OP_FREE: "freeing", OP_LOOKUP: "looking up"}

# Allocation records are [entry, order, folio, state] lists (the hand-off ring carries them as
# words): the state is an index into _STATES.
_STATES = (SWAPPED, CACHE_ONLY)
_SWAPPED, _CACHE_ONLY = 0, 1
_RECENT = 64
# The CPUs fill the device towards the target (allocating a little more often than freeing), then
# drain it to half of that (freeing, oldest first, much more often), and again: memory pressure
# that comes and goes.  Steady mixing alone would not free clusters: the allocator refills the
# holes frees leave (nonfull clusters come first in its search), so a cluster empties, and its
# table goes, only while frees outpace refills on every CPU, as when processes exit.
ALLOC_FILLING, ALLOC_DRAINING = 0.6, 0.2
DRAIN_TO = 0.5           # having reached the target fill, free (oldest first) down to half of it
FIFO_FREE = 0.8
HANDOFF = 0.1            # share of allocations published for another CPU to free
HANDOFF_TAKE = 0.5       # share of frees that first take from the ring, so it stays short
# Writeback is not instant: a swapped-out folio stays in the swap cache, locked, until this CPU has
# WRITEBACK_DEPTH newer ones under writeback (completions in order, as a device queue gives them):
# reclaim writes folios back in batches of SWAP_CLUSTER_MAX (32) and frees them on its next pass.
# Fewer on a device whose CPU's share of the fill target is under 64 slots a folio in flight.
WRITEBACK_DEPTH = 32
# --lifetimes on: a process swaps out this many clusters' worth of slots (uniform), then lives
# LIFETIME times the steps a process takes to grow on average, one in LONG_LIVED_EVERY LONG_LIVED
# times longer; a fill drop of more than JOB_DROP clusters' worth ends the oldest process too.
PROC_CLUSTERS = (8, 24)
LIFETIME = 1.0
JOB_DROP = 2
LONG_LIVED_EVERY, LONG_LIVED = 8, 20.0
EXIT_SOON_DIV = 8        # a process is published (publish_exiting) in the last 1/8 of a lifetime
_OPS, _FREE_OPS, _LOOKUP = int(Stat.OPS), int(Stat.FREE_OPS), int(Stat.LOOKUP)
_WRONG_OWNER_ACCEPTED, _FOREIGN_REJECTED = int(Stat.WRONG_OWNER_ACCEPTED), int(Stat.FOREIGN_REJECTED)


def release_record(si, rec: list[int]) -> None:
    """Free one allocation record, whoever holds it: the map count, or the cache-only folio."""
    swp, order, folio, state = rec
    release_allocation(si.devs[swp >> SWP_TYPE_SHIFT], swp & _OFFSET_MASK, order, folio, _STATES[state])


def drain_handoff(si, handoff: HandoffRing) -> int:
    """Free whatever is left in the hand-off ring (the end of a run); returns how many."""
    n = 0
    while (rec := handoff.pop()) is not None:
        release_record(si, rec)
        n += 1
    return n


def validate_lookup(folios, cur, folio: int, entry: int, broken: bool) -> None:
    """What a swap-in does with a folio from a lockless lookup: lock it, check it is ours.

    A folio now cached for another entry is foreign (a recycled table or folio handed it over); the
    broken reader (``--reader broken``) skips the check and uses it: the oracle counts that, also when
    the folio was another's at the instant the reader loaded it (``Current.read_foreign``) and has left
    the swap cache since.  One that merely left the swap cache meanwhile is stale, dropped by both.
    """
    if broken:
        if cur.read_foreign or folios.folio_is_foreign(folio, entry):
            cur.stat(_WRONG_OWNER_ACCEPTED)
        return
    if not folios.folio_trylock(folio):
        return                          # busy: a real swap-in would wait, then look again
    if folios.folio_is_foreign(folio, entry):
        cur.stat(_FOREIGN_REJECTED)
    folios.folio_unlock(folio)


class Workload:
    """The operations of one worker (a CPU) on the shared device."""

    def __init__(self, system: SwapSystem, task, cfg: Config, n_workers: int,
                 handoff: HandoffRing | None = None) -> None:
        self.si = system.si
        self.cur = system.cur
        self.folios = system.folios
        self.task = task
        self.cfg = cfg
        self.rng = random.Random(cfg.seed * 1_000_003 + task.wid)
        self.orders = sorted(cfg.orders)
        self.weights = [cfg.orders[o] for o in self.orders]
        self.target = int(cfg.fill * (cfg.max_slots - 1 - len(cfg.bad_pages)) / n_workers)
        self.live: deque[list[int]] = deque()     # [entry, order, folio, state]
        self.inflight: deque[tuple] = deque()     # folios under writeback (complete_writeback)
        # a small device (a lesson's, an exploration's) writes back at once: 32 folios in flight
        # would hold all of it
        self.writeback_depth = min(WRITEBACK_DEPTH, self.target // 64)
        self.used = 0
        self.recent: deque[int] = deque(maxlen=_RECENT)
        self.broken_reader = cfg.reader == "broken"
        self.shadow = 0
        self.handoff = handoff
        self.draining = False
        self.device_target = int(cfg.fill * (cfg.max_slots - 1 - len(cfg.bad_pages)))
        # --sleep-reclaim: this task's nested swap-outs come back here (swapped_out) to be freed later
        self.reclaim = bind_swap_out(task, system.si, self.swapped_out, cfg.seed) if cfg.sleep_reclaim else None
        # Several devices: memory pressure fills the swap space, all of it (swap_alloc_slow spills
        # over to the lower priorities only when the higher ones are full).
        self.devs = system.devices if len(system.devices) > 1 else None
        if self.devs is not None:
            self.device_target = int(cfg.fill * sum(int(d.shm.dev["pages"]) for d in self.devs))
        # --lifetimes on: the processes that have grown, [exit time, records] in order of birth, the
        # one growing (its records) and the slots it still swaps out; time counts non-lookup steps.
        self.lifetimes = cfg.lifetimes == "on"
        self.procs: list[list] = []
        self.growing: list[list[int]] | None = None
        self.grow_left = 0
        self.grow_ops = 0
        self.clock = 0
        self.peak_used = 0
        self.quiet = 0
        # The same lifetime for every process of every CPU (in steps: the CPUs run the same mix at
        # about the same pace), so the processes born together die together, on all CPUs, and free
        # the tables they took together: whole slab pages, not one object here and there.
        slots_per_alloc = sum((1 << o) * w for o, w in cfg.orders.items()) / sum(cfg.orders.values())
        self.lifetime = int(LIFETIME * sum(PROC_CLUSTERS) / 2 * cfg.slots_per_cluster / slots_per_alloc)
        self.last_nr = 0
        self.published: list | None = None     # the process whose cluster this CPU published (publish_exiting)
        self.doomed: list[int] = []             # ... the clusters its exit empties
        self.exit_soon = max(self.lifetime // EXIT_SOON_DIV, 1)   # ... when it ends within this many steps
        self.n_workers = n_workers

    # -- one step ------------------------------------------------------------------------------------
    def step(self) -> None:
        rng = self.rng
        r = rng.random()
        if r < self.cfg.lookup_ratio / (1.0 + self.cfg.lookup_ratio):
            self.lookup()
        else:
            used = (swap_usage_in_pages(self.si) if self.devs is None   # the fill, the same for every CPU
                    else sum(swap_usage_in_pages(d) for d in self.devs))
            if self.lifetimes:
                self.process_step(used)
                self.cur.stat(_OPS)
                return
            if used >= self.device_target:
                self.draining = True
            elif used <= self.device_target * DRAIN_TO:
                self.draining = False
            if not self.live or rng.random() < (ALLOC_DRAINING if self.draining else ALLOC_FILLING):
                self.alloc()
            else:
                self.free()
        self.cur.stat(_OPS)

    # -- --lifetimes on ----------------------------------------------------------------------------------
    def process_step(self, used: int) -> None:
        """One step of the CPU's processes: an exit when one is due (or the fill is above the target),
        now and then a hand-off record freed, otherwise a swap-out for the growing process."""
        rng = self.rng
        self.clock += 1
        procs = self.procs
        if used >= self.device_target:
            self.draining = True
        elif used <= self.device_target * DRAIN_TO:
            self.draining = False
        if procs and self.draining:
            self.exit_process(0)                     # memory pressure: the oldest go, on every CPU at once
            return
        due = min(range(len(procs)), key=lambda i: procs[i][0], default=-1)
        self.publish_exiting(procs[due] if due >= 0 and procs[due][0] - self.clock <= self.exit_soon else None)
        if due >= 0 and procs[due][0] <= self.clock:
            self.exit_process(due)
            return
        # Another CPU's process is exiting (the fill fell by more than JOB_DROP clusters' worth):
        # this CPU's oldest, born about when it was, exits with it, as a job's processes end together.
        self.peak_used = max(self.peak_used, used)
        if procs and self.peak_used - used > JOB_DROP * self.cfg.slots_per_cluster and self.clock >= self.quiet:
            self.exit_process(0)
            return
        if self.handoff is not None and rng.random() < HANDOFF:
            rec = self.handoff.pop()                 # another CPU's slot: freed by whoever took it
            if rec is not None:
                self.cur.set_rec_op(OP_FREE)
                self.cur.stat(_FREE_OPS)
                release_record(self.si, rec)
                self.recent.append(rec[0])
                self.cur.set_rec_op(OP_IDLE)
                return
        if self.growing is None:
            lo, hi = PROC_CLUSTERS
            self.growing, self.grow_ops = [], 0
            # a small device's processes are smaller: four of them fit in the CPU's share of the fill
            self.grow_left = max(1, min(rng.randint(lo, hi) * self.cfg.slots_per_cluster, self.target // 4))
        self.grow_ops += 1
        if self.alloc() >= 0:
            self.grow_left -= self.last_nr
        if self.grow_left <= 0:
            self.complete_writebacks()              # all its slots are its own before it can exit
            life = self.lifetime * (LONG_LIVED if rng.randrange(LONG_LIVED_EVERY) == 0 else 1)
            procs.append([self.clock + int(life), self.growing])
            self.growing = None

    def publish_exiting(self, proc: list | None) -> None:
        """Publish, for the other CPUs' readahead (``lookup``), a cluster that empties when ``proc``, the
        process this CPU ends next, exits: one whose every slot in use is the process's (its first and
        last clusters of each order are shared with its neighbours; a slot handed to another CPU to
        free stays).  A new one of them each step, so the readers spread over its tables."""
        if proc is None and self.published is None:
            return
        if proc is not self.published:
            self.published = proc
            self.doomed = self.clusters_emptied_by(proc[1]) if proc is not None else []
        swp = self.doomed[self.rng.randrange(len(self.doomed))] if self.doomed else 0
        self.cur.set_rec_exiting(swp)

    def clusters_emptied_by(self, recs: list[list[int]]) -> list[int]:
        """The clusters (their first entries) whose slots in use are all in ``recs``."""
        spc = self.cfg.slots_per_cluster
        held: dict[int, int] = {}
        for swp, order, _, _ in recs:
            if swp >= 0:
                held[swp // spc] = held.get(swp // spc, 0) + (1 << order)
        doomed = []
        for key, n in held.items():
            swp = key * spc
            if cluster_count(self.si.devs[swp >> SWP_TYPE_SHIFT], (swp & _OFFSET_MASK) // spc) == n:
                doomed.append(swp)
        return doomed

    def exit_process(self, i: int) -> None:
        """Process ``i`` exits: all its slots are freed at once (``zap_pte_range`` →
        ``free_swap_and_cache_nr``), the records swapoff has not already released."""
        cur = self.cur
        self.peak_used = 0
        self.quiet = self.clock + self.lifetime // 2
        cur.set_rec_op(OP_FREE)
        cur.stat(_FREE_OPS)
        _, recs = self.procs.pop(i)
        self.publish_exiting(None)
        for rec in recs:
            if rec[0] >= 0:
                self.release(rec)
        self.live = deque(r for r in self.live if r[0] >= 0)
        cur.set_rec_op(OP_IDLE)

    def alloc(self) -> int:
        si, folios, cur = self.si, self.folios, self.cur
        cur.set_rec_op(OP_ALLOC)
        order = self.rng.choices(self.orders, self.weights)[0]
        folio = folios.folio_alloc(self.task.wid, order)
        if folio < 0:
            cur.set_rec_op(OP_IDLE)
            return -1
        folios.folio_lock(folio)
        entry = folio_alloc_swap(si, folio)
        if self.reclaim is not None:
            settle(cur)                                  # the branch taken after a nested swap-out
        nr = self.last_nr = 1 << order
        if entry < 0:
            folios.folio_unlock(folio)
            folios.folio_put(folio)
            cur.set_rec_op(OP_IDLE)
            return -1
        si = cur.alloc_si                                # the device: swp_entry_t is (type, offset)
        swap_duplicate(si, entry, nr)
        swp = entry | (si.type << SWP_TYPE_SHIFT)
        if self.rng.random() < self.cfg.cache_only:
            free_swap_and_cache_nr(si, entry, nr)        # folio locked: it stays cache-only
            folios.folio_unlock(folio)
            self.keep([swp, order, folio, _CACHE_ONLY])
        else:
            self.shadow += 1
            self.inflight.append((si, folio, entry, self.shadow, swp, order))
            if len(self.inflight) > self.writeback_depth:
                self.complete_writeback()
        cur.set_rec_op(OP_IDLE)
        return entry

    def complete_writeback(self) -> None:
        """The oldest folio under writeback is written: it leaves the swap cache, a shadow stays."""
        si, folio, entry, shadow, swp, order = self.inflight.popleft()
        writeback_folio(si, folio, entry, shadow)
        self.keep([swp, order, -1, _SWAPPED])

    def complete_writebacks(self) -> None:
        """Every folio under writeback is written (before this CPU frees, exits, or swaps off)."""
        while self.inflight:
            self.complete_writeback()

    def keep(self, rec: list[int]) -> None:
        """A finished allocation's record: this CPU's (and its growing process's), or handed off."""
        if self.handoff is None or self.rng.random() >= HANDOFF or not self.handoff.push(rec):
            self.live.append(rec)
            self.used += 1 << rec[1]
            if self.growing is not None:
                self.growing.append(rec)

    def swapped_out(self, si, folio: int, entry: int) -> None:
        """A nested swap-out's slot (mm/vmscan.py), handed over inside this task's own allocation:
        the PTE's map count and writeback as for ``alloc``; freed later like any other record."""
        order = self.folios.order(folio)
        nr = 1 << order
        swap_duplicate(si, entry, nr)
        self.shadow += 1
        writeback_folio(si, folio, entry, self.shadow)
        rec = [entry | (si.type << SWP_TYPE_SHIFT), order, -1, _SWAPPED]
        self.live.append(rec)
        self.used += nr
        if self.growing is not None:
            self.growing.append(rec)

    def writeback(self, folio: int, entry: int, nr: int) -> None:
        self.shadow += 1
        writeback_folio(self.si, folio, entry, self.shadow)

    def free(self) -> None:
        si, cur = self.si, self.cur
        cur.set_rec_op(OP_FREE)
        cur.stat(_FREE_OPS)
        if self.handoff is not None and self.rng.random() < HANDOFF_TAKE:
            rec = self.handoff.pop()
            if rec is not None:
                release_record(si, rec)
                self.recent.append(rec[0])
                cur.set_rec_op(OP_IDLE)
                return
        live = self.live
        if self.rng.random() < FIFO_FREE:
            rec = live.popleft()
        else:
            i = self.rng.randrange(len(live))
            live[i], live[-1] = live[-1], live[i]
            rec = live.pop()
        self.release(rec)
        cur.set_rec_op(OP_IDLE)

    def release(self, rec: list[int]) -> None:
        release_record(self.si, rec)
        self.used -= 1 << rec[1]
        self.recent.append(rec[0])
        rec[0] = -1                 # released (a process's exit skips it: swapoff may have freed it)

    def lookup(self) -> None:
        """A lockless swap-cache lookup, validated as a swap-in must (unless the reader is broken)."""
        si, folios, rng, cur = self.si, self.folios, self.rng, self.cur
        cur.set_rec_op(OP_LOOKUP)
        pick = rng.random()
        if self.recent and pick < 1 / 3:
            entry = self.recent[rng.randrange(len(self.recent))]
        elif self.live and pick < 2 / 3:
            entry = self.live[rng.randrange(len(self.live))][0]
            if entry < 0:
                cur.set_rec_op(OP_IDLE)
                return
        elif self.lifetimes and pick < 5 / 6 and (entry := self.other_exiting()):
            pass        # readahead into the swap of a process another CPU is about to end
        else:
            # Any entry of the device, as a readahead over another process's swap would: often in a
            # cluster another CPU is recycling (or in a free one, whose NULL table ends the lookup).
            entry = rng.randrange(1, si.max)
        cur.stat(_LOOKUP)
        if entry >> SWP_TYPE_SHIFT:
            si, entry = si.devs[entry >> SWP_TYPE_SHIFT], entry & _OFFSET_MASK
        folio = swap_cache_get_folio(si, entry)
        if folio >= 0:
            self.validate(folio, entry)
            folios.folio_put(folio)
        cur.set_rec_op(OP_IDLE)

    def other_exiting(self) -> int:
        """A slot of the cluster another CPU published for its next process to exit (``publish_exiting``),
        any of the cluster's slots, as readahead reads around a fault; 0 none."""
        if self.n_workers < 2:
            return 0
        other = (self.task.wid + 1 + self.rng.randrange(self.n_workers - 1)) % self.n_workers
        swp = self.cur.exiting(other)
        spc = self.cfg.slots_per_cluster
        return swp - swp % spc + self.rng.randrange(spc) if swp else 0

    def validate(self, folio: int, entry: int) -> None:
        validate_lookup(self.folios, self.cur, folio, entry, self.broken_reader)

    def release_all(self) -> None:
        """Free everything this worker holds (try_to_unuse's share of this CPU)."""
        self.complete_writebacks()
        while self.live:
            self.release(self.live.popleft())
