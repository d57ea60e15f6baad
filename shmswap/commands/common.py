"""What every ``shmswap`` command shares: one-line errors, progress bars, results written whole.

* ``Parser``: argparse that reports a bad argument in one line on stderr and exits 2.
* ``progress_bar(label, total, quiet)``: a rich progress bar on a terminal, nothing otherwise.
* ``write_atomically(path, text)``: results are written whole or not at all (a temporary name in
  the same directory, then a rename); ``check_output_path(option, path)`` validates such a path up
  front without creating anything.
* ``int_arg`` / ``float_arg``: argparse types that take ASCII numbers only (no Unicode digits, no
  ``inf``/``nan``) and name the value, cut at 60 characters, when they refuse it.
* ``join_dash_values(parser, argv)``: ``--size -1G`` reaches the option as ``--size=-1G`` (so the
  error names the value instead of argparse's "expected one argument").
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ..substrate.files import write_atomically

__all__ = ["Parser", "progress_bar", "write_atomically", "error", "check_output_path", "int_arg", "float_arg",
           "join_dash_values", "cut", "cut_message", "cut_path"]

_CUT = 60


class Parser(argparse.ArgumentParser):
    """One line on stderr and exit status 2 for a bad argument; defaults shown in ``--help``."""

    def __init__(self, *args, **kw) -> None:
        kw.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kw)

    def error(self, message: str) -> None:
        error(message)


def error(message: str, status: int = 2) -> None:
    """Print ``shmswap: error: <message>`` (one line) and exit with ``status``."""
    sys.stderr.write(f"shmswap: error: {cut_message(message)}\n")
    sys.exit(status)


def cut(text: str, limit: int = _CUT) -> str:
    """``text`` cut at ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def cut_path(path: str, limit: int = _CUT) -> str:
    """``repr(path)`` cut from the left (the file name is what matters) at ``limit`` characters."""
    text = repr(path)
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1):]


def cut_message(message: str) -> str:
    """One line; every long run of non-blanks (an echoed value) cut at 60 characters."""
    one_line = " ".join(str(message).split())
    return cut(re.sub(rf"\S{{{_CUT + 1},}}", lambda m: cut(m.group(0)), one_line), 400)


def int_arg(text: str) -> int:
    """An argparse type: an integer in ASCII digits."""
    if not re.fullmatch(r"\s*[+-]?[0-9]{1,30}\s*", text, re.ASCII):
        raise argparse.ArgumentTypeError(f"{cut(repr(text))} is not an integer")
    return int(text)


def float_arg(text: str) -> float:
    """An argparse type: a finite number in ASCII digits."""
    if not re.fullmatch(r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*", text, re.ASCII):
        raise argparse.ArgumentTypeError(f"{cut(repr(text))} is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{cut(repr(text))} is out of range (not a finite number)")
    return value


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:  # argparse keeps its subparsers here
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--opt -1G`` -> ``--opt=-1G`` for every option taking a value, unless ``-1G`` is an option."""
    options: set[str] = set()
    valued: set[str] = set()
    for p in _parsers(parser):
        for action in p._actions:
            options.update(action.option_strings)
            if action.option_strings and action.nargs is None:
                valued.update(s for s in action.option_strings if s.startswith("--"))
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out += argv[i:]
            break
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (token in valued and nxt is not None and nxt.startswith("-") and nxt != "--"
                and nxt.split("=", 1)[0] not in options):
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def check_output_path(option: str, path: str | None) -> str | None:
    """A one-line error if ``path`` cannot be written (its directory missing or read-only); creates nothing."""
    if path is None:
        return None
    if not path.strip():
        return f"{option}: the path is empty"
    if os.path.isdir(path):
        return f"{option}: {cut_path(path)} is a directory"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"{option}: cannot write {cut_path(path)}: directory {cut_path(directory)} does not exist"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{option}: cannot write {cut_path(path)}: permission denied"
    special = os.path.exists(path) and not os.path.isfile(path)   # a device or FIFO is written in place
    if not special and not os.access(directory, os.W_OK | os.X_OK):
        return f"{option}: cannot write {cut_path(path)}: directory {cut_path(directory)} is not writable"
    return None


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
