"""``shmswap clean``: list and remove the shared-memory segments that killed runs left in /dev/shm.

A run killed outright with its whole process tree (an OOM kill of a cgroup, a CI timeout's
SIGKILL) takes its resource tracker with it and leaves its segments behind.  Every ``shmswap run``
removes such orphans when it starts; ``shmswap clean`` does it on demand.  Only orphans go: segments
named ``shmswap_<pid>_<hex>_<segment>`` that belong to this user, whose creating process (the run's
manager) is gone and whose lock nobody holds (``substrate/shm.py``).  A live run's segments and
another user's are never touched.

Exit status: 0 (also when there was nothing to remove), 1 if an orphan could not be removed,
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json

from ..substrate.shm import SHM_DIR, leftover_segments, remove_orphaned_segments

__all__ = ["add_parser", "main"]


def add_parser(sub) -> argparse.ArgumentParser:
    """Add ``clean`` and its options to the subcommands ``sub``."""
    c = sub.add_parser("clean", help="remove the segments that killed runs left in /dev/shm",
                       description="List and remove the shared-memory segments of shmswap runs that were "
                       "killed outright (the whole process tree, resource tracker included).  Only this "
                       "user's segments whose creating process is gone are removed: never a live run's.")
    c.add_argument("--dry-run", action="store_true", default=False,
                   help="list the orphaned segments without removing them")
    c.add_argument("--json", action="store_true", default=False,
                   help="print a JSON document on stdout instead of the lines")
    c.add_argument("--quiet", action="store_true", default=False, help="print nothing (the exit status says)")
    c.set_defaults(func=main)
    return c


def main(args: argparse.Namespace) -> int:
    """Find the orphans, remove them unless ``--dry-run``, report; the exit status."""
    if args.dry_run:
        orphans, removed, failed = remove_orphaned_segments(dry_run=True), [], []
    else:
        removed = remove_orphaned_segments()
        failed = [n for n in remove_orphaned_segments(dry_run=True) if n not in removed]
        orphans = removed + failed
    kept = [n for n in leftover_segments() if n not in orphans]
    doc = {"dry_run": bool(args.dry_run), "directory": SHM_DIR, "orphaned": orphans, "removed": removed,
           "failed": failed, "kept": kept}
    if args.json:
        print(json.dumps(doc, indent=1))
    elif not args.quiet:
        verb = "would remove" if args.dry_run else "removed"
        for name in orphans if args.dry_run else removed:
            print(f"{verb} {SHM_DIR}/{name}")
        for name in failed:
            print(f"could not remove {SHM_DIR}/{name}")
        n = len(orphans) if args.dry_run else len(removed)
        print(f"shmswap clean: {verb} {n} orphaned segment{'' if n == 1 else 's'}; "
              f"{len(kept)} other shmswap segment{'' if len(kept) == 1 else 's'} kept (live runs or not ours)")
    return 1 if failed else 0
