"""Micro-benchmarks of shmswap's primitives and of one swap slot's life, side by side in one run.

What is measured (all in this one process, single-threaded, nothing contended):

* ``shmswap_lock_pair_ns``: ``Region.lock(off, cls)`` + ``Region.unlock(off, cls)`` on a word of
  a real shared-memory segment, with lockstat ON (``_prim.set_stats`` pointing at a stats block in
  the same segment; the acquisition counter is checked afterwards) and no preemption hook.
* ``mp_lock_pair_ns``: ``multiprocess.Lock()`` acquire + release (a POSIX semaphore).
* ``atomics_lock_pair_ns``: a test-and-set spin lock on the ``atomics`` package
  (``atomicview(..., atype=INT)``: ``cmpxchg_strong(0, 1)`` to take, ``store(0)`` to drop), its
  operations written inline in the loop (the package's best case); ``atomics_lock_pair_fn_ns`` is
  the same lock behind ``acquire()`` / ``release()`` methods.  Null if the package is missing.
* ``atomic_op_ns``: ``Region.fetch_add``; ``atomic_load_ns``, ``atomic_cmpxchg_ns``,
  ``atomic_store_ns`` and ``atomic_xchg_ns`` beside it.
* ``sched_point_ns``: ``shmswap.preempt.sched_point(kind, a, b)`` with no hook installed.
* ``alloc_free_pair_us``: one order-0 slot's life on a 1 GiB device at cluster size 512, in one
  process: ``folio_alloc`` + ``folio_lock`` + ``folio_alloc_swap`` (which adds the folio to the swap
  cache), then writeback completes and the slot is freed by the real free path: ``ci_lock``,
  ``__swap_cache_del_folio``, ``ci_unlock``, ``put_swap_folio`` (drops SWAP_HAS_CACHE: the slot is
  freed), ``folio_unlock``, ``folio_put``.  ``alloc_only_us`` / ``free_only_us`` split it, timed
  over batches of allocations then batches of frees.  ``slot_life_workload_us`` is the longer life
  workers/workload.py gives a slot: allocate, ``swap_duplicate`` (a PTE), writeback leaving a
  shadow, then ``free_swap_and_cache_nr`` (the PTE is zapped: the slot and its shadow go).
* ``swapon_1t_s``: wall time of ``SwapSystem.create(Config(size='1T', cpus=4), n_workers=5)``
  (segments created, swapon initialised with numpy, dynamic tables) and ``swapon_1t_shm_mib``, the
  shared memory that swapon really touched (allocated blocks in /dev/shm).

How: each ns figure is a ``time.perf_counter_ns`` loop of ``--iters`` iterations (200k), with the
callables bound to locals and the garbage collector off, warmed up first; the best of ``--repeats``
(5) batches is reported, per iteration, *including* the loop's own cost (``loop_overhead_ns``,
reported beside them).  The slot-life figures are best of 5 batches of 20k pairs after a warm-up.
Swapon is the best of 3 runs (each run listed).  Every segment is closed and unlinked in a
``finally``: the script leaves nothing in /dev/shm.

Usage: ``python benchmarks/primitives.py [--json] [--profile]``.  Without ``--json`` it prints a
table (name, value, unit, target, verdict) and notes; with ``--json`` exactly one JSON object on
stdout.  ``--profile`` prints the top cProfile costs of the order-0 pair to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import multiprocess  # noqa: E402

from shmswap import _prim  # noqa: E402
from shmswap.allocator import folio_alloc_swap  # noqa: E402
from shmswap.cluster import ci_lock, ci_unlock  # noqa: E402
from shmswap.config import Config  # noqa: E402
from shmswap.locks import N_CLASSES, LockClass  # noqa: E402
from shmswap.preempt import Point, sched_point  # noqa: E402
from shmswap.shm import Segment, leftover_segments, new_run_prefix  # noqa: E402
from shmswap.stats import Stat  # noqa: E402
from shmswap.swap_cache import __swap_cache_del_folio as swap_cache_del_folio_locked  # noqa: E402
from shmswap.swap_free import free_swap_and_cache_nr, put_swap_folio, swap_duplicate  # noqa: E402
from shmswap.system import SwapSystem  # noqa: E402

try:
    import atomics
except ImportError:  # the comparison is optional
    atomics = None

TARGETS = {
    "shmswap_lock_pair_ns": 300.0,
    "alloc_free_pair_us": 20.0,
    "swapon_1t_s": 2.0,
    "swapon_1t_shm_mib": 400.0,
}

# Layout of the scratch segment for the primitive benchmarks.
LOCK_OFF = 0          # the shmswap lock word
ATOMIC_OFF = 64       # the word the atomic ops hit
STATS_OFF = 256       # lockstat block: int64 [N_CLASSES][5]
SPIN_OFF = 2048       # the atomics spin-lock word
SCRATCH_BYTES = 4096

PROBE_ITERS = 1000
BATCH_BUDGET_S = 0.25  # cap on one timed batch of a ns figure (the atomics package is slow)
PAIR_BATCH = 20_000    # slot lives per timed batch
SPLIT_BATCH = 256      # allocations, then their frees, per round of the alloc/free split
SPLIT_ROUNDS = 80      # rounds per timed batch of the split (20480 slots)


# -- timing ----------------------------------------------------------------------------------------

def best_per_iter_ns(loop: Callable[[int], object], iters: int, repeats: int,
                     budget_s: float = BATCH_BUDGET_S) -> tuple[float, int]:
    """Best over ``repeats`` batches of ``loop(n)``, in ns per iteration, and the ``n`` used.

    ``n`` is ``iters`` unless one batch would take longer than ``budget_s`` (a slow operation):
    a short probe run sets it then.  A warm-up of n/10 iterations comes first; gc is off.
    """
    t0 = time.perf_counter_ns()
    loop(PROBE_ITERS)
    est = max(1.0, (time.perf_counter_ns() - t0) / PROBE_ITERS)
    n = max(PROBE_ITERS, min(iters, int(budget_s * 1e9 / est)))
    loop(max(PROBE_ITERS, n // 10))
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            loop(n)
            best = min(best, (time.perf_counter_ns() - t0) / n)
    finally:
        if enabled:
            gc.enable()
    return best, n


def empty_loop(n: int) -> None:
    for _ in range(n):
        pass


# -- primitives ----------------------------------------------------------------------------------

def bench_primitives(iters: int, repeats: int) -> dict:
    out: dict = {}
    used: dict[str, int] = {}          # iterations per batch actually used, per figure

    def record(key: str, loop: Callable[[int], object]) -> None:
        out[key], used[key] = best_per_iter_ns(loop, iters, repeats)

    record("loop_overhead_ns", empty_loop)

    seg = Segment(new_run_prefix() + "bench", SCRATCH_BYTES, create=True)
    region = spin_buf = None
    prev_hook = _prim.get_hook()
    try:
        region = _prim.Region(seg.buf)
        _prim.set_worker(0)
        _prim.set_hook(None)
        _prim.set_stats(region, STATS_OFF, N_CLASSES)
        cls = LockClass.CI_LOCK          # an IntEnum, as the model passes it
        lock, unlock = region.lock, region.unlock
        calls = 0

        def lock_loop(n: int) -> None:
            nonlocal calls
            calls += n
            for _ in range(n):
                lock(LOCK_OFF, cls)
                unlock(LOCK_OFF, cls)

        record("shmswap_lock_pair_ns", lock_loop)
        acq = region.load(STATS_OFF + int(cls) * 5 * 8)
        if acq != calls:
            raise RuntimeError(f"lockstat counted {acq} acquisitions for {calls} lock calls")
        out["lockstat_acquisitions_checked"] = acq
        _prim.set_stats(None)
        record("shmswap_lock_pair_nostats_ns", lock_loop)
        _prim.set_stats(region, STATS_OFF, N_CLASSES)

        fetch_add, load, cmpxchg = region.fetch_add, region.load, region.cmpxchg
        store, xchg = region.store, region.xchg

        def fetch_add_loop(n: int) -> None:
            for _ in range(n):
                fetch_add(ATOMIC_OFF, 1)

        def load_loop(n: int) -> None:
            for _ in range(n):
                load(ATOMIC_OFF)

        def cmpxchg_loop(n: int) -> None:
            store(ATOMIC_OFF, 0)
            for _ in range(n):
                cmpxchg(ATOMIC_OFF, 0, 0)      # succeeds (expected matches) and leaves 0

        def store_loop(n: int) -> None:
            for _ in range(n):
                store(ATOMIC_OFF, 1)

        def xchg_loop(n: int) -> None:
            for _ in range(n):
                xchg(ATOMIC_OFF, 1)

        record("atomic_op_ns", fetch_add_loop)
        record("atomic_load_ns", load_loop)
        record("atomic_cmpxchg_ns", cmpxchg_loop)
        record("atomic_store_ns", store_loop)
        record("atomic_xchg_ns", xchg_loop)

        kind = Point.RECLAIM_WINDOW

        def sched_loop(n: int) -> None:
            for _ in range(n):
                sched_point(kind, 1, 2)

        record("sched_point_ns", sched_loop)

        # the atomics package: a spin lock on a word of the same segment
        out["atomics_lock_pair_ns"] = out["atomics_lock_pair_fn_ns"] = None
        if atomics is not None:
            spin_buf = seg.buf[SPIN_OFF:SPIN_OFF + 8]
            with atomics.atomicview(buffer=spin_buf, atype=atomics.INT) as view:
                cx, st = view.cmpxchg_strong, view.store

                def atomics_inline_loop(n: int) -> None:
                    for _ in range(n):
                        while not cx(0, 1).success:
                            pass
                        st(0)

                spin = AtomicsSpinLock(view)
                record("atomics_lock_pair_ns", atomics_inline_loop)
                record("atomics_lock_pair_fn_ns", _pair_loop(spin.acquire, spin.release))
    finally:
        _prim.set_stats(None)
        _prim.set_hook(prev_hook)
        if spin_buf is not None:
            spin_buf.release()
        if region is not None:
            region.release()
        seg.close()
        seg.unlink()

    mp_lock = multiprocess.Lock()
    record("mp_lock_pair_ns", _pair_loop(mp_lock.acquire, mp_lock.release))
    th_lock = threading.Lock()
    record("thread_lock_pair_ns", _pair_loop(th_lock.acquire, th_lock.release))
    out["iterations"] = used
    return out


def _pair_loop(acquire: Callable[[], object], release: Callable[[], object]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            acquire()
            release()
    return loop


class AtomicsSpinLock:
    """A test-and-set spin lock on an ``atomics`` INT view (0 free, 1 held)."""

    def __init__(self, view) -> None:
        self._cx = view.cmpxchg_strong
        self._store = view.store

    def acquire(self) -> None:
        cx = self._cx
        while not cx(0, 1).success:
            pass

    def release(self) -> None:
        self._store(0)


# -- one slot's life -------------------------------------------------------------------------------

class SlotLife:
    """The order-0 slot life on a real device, with the system's handles bound once."""

    def __init__(self, system: SwapSystem) -> None:
        self.system = system
        self.task = system.task(0)
        self.si = system.si
        self.folios = system.folios
        self.shadow = 0

    def pairs(self, n: int) -> None:
        """``n`` times: allocate a slot for a new folio, write it back, free the slot."""
        si, folios = self.si, self.folios
        shift = si.spc_shift
        falloc, flock, funlock, fput = folios.folio_alloc, folios.folio_lock, folios.folio_unlock, folios.folio_put
        for _ in range(n):
            f = falloc(0, 0)
            flock(f)
            e = folio_alloc_swap(si, f)
            if e <= 0:
                raise RuntimeError(f"folio_alloc_swap failed: {e}")
            ci = e >> shift
            ci_lock(si, ci)
            swap_cache_del_folio_locked(si, ci, f, e, None)
            ci_unlock(si, ci)
            put_swap_folio(si, f, e)
            funlock(f)
            fput(f, 2)

    def alloc_batch(self, n: int) -> list[tuple[int, int]]:
        si, folios = self.si, self.folios
        out = []
        for _ in range(n):
            f = folios.folio_alloc(0, 0)
            folios.folio_lock(f)
            e = folio_alloc_swap(si, f)
            if e <= 0:
                raise RuntimeError(f"folio_alloc_swap failed: {e}")
            out.append((f, e))
        return out

    def free_batch(self, held: list[tuple[int, int]]) -> None:
        si, folios = self.si, self.folios
        shift = si.spc_shift
        for f, e in held:
            ci = e >> shift
            ci_lock(si, ci)
            swap_cache_del_folio_locked(si, ci, f, e, None)
            ci_unlock(si, ci)
            put_swap_folio(si, f, e)
            folios.folio_unlock(f)
            folios.folio_put(f, 2)

    def workload_lives(self, n: int) -> None:
        """workers/workload.py's SWAPPED life: alloc, a PTE, writeback with a shadow, zap."""
        si, folios = self.si, self.folios
        shift = si.spc_shift
        for _ in range(n):
            f = folios.folio_alloc(0, 0)
            folios.folio_lock(f)
            e = folio_alloc_swap(si, f)
            if e <= 0:
                raise RuntimeError(f"folio_alloc_swap failed: {e}")
            swap_duplicate(si, e, 1)
            self.shadow += 1
            ci = e >> shift
            ci_lock(si, ci)
            swap_cache_del_folio_locked(si, ci, f, e, self.shadow)
            ci_unlock(si, ci)
            put_swap_folio(si, f, e)
            folios.folio_unlock(f)
            folios.folio_put(f, 2)
            free_swap_and_cache_nr(si, e, 1)

    def counters(self) -> tuple[dict[str, int], int]:
        """(this worker's nonzero statistics counters, its lock acquisitions over all classes)."""
        w = self.system.shm.workers[0]
        stats = {s.name: int(w["stats"][s]) for s in Stat if int(w["stats"][s])}
        acq = int(w["lockstat"][:, 0].sum())
        del w
        return stats, acq


