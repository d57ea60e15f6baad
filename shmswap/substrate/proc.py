"""Process naming: ``ps``, ``top`` and ``pkill`` show ``shmswap-manager`` and ``shmswap-cpuN``."""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["set_comm"]

_PR_SET_NAME = 15


def set_comm(name: str) -> None:
    """Set this process's comm name (at most 15 bytes), as ``prctl(PR_SET_NAME)`` does."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass
