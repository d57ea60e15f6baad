"""Run every benchmark, each in its own process: tables one after another, or with ``--json`` one
JSON object keyed by benchmark.  The exit status is the worst of theirs (1: the model WARNed or a
benchmark crashed; speed never fails).

    python benchmarks/run_all.py [--json] [--seconds S]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seconds", default="3", help="seconds per scaling run")
    args = ap.parse_args(argv)
    scripts = {"primitives": [], "swapon": [], "scaling": ["--seconds", args.seconds]}
    docs, status = {}, 0
    for name, extra in scripts.items():
        cmd = [sys.executable, str(HERE / f"{name}.py"), *extra] + (["--json"] if args.json else [])
        proc = subprocess.run(cmd, stdout=subprocess.PIPE if args.json else None, text=True)
        status = max(status, proc.returncode)
        if args.json:
            docs[name] = json.loads(proc.stdout) if proc.returncode == 0 else {"exit_status": proc.returncode}
        else:
            print()
    if args.json:
        print(json.dumps(docs))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
