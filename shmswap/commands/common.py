"""What every ``shmswap`` command shares: one-line errors, progress bars, results written whole.

* ``Parser``: argparse that reports a bad argument in one line on stderr and exits 2.
* ``progress_bar(label, total, quiet)``: a rich progress bar on a terminal, nothing otherwise.
* ``write_atomically(path, text)``: results are written whole or not at all (a temporary name in
  the same directory, then a rename).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["Parser", "progress_bar", "write_atomically", "error"]


class Parser(argparse.ArgumentParser):
    """One line on stderr and exit status 2 for a bad argument; defaults shown in ``--help``."""

    def __init__(self, *args, **kw) -> None:
        kw.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kw)

    def error(self, message: str) -> None:
        error(message)


def error(message: str, status: int = 2) -> None:
    """Print ``shmswap: error: <message>`` (one line) and exit with ``status``."""
    sys.stderr.write(f"shmswap: error: {message}\n")
    sys.exit(status)


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None


class _RichProgress:
    """A rich progress bar over a total (seconds, operations, runs); ``update(done, text)``."""

    def __init__(self, label: str, total: float) -> None:
        self.bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.description}"),
                            TimeElapsedColumn(), transient=True)
        self.task = self.bar.add_task("", total=total)

    def __enter__(self):
        self.bar.__enter__()
        return self.update

    def update(self, done: float, text: str = "") -> None:
        self.bar.update(self.task, completed=done, description=text)

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)


def progress_bar(label: str, total: float, quiet: bool = False):
    """A context manager giving ``update(done, text)``, or None when quiet or not on a terminal."""
    if quiet or not sys.stdout.isatty():
        return _NoProgress()
    return _RichProgress(label, total)


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file beside it, then a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".shmswap-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