def _best_us(fn: Callable[[int], object], n: int, repeats: int) -> float:
    best = float("inf")
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            fn(n)
            best = min(best, (time.perf_counter_ns() - t0) / n / 1000)
    finally:
        if enabled:
            gc.enable()
    return best


def bench_slot_life(repeats: int, profile: bool) -> dict:
    out: dict = {}
    prev_hook = _prim.get_hook()
    _prim.set_hook(None)
    system = SwapSystem.create(Config(size="1G", cpus=1, atomic_fail=0.0), n_workers=2)
    try:
        life = SlotLife(system)
        life.pairs(5000)                                   # warm-up
        stats0, acq0 = life.counters()
        out["alloc_free_pair_us"] = _best_us(life.pairs, PAIR_BATCH, repeats)
        stats1, acq1 = life.counters()
        pairs = PAIR_BATCH * repeats
        out["pair_locks"] = (acq1 - acq0) / pairs
        out["pair_fast_path_share"] = (stats1.get("FAST_HIT", 0) - stats0.get("FAST_HIT", 0)) / pairs
        out["pair_slow_paths"] = stats1.get("SLOW_PATH", 0) - stats0.get("SLOW_PATH", 0)

        # the split: batches of allocations, then batches of frees
        best_alloc = best_free = float("inf")
        enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(SPLIT_ROUNDS):
                t0 = time.perf_counter_ns()
                held = life.alloc_batch(SPLIT_BATCH)
                t1 = time.perf_counter_ns()
                life.free_batch(held)
                t2 = time.perf_counter_ns()
                best_alloc = min(best_alloc, (t1 - t0) / SPLIT_BATCH / 1000)
                best_free = min(best_free, (t2 - t1) / SPLIT_BATCH / 1000)
        finally:
            if enabled:
                gc.enable()
        out["alloc_only_us"] = best_alloc
        out["free_only_us"] = best_free

        life.workload_lives(2000)                          # warm-up
        out["slot_life_workload_us"] = _best_us(life.workload_lives, PAIR_BATCH // 2, repeats)

        if profile:
            out["profile"] = _profile(life)
        stats, _ = life.counters()
        out["pair_table_allocs"] = stats.get("INSTALLED", 0)
        warnings = len(life.si.warnings) + stats.get("WARNINGS", 0)
        if warnings:
            raise RuntimeError(f"the model warned during the benchmark: {life.si.warnings[:3]}")
    finally:
        system.close()
        _prim.set_stats(None)
        _prim.set_abort(None)
        _prim.set_hook(prev_hook)
    return out


def _profile(life: SlotLife, n: int = 20_000, top: int = 15) -> list[dict]:
    """cProfile the order-0 pair: the top functions by own time, and print them to stderr."""
    prof = cProfile.Profile()
    prof.enable()
    life.pairs(n)
    prof.disable()
    text = io.StringIO()
    st = pstats.Stats(prof, stream=text)
    st.sort_stats("tottime").print_stats(top)
    print(text.getvalue(), file=sys.stderr)
    rows = []
    for (path, line, fn), (_cc, ncalls, tottime, cumtime, _callers) in st.stats.items():
        rows.append({"function": f"{Path(path).name}:{line}({fn})", "calls_per_pair": ncalls / n,
                     "own_us_per_pair": tottime / n * 1e6, "cum_us_per_pair": cumtime / n * 1e6})
    rows.sort(key=lambda r: -r["own_us_per_pair"])
    total_calls = sum(r["calls_per_pair"] for r in rows)
    print(f"python function calls per pair (profiled): {total_calls:.0f}", file=sys.stderr)
    return rows[:top]


# -- swapon ----------------------------------------------------------------------------------------

def bench_swapon(runs: int = 3) -> dict:
    times, mib, by_seg = [], [], {}
    prev_hook = _prim.get_hook()
    _prim.set_hook(None)
    try:
        for _ in range(runs):
            system = None
            try:
                t0 = time.perf_counter()
                system = SwapSystem.create(Config(size="1T", cpus=4), n_workers=5)
                times.append(time.perf_counter() - t0)
                shm = system.shm
                mib.append(shm.shm_bytes_touched() / 2**20)
                by_seg = {}
                for name, seg in shm.segs.items():
                    st = os.stat(f"/dev/shm/{seg.name}")
                    by_seg[name] = {"size_mib": round(st.st_size / 2**20, 3),
                                    "touched_mib": round(st.st_blocks * 512 / 2**20, 3)}
                del shm
            finally:
                if system is not None:
                    system.close()
                _prim.set_stats(None)
                _prim.set_abort(None)
    finally:
        _prim.set_hook(prev_hook)
    return {"swapon_1t_s": min(times), "swapon_1t_runs_s": times, "swapon_1t_shm_mib": max(mib),
            "swapon_1t_segments": by_seg}


# -- report ------------------------------------------------------------------------------------------

def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"nproc": os.cpu_count(), "usable_cpus": usable, "cpu_model": model,
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform()}


