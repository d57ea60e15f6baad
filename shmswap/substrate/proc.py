"""Process naming: ``ps``, ``top`` and ``pkill`` show ``shmswap-manager`` and ``shmswap-cpuN``."""

from __future__ import annotations

import ctypes

__all__ = ["set_comm"]

_PR_SET_NAME = 15


def set_comm(name: str) -> None:
    """Set this process's comm name (at most 15 bytes), as ``prctl(PR_SET_NAME)`` does."""
    # CDLL(None) is the C library already mapped into this process.  find_library("c") would run
    # ``ldconfig -p`` in a child, which is slow on a loaded machine and leaves the worker unnamed
    # (and an extra process among the run's) while it runs.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass
