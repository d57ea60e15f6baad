"""Result files written whole or not at all: a temporary file beside the target, then a rename.

Every file shmswap writes (a run's JSON, a trace, pictures, pages) goes through ``write_atomically``,
so an interrupted or failed write never leaves a truncated file behind.  The file gets the mode a
plain ``open()`` would give it (``mkstemp`` makes it 0600).  A target that exists and is not a
regular file (``/dev/stdout``, a FIFO, ``/dev/full``) is written in place: renaming over a device
would replace it.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["write_atomically"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path: str, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` whole or not at all."""
    mode = "wb" if isinstance(data, bytes) else "w"
    if os.path.exists(path) and not os.path.isfile(path):
        with open(path, mode) as f:
            f.write(data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".shmswap-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