ROWS = [  # key, unit, format
    ("shmswap_lock_pair_ns", "ns", ".0f"),
    ("mp_lock_pair_ns", "ns", ".0f"),
    ("atomics_lock_pair_ns", "ns", ".0f"),
    ("atomics_lock_pair_fn_ns", "ns", ".0f"),
    ("thread_lock_pair_ns", "ns", ".0f"),
    ("atomic_op_ns", "ns", ".0f"),
    ("atomic_load_ns", "ns", ".0f"),
    ("atomic_cmpxchg_ns", "ns", ".0f"),
    ("atomic_store_ns", "ns", ".0f"),
    ("atomic_xchg_ns", "ns", ".0f"),
    ("sched_point_ns", "ns", ".0f"),
    ("loop_overhead_ns", "ns", ".1f"),
    ("alloc_free_pair_us", "us", ".2f"),
    ("alloc_only_us", "us", ".2f"),
    ("free_only_us", "us", ".2f"),
    ("slot_life_workload_us", "us", ".2f"),
    ("pair_locks", "locks", ".1f"),
    ("swapon_1t_s", "s", ".3f"),
    ("swapon_1t_shm_mib", "MiB", ".1f"),
]


def verdicts(result: dict) -> dict[str, str]:
    out = {}
    for key, limit in TARGETS.items():
        v = result.get(key)
        out[key] = "n/a" if v is None else ("pass" if v <= limit else "FAIL")
    return out


