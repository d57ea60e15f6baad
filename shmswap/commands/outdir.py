"""Output files of the study commands: checked before anything runs, written whole after.

* ``check_out_dir(path, option)``: the one-line error (exit 2) for a directory that cannot be
  written, before the study starts; nothing is created.
* ``write_dir(path, files)``: every file rendered in memory first, then written into a temporary
  directory beside ``path`` and moved in: a new ``path`` appears whole (one rename); into an
  existing directory each file is replaced atomically.  A failure leaves nothing partial behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from .common import error

__all__ = ["check_out_dir", "write_dir"]


def _parent(path: str) -> str:
    return os.path.dirname(os.path.abspath(path))


def check_out_dir(path: str, option: str = "--out") -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        error(f"{option}: {path!r} exists and is not a directory")
    target = path if os.path.isdir(path) else _parent(path)
    if not os.path.isdir(target):
        error(f"{option}: {path!r}: the directory {target!r} does not exist")
    if not os.access(target, os.W_OK | os.X_OK):
        error(f"{option}: {path!r}: {target!r} is not writable")


def write_dir(path: str, files: dict[str, bytes | str]) -> list[str]:
    """Write ``files`` (name -> content) into directory ``path``; returns the paths written."""
    path = os.path.abspath(path)
    tmp = tempfile.mkdtemp(prefix=".shmswap-", dir=os.path.dirname(path))
    try:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        if not os.path.exists(path):
            os.chmod(tmp, 0o777 & ~_umask())
            os.rename(tmp, path)
        else:
            for name in files:
                os.replace(os.path.join(tmp, name), os.path.join(path, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [os.path.join(path, name) for name in files]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
