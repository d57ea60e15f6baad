"""``shmswap``: the command line.  ``shmswap run`` runs the model on its default configuration.

Each subcommand is a module of ``shmswap/commands/`` with ``add_parser(subparsers)`` (which sets
``func``) and a ``main(args) -> int``.  Bad arguments give one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from .commands import clean, demo, explore, memory, plot, race, replay, run, sweep, twin
from .commands.common import Parser, join_dash_values

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS = (run, plot, sweep, clean, race, memory, twin, demo, replay, explore)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="shmswap", description="A shared-memory model of the Linux swap-slot allocator "
               "with dynamically allocated swap tables.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_dash_values(parser, sys.argv[1:] if argv is None else list(argv)))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