def notes(r: dict) -> list[str]:
    n = [
        "ns figures: best of the batches, per iteration, including the Python for-loop "
        f"({r['loop_overhead_ns']:.1f} ns, loop_overhead_ns); callables bound to locals, gc off.",
        "shmswap_lock_pair_ns: Region.lock + unlock, uncontended, lockstat on (acquisitions "
        f"verified: {r['lockstat_acquisitions_checked']}), no hook.",
        "atomics_lock_pair_ns: cmpxchg_strong(0, 1) + store(0) inline; _fn_: the same lock behind "
        "acquire()/release() methods.",
        "alloc_free_pair_us: folio_alloc + folio_lock + folio_alloc_swap (swap cache add) + "
        "ci_lock/__swap_cache_del_folio/ci_unlock + put_swap_folio (slot freed) + folio_unlock + "
        f"folio_put; 1 GiB, 512 slots/cluster, one process; {r['pair_locks']:.1f} lock "
        f"acquisitions per pair, fast path {100 * r['pair_fast_path_share']:.1f}% "
        f"({r['pair_slow_paths']} slow paths).",
        f"alloc_only_us / free_only_us: batches of {SPLIT_BATCH} allocations then their frees, best "
        f"of {SPLIT_ROUNDS} (may cross into a new cluster: table allocation and free included).",
        "slot_life_workload_us: the pair plus swap_duplicate, a shadow left at writeback and "
        "free_swap_and_cache_nr (workers/workload.py's swapped slot).",
        f"swapon_1t_s: SwapSystem.create(1T, cpus=4, n_workers=5), best of "
        f"{len(r['swapon_1t_runs_s'])} runs ("
        + ", ".join(f"{t:.3f}" for t in r["swapon_1t_runs_s"])
        + " s); shm: allocated blocks of its segments in /dev/shm.",
    ]
    segs = r.get("swapon_1t_segments") or {}
    touched = [f"{k} {v['touched_mib']:.2f}/{v['size_mib']:.0f}" for k, v in segs.items() if v["touched_mib"]]
    if touched:
        n.append("swapon_1t touched/size MiB by segment: " + ", ".join(touched) + ".")
    return n


