"""The primitives (lock, atomics, preemption point) and the order-0 allocate+free pair, in one run.

    python benchmarks/primitives.py [--json] [--iters N] [--repeats R]

Everything runs in this one process, single-threaded, uncontended, with no preemption hook.  The
metrics are described in ``_timing.METRICS``; each is the best batch of ``--repeats`` round-robin
rounds (``_timing.best_ns``).  The pair and the workload's slot life run on a 1 GiB device and call
the model's one copy of the writeback path, ``shmswap.model.writeback_folio``.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import threading
from contextlib import ExitStack

import multiprocess
from _timing import ModelWarned, Report, best_ns, main

from shmswap import Config
from shmswap.mm.allocator import folio_alloc_swap
from shmswap.mm.reclaim import free_swap_and_cache_nr
from shmswap.mm.swap_free import swap_duplicate
from shmswap.mm.system import SwapSystem
from shmswap.model import writeback_folio
from shmswap.substrate import _prim
from shmswap.substrate.locks import N_CLASSES, LockClass
from shmswap.substrate.preempt import Point, sched_point
from shmswap.substrate.shm import Segment, new_run_prefix

try:
    import atomics
except ImportError:  # the comparison is optional
    atomics = None

LOCK_OFF, WORD_OFF, SPIN_OFF, STATS_OFF = 0, 64, 128, 256   # in a one-page scratch segment


def primitive_loops(region: _prim.Region, spin) -> dict:
    """``loop(n)`` per ns metric, callables bound to locals; ``spin``: an atomics view, or None."""
    lock, unlock, cls = region.lock, region.unlock, LockClass.CI_LOCK
    load, store, fetch_add, cmpxchg, xchg = region.load, region.store, region.fetch_add, region.cmpxchg, region.xchg
    kind = Point.RECLAIM_WINDOW

    def pair(acquire, release):
        def loop(n):
            for _ in range(n):
                acquire()
                release()
        return loop

    def lock_loop(n):
        for _ in range(n):
            lock(LOCK_OFF, cls)
            unlock(LOCK_OFF, cls)

    def empty_loop(n):
        for _ in range(n):
            pass

    def fetch_add_loop(n):
        for _ in range(n):
            fetch_add(WORD_OFF, 1)

    def load_loop(n):
        for _ in range(n):
            load(WORD_OFF)

    def store_loop(n):
        for _ in range(n):
            store(WORD_OFF, 0)

    def cmpxchg_loop(n):
        for _ in range(n):
            cmpxchg(WORD_OFF, 0, 0)      # the word is 0: succeeds, leaves 0

    def xchg_loop(n):
        for _ in range(n):
            xchg(WORD_OFF, 0)

    def sched_loop(n):
        for _ in range(n):
            sched_point(kind, 1, 2)

    mp_lock, th_lock = multiprocess.Lock(), threading.Lock()
    loops = {"loop_overhead_ns": empty_loop, "shmswap_lock_pair_ns": lock_loop,
             "mp_lock_pair_ns": pair(mp_lock.acquire, mp_lock.release),
             "thread_lock_pair_ns": pair(th_lock.acquire, th_lock.release),
             "atomic_op_ns": fetch_add_loop, "atomic_load_ns": load_loop, "atomic_store_ns": store_loop,
             "atomic_cmpxchg_ns": cmpxchg_loop, "atomic_xchg_ns": xchg_loop, "sched_point_ns": sched_loop}
    if spin is not None:
        cx, st = spin.cmpxchg_strong, spin.store

        def atomics_loop(n):
            for _ in range(n):
                while not cx(0, 1).success:
                    pass
                st(0)
        loops["atomics_lock_pair_ns"] = atomics_loop
    return loops


def bench_primitives(report: Report, iters: int, repeats: int) -> None:
    seg = Segment(new_run_prefix() + "bench", 4096, create=True)
    region = _prim.Region(seg.buf)
    try:
        _prim.set_worker(0)
        _prim.set_stats(region, STATS_OFF, N_CLASSES)   # lockstat on, as in a run
        with ExitStack() as views:
            spin = None
            if atomics is not None:
                word = views.enter_context(seg.buf[SPIN_OFF:SPIN_OFF + 8])   # released before seg.close
                spin = views.enter_context(atomics.atomicview(buffer=word, atype=atomics.INT))
            figures = best_ns(primitive_loops(region, spin), iters, repeats)
        if region.load(STATS_OFF + 8 * LockClass.CI_LOCK * _prim.LOCKSTAT_FIELDS) == 0:
            raise RuntimeError("lockstat counted no acquisitions: the lock pair was not timed with it on")
        for name in ("shmswap_lock_pair_ns", "mp_lock_pair_ns", "thread_lock_pair_ns", "atomics_lock_pair_ns",
                     "atomic_op_ns", "atomic_load_ns", "atomic_store_ns", "atomic_cmpxchg_ns", "atomic_xchg_ns",
                     "sched_point_ns", "loop_overhead_ns"):
            report.add(name, figures.get(name))
    finally:
        _prim.set_stats(None)
        region.release()
        seg.close()
        seg.unlink()


# -- the slot life ---------------------------------------------------------------------------------

def slot_loops(system: SwapSystem) -> dict:
    si, folios = system.si, system.folios
    falloc, flock = folios.folio_alloc, folios.folio_lock
    shadow = [0]

    def pairs(n):
        for _ in range(n):
            f = falloc(0, 0)
            flock(f)
            e = folio_alloc_swap(si, f)
            if e <= 0:
                raise RuntimeError(f"folio_alloc_swap failed: {e}")
            writeback_folio(si, f, e, None)      # no map count taken: the slot is freed

    def workload_lives(n):
        for _ in range(n):
            f = falloc(0, 0)
            flock(f)
            e = folio_alloc_swap(si, f)
            if e <= 0:
                raise RuntimeError(f"folio_alloc_swap failed: {e}")
            swap_duplicate(si, e, 1)             # a PTE points at the entry
            shadow[0] += 1
            writeback_folio(si, f, e, shadow[0])
            free_swap_and_cache_nr(si, e, 1)     # the PTE is zapped: the slot and its shadow go

    return {"alloc_free_pair_us": pairs, "slot_life_workload_us": workload_lives}


def calls_per(loop, n: int) -> float:
    """Function calls per iteration of ``loop(n)`` under cProfile (primitive calls), ``loop`` excluded."""
    prof = cProfile.Profile()
    prof.runcall(loop, n)
    stats = pstats.Stats(prof).stats
    return sum(cc for (_, _, fn), (cc, *_) in stats.items()
               if fn not in (loop.__name__, "<method 'disable' of '_lsprof.Profiler' objects>")) / n


def bench_slot_life(report: Report, repeats: int) -> None:
    system = SwapSystem.create(Config(size="1G", cpus=1, atomic_fail=0.0), n_workers=2)
    try:
        system.task(0)
        loops = slot_loops(system)
        lockstat = system.shm.workers[0]["lockstat"]
        before = int(lockstat[:, 0].sum())
        loops["alloc_free_pair_us"](10_000)
        locks = (int(lockstat[:, 0].sum()) - before) / 10_000
        del lockstat
        figures = best_ns(loops, 20_000, repeats, budget_s=0.5)
        report.add("alloc_free_pair_us", figures["alloc_free_pair_us"] / 1e3)
        report.add("calls_per_pair", calls_per(loops["alloc_free_pair_us"], 5_000))
        report.add("locks_per_pair", locks)
        report.add("slot_life_workload_us", figures["slot_life_workload_us"] / 1e3)
        if system.si.cur.warnings:
            raise ModelWarned("; ".join(system.si.cur.warnings[:3]))
    finally:
        system.close()
        _prim.set_stats(None)
        _prim.set_abort(None)


def bench(args: argparse.Namespace) -> Report:
    report = Report("shmswap primitives and the order-0 pair (one process, uncontended, no hook)")
    prev_hook = _prim.get_hook()
    _prim.set_hook(None)
    try:
        bench_primitives(report, args.iters, args.repeats)
        bench_slot_life(report, args.repeats)
    finally:
        _prim.set_hook(prev_hook)
    if atomics is None:
        report.notes.append("the atomics package is not installed: no atomics_lock_pair_ns")
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=200_000, help="iterations per ns batch")
    ap.add_argument("--repeats", type=int, default=5, help="round-robin rounds; the best batch is kept")
    raise SystemExit(main(bench, ap))
