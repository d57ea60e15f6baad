"""Tests of shmswap.substrate._prim: the atomics and the lock over 64-bit shared-memory words (DESIGN §3)."""

import os
import sys
import threading
import time
import uuid

import multiprocess as mp
import pytest
from multiprocess import resource_tracker, shared_memory

from shmswap.substrate import _prim
from shmswap.substrate._prim import Region

NFIELDS = 5  # lockstat counters per class
ACQ, CONT, TRYFAIL, WAIT_TOTAL, WAIT_MAX = range(NFIELDS)

CTX = mp.get_context("fork")


# ---------------------------------------------------------------------------
# fixtures and helpers


@pytest.fixture(autouse=True)
def _reset_globals():
    """The module state is process-global: start and end every test from the defaults."""
    _prim.set_worker(0)
    _prim.set_stats(None)
    _prim.set_abort(None)
    _prim.set_hook(None)
    yield
    _prim.set_worker(0)
    _prim.set_stats(None)
    _prim.set_abort(None)
    _prim.set_hook(None)


@pytest.fixture
def region():
    r = Region(bytearray(4096))
    yield r
    r.release()


@pytest.fixture
def shm():
    """A fresh zero-filled segment and a Region over it; both torn down and the name checked gone
    from /dev/shm even when the test failed."""
    name = f"shmswap_test_{os.getpid()}_{uuid.uuid4().hex[:12]}"
    seg = shared_memory.SharedMemory(name=name, create=True, size=1 << 16)
    try:
        r = Region(seg.buf)
        try:
            yield seg, r
        finally:
            _prim.set_stats(None)  # drop the module's strong references to r
            _prim.set_abort(None)
            r.release()
    finally:
        seg.unlink()
        seg.close()
    assert not os.path.exists(f"/dev/shm/{name}")


def attach(name, wid):
    """Child-side setup.  Python 3.11's SharedMemory has no track=False and registers the name
    with the resource tracker even on attach, so that the tracker could unlink the segment when
    the child exits.  A forked child shares the parent's tracker (its connection is inherited),
    where the name is already registered (a set): the register is then a no-op and unregistering
    would drop the parent's entry (and make the parent's unlink() log a KeyError in the tracker).
    So unregister only when this process has a tracker of its own.
    The forked child also inherits the parent's _prim globals (worker id, stats block, abort word,
    hook): reset them so the child does not count into the parent's stats."""
    shared_tracker = resource_tracker._resource_tracker._fd is not None
    seg = shared_memory.SharedMemory(name=name)
    if not shared_tracker:
        resource_tracker.unregister(seg._name, "shared_memory")
    _prim.set_stats(None)
    _prim.set_abort(None)
    _prim.set_hook(None)
    _prim.set_worker(wid)
    return seg, Region(seg.buf)


def stats_row(r, base, cls=0):
    return [r.load(base + (cls * NFIELDS + i) * 8) for i in range(NFIELDS)]


def wait_for(r, off, value, timeout=10.0):
    deadline = time.monotonic() + timeout
    while r.load(off) != value:
        assert time.monotonic() < deadline, f"timed out waiting for word {off} == {value}"
        time.sleep(0.001)


def run_child(target, *args):
    p = CTX.Process(target=target, args=args)
    p.start()
    return p


# ---------------------------------------------------------------------------
# atomics


def test_module_surface():
    assert "atomic_long_t" in _prim.__doc__
    assert (_prim.SP_LOCK, _prim.SP_UNLOCK, _prim.SP_TRYLOCK) == (1, 2, 3)
    assert issubclass(_prim.Aborted, RuntimeError)
    assert _prim.get_worker() == 0
    assert _prim.get_hook() is None
    t0 = _prim.now_ns()
    time.sleep(0.01)
    assert _prim.now_ns() - t0 >= 9_000_000


