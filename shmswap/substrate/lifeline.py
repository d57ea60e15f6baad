"""Watching another process by pid, whatever started us (DESIGN §1).

The manager and the CPU workers must notice when the driver is gone.  ``os.getppid()`` is not the
driver under ``--start-method forkserver`` (the parent is the fork server), and a pipe to the driver
does not close when it dies if a forked sibling inherited the driver's end.  A ``Lifeline`` names
the process by pid *and* start time (so a recycled pid is not mistaken for it) and reports it gone
once it has exited, even while it is still an unreaped zombie.
"""

from __future__ import annotations

import time

import psutil

__all__ = ["Lifeline"]


class Lifeline:
    """Is process ``pid`` (as it was when this object was made) still alive?

    ``alive()`` is cheap (one read of /proc/<pid>/stat) and may be rate-limited with ``every_s``:
    between checks it returns the last answer, and once dead it stays dead.
    """

    def __init__(self, pid: int, every_s: float = 0.0) -> None:
        self.pid = pid
        self.every_s = every_s
        self._next = 0.0
        self._alive = True
        try:
            self._proc: psutil.Process | None = psutil.Process(pid)
        except psutil.Error:
            self._proc, self._alive = None, False

    def alive(self) -> bool:
        if not self._alive:
            return False
        if self.every_s:
            now = time.monotonic()
            if now < self._next:
                return True
            self._next = now + self.every_s
        proc = self._proc
        try:
            # is_running() compares the start time too: a recycled pid is another process.
            self._alive = proc is not None and proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            self._alive = False
        return self._alive

    __call__ = alive
