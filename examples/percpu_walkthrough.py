"""A per-CPU cluster cache walk-through on the model API (``shmswap.Model``), step by step.

A tiny device: 2 CPUs, 4 clusters of 8 slots (128 KiB), order-0 folios only, no failures and no
migration.  Each step prints which CPU allocated (or freed) which slot, each CPU's cached
``offset`` (``percpu_swap_cluster.offset[0]``: where its next allocation looks first), the cluster
lists, and an ASCII drawing of the clusters::

    cluster 1 [#####...] nonfull_clusters[0] T     (# a slot in use, T: a swap table is present)

At the end it draws every step as one picture (``percpu.png`` or ``--out PATH``) and prints one
machine-readable line: ``RESULT {json}``.

    python examples/percpu_walkthrough.py [--out docs/examples/percpu.png]
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from shmswap import Config, Model  # noqa: E402

SHORT = {"free_clusters": "free", "full_clusters": "full", "discard_clusters": "discard",
         "nonfull_clusters[0]": "nonfull", "frag_clusters[0]": "frag", None: "-"}


def picture(snap, spc: int) -> list[str]:
    lines = []
    for c in snap.clusters:
        bar = "#" * c["count"] + "." * (spc - c["count"])
        owner = [p["cpu"] for p in snap.percpu if p["offset"][0] and (p["offset"][0] - 1) // spc == c["index"]]
        cached = f"  <- CPU {','.join(map(str, owner))} caches it" if owner else ""
        lines.append(f"  cluster {c['index']} [{bar}] {c['list'] or '(on no list)':20} "
                     f"{'T' if c['table'] else ' '}{cached}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="percpu.png", help="the picture")
    a = ap.parse_args()
    cfg = Config(size="128K", slots_per_cluster=8, cpus=2, orders="0:1", migrate=0.0, atomic_fail=0.0, seconds=1)
    spc = cfg.slots_per_cluster
    # ("alloc", cpu) on that CPU; ("free", i) the i-th slot still held; ("work", None) the manager
    plan = [("alloc", 0), ("alloc", 0), ("alloc", 1), ("alloc", 0), ("alloc", 1), ("alloc", 1),
            ("free", 0), ("alloc", 0), ("alloc", 0), ("alloc", 0), ("alloc", 0), ("alloc", 0), ("alloc", 0),
            ("free", 1), ("free", 2), ("work", None)]
    steps, held = [], []
    with Model(cfg) as m:
        for i, (what, cpu) in enumerate(plan, 1):
            if what == "alloc":
                al = m.alloc(cpu=cpu)
                held.append(al)
                text = f"CPU {cpu} allocated slot {al.entry} (cluster {al.entry // spc})"
            elif what == "free":
                al = held.pop(cpu)
                m.free(al)
                text = f"freed slot {al.entry} (cluster {al.entry // spc}), allocated by worker {al.wid}"
            else:
                m.run_pending_work()
                text = "the manager ran its pending work (discard, reclaim, grace periods)"
            snap = m.snapshot()
            offsets = [p["offset"][0] for p in snap.percpu]
            lists = {k: v for k, v in snap.lists.items() if v}
            print(f"step {i:2}: {text}")
            print("         per-CPU offset[0]: " + ", ".join(f"CPU {c}: {o}" for c, o in enumerate(offsets)))
            print(f"         lists: {lists}")
            print("\n".join(picture(snap, spc)))
            steps.append({"step": i, "op": what, "cpu": cpu if what == "alloc" else None,
                          "entry": al.entry if what != "work" else None,
                          "offsets": offsets, "counts": [c["count"] for c in snap.clusters],
                          "lists": [c["list"] for c in snap.clusters],
                          "tables": [c["table"] for c in snap.clusters],
                          "text": text})
        m.free_all()
        ok = m.check().ok
    counts = np.array([s["counts"] for s in steps], dtype=float)
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(steps) + 1.2), constrained_layout=True)
    ax.imshow(counts, cmap="Blues", vmin=0, vmax=spc, aspect="auto")
    for r, s in enumerate(steps):
        for c in range(counts.shape[1]):
            where = SHORT.get(s["lists"][c], s["lists"][c])
            label = f"{int(counts[r, c])}/{spc} {where}{' T' if s['tables'][c] else ''}"
            ax.text(c, r, label, ha="center", va="center", fontsize=7,
                    color="white" if counts[r, c] > spc / 2 else "black")
    ax.set_xticks(range(counts.shape[1]), [f"cluster {c}" for c in range(counts.shape[1])])
    ticks = [f"{s['step']}: {s['op']}" + (f" CPU {s['cpu']}" if s["op"] == "alloc" else "") for s in steps]
    ax.set_yticks(range(len(steps)), ticks, fontsize=7)
    ax.set_title("per-CPU cluster caching: slots in use, list and table per cluster, step by step", fontsize=9)
    fig.savefig(a.out, dpi=90)
    plt.close(fig)
    brief = [{k: s[k] for k in ("step", "op", "cpu", "entry", "offsets")} for s in steps]
    print("RESULT " + json.dumps({"example": "percpu_walkthrough", "png": a.out, "check_ok": ok, "steps": brief}))


if __name__ == "__main__":
    main()