def test_load_store_xchg(region):
    r = region
    assert r.nbytes == 4096
    assert r.load(0) == 0
    r.store(8, -(2**63))
    assert r.load(8) == -(2**63)
    r.store(8, 2**63 - 1)
    assert r.load(8) == 2**63 - 1
    assert r.load(0) == 0 and r.load(16) == 0  # neighbours untouched
    assert r.xchg(8, 42) == 2**63 - 1
    assert r.load(8) == 42
    assert r.xchg(4088, -1) == 0
    assert r.load(4088) == -1


def test_cmpxchg(region):
    r = region
    r.store(24, 5)
    assert r.cmpxchg(24, 5, 9) == 5  # success returns expected
    assert r.load(24) == 9
    assert r.cmpxchg(24, 5, 100) == 9  # failure returns the current value, stores nothing
    assert r.load(24) == 9
    assert r.cmpxchg(24, 9, -3) == 9
    assert r.load(24) == -3


def test_fetch_add(region):
    r = region
    assert r.fetch_add(32, 10) == 0
    assert r.fetch_add(32, -25) == 10
    assert r.load(32) == -15
    assert r.fetch_add(32, 15) == -15
    assert r.load(32) == 0
    r.store(32, 2**63 - 1)
    assert r.fetch_add(32, 1) == 2**63 - 1  # wraps like the kernel's atomic_long_t
    assert r.load(32) == -(2**63)


def test_memory_layout_is_native_int64():
    buf = bytearray(64)
    r = Region(buf)
    r.store(16, 0x0102030405060708)
    assert int.from_bytes(buf[16:24], "little" if sys.byteorder == "little" else "big") == (
        0x0102030405060708
    )
    buf[40:48] = (-7).to_bytes(8, sys.byteorder, signed=True)
    assert r.load(40) == -7
    r.release()


@pytest.mark.parametrize("off", [-8, -1, 1, 4, 7, 4092, 4096, 4104, 2**40, 2**70, -(2**70)])
def test_bad_offsets(region, off):
    for call in (
        lambda: region.load(off),
        lambda: region.store(off, 1),
        lambda: region.xchg(off, 1),
        lambda: region.cmpxchg(off, 0, 1),
        lambda: region.fetch_add(off, 1),
        lambda: region.lock(off, 0),
        lambda: region.trylock(off, 0),
        lambda: region.unlock(off, 0),
        lambda: region.owner(off),
        lambda: region.held_by_me(off),
    ):
        with pytest.raises(ValueError):
            call()
    assert all(region.load(o) == 0 for o in range(0, 4096, 8))  # nothing written


def test_bad_arguments(region):
    with pytest.raises(TypeError):
        region.load()
    with pytest.raises(TypeError):
        region.load(0, 1)
    with pytest.raises(TypeError):
        region.store(0)
    with pytest.raises(TypeError):
        region.cmpxchg(0, 1)
    with pytest.raises(TypeError):
        region.load("0")
    with pytest.raises(TypeError):
        region.store(0, 1.5)
    with pytest.raises(OverflowError):
        region.store(0, 2**63)
    with pytest.raises(OverflowError):
        region.fetch_add(0, -(2**63) - 1)
    with pytest.raises(TypeError):
        region.lock(0)
    assert region.load(0) == 0


def test_region_construction_errors():
    with pytest.raises((TypeError, BufferError)):
        Region(b"\0" * 64)  # read-only
    with pytest.raises(TypeError):
        Region(42)
    buf = bytearray(64)
    with pytest.raises(ValueError):
        Region(memoryview(buf)[4:])  # misaligned base
    with pytest.raises((TypeError, BufferError, ValueError)):
        Region(memoryview(buf)[::2])  # not contiguous
    small = Region(bytearray(4))
    with pytest.raises(ValueError):
        small.load(0)
    small.release()


def test_release(region):
    buf = bytearray(64)
    r = Region(buf)
    with pytest.raises(BufferError):
        buf.append(0)  # the buffer is pinned while the Region holds it
    assert not r.released
    r.release()
    r.release()  # idempotent
    assert r.released
    buf.append(0)  # and unpinned after release
    for call in (lambda: r.load(0), lambda: r.store(0, 1), lambda: r.lock(0, 0), lambda: r.owner(0)):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        _prim.set_stats(r, 0, 1)
    with pytest.raises(ValueError):
        _prim.set_abort(r, 0)


