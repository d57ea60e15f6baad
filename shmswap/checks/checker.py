"""The invariant checker: every cluster, slot and table object accounted for (DESIGN §8).

Runs at quiescence (no worker inside an operation) on the shared state alone, in the owner or any
attached process, and checks the invariants of reference §9 that apply to the variant in use:

    I-flag-list, I-order-list, I-count, I-free, I-discard, I-table-needed, I-empty-placement,
    I-rest-counts, I-conservation, I-map-table, I-folio-run, I-free-table, table accounting,
    I-inuse, I-nr-swap, I-avail, I-pcp, I-hdd, I-order-0-only-mixing (folios of order > 0 in the
    tables; the allocation-time WARN of ``cluster_alloc_range``), I-lock-order (lockdep's WARNs,
    checks/lockdep.py, with ``--lockdep``), no lock held, no kernel WARN.

It walks the cluster lists from their heads (it does not trust the flags to say where clusters
are) and checks everything else with whole-array numpy operations, so a 1 TiB device is checked
in seconds.

It reads no memory the run never used.  The swap map (256 MiB at 1 TiB), the table memory, the
slab's object headers and the folios are sparse tmpfs segments, and reading a hole through a
mapping allocates a page: walking them whole made a 1 TiB run cost 550 MiB more than a 1 GiB one.
``SwapShm.touched`` asks the file system (``lseek`` SEEK_DATA/SEEK_HOLE) which records lie in pages
that were ever written (or read, or swapped out); every other record is a hole, all zeros, and the
checker takes it as zeros without reading it.  That is sound whatever the model's state says: it
does not trust the cluster counts or flags to tell which clusters could have non-zero map bytes
(a stray write to a FREE cluster's map byte makes its page data, so I-count still sees it), and
the verdicts are the same as reading everything.  Were holes not reported, all is read.  Its verdicts come in two kinds:

* **findings**: clusters the seed's ``swap_cluster_alloc_table`` left isolated on no list through
  its T5 or T6b branch, matched to the event the allocator recorded (``cluster.lost``);
* **violations**: everything else, each naming the cluster, CPU, slot or table and the reason.

A cluster found on no list with no such record (``--inject-bug lose-cluster`` makes one) is a
violation: the checker must be able to fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..mm.alloc_table import (
    LOST_NAMES,
    LOST_W12,
    XDEV_TAKEN,
    decode_lost,
    decode_xdev,
    lost_device,
    w12_event_reason,
    w12_lost_reason,
)
from ..mm.folio import PG_SWAPCACHE
from ..mm.slab import OBJ_FREE, OBJ_INUSE, OBJ_POOL, OBJ_RCU
from ..mm.swap import (
    CLUSTER_FLAG_DISCARD,
    CLUSTER_FLAG_FRAG,
    CLUSTER_FLAG_FREE,
    CLUSTER_FLAG_FULL,
    CLUSTER_FLAG_NONE,
    CLUSTER_FLAG_NONFULL,
    FLAG_NAMES,
    SWAP_HAS_CACHE,
    SWAP_USAGE_COUNTER_MASK,
    SWAP_USAGE_OFFLIST_BIT,
    SWP_WRITEOK,
)
from ..mm.swapon import reserved_slots_per_cluster
from ..substrate.layout import LIST_DISCARD, LIST_FREE, LIST_FULL, LIST_NAMES, nr_lists
from ..substrate.stats import Stat

__all__ = ["Violation", "Finding", "CheckResult", "check", "check_swapoff", "warning_invariant", "INVARIANTS"]

INVARIANTS = (
    "I-flag-list", "I-order-list", "I-count", "I-free", "I-discard", "I-table-needed",
    "I-empty-placement", "I-rest-counts", "I-conservation", "I-map-table", "I-folio-run",
    "I-free-table", "table accounting", "I-inuse", "I-nr-swap", "I-avail", "I-pcp", "I-hdd",
    "I-order-0-only-mixing", "I-lock-order", "no lock held at quiescence", "no kernel WARN",
)
_MAX_PER_KIND = 20


@dataclass(frozen=True)
class Violation:
    where: str
    reason: str
    invariant: str = ""

    def as_dict(self) -> dict:
        return {"where": self.where, "reason": self.reason, "invariant": self.invariant}


@dataclass(frozen=True)
class Finding:
    where: str
    reason: str
    branch: str

    def as_dict(self) -> dict:
        return {"where": self.where, "reason": self.reason, "branch": self.branch}


@dataclass
class CheckResult:
    checked: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations


class _Checker:
    def __init__(self, shm, variant, warnings: list[str] | None) -> None:
        self.shm, self.variant = shm, variant
        self.cfg, self.geo = shm.cfg, shm.geo
        self.spc = self.geo.spc
        self.res = CheckResult(checked=list(INVARIANTS))
        self.warnings = warnings or []
        self._per_kind: dict[str, int] = {}
        # Views of the cluster array, not copies: at quiescence nothing changes under the checker,
        # and five copies cost 20 MiB of private memory at 1 TiB (the array itself is shared).
        clu = shm.clu
        self.count, self.flags, self.order = clu["count"], clu["flags"], clu["order"]
        self.table, self.lost = clu["table"], clu["lost"]
        self.nrc = self.geo.nr_clusters
        self.names = LIST_NAMES(self.geo.nr_orders)
        # Records that may hold a non-zero byte (see the module docstring); the rest are zeros.
        self.map_touched = shm.touched("swap_map", 0, self.spc, self.nrc)
        self.tables_touched = shm.touched("tables", 0, self.spc * 8, self.geo.n_objs)

    def bad(self, invariant: str, where: str, reason: str) -> None:
        n = self._per_kind.get(invariant, 0) + 1
        self._per_kind[invariant] = n
        if n <= _MAX_PER_KIND:
            self.res.violations.append(Violation(where, reason, invariant))
        elif n == _MAX_PER_KIND + 1:
            self.res.violations.append(Violation("...", f"more {invariant} violations not listed", invariant))

    # -- clusters and lists ---------------------------------------------------------------------------
    def walk_lists(self) -> np.ndarray:
        shm, nrc = self.shm, self.nrc
        heads = shm.dev["heads"]
        nxt, prv = shm.clu["next"], shm.clu["prev"]
        member = np.full(nrc, -1, dtype=np.int8)          # a list id (fewer than 3 + 2 * 12 lists)
        for lst in range(nr_lists(self.geo.nr_orders)):
            first, last, length = (int(x) for x in heads[lst])
            c, prev, n = first, -1, 0
            while c != -1:
                if not 0 <= c < nrc:
                    self.bad("I-flag-list", self.names[lst], f"link to cluster index {c} out of range")
                    break
                if member[c] != -1:
                    self.bad("I-flag-list", f"cluster {c}",
                             f"on {self.names[int(member[c])]} and again on {self.names[lst]} (or a cycle)")
                    break
                member[c] = lst
                if prv[c] != prev:
                    self.bad("I-flag-list", f"cluster {c}", f"prev link {prv[c]} != {prev} on {self.names[lst]}")
                prev, c, n = c, int(nxt[c]), n + 1
            if prev != last or n != length:
                self.bad("I-flag-list", self.names[lst],
                         f"head says last={last} length={length}, walk found last={prev} length={n}")
        return member

    def expected_list(self) -> np.ndarray:
        f, o = self.flags, self.order
        exp = np.full(self.nrc, -1, dtype=np.int64)
        exp[f == CLUSTER_FLAG_FREE] = LIST_FREE
        exp[f == CLUSTER_FLAG_FULL] = LIST_FULL
        exp[f == CLUSTER_FLAG_DISCARD] = LIST_DISCARD
        nf, fr = f == CLUSTER_FLAG_NONFULL, f == CLUSTER_FLAG_FRAG
        exp[nf] = 3 + 2 * o[nf]
        exp[fr] = 4 + 2 * o[fr]
        return exp

    def check_clusters(self) -> None:
        member = self.walk_lists()
        exp = self.expected_list()
        flags, count, table = self.flags, self.count, self.table
        for c in np.flatnonzero((member != exp) & (flags != CLUSTER_FLAG_NONE))[:50]:
            where = self.names[int(member[c])] if member[c] >= 0 else "no list"
            self.bad("I-flag-list", f"cluster {c}",
                     f"flag {FLAG_NAMES.get(int(flags[c]), flags[c])} (order {self.order[c]}) but found on {where}")
        iso = flags == CLUSTER_FLAG_NONE
        for c in np.flatnonzero(iso & (member >= 0))[:50]:
            self.bad("I-flag-list", f"cluster {c}", f"flag NONE but linked on {self.names[int(member[c])]}")
        listed_o = (flags == CLUSTER_FLAG_NONFULL) | (flags == CLUSTER_FLAG_FRAG)
        for c in np.flatnonzero(listed_o & (count <= 0))[:50]:
            self.bad("I-order-list", f"cluster {c}", f"on {self.names[int(exp[c])]} with count {count[c]}")
        self.check_isolated(iso)
        self.check_flag_states(count, table)

    def check_isolated(self, iso: np.ndarray) -> None:
        """I-empty-placement / I-conservation: at quiescence no cluster is isolated, except lost."""
        rec = self.shm.workers["rec"]
        held = {int(c): w for w, c in enumerate(rec["cluster"]) if c >= 0 and rec["op"][w]}
        for c in np.flatnonzero(iso):
            c = int(c)
            if c in held:
                continue
            branch, wid, cpu, other = decode_lost(int(self.lost[c]))
            if branch in LOST_NAMES and self.count[c] == 0 and self.table[c] == -1:
                if branch == LOST_W12:
                    why = w12_lost_reason(wid, cpu, other, lost_device(int(self.lost[c])))
                elif branch == 1:
                    why = (f"isolated from free_clusters by worker {wid}; its atomic table allocation failed, "
                           f"and after the sleep CPU {cpu}'s per-CPU cluster {other} was used instead "
                           f"(seed T5): left flag NONE, count 0, table NULL, on no list")
                else:
                    why = (f"isolated from free_clusters by worker {wid} on CPU {cpu}; the atomic and the "
                           f"sleeping table allocations failed (seed T6b): left flag NONE, count 0, "
                           f"table NULL, on no list")
                self.res.findings.append(Finding(f"cluster {c}", why, LOST_NAMES[branch]))
            else:
                self.bad("I-conservation", f"cluster {c}",
                         f"on no list at quiescence (flag NONE, count {self.count[c]}, "
                         f"table {'NULL' if self.table[c] == -1 else self.table[c]}) and no recorded seed "
                         f"T5/T6b event explains it")

    def check_flag_states(self, count: np.ndarray, table: np.ndarray) -> None:
        flags, spc = self.flags, self.spc
        static = self.variant.tables.free_clusters_have_tables
        free = flags == CLUSTER_FLAG_FREE
        for c in np.flatnonzero(free & ((count != 0) | (self.order != 0)))[:50]:
            self.bad("I-free", f"cluster {c}", f"FREE with count {count[c]}, order {self.order[c]}")
        bad_tab = free & ((table == -1) if static else (table != -1))
        for c in np.flatnonzero(bad_tab)[:50]:
            self.bad("I-free", f"cluster {c}", f"FREE with table {'NULL' if table[c] == -1 else table[c]} "
                     f"({'static' if static else 'dynamic'} tables)")
        disc = flags == CLUSTER_FLAG_DISCARD
        for c in np.flatnonzero(disc & ((count != 0) | (table == -1)))[:50]:
            self.bad("I-discard", f"cluster {c}", f"DISCARD with count {count[c]}, table {table[c]}")
        for c in np.flatnonzero((count > 0) & (table == -1))[:50]:
            self.bad("I-table-needed", f"cluster {c}", f"count {count[c]} but table NULL")
        full = flags == CLUSTER_FLAG_FULL
        for c in np.flatnonzero(full & (count != spc))[:50]:
            self.bad("I-rest-counts", f"cluster {c}", f"FULL with count {count[c]} != {spc}")
        partial = (flags == CLUSTER_FLAG_NONFULL) | (flags == CLUSTER_FLAG_FRAG)
        over = partial & ((count <= 0) | (count >= spc))
        reserved = self.reserved_per_cluster()
        over &= ~((flags == CLUSTER_FLAG_NONFULL) & (count == spc) & (reserved == spc))
        for c in np.flatnonzero(over)[:50]:
            self.bad("I-rest-counts", f"cluster {c}", f"{FLAG_NAMES[int(flags[c])]} with count {count[c]}")

    # -- slots ------------------------------------------------------------------------------------------
    def reserved_per_cluster(self) -> np.ndarray:
        return reserved_slots_per_cluster(self.cfg)

    def map_rows(self, idx: np.ndarray) -> np.ndarray:
        """The swap_map bytes of clusters ``idx``, a row each (a copy), the last cluster's slots past
        the device's end padded with 0xFF (reserved); a cluster whose bytes are a hole gives zeros
        without being read."""
        m, spc = self.shm.map_np, self.spc
        nfull = len(m) // spc
        rows = np.zeros((len(idx), spc), dtype=np.uint8)
        sel = self.map_touched[idx] & (idx < nfull)
        if sel.any():
            rows[sel] = m[:nfull * spc].reshape(nfull, spc)[idx[sel]]
        if nfull < self.nrc:
            tail = np.flatnonzero(idx == nfull)
            if len(tail):
                part = len(m) - nfull * spc
                if self.map_touched[nfull]:
                    rows[tail, :part] = m[nfull * spc:]
                rows[tail, part:] = 0xFF
        return rows

    def map_nonzero(self) -> np.ndarray:
        """Per cluster, how many of its swap_map bytes are not zero (the padded tail counts)."""
        nonzero = np.zeros(self.nrc, dtype=np.int64)
        read = self.map_touched.copy()
        read[-1] |= len(self.shm.map_np) < self.nrc * self.spc      # its padding is never a hole
        idx = np.flatnonzero(read)
        step = max(1, (4 << 20) // self.spc)                         # 4 MiB of map at a time
        for a in range(0, len(idx), step):
            part = idx[a:a + step]
            nonzero[part] = np.count_nonzero(self.map_rows(part), axis=1)
        return nonzero

    def check_slots(self) -> None:
        nonzero = self.map_nonzero()
        for c in np.flatnonzero(nonzero != self.count)[:50]:
            self.bad("I-count", f"cluster {c}", f"count {self.count[c]} but {nonzero[c]} slots are not free")
        dev = self.shm.dev
        reserved = int(self.reserved_per_cluster().sum())
        inuse = int(dev["inuse_pages"])
        used = int(self.count.sum()) - reserved
        if inuse & SWAP_USAGE_COUNTER_MASK != used:
            self.bad("I-inuse", "swap_info", f"inuse_pages {inuse & SWAP_USAGE_COUNTER_MASK} but "
                     f"{used} slots are allocated (cluster counts minus {reserved} reserved)")
        writeok = bool(dev["flags"] & SWP_WRITEOK)
        if writeok and int(dev["nr_swap_pages"]) != int(dev["total_swap_pages"]) - used:
            self.bad("I-nr-swap", "nr_swap_pages", f"{int(dev['nr_swap_pages'])} != total_swap_pages "
                     f"{int(dev['total_swap_pages'])} - inuse {used}")
        offlist = bool(inuse & SWAP_USAGE_OFFLIST_BIT)
        should = writeok and used < int(dev["pages"])
        if bool(dev["on_avail"]) != should or offlist == should:
            hint = ""
            if bool(dev["on_avail"]) and used >= int(dev["pages"]):
                hint = (" (a free's add_to_avail_list raced with allocations that filled the device again: "
                        "its re-check compares the value read before the bit was cleared, reference §2.5)")
            self.bad("I-avail", "swap_avail_list", f"on_avail={int(dev['on_avail'])} OFFLIST={offlist} "
                     f"but WRITEOK={writeok} and inuse {used} of {int(dev['pages'])} pages{hint}")
        self.check_tables()

    def check_tables(self) -> None:
        has = np.flatnonzero(self.table != -1)
        # A table whose memory is a hole is all NULL entries: nothing in it can disagree with the
        # map or name a folio, so only the others are read.
        has = has[self.tables_touched[self.table[has]]]
        if not len(has):
            return
        tabs = self.shm.tables_np[self.table[has]]
        m = self.map_rows(has)
        null = tabs == 0
        shadow = (tabs & 1) == 1
        folio = ~null & ~shadow
        bad_free = ~null & (m == 0)
        bad_folio = folio & ((m & SWAP_HAS_CACHE) == 0)
        for i, j in zip(*np.nonzero(bad_free | bad_folio), strict=True):
            if self._per_kind.get("I-map-table", 0) > _MAX_PER_KIND:
                break
            c, s = int(has[i]), int(has[i]) * self.spc + int(j)
            self.bad("I-map-table", f"slot {s} (cluster {c})",
                     f"table entry {int(tabs[i, j]):#x} with swap_map byte {int(m[i, j]):#x}")
        self.check_folio_runs(has, tabs, folio)

    def check_folio_runs(self, has: np.ndarray, tabs: np.ndarray, folio: np.ndarray) -> None:
        ci, off = np.nonzero(folio)
        if not len(ci):
            return
        slots = has[ci] * self.spc + off
        fids = (tabs[ci, off] >> 3) - 1
        order = np.argsort(fids, kind="stable")
        fids, slots = fids[order], slots[order]
        starts = np.flatnonzero(np.r_[True, fids[1:] != fids[:-1]])
        ends = np.r_[starts[1:], len(fids)]
        folios = self.shm.folios
        for a, b in zip(starts, ends, strict=True):
            f = int(fids[a])
            if not 0 <= f < len(folios):
                self.bad("I-folio-run", f"slot {int(slots[a])}", f"entry names folio {f}, out of range")
                continue
            nr = 1 << int(folios["order"][f])
            first = int(slots[a])
            run = slots[a:b]
            ok = (b - a == nr and first % nr == 0 and np.array_equal(run, np.arange(first, first + nr))
                  and int(folios["swap"][f]) == first and folios["flags"][f] & PG_SWAPCACHE)
            if not ok:
                self.bad("I-folio-run", f"folio {f}",
                         f"order {int(folios['order'][f])} folio->swap {int(folios['swap'][f])} in "
                         f"entries {run[:8].tolist()}{'...' if b - a > 8 else ''}")
            c = first // self.spc
            if nr > 1 and int(self.order[c]) != nr.bit_length() - 1:
                self.bad("I-order-0-only-mixing", f"cluster {c}",
                         f"order-{nr.bit_length() - 1} folio {f} at slot {first} in a cluster of order "
                         f"{int(self.order[c])}: only order 0 may land in a cluster of another order")

    # -- table objects ----------------------------------------------------------------------------------
    def check_objects(self) -> None:
        shm = self.shm
        objs = shm.objs
        state, owner = objs["state"], objs["owner"]
        has = np.flatnonzero(self.table != -1)
        handles = self.table[has]
        uniq, cnt = np.unique(handles, return_counts=True)
        for h in uniq[cnt > 1][:20]:
            self.bad("table accounting", f"table {h}", f"installed in clusters {has[handles == h].tolist()}")
        wrong_state = state[handles] != OBJ_INUSE
        for c, h in zip(has[wrong_state][:20], handles[wrong_state][:20], strict=True):
            self.bad("table accounting", f"table {h}", f"installed in cluster {c} but its header says "
                     f"state {int(state[h])}, not in use")
        wrong_owner = owner[handles] != has
        for c, h in zip(has[wrong_owner][:20], handles[wrong_owner][:20], strict=True):
            self.bad("table accounting", f"table {h}", f"installed in cluster {c} but owned by {int(owner[h])}")
        # Object headers in holes are all zeros (OBJ_POOL): count the in-use ones among the others.
        touched = shm.touched("slab", shm.slab_hdr_dt.itemsize, objs.dtype.itemsize, len(objs))
        inuse = int(np.count_nonzero(state[touched] == OBJ_INUSE))
        hdr = shm.slab_hdr
        if inuse != len(has) or inuse != int(hdr["live"]):
            self.bad("table accounting", "slab", f"{inuse} objects in use, {len(has)} clusters with a "
                     f"table, slab says {int(hdr['live'])} live")
        per_page = self.geo.objs_per_page
        pages_used = int(hdr["fresh"])
        total = pages_used * per_page
        free_n = int(np.count_nonzero(state[:total] == OBJ_FREE))
        rcu_n = int(np.count_nonzero(state[:total] == OBJ_RCU))
        pool_n = int(np.count_nonzero(state[:total] == OBJ_POOL))
        if free_n != int(hdr["nfree"]):
            self.bad("table accounting", "slab", f"{free_n} free objects but freelist holds {int(hdr['nfree'])}")
        if inuse + free_n + rcu_n + pool_n != total:
            self.bad("table accounting", "slab", f"in use {inuse} + free {free_n} + pending {rcu_n} + "
                     f"pooled {pool_n} != {total} objects of {pages_used} pages")
        self.res.counts.update(tables_in_use=inuse, tables_free_in_slab=free_n, tables_pending_free=rcu_n,
                               tables_pooled=pool_n, tables_total=total)
        detached = np.flatnonzero((state[:total] == OBJ_FREE) | (state[:total] == OBJ_RCU))
        detached = detached[self.tables_touched[detached]]          # holes are all-null
        if len(detached):
            dirty = detached[np.any(shm.tables_np[detached] != 0, axis=1)]
            for h in dirty[:20]:
                self.bad("I-free-table", f"table {h}", "detached but not all-null")

    # -- per-CPU, locks, warnings -----------------------------------------------------------------------
    def check_percpu(self) -> None:
        pcp = self.shm.pcp
        tag = getattr(self.shm, "type", 0) + 1
        ssd = self.cfg.ssd
        maxp = self.cfg.max_slots
        for cpu in range(len(pcp)):
            for o in range(self.geo.nr_orders):
                si, off = int(pcp["si"][cpu][o]), int(pcp["offset"][cpu][o])
                if si != tag:
                    continue          # another device's cache (or NULL): that device's checker's
                if not ssd and si:
                    self.bad("I-hdd", f"CPU {cpu}", f"si[{o}] set on a non-SSD device")
                if not si or not off:
                    continue
                nr = 1 << o
                end = min((off // self.spc + 1) * self.spc, maxp)
                if off % nr or off >= maxp or off + nr > end:
                    self.bad("I-pcp", f"CPU {cpu}", f"offset[{o}] = {off} misaligned or past the cluster end")
        if not ssd:
            for o, off in enumerate(self.shm.dev["global_next"]):
                nr = 1 << o
                if off and (off % nr or off + nr > min((off // self.spc + 1) * self.spc, maxp)):
                    self.bad("I-hdd", "global_cluster", f"next[{o}] = {int(off)} misaligned")

    def check_locks(self) -> None:
        """No lock held: each device's own words (its clusters', ``si->lock``,
        ``global_cluster_lock``, the avail-lock word of its record, its slab's) on every device; the
        per-CPU ``percpu_swap_cluster.lock`` (one per CPU for all devices, as the kernel's
        ``DEFINE_PER_CPU(struct percpu_swap_cluster, ...)``; a segment every device's ``shm``
        shares) on the first device only, so that a held one is reported once, not once per device."""
        shm = self.shm
        first = getattr(shm, "primary", None) is None
        held = np.flatnonzero(shm.clu["lock"] != 0)
        for c in held[:20]:
            self.bad("no lock held at quiescence", f"cluster {c}", f"ci->lock word {int(shm.clu['lock'][c]):#x}")
        for name in ("si_lock", "global_lock", "avail_lock"):
            if int(shm.dev[name]):
                self.bad("no lock held at quiescence", "swap_info", f"{name} held")
        for cpu in np.flatnonzero(shm.pcp["lock"] != 0) if first else ():
            self.bad("no lock held at quiescence", f"CPU {cpu}", "local lock held")
        if int(shm.slab_hdr["lock"]):
            self.bad("no lock held at quiescence", "slab", "slab_lock held")

    def check_warnings(self) -> None:
        """Every WARN is a violation; lockdep's and the order-mixing assert's under their invariant."""
        n = int(self.shm.workers["stats"][:, Stat.WARNINGS].sum())
        if not n:
            return
        rest = []
        for w in self.warnings:
            inv = warning_invariant(w)
            if inv == "no kernel WARN":
                rest.append(w)
            else:
                self.bad(inv, "kernel", w)
        n -= len(self.warnings) - len(rest)
        if n > 0:
            shown = "; ".join(rest[:5]) or "(no message text reached this process)"
            self.bad("no kernel WARN", "kernel", f"{n} WARN conditions met: {shown}")

    def check_xdev(self) -> None:
        """The seed's W12 events on this device (reference §10): findings, attributed."""
        dev = self.shm.dev
        if "xdev" not in dev.dtype.names:
            return
        n = int(dev["xdev"])
        for word, offset in dev["xdev_log"][:min(n, len(dev["xdev_log"]))]:
            kind, wid, cpu, tag, iso = decode_xdev(int(word))
            if kind == XDEV_TAKEN:
                continue          # the lost cluster's own record says it (check_isolated)
            self.res.findings.append(Finding(
                f"device {getattr(self.shm, 'type', 0)}",
                w12_event_reason(kind, wid, cpu, tag, iso, int(offset), self.spc, self.nrc), "W12"))
        if n > len(dev["xdev_log"]):
            self.res.findings.append(Finding(f"device {getattr(self.shm, 'type', 0)}",
                                             f"{n - len(dev['xdev_log'])} more W12 events not listed", "W12"))

    def run(self) -> CheckResult:
        self.check_xdev()
        self.check_clusters()
        self.check_slots()
        self.check_objects()
        self.check_percpu()
        self.check_locks()
        self.check_warnings()
        return self.res