def print_table(r: dict) -> None:
    header = ("name", "value", "unit", "target", "verdict")
    rows = []
    for key, unit, fmt in ROWS:
        v = r.get(key)
        value = "null" if v is None else format(v, fmt)
        limit = TARGETS.get(key)
        target = "" if limit is None else f"<= {limit:g}"
        rows.append((key, value, unit, target, r["verdicts"].get(key, "")))
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(5)]
    align = ["<", ">", "<", "<", "<"]

    def line(row) -> str:
        return "  ".join(f"{str(c):{a}{w}}" for c, a, w in zip(row, align, widths, strict=True)).rstrip()

    print(line(header))
    print(line(tuple("-" * w for w in widths)))
    for row in rows:
        print(line(row))
    m = r["machine"]
    print()
    print(f"machine: {m['nproc']} CPUs ({m['usable_cpus']} usable) {m['cpu_model']}; "
          f"{m['implementation']} {m['python']}; {m['platform']}")
    print("notes:")
    for text in notes(r):
        print(f"  - {text}")
    if r.get("profile"):
        print("order-0 pair, top own time (cProfile, us per pair; profiling inflates the total):")
        for row in r["profile"][:10]:
            print(f"  {row['own_us_per_pair']:7.2f} own {row['cum_us_per_pair']:7.2f} cum "
                  f"{row['calls_per_pair']:5.1f} calls  {row['function']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--profile", action="store_true", help="cProfile the order-0 pair (to stderr)")
    ap.add_argument("--iters", type=int, default=200_000, help="iterations per ns batch")
    ap.add_argument("--repeats", type=int, default=5, help="batches; the best is reported")
    args = ap.parse_args(argv)

    before = set(leftover_segments())
    t0 = time.perf_counter()
    result: dict = {}
    try:
        result.update(bench_primitives(args.iters, args.repeats))
        result.update(bench_slot_life(args.repeats, args.profile))
        result.update(bench_swapon())
    finally:
        left = sorted(set(leftover_segments()) - before)
        if left:
            print(f"warning: segments left in /dev/shm: {left}", file=sys.stderr)
    result["targets"] = dict(TARGETS)
    result["verdicts"] = verdicts(result)
    result["machine"] = machine()
    result["versions"] = {
        "multiprocess": getattr(multiprocess, "__version__", None),
        "atomics": _dist_version("atomics") if atomics is not None else None,
    }
    result["bench_seconds"] = time.perf_counter() - t0
    result["leftover_segments"] = left
    if args.json:
        json.dump(result, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_table(result)
        print(f"(run took {result['bench_seconds']:.1f} s; /dev/shm left clean: {not left})")
    return 0


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