def test_shared_memory_region(shm):
    seg, r = shm
    assert r.nbytes == seg.size
    r.store(seg.size - 8, 77)
    assert int.from_bytes(seg.buf[seg.size - 8 :], sys.byteorder) == 77


# ---------------------------------------------------------------------------
# the lock word


def test_worker_id():
    _prim.set_worker(7)
    assert _prim.get_worker() == 7
    for bad in (-1, 2**31, 2**40):
        with pytest.raises((ValueError, OverflowError)):
            _prim.set_worker(bad)
    assert _prim.get_worker() == 7


def test_trylock_unlock_owner(region):
    r = region
    _prim.set_worker(3)
    assert r.owner(64) == -1 and not r.held_by_me(64)
    assert r.trylock(64, 0) is True
    assert r.owner(64) == 3 and r.held_by_me(64)
    # layout: uint32 state (1 = locked) then int32 owner = wid + 1
    assert r.load(64) == (1 | (4 << 32) if sys.byteorder == "little" else (1 << 32) | 4)
    assert r.trylock(64, 0) is False  # already locked (even by me)
    _prim.set_worker(5)
    assert not r.held_by_me(64) and r.owner(64) == 3
    assert r.trylock(64, 0) is False
    _prim.set_worker(3)
    r.unlock(64, 0)
    assert r.load(64) == 0  # zero again == free
    assert r.owner(64) == -1
    r.lock(64, 0)
    assert r.held_by_me(64)
    r.unlock(64, 0)
    assert r.load(64) == 0


def test_unlock_by_non_owner_raises_and_keeps_lock(region):
    r = region
    _prim.set_worker(2)
    r.lock(128, 1)
    word = r.load(128)
    _prim.set_worker(6)
    with pytest.raises(RuntimeError, match=r"not held by worker 6 \(owner 2, class 1, off 128\)"):
        r.unlock(128, 1)
    assert r.load(128) == word
    assert r.owner(128) == 2
    _prim.set_worker(2)
    r.unlock(128, 1)
    with pytest.raises(RuntimeError, match="owner -1"):
        r.unlock(128, 1)  # unlock of a free lock
    assert r.load(128) == 0


def test_relock_by_owner_raises(region):
    r = region
    _prim.set_stats(r, 2048, 2)
    r.lock(0, 1)
    word = r.load(0)
    with pytest.raises(RuntimeError, match="already holds"):
        r.lock(0, 1)  # would self-deadlock: must raise, not hang
    assert r.load(0) == word and r.held_by_me(0)
    assert stats_row(r, 2048, 1)[:3] == [1, 0, 0]  # not counted as a contention
    r.unlock(0, 1)


# ---------------------------------------------------------------------------
# lockstat


def test_stats_counting(region):
    r = region
    base = 1024
    _prim.set_stats(r, base, 3)
    for _ in range(5):
        r.lock(0, 2)
        r.unlock(0, 2)
    assert r.trylock(8, 1)
    assert not r.trylock(8, 1)
    assert not r.trylock(8, 0)
    r.unlock(8, 1)
    assert stats_row(r, base, 0) == [0, 0, 1, 0, 0]
    assert stats_row(r, base, 1) == [1, 0, 1, 0, 0]
    assert stats_row(r, base, 2) == [5, 0, 0, 0, 0]
    for bad_cls in (-1, 3):
        with pytest.raises(ValueError):
            r.lock(16, bad_cls)
        with pytest.raises(ValueError):
            r.trylock(16, bad_cls)
    assert r.load(16) == 0
    _prim.set_stats(None)
    r.lock(0, 2)  # not counted, and any class is accepted without stats
    r.unlock(0, 2)
    r.lock(0, 99)
    r.unlock(0, 99)
    assert stats_row(r, base, 2) == [5, 0, 0, 0, 0]


