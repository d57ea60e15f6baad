"""Several processes acting as CPUs allocate and free concurrently on one shared device."""

from __future__ import annotations

import multiprocess as mp
import numpy as np
import pytest

from shmswap.checks.checker import check
from shmswap.config import Config
from shmswap.mm.system import SwapSystem
from shmswap.substrate import _prim
from shmswap.substrate.shm import Segment, new_run_prefix
from shmswap.substrate.stats import Stat
from workers.workload import Workload

N_CPUS = 4


def _cpu(cfg: Config, n_workers: int, names: dict, owners_name: str, wid: int, steps: int, q) -> None:
    """One CPU: attach, run its seeded workload, release everything, report duplicates."""
    _prim.set_hook(None)
    system = SwapSystem.attach(cfg, n_workers, names)
    owners_seg = Segment(owners_name)
    owners = _prim.Region(owners_seg.buf)
    dup = 0
    try:
        task = system.task(wid)
        load = Workload(system, task, cfg, cfg.cpus)
        alloc = load.alloc

        def claimed_alloc() -> int:
            nonlocal dup
            entry = alloc()
            if entry > 0:                       # (its record is kept once its writeback completes)
                for s in range(entry, entry + load.last_nr):
                    if owners.cmpxchg(s * 8, 0, wid + 1) != 0:
                        dup += 1
            return entry

        release = load.release

        def unclaimed_release(rec) -> None:
            for s in range(rec[0], rec[0] + (1 << rec[1])):
                owners.store(s * 8, 0)
            release(rec)

        load.alloc, load.release = claimed_alloc, unclaimed_release
        for _ in range(steps):
            load.step()
        load.release_all()
        q.put((wid, dup, list(system.cur.warnings)))
    finally:
        owners.release()
        owners_seg.close()
        system.shm.close()


@pytest.mark.parametrize("alloc_table", ["seed", "merged"])
def test_four_cpus_share_one_device(alloc_table: str) -> None:
    cfg = Config(cpus=N_CPUS, size="16M", slots_per_cluster=64, orders="0:0.8,2:0.2", fill=0.9,
                 atomic_fail=0.2, migrate=0.5, alloc_table=alloc_table, seed=3,
                 cache_only=0.0)    # a cache-only slot may be reclaimed under its record, legitimately
    n_workers = N_CPUS + 1
    ctx = mp.get_context("fork")
    with SwapSystem.create(cfg, n_workers=n_workers) as system:
        owners_seg = Segment(new_run_prefix() + "owners", cfg.max_slots * 8, create=True)
        try:
            q = ctx.Queue()
            procs = [ctx.Process(target=_cpu, args=(cfg, n_workers, system.shm.names(), owners_seg.name,
                                                     w, 3000, q)) for w in range(N_CPUS)]
            for p in procs:
                p.start()
            reports = [q.get(timeout=120) for _ in procs]
            for p in procs:
                p.join(timeout=60)
                assert p.exitcode == 0
        finally:
            owners_seg.close()
            owners_seg.unlink()
        assert sum(r[1] for r in reports) == 0, "a slot was handed out twice"
        assert all(not r[2] for r in reports), [r[2] for r in reports]
        system.task(N_CPUS)
        system.run_pending_work()
        res = check(system.shm, system.variant)
        assert not res.violations, res.violations
        if alloc_table == "merged":
            assert not res.findings
        assert all(f.branch in ("T5", "T6b") for f in res.findings)
        stats = system.shm.workers["stats"]
        assert stats[:N_CPUS, Stat.ALLOC].min() > 0
        lockstat = system.shm.workers["lockstat"]
        assert int(lockstat[:, :, 1].sum()) > 0, "no lock contention across 4 processes"
        assert int(np.asarray(system.shm.dev["inuse_pages"])) == 0
