"""Named shared-memory segments: one owner creates and unlinks, everyone else attaches (DESIGN §2).

Python 3.11's resource tracker registers every attach and may unlink a segment that another process
still uses when the attaching process exits.  Attachers therefore never register: unregistering
after the fact is wrong for a forked child, which shares its parent's tracker and would drop the
owner's entry.  Only the owner stays registered, so the tracker still cleans up after an owner that
crashed.

Class-level defaults (``_shm = None``) make ``close()`` and ``unlink()`` safe after a partial
construction, as in CPython's ``multiprocessing.shared_memory``.
"""

from __future__ import annotations

import os
import secrets

from multiprocess import resource_tracker, shared_memory

__all__ = ["PREFIX", "Segment", "new_run_prefix", "leftover_segments", "orphaned_segments", "unlink_by_name"]

PREFIX = "shmswap_"


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


def orphaned_segments() -> list[str]:
    """Our segments whose creating process is gone: what a run left behind."""
    out = []
    for name in leftover_segments():
        try:
            pid = int(name[len(PREFIX):].split("_", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            out.append(name)
        except PermissionError:
            pass
    return out


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
        else:
            self._shm = _attach_untracked(name)
        self.size = self._shm.size

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