def test_set_stats_validation(region):
    with pytest.raises(ValueError):
        _prim.set_stats(region, 4096 - 39, 1)  # misaligned
    with pytest.raises(ValueError):
        _prim.set_stats(region, 4096 - 32, 1)  # does not fit
    with pytest.raises(ValueError):
        _prim.set_stats(region, 0, 0)
    with pytest.raises(ValueError):
        _prim.set_stats(region, -8, 1)
    with pytest.raises(TypeError):
        _prim.set_stats(bytearray(64), 0, 1)
    _prim.set_stats(region, 4096 - 40, 1)  # exactly fits
    _prim.set_stats(region, 0, 4096 // 40)


def _hold_for(name, ms):
    seg, r = attach(name, 1)
    r.lock(0, 0)
    r.store(8, 1)  # tell the parent the lock is held
    time.sleep(ms / 1000)
    r.unlock(0, 0)
    r.release()
    seg.close()


def test_contention_counted_with_wait_time(shm):
    seg, r = shm
    base = 1024
    _prim.set_worker(0)
    _prim.set_stats(r, base, 1)
    p = run_child(_hold_for, seg.name, 50)
    try:
        wait_for(r, 8, 1)
        t0 = time.monotonic_ns()
        r.lock(0, 0)  # held by the child for ~50 ms: spin, yield, futex wait, woken by unlock
        waited = time.monotonic_ns() - t0
        assert r.held_by_me(0)
        r.unlock(0, 0)
    finally:
        p.join(10)
    assert p.exitcode == 0
    acq, cont, tryfail, wait_total, wait_max = stats_row(r, base)
    assert (acq, cont, tryfail) == (1, 1, 0)
    assert 10_000_000 < wait_total <= waited
    assert wait_max == wait_total


# ---------------------------------------------------------------------------
# preemption-point hook


def test_sched_point_without_hook():
    assert _prim.get_hook() is None
    assert _prim.sched_point(1) is None
    assert _prim.sched_point(1, 2, 3) is None
    with pytest.raises(TypeError):
        _prim.sched_point()
    with pytest.raises(TypeError):
        _prim.sched_point(1, 2, 3, 4)


def test_sched_point_with_hook():
    calls = []

    def hook(kind, a, b):
        calls.append((kind, a, b))

    _prim.set_hook(hook)
    assert _prim.get_hook() is hook
    assert _prim.sched_point(9) is None
    _prim.sched_point(9, 4)
    _prim.sched_point(9, 4, 5)
    assert calls == [(9, 0, 0), (9, 4, 0), (9, 4, 5)]
    with pytest.raises(TypeError):
        _prim.set_hook(42)
    assert _prim.get_hook() is hook
    _prim.set_hook(None)
    _prim.sched_point(9)
    assert len(calls) == 3


def test_sched_point_hook_exception_propagates():
    def hook(kind, a, b):
        raise KeyError(kind)

    _prim.set_hook(hook)
    with pytest.raises(KeyError):
        _prim.sched_point(1)


def test_lock_hook_kinds_and_order(region):
    r = region
    _prim.set_worker(4)
    events = []

    def hook(kind, a, b):
        # record whether the lock word at b is held at the time of the call
        events.append((kind, a, b, r.owner(b)))

    _prim.set_hook(hook)
    r.lock(8, 1)
    assert r.trylock(16, 2)
    assert not r.trylock(8, 1)
    r.unlock(16, 2)
    r.unlock(8, 1)
    assert events == [
        (_prim.SP_LOCK, 1, 8, -1),  # before acquiring
        (_prim.SP_TRYLOCK, 2, 16, -1),  # before the attempt
        (_prim.SP_TRYLOCK, 1, 8, 4),
        (_prim.SP_UNLOCK, 2, 16, -1),  # after releasing
        (_prim.SP_UNLOCK, 1, 8, -1),
    ]


def test_lock_hook_raising_acquires_nothing(region):
    r = region
    _prim.set_stats(r, 1024, 1)

    def hook(kind, a, b):
        if kind != _prim.SP_UNLOCK:
            raise ValueError("preempted")

    _prim.set_hook(hook)
    with pytest.raises(ValueError, match="preempted"):
        r.lock(0, 0)
    with pytest.raises(ValueError, match="preempted"):
        r.trylock(0, 0)
    assert r.load(0) == 0
    assert stats_row(r, 1024) == [0] * NFIELDS


def test_hook_may_uninstall_itself(region):
    calls = []

    def hook(kind, a, b):
        calls.append(kind)
        _prim.set_hook(None)

    _prim.set_hook(hook)
    del hook
    region.lock(0, 0)
    region.unlock(0, 0)
    assert calls == [_prim.SP_LOCK]


# ---------------------------------------------------------------------------
# abort word


def _hold_forever(name):
    seg, r = attach(name, 1)
    r.lock(0, 0)
    r.store(8, 1)
    time.sleep(60)  # "dies" holding the lock: the parent terminates us


def test_abort_word_breaks_wait_on_dead_holder(shm):
    seg, r = shm
    _prim.set_stats(r, 1024, 1)
    _prim.set_abort(r, 16)
    p = run_child(_hold_forever, seg.name)
    release_error = []

    def supervisor():
        time.sleep(0.2)
        try:
            r.release()  # the waiter sleeps with the GIL released: must be refused
        except BufferError as e:
            release_error.append(e)
        r.store(16, 1)

    t = threading.Thread(target=supervisor)
    try:
        wait_for(r, 8, 1)
        t.start()
        t0 = time.monotonic()
        with pytest.raises(_prim.Aborted, match="held by worker 1"):
            r.lock(0, 0)
        elapsed = time.monotonic() - t0
        t.join()
        assert 0.15 < elapsed < 5
        assert release_error and not r.released
        assert r.owner(0) == 1 and not r.held_by_me(0)
        acq, cont = stats_row(r, 1024)[:2]
        assert (acq, cont) == (0, 1)
        # with the word set, a fresh wait aborts too (after the spin/yield phase)
        with pytest.raises(_prim.Aborted):
            r.lock(0, 0)
        _prim.set_abort(None)
        assert r.trylock(0, 0) is False
    finally:
        p.terminate()
        p.join(10)


# ---------------------------------------------------------------------------
# mutual exclusion across processes

NPROC = 4
NITER = 100_000     # about 10 ms a child: two of them overlap on 2 cores even under load
COUNTER = 64
START = 72
READY = 80
STATS_BASE = 1024


def _hammer(name, wid):
    seg, r = attach(name, wid)
    _prim.set_stats(r, STATS_BASE + wid * NFIELDS * 8, 1)
    r.fetch_add(READY, 1)
    while r.load(START) == 0:
        pass  # busy: start together
    for _ in range(NITER):
        r.lock(0, 0)
        v = r.load(COUNTER)  # deliberately non-atomic read-modify-write
        r.store(COUNTER, v + 1)
        r.unlock(0, 0)
    _prim.set_stats(None)
    r.release()
    seg.close()


def test_mutual_exclusion_across_processes(shm):
    seg, r = shm
    procs = [run_child(_hammer, seg.name, wid) for wid in range(NPROC)]
    try:
        # Start them together: a child that attached late would otherwise run its loop alone
        # (it takes about a millisecond, less than a process start).
        deadline = time.monotonic() + 60
        while r.load(READY) < NPROC and time.monotonic() < deadline:
            time.sleep(0.001)
        r.store(START, 1)
        for p in procs:
            p.join(120)
    finally:
        for p in procs:
            if p.exitcode is None:
                p.terminate()
                p.join(10)
    assert [p.exitcode for p in procs] == [0] * NPROC
    assert r.load(COUNTER) == NPROC * NITER
    assert r.load(0) == 0  # lock free, no owner
    rows = [stats_row(r, STATS_BASE + wid * NFIELDS * 8) for wid in range(NPROC)]
    assert [row[ACQ] for row in rows] == [NITER] * NPROC
    assert sum(row[CONT] for row in rows) > 0
    assert all(row[TRYFAIL] == 0 for row in rows)
    assert all(row[WAIT_MAX] <= row[WAIT_TOTAL] for row in rows)
