"""Shared fixtures and helpers for the tests.  They drive the model through its public API.

* ``make_system(**config)``: a small device (a ``TestModel``: ``shmswap.Model`` with a
  ``FaultPlan`` installed as ``faults`` and short names for the objects tests look at), closed at
  teardown.  It is also a context manager, so a test may close it early with ``with``.  Worker 0 is
  the current task.  Defaults: 16 clusters of 8 slots, 2 CPUs, order 0 only, no injected failures
  and no random migration, so every state is reached on purpose; lockdep on (checks/lockdep.py).
* ``alloc_folio(system, order, state=...)``: a folio of ``order`` for the current task; returns its
  first entry (or a negative errno).  What is held is recorded in ``system.held[entry]`` so that
  ``release`` / ``release_all`` can give it back as the workload would.  A SWAPPED entry's shadow
  is ``entry + 1`` in each of its slots.
* ``assert_clean(system)``: run the checker and assert no violations (and, unless told otherwise,
  no findings).
* At session end, nothing of this process (prefix ``shmswap_``) may be left in /dev/shm.
"""

from __future__ import annotations

import os

import pytest

from shmswap.checks.checker import CheckResult
from shmswap.checks.faults import FaultPlan
from shmswap.config import PAGE_SIZE, Config
from shmswap.model import CACHE_ONLY, CACHED, RAW, SWAPPED, Model, writeback_folio
from shmswap.substrate import _prim
from shmswap.substrate.shm import leftover_segments
from shmswap.substrate.stats import Stat

__all__ = ["RAW", "CACHED", "SWAPPED", "CACHE_ONLY", "TestModel", "small_config", "alloc_folio", "release",
           "release_all", "writeback", "run_check", "assert_clean", "stats", "stat"]

SPC = 8
NR_CLUSTERS = 16


def small_config(clusters: int = NR_CLUSTERS, tail: int = 0, **kw) -> Config:
    """A small configuration: ``clusters`` clusters (the last one ``tail`` slots short)."""
    spc = kw.get("slots_per_cluster", SPC)
    base = dict(slots_per_cluster=spc, cpus=2, orders={0: 1.0}, atomic_fail=0.0, sleep_fail=0.0,
                migrate=0.0, size=(clusters * spc - tail) * PAGE_SIZE, lockdep=True, lifetimes="off")
    base.update(kw)
    return Config(**base)


class TestModel(Model):
    """``Model`` with a fault plan and short names for what the tests look at."""

    __test__ = False

    def __init__(self, cfg: Config, n_workers: int | None = None) -> None:
        self.faults = FaultPlan()
        super().__init__(cfg, n_workers=n_workers, observers=[self.faults])

    @property
    def shm(self):
        return self.system.shm

    @property
    def slab(self):
        return self.system.slab

    @property
    def rcu(self):
        return self.system.rcu

    @property
    def folios(self):
        return self.system.folios

    @property
    def variant(self):
        return self.system.variant

    @property
    def handoff(self):
        return self.system.handoff

    @property
    def cur(self):
        return self.system.cur

    def switch_to(self, task) -> None:
        self.system.switch_to(task)


def stats(system: TestModel, wid: int | str | None = None) -> dict[Stat, int]:
    """Statistics counters of one worker (default: the current task), or summed over all."""
    rows = system.shm.workers["stats"]
    if wid is None:
        wid = system.cur.wid
    if wid == "all":
        return {s: int(rows[:, s].sum()) for s in Stat}
    return {s: int(rows[wid][s]) for s in Stat}


def stat(system: TestModel, s: Stat, wid: int | None = None) -> int:
    return stats(system, wid)[s]


def alloc_folio(system: TestModel, order: int = 0, state: str = SWAPPED) -> int:
    """Allocate a folio of ``order`` and swap slots for it as the current task; return the entry.

    ``state`` says what is left held afterwards (RAW, CACHED, SWAPPED or CACHE_ONLY, see
    shmswap.model); the workload's two endings are SWAPPED and CACHE_ONLY.  A failure returns the
    negative errno.
    """
    a = system.alloc(order=order, state=state)
    if a is None:
        assert system.last_errno, "out of folios"
        return -system.last_errno
    return a.entry


def writeback(system: TestModel, folio: int, entry: int, shadow: int) -> None:
    """Writeback done: the folio leaves the swap cache with a shadow, then goes (vmscan's path)."""
    writeback_folio(system.si, folio, entry, shadow)


def release(system: TestModel, entry: int) -> None:
    """Give back what ``alloc_folio`` left held at ``entry``, as the current task."""
    system.free(entry)


def release_all(system: TestModel) -> None:
    system.free_all()


def run_check(system: TestModel) -> CheckResult:
    return system.check()


def assert_clean(system: TestModel, findings: bool = False) -> CheckResult:
    """The checker finds no violation (and no finding unless ``findings``)."""
    res = run_check(system)
    assert res.violations == [], res.violations
    if not findings:
        assert res.findings == [], res.findings
    return res


def reset_prim() -> None:
    _prim.set_hook(None)
    _prim.set_hook_points(True, True)
    _prim.set_stats(None)
    _prim.set_abort(None)
    _prim.set_worker(0)


@pytest.fixture
def make_system():
    """Factory: ``make_system(n_workers=None, clusters=16, tail=0, **config) -> TestModel``."""
    systems: list[TestModel] = []

    def make(n_workers: int | None = None, **kw) -> TestModel:
        cfg = small_config(**kw)
        system = TestModel(cfg, n_workers=n_workers or cfg.cpus)
        systems.append(system)
        return system

    yield make
    for system in reversed(systems):
        system.close()
    reset_prim()


@pytest.fixture
def open_model():
    """Factory: ``open_model(config, **model_options) -> Model``, closed at teardown."""
    models: list[Model] = []

    def make(cfg: Config, **kw) -> Model:
        m = Model(cfg, **kw)
        models.append(m)
        return m

    reset_prim()
    yield make
    for m in reversed(models):
        m.close()
    reset_prim()


@pytest.fixture
def system(make_system) -> TestModel:
    """The default small device: SSD, seed, dynamic tables, 16 clusters of 8 slots, 2 CPUs."""
    return make_system()


def _ours(name: str) -> bool:
    pid = str(os.getpid())
    parts = name.split("_")
    return len(parts) > 2 and (parts[1] == pid or (parts[1] == "test" and parts[2] == pid))


@pytest.fixture(autouse=True, scope="session")
def _no_leftover_segments():
    yield
    left = [n for n in leftover_segments() if _ours(n)]
    assert left == [], f"segments left in /dev/shm: {left}"
