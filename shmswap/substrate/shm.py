"""Named shared-memory segments: one owner creates and unlinks, everyone else attaches (DESIGN §2).

Python 3.11's resource tracker registers every attach and may unlink a segment that another process
still uses when the attaching process exits.  Attachers therefore never register: unregistering
after the fact is wrong for a forked child, which shares its parent's tracker and would drop the
owner's entry.  Only the owner stays registered, so the tracker still cleans up after an owner that
crashed.

Class-level defaults (``_shm = None``) make ``close()`` and ``unlink()`` safe after a partial
construction, as in CPython's ``multiprocessing.shared_memory``.

Orphans.  A SIGKILL of the whole process tree (an OOM kill of a cgroup, a CI timeout) kills the
resource tracker with the run, and the segments stay.  Names are ``shmswap_<pid>_<hex>_<segment>``
where ``<pid>`` is the process that created them: the manager, whose death ends the run (the driver
then unlinks them itself, or is dead too).  The creator also holds a ``flock`` on each segment for
as long as it has it open.  A segment is an orphan, and ``remove_orphaned_segments`` (every run's
start, ``shmswap clean``) removes it, only if all of these hold: it is ours by name and belongs to
this user (``st_uid``); its creator is gone (no such pid, a zombie, or a pid recycled by a process
started after the segment was made); and nobody holds its lock.  Each test alone would do on a
plain machine; together they never take a live run's segment, not even across pid namespaces.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets

import psutil
from multiprocess import resource_tracker, shared_memory

__all__ = ["PREFIX", "Segment", "new_run_prefix", "leftover_segments", "orphaned_segments", "unlink_by_name",
           "creator_pid", "owned_by_me", "creator_gone", "locked", "remove_orphaned_segments"]

PREFIX = "shmswap_"
SHM_DIR = "/dev/shm"
_NAME = re.compile(r"shmswap_(\d+)_[0-9a-f]+_\w+")
# psutil's start times come from jiffies and the boot time: allow this much error when comparing a
# recycled pid's start with a segment's creation.
_START_SLACK_S = 2.0


def new_run_prefix() -> str:
    """A name prefix unique to one run: ``shmswap_<pid>_<random>_``."""
    return f"{PREFIX}{os.getpid()}_{secrets.token_hex(3)}_"


def leftover_segments() -> list[str]:
    """Our segments currently in /dev/shm (for tests and cleanup checks)."""
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(PREFIX))
    except FileNotFoundError:
        return []


def _attach_untracked(name: str) -> shared_memory.SharedMemory:
    """Attach by name without registering with the resource tracker (3.11 has no track=False)."""
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def creator_pid(name: str) -> int | None:
    """The creator's pid in a run's segment name ``shmswap_<pid>_<hex>_<segment>``, else None."""
    m = _NAME.fullmatch(name)
    return int(m.group(1)) if m else None


def owned_by_me(st: os.stat_result, uid: int | None = None) -> bool:
    """Whether a /dev/shm entry (its ``stat``) belongs to this user: another user's is never ours."""
    return st.st_uid == (os.getuid() if uid is None else uid)


def creator_gone(pid: int, made_at: float) -> bool:
    """Whether the process that made a segment at ``made_at`` (epoch s, its ``st_ctime``, which is
    never earlier than the creation) is gone: no such pid, a zombie, or the pid now belongs to a
    process started after that.  Unknown means not gone."""
    if pid == os.getpid():
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        return proc.create_time() > made_at + _START_SLACK_S
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def locked(path: str) -> bool:
    """Whether some process holds the creator's ``flock`` on ``path`` (True when in doubt)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)          # closing drops our lock too
    return False


def orphaned_segments() -> list[str]:
    """Our segments (this user's) whose creating run is gone: what a killed run left behind."""
    out = []
    for name in leftover_segments():
        pid = creator_pid(name)
        if pid is None:
            continue
        path = os.path.join(SHM_DIR, name)
        try:
            st = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if owned_by_me(st) and creator_gone(pid, st.st_ctime) and not locked(path):
            out.append(name)
    return out


def remove_orphaned_segments(dry_run: bool = False) -> list[str]:
    """Remove (or, ``dry_run``, only list) the orphaned segments; returns their names."""
    found = orphaned_segments()
    if dry_run:
        return found
    removed = []
    for name in found:
        # Not unlink_by_name: the tracker never knew these (it died with their run), and telling it
        # would start one just to print a KeyError.
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
        except OSError:          # gone already, or not ours to remove after all: left as it is
            pass
    return removed


def unlink_by_name(name: str) -> bool:
    """Remove a segment someone else owned (its owner died); True if it was still there."""
    try:
        os.unlink(f"/dev/shm/{name}")
    except FileNotFoundError:
        return False
    try:
        resource_tracker.unregister(f"/{name}", "shared_memory")
    except Exception:  # noqa: BLE001 - the tracker may not know it; nothing to undo then
        pass
    return True


class Segment:
    """One named segment, created (owner) or attached by name."""

    _shm: shared_memory.SharedMemory | None = None
    owner: bool = False
    name: str = ""
    size: int = 0

    def __init__(self, name: str, size: int = 0, create: bool = False) -> None:
        self.name = name
        self.owner = create
        if create:
            self._shm = shared_memory.SharedMemory(name=name, create=True, size=max(size, 8))
            self._lock()
        else:
            self._shm = _attach_untracked(name)
        self.size = self._shm.size

    def _lock(self) -> None:
        """The creator's flock, held while its descriptor is open: a live run's mark (see above)."""
        fd = getattr(self._shm, "_fd", -1)
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass

    def data_ranges(self) -> list[tuple[int, int]] | None:
        """Byte ranges of the segment that hold pages (``lseek`` SEEK_DATA / SEEK_HOLE), or None
        when that cannot be told.

        Outside them the segment is a hole: never written, it reads as zeros, and reading it
        through the mapping would allocate a page of tmpfs.  A page swapped out or read once counts
        as data, so no written byte is ever outside these ranges.
        """
        fd = getattr(self._shm, "_fd", -1)
        if fd is None or fd < 0:
            return None
        out: list[tuple[int, int]] = []
        pos, end = 0, self.size
        try:
            while pos < end:
                try:
                    data = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:      # no data at or after pos
                        break
                    raise
                if data >= end:
                    break
                hole = os.lseek(fd, data, os.SEEK_HOLE)
                out.append((data, min(hole, end)))
                pos = hole
        except OSError:
            return None
        return out

    @property
    def buf(self) -> memoryview:
        return self._shm.buf

    def close(self) -> None:
        """Drop this process's mapping (views over buf must have been released)."""
        if self._shm is not None:
            try:
                self._shm.close()
            except BufferError:
                # A view is still exported somewhere; the mapping goes with the process.
                pass

    def unlink(self) -> None:
        """Remove the name from /dev/shm (owner only; idempotent)."""
        if self._shm is not None and self.owner:
            try:
                self._shm.unlink()
            except FileNotFoundError:
                pass
            self.owner = False
