"""swapon of a 1 TiB device: the time, and the memory it really touches in /dev/shm.

    python benchmarks/swapon.py [--json] [--runs N]

Each run creates the segments and swaps on (numpy initialisation, dynamic tables) in a fresh
``SwapSystem``, reads the allocated blocks of its segments, and closes it; the best of the runs
(fastest time, most memory touched) is reported and every run is listed.
"""

from __future__ import annotations

import argparse
import time

from _timing import ModelWarned, Report, main

from shmswap import Config
from shmswap.mm.system import SwapSystem
from shmswap.substrate import _prim


def bench(args: argparse.Namespace) -> Report:
    cfg = Config(size="1T", cpus=4)
    times, touched = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        system = SwapSystem.create(cfg, n_workers=5)
        times.append(time.perf_counter() - t0)
        try:
            touched.append(system.shm.shm_bytes_touched() / 2**20)
            if system.si.cur.warnings:
                raise ModelWarned("; ".join(system.si.cur.warnings[:3]))
        finally:
            system.close()
            _prim.set_stats(None)
            _prim.set_abort(None)
    report = Report("shmswap swapon of 1 TiB")
    report.add("swapon_1t_s", min(times))
    report.add("swapon_1t_shm_mib", max(touched))
    report.notes.append("runs: " + ", ".join(f"{t:.3f} s / {m:.1f} MiB" for t, m in zip(times, touched, strict=True)))
    return report


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    raise SystemExit(main(bench, ap))