def warning_invariant(message: str) -> str:
    """The invariant a WARN's message reports: lockdep's are I-lock-order (checks/lockdep.py)."""
    if message.startswith("lockdep:") or "lockdep: " in message:
        return "I-lock-order"
    if "(I-order-0-only-mixing)" in message:
        return "I-order-0-only-mixing"
    return "no kernel WARN"


def check(shm, variant, warnings: list[str] | None = None) -> CheckResult:
    """Check every invariant on the shared state at quiescence."""
    return _Checker(shm, variant, warnings).run()


def check_swapoff(shm, check: CheckResult, new_warnings: list[str], count_folios: bool = True) -> dict:
    """After swapoff nothing of the device may remain: tables, slots, folio references, WARNs.

    Adds a violation to ``check`` for each thing left; returns the figures.  ``count_folios``
    False: a swapoff during a run, whose CPUs hold folios of the other devices (the folios are
    accounted at the end).
    """
    live = int(shm.slab_hdr["live"])
    inuse = int(shm.dev["inuse_pages"]) & SWAP_USAGE_COUNTER_MASK
    if shm.primary is None and count_folios:
        touched = shm.touched("folios", 0, shm.folios.dtype.itemsize, len(shm.folios))   # holes: ref 0
        folios = int((shm.folios["ref"][touched] != 0).sum())
    else:
        folios = 0          # a further device: the folios are device 0's segment, accounted there
    bad = check.violations
    if live:
        bad.append(Violation("swapoff", f"{live} table objects still allocated after free_cluster_info",
                             "I-swapoff-tables"))
    if inuse:
        bad.append(Violation("swapoff", f"{inuse} slots still in use after try_to_unuse", "I-swapoff-slots"))
    if folios:
        bad.append(Violation("swapoff", f"{folios} folios still referenced after every worker released its "
                             "slots", "I-swapoff-folios"))
    dev = shm.dev
    on_avail, offlist = int(dev["on_avail"]), bool(int(dev["inuse_pages"]) & SWAP_USAGE_OFFLIST_BIT)
    if on_avail or not offlist:
        bad.append(Violation("swapoff", f"the device is on the avail list after swapoff (on_avail={on_avail}, "
                             f"OFFLIST={offlist}): a free after del_from_avail_list put it back (add_to_avail_list "
                             "must test SWP_WRITEOK, reference §2.5)", "I-avail"))
    for w in new_warnings:
        bad.append(Violation("swapoff", w, "no kernel WARN"))
    return {"tables_left": live, "inuse_after": inuse, "folios_referenced": folios,
            "warnings": len(new_warnings)}
