"""Tests of shmswap.substrate.shm: which segments are orphans (and only those), and the holes of a
segment (what was never written, so the checker need not read it).

Every segment these tests make is named after a pid of their own, and every assertion looks only at
those names: other test suites may run on the machine at the same time.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from shmswap.substrate.shm import (
    SHM_DIR,
    Segment,
    creator_gone,
    creator_pid,
    locked,
    new_run_prefix,
    orphaned_segments,
    owned_by_me,
    remove_orphaned_segments,
)


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _fake_segment(pid: int, suffix: str = "device") -> str:
    """A file in /dev/shm named like a run's segment created by ``pid`` (nobody holds its lock)."""
    name = f"shmswap_{pid}_{secrets.token_hex(3)}_{suffix}"
    with open(os.path.join(SHM_DIR, name), "wb") as f:
        f.write(b"\0" * 64)
    return name


def _exists(name: str) -> bool:
    return os.path.exists(os.path.join(SHM_DIR, name))


@pytest.fixture
def cleanup():
    names: list[str] = []
    yield names
    for n in names:
        try:
            os.unlink(os.path.join(SHM_DIR, n))
        except FileNotFoundError:
            pass


def test_creator_pid_parses_only_run_names():
    assert creator_pid("shmswap_1234_a1b2c3_swap_map") == 1234
    assert creator_pid(new_run_prefix() + "device") == os.getpid()
    for other in ("shmswap_test_1234_x", "shmswap_1234", "shmswap_12a_ab_x", "other_1234_ab_device",
                  "shmswap_1234_zz_device"):
        assert creator_pid(other) is None


def test_owned_by_me_compares_the_uid_of_the_stat_result():
    me = os.getuid()
    mine = os.stat_result((0o100600, 1, 1, 1, me, 0, 64, 0, 0, 0))
    theirs = os.stat_result((0o100600, 1, 1, 1, me + 1, 0, 64, 0, 0, 0))
    assert owned_by_me(mine) and not owned_by_me(theirs)
    assert owned_by_me(theirs, uid=me + 1) and not owned_by_me(mine, uid=me + 1)
    assert owned_by_me(os.stat(SHM_DIR), uid=os.stat(SHM_DIR).st_uid)


def test_creator_gone_dead_zombie_recycled_and_alive():
    assert creator_gone(_dead_pid(), time.time())
    assert not creator_gone(os.getpid(), 0.0)                     # never ourselves
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        started = psutil.Process(child.pid).create_time()
        assert not creator_gone(child.pid, started + 1.0)         # it made the segment: alive
        assert creator_gone(child.pid, started - 3600.0)          # the pid was recycled since
    finally:
        child.kill()
        child.wait()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert creator_gone(zombie.pid, time.time())              # exited, not yet reaped
    finally:
        zombie.wait()


def test_orphans_are_removed_and_only_they(cleanup):
    dead = _dead_pid()
    orphan = _fake_segment(dead)
    cleanup.append(orphan)
    # A dead pid but a held lock: a live run seen from another pid namespace. Never an orphan.
    held = _fake_segment(dead, "swap_map")
    cleanup.append(held)
    fd = os.open(os.path.join(SHM_DIR, held), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # A live creator (this process) with its lock: a live run.
    live = Segment(new_run_prefix() + "device", 4096, create=True)
    # A name that is not a run's.
    odd = f"shmswap_test_{os.getpid()}_{secrets.token_hex(3)}"
    open(os.path.join(SHM_DIR, odd), "wb").close()
    cleanup.append(odd)
    try:
        assert locked(os.path.join(SHM_DIR, live.name)) and locked(os.path.join(SHM_DIR, held))
        assert not locked(os.path.join(SHM_DIR, orphan))
        found = orphaned_segments()
        assert orphan in found
        assert held not in found and live.name not in found and odd not in found
        assert orphan in remove_orphaned_segments(dry_run=True) and _exists(orphan)
        removed = remove_orphaned_segments()
        assert orphan in removed and not _exists(orphan)
        assert _exists(held) and _exists(live.name) and _exists(odd)
        assert not {held, live.name, odd} & set(removed)
    finally:
        os.close(fd)
        live.close()
        live.unlink()
    assert not _exists(live.name)


def test_another_users_orphan_is_left_alone(cleanup, monkeypatch):
    orphan = _fake_segment(_dead_pid())
    cleanup.append(orphan)
    real = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real + 1)     # as another user sees it
    assert orphan not in orphaned_segments()
    assert orphan not in remove_orphaned_segments() and _exists(orphan)
    monkeypatch.setattr(os, "getuid", lambda: real)
    assert orphan in remove_orphaned_segments() and not _exists(orphan)


def test_data_ranges_are_the_written_pages():
    seg = Segment(new_run_prefix() + "holes", 1 << 20, create=True)
    try:
        ranges = seg.data_ranges()
        if ranges is None:
            pytest.skip("this file system does not report holes")
        assert ranges == []
        seg.buf[300_000] = 7
        seg.buf[900_000] = 9
        ranges = seg.data_ranges()
        assert len(ranges) == 2
        assert all(a % 4096 == 0 and b > a for a, b in ranges)
        assert ranges[0][0] <= 300_000 < ranges[0][1] and ranges[1][0] <= 900_000 < ranges[1][1]
        assert sum(b - a for a, b in ranges) < 1 << 18          # the rest is still a hole
    finally:
        seg.close()
        seg.unlink()


def test_touched_mask_and_reading_it_allocates_nothing(make_system):
    system = make_system(clusters=4096, slots_per_cluster=512)     # 8 MiB of swap map
    shm = system.shm
    seg = shm.segs["swap_map"]
    if seg.data_ranges() is None:
        pytest.skip("this file system does not report holes")
    mask = shm.touched("swap_map", 0, 512, 4096)
    assert mask[0] and mask.sum() <= 8                             # the header slot's page only
    before = os.stat(os.path.join(SHM_DIR, seg.name)).st_blocks
    res = system.check()                                           # reads only the masked clusters
    assert res.ok
    assert os.stat(os.path.join(SHM_DIR, seg.name)).st_blocks == before
    # A stray byte in a FREE cluster with count 0: its page becomes data and I-count still sees it.
    assert not mask[100]
    shm.map_np[100 * 512 + 3] = 1
    assert shm.touched("swap_map", 0, 512, 4096)[100]
    assert np.count_nonzero(shm.touched("swap_map", 0, 512, 4096)) > np.count_nonzero(mask)
    bad = system.check()
    assert any(v.invariant == "I-count" and v.where == "cluster 100" for v in bad.violations)
    shm.map_np[100 * 512 + 3] = 0
