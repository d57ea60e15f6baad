"""A Hypothesis state machine over the allocator: random allocations of every order, frees,
cache-only slots, reclaim, lookups, housekeeping and swapoff/swapon, with table allocation
failures and migrations forced at random (through the test's fault plan, ``system.faults``), on
SSD and HDD, seed and merged, 8- and 512-slot clusters.  It drives a ``TestModel`` (conftest).

After every step the checker must find no violation; with ``merged`` no finding either, with
``seed`` findings only of its T5/T6b branches.  A model of what the test holds says which slots
are ours: no slot may be handed out twice, reclaim may only take slots left cache-only, and the
swap map and table entries of everything we hold must be what we left there.
"""

from __future__ import annotations

import errno

import pytest
from conftest import (
    CACHE_ONLY,
    CACHED,
    RAW,
    SWAPPED,
    TestModel,
    alloc_folio,
    release,
    reset_prim,
    run_check,
    small_config,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from shmswap.mm.device import swap_usage_in_pages
from shmswap.mm.reclaim import swap_reclaim_full_clusters
from shmswap.mm.swap import SWAP_HAS_CACHE, SWAP_MAP_BAD
from shmswap.mm.swap_cache import swap_cache_get_folio, swap_cache_get_shadow
from shmswap.mm.swap_table import folio_to_swp_tb
from shmswap.mm.swapon import swapoff

CPUS = 2
STATES = (SWAPPED, SWAPPED, CACHED, CACHE_ONLY, CACHE_ONLY, RAW)
FAILS = ("none", "none", "atomic", "atomic", "atomic+sleep")
SETTINGS = settings(max_examples=40, stateful_step_count=80, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def machine(device: str, alloc_table: str, spc: int):
    max_order = spc.bit_length() - 1
    CPU = st.integers(0, CPUS - 1)
    ORDER = st.integers(0, max_order)
    FAIL = st.sampled_from(FAILS)
    MIGRATE = st.none() | CPU

    class SwapMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.s: TestModel | None = None
            self.owned: dict[int, int] = {}       # slot -> first entry of the record holding it
            self.bad: set[int] = set()
            self.generations = 0

        # -- setup -----------------------------------------------------------------------------------
        @initialize(clusters=st.sampled_from([8, 16]), tail=st.integers(0, 3),
                    nbad=st.integers(0, 3), data=st.data(),
                    discard=st.sampled_from(["off", "on"]), reclaim=st.sampled_from(["slab", "page"]),
                    tables=st.sampled_from(["dynamic", "dynamic", "static"]),
                    percpu=st.sampled_from(["on", "on", "off"]))
        def swapon(self, clusters, tail, nbad, data, discard, reclaim, tables, percpu):
            max_slots = clusters * spc - tail
            bad = data.draw(st.lists(st.integers(1, max_slots - 1), min_size=nbad, max_size=nbad, unique=True),
                            label="bad_pages")
            self.kw = dict(clusters=clusters, tail=tail, bad_pages=tuple(bad), device=device,
                           alloc_table=alloc_table, slots_per_cluster=spc, cpus=CPUS, discard=discard,
                           reclaim=reclaim, tables=tables, percpu=percpu, orders={0: 1.0})
            self._swapon()

        def _swapon(self) -> None:
            cfg = small_config(**self.kw)
            self.s = TestModel(cfg, n_workers=CPUS + 1)     # worker 0 current, the manager last
            self.manager = self.s.tasks[CPUS]
            self.owned = {}
            self.bad = set(self.kw["bad_pages"])
            self.max = cfg.max_slots

        def teardown(self) -> None:
            if self.s is not None:
                self.s.close()
                self.s = None
            reset_prim()

        # -- the model ---------------------------------------------------------------------------------
        def as_cpu(self, cpu: int) -> None:
            self.s.switch_to(self.s.tasks[cpu])

        def forget(self, h) -> None:
            for slot in range(h.entry, h.entry + (1 << h.order)):
                assert self.owned.pop(slot) == h.entry

        def sync(self, displaced=None) -> None:
            """Cache-only records that reclaim took: the folio left the swap cache, the slots went.

            ``displaced`` is a record whose key a new allocation at the same entry overwrote in
            ``held``: it can only be a cache-only record that was reclaimed on the way.
            """
            folios = self.s.folios
            gone = [h for e, h in self.s.held.items()
                    if h.state == CACHE_ONLY and not folios.folio_matches_swap_entry(h.folio, e)]
            if displaced is not None:
                assert displaced.state == CACHE_ONLY, f"a live record at {displaced.entry} was overwritten"
                assert not folios.folio_matches_swap_entry(displaced.folio, displaced.entry)
                gone.append(displaced)
            for h in gone:
                assert not folios.folio_test_swapcache(h.folio)
                self.forget(h)
                if self.s.held.get(h.entry) is h:
                    del self.s.held[h.entry]
                folios.folio_put(h.folio)

        def held_entries(self):
            return sorted(self.s.held)

        # -- rules -------------------------------------------------------------------------------------
        def _allocate(self, cpu, order, state, fail, migrate):
            s = self.s
            self.as_cpu(cpu)
            s.faults.atomic = 1 if "atomic" in fail else 0
            s.faults.sleeping = 1 if "sleep" in fail else 0
            s.faults.migrate_to = migrate            # only this task sleeps until the reset below
            before = dict(s.held)
            try:
                entry = alloc_folio(s, order, state)
            finally:
                s.faults.atomic = s.faults.sleeping = 0
                s.faults.migrate_to = None
            self.sync(before.get(entry) if entry > 0 else None)
            if entry < 0:
                assert entry == -errno.ENOMEM
                return
            nr = 1 << order
            assert entry % nr == 0 and entry >> s.si.spc_shift == (entry + nr - 1) >> s.si.spc_shift
            assert 0 < entry and entry + nr <= self.max
            for slot in range(entry, entry + nr):
                assert slot not in self.bad, f"bad page {slot} handed out"
                assert slot not in self.owned, f"slot {slot} handed out twice (held by {self.owned[slot]})"
                self.owned[slot] = entry

        # Hypothesis picks among rules evenly: three allocation rules and two free rules keep the
        # device filling up and clusters cycling between free and used.
        @rule(cpu=CPU, order=ORDER, state=st.sampled_from(STATES), fail=FAIL, migrate=MIGRATE)
        def allocate(self, cpu, order, state, fail, migrate):
            self._allocate(cpu, order, state, fail, migrate)

        @rule(cpu=CPU, order=ORDER, state=st.sampled_from(STATES), fail=FAIL, migrate=MIGRATE)
        def allocate_more(self, cpu, order, state, fail, migrate):
            self._allocate(cpu, order, state, fail, migrate)

        @rule(cpu=CPU, order=st.integers(0, min(2, max_order)), state=st.sampled_from(STATES), fail=FAIL,
              migrate=MIGRATE)
        def allocate_small(self, cpu, order, state, fail, migrate):
            self._allocate(cpu, order, state, fail, migrate)

        def _free(self, data, cpu):
            entry = data.draw(st.sampled_from(self.held_entries()), label="entry")
            h = self.s.held[entry]
            self.as_cpu(h.wid if h.state == RAW else cpu)      # a locked folio: its locker unlocks it
            self.forget(h)
            release(self.s, entry)
            self.sync()

        @precondition(lambda self: self.s is not None and self.s.held)
        @rule(data=st.data(), cpu=CPU)
        def free(self, data, cpu):
            self._free(data, cpu)

        @precondition(lambda self: self.s is not None and self.s.held)
        @rule(data=st.data(), cpu=CPU)
        def free_more(self, data, cpu):
            self._free(data, cpu)

        @rule(force=st.booleans())
        def reclaim(self, force):
            self.s.switch_to(self.manager)
            swap_reclaim_full_clusters(self.s.si, force)
            self.sync()

        @rule(grace_period=st.sampled_from([None, True, False]))
        def housekeeping(self, grace_period):
            self.s.switch_to(self.manager)
            self.s.system.run_pending_work(grace_period)
            self.sync()

        @rule(data=st.data(), cpu=CPU)
        def lookup(self, data, cpu):
            s = self.s
            if s.held and data.draw(st.booleans(), label="held"):
                first = data.draw(st.sampled_from(self.held_entries()), label="entry")
                entry = first + data.draw(st.integers(0, (1 << s.held[first].order) - 1), label="slot")
            else:
                entry = data.draw(st.integers(1, self.max - 1), label="entry")
            self.as_cpu(cpu)
            folio = swap_cache_get_folio(s.si, entry)
            shadow = swap_cache_get_shadow(s.si, entry)
            h = s.held.get(self.owned.get(entry, -1))
            if h is None:
                assert folio == -1 and shadow is None
                return
            if h.state == SWAPPED:
                assert folio == -1 and shadow == h.entry + 1
            else:
                assert folio == h.folio and shadow is None
                assert s.folios.folio_matches_swap_entry(folio, entry)
            if folio >= 0:
                s.folios.folio_put(folio)

        @rule(go=st.integers(0, 15))
        def swapoff_and_swapon(self, go):
            """Rarely: swapoff (everything released, caches flushed, every table freed), then a fresh
            swapon with the same configuration."""
            if go:
                return
            s = self.s
            s.switch_to(self.manager)

            def try_to_unuse(si):
                for e in self.held_entries():
                    self.as_cpu(s.held[e].wid)
                    self.forget(s.held[e])
                    release(s, e)
                s.switch_to(self.manager)
                s.system.run_pending_work()

            swapoff(s.si, try_to_unuse)
            s.system.run_pending_work()
            assert s.held == {} and self.owned == {}
            assert not s.shm.pcp["si"].any()
            assert int(s.shm.slab_hdr["live"]) == 0
            assert (s.shm.clu["table"] == -1).all()
            assert not s.warnings
            s.close()
            self.s = None
            self.generations += 1
            self._swapon()

        # -- after every step ------------------------------------------------------------------------
        @invariant()
        def invariants_hold(self):
            s = self.s
            if s is None:
                return
            res = run_check(s)
            assert res.violations == [], res.violations
            if alloc_table == "merged":
                assert res.findings == [], res.findings
            else:
                assert {f.branch for f in res.findings} <= {"T5", "T6b"}, res.findings

        @invariant()
        def model_holds(self):
            s = self.s
            if s is None:
                return
            m = s.shm.map_np
            clu, tables = s.shm.clu, s.shm.tables_np
            spc_mask = spc - 1
            for e, h in s.held.items():
                nr = 1 << h.order
                table = int(clu["table"][e >> s.si.spc_shift])
                entries = [int(x) for x in tables[table][e & spc_mask:(e & spc_mask) + nr]]
                want = {SWAPPED: 1, CACHED: SWAP_HAS_CACHE | 1, RAW: SWAP_HAS_CACHE,
                        CACHE_ONLY: SWAP_HAS_CACHE}[h.state]
                assert [int(x) for x in m[e:e + nr]] == [want] * nr, (e, h)
                if h.state == SWAPPED:
                    assert entries == [((e + 1) << 1) | 1] * nr
                else:
                    assert entries == [folio_to_swp_tb(h.folio)] * nr
            assert swap_usage_in_pages(s.si) == len(self.owned)
            assert all(m[b] == SWAP_MAP_BAD for b in self.bad)

    return SwapMachine


@pytest.mark.parametrize("spc", [8, 512])
@pytest.mark.parametrize("alloc_table", ["seed", "merged"])
@pytest.mark.parametrize("device", ["ssd", "hdd"])
def test_state_machine(device, alloc_table, spc):
    run_state_machine_as_test(machine(device, alloc_table, spc), settings=SETTINGS)
