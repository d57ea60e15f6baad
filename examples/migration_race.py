"""A migration-race study: the seed's swap_cluster_alloc_table against the merged fix.

Every atomic table allocation fails (``atomic_fail=1.0``), so every new table is a sleeping one,
and every sleeper wakes on another CPU (``migrate=1.0``): the window in which the seed loses the
cluster it isolated (reference §5.3, branches T5/T6b) opens at every table allocation.  Both
variants run the same seeded single-process workload (``shmswap.run_inprocess``, so the numbers
replay exactly); the seed loses clusters, the merged variant none.  Ends with one machine-readable
line: ``RESULT {json}``.

    python examples/migration_race.py [--ops 20000]
"""

from __future__ import annotations

import argparse
import json

import shmswap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20_000, help="operations per variant")
    a = ap.parse_args()
    out = {}
    for variant in ("seed", "merged"):
        cfg = shmswap.Config(cpus=2, size="16M", ops=a.ops, seconds=None, atomic_fail=1.0, migrate=1.0,
                             alloc_table=variant, seed=7, quiet=True)
        res = shmswap.run_inprocess(cfg)
        m = res.migration
        out[variant] = {"sleeps": m["sleeps"], "migrated": m["migrated"],
                        "used_percpu_cluster": m["used_percpu_cluster"], "lost_clusters": m["lost_clusters"],
                        "findings": len(res.check.findings), "violations": len(res.check.violations)}
        print(f"{variant:6}: {m['sleeps']:>5} table sleeps, {m['migrated']:>5} migrations, "
              f"used the per-CPU cluster instead {m['used_percpu_cluster']:>4}, lost clusters {m['lost_clusters']:>4}, "
              f"findings {len(res.check.findings)}, violations {len(res.check.violations)}")
        for f in res.check.findings[:3]:
            print(f"        finding: {f.where}: {f.reason}")
    print("RESULT " + json.dumps({"example": "migration_race", "variants": out}))


if __name__ == "__main__":
    main()
