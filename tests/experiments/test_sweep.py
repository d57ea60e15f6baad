"""The sweep's experiment logic (``shmswap.experiments.sweep``): the grid, per-point seeds, shards
and their merge, the rows' schema, the files written whole, and a Dask ``LocalCluster``."""

from __future__ import annotations

import csv
import json
import struct

import pytest

from shmswap.config import ConfigError
from shmswap.experiments.sweep import (
    CSV_NAME,
    IDENTITY_COLUMNS,
    JSON_NAME,
    OPTION_NAMES,
    PLOT_FILES,
    Grid,
    SweepError,
    derive_seed,
    document,
    merge,
    parse_shard,
    run_sweep,
    write_outputs,
)

SMALL = {"cpus": "1,2", "percpu": "on,off", "alloc_table": "seed", "size": "16M", "ops": "3000"}
SAME_IN_EVERY_RUN = (*[c for c in IDENTITY_COLUMNS if c not in ("host", "cores", "oversubscribed")],
                     *OPTION_NAMES, "size_bytes")


def _run(grid: Grid, shard=None, client=None) -> list[dict]:
    rows: list[dict] = []
    run_sweep(grid.jobs(shard), lambda piece: rows.extend(piece["rows"]), client)
    return sorted(rows, key=lambda r: (r["point"], r["repeat"]))


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def small_rows() -> tuple[Grid, list[dict]]:
    grid = Grid.parse(SMALL, repeat=1, warmup_s=0.0)
    return grid, _run(grid)


# -- the grid ---------------------------------------------------------------------------------------

def test_grid_is_the_product_in_a_fixed_order_with_stable_keys():
    grid = Grid.parse(SMALL, repeat=2, warmup_s=0)
    points = grid.points()
    assert [(p.config.cpus, p.config.percpu) for p in points] == [(1, "on"), (1, "off"), (2, "on"), (2, "off")]
    again = Grid.parse({**SMALL, "size": "16384K"}, repeat=2, warmup_s=0)       # same size, spelt otherwise
    assert [p.key for p in again.points()] == [p.key for p in points]
    assert len({p.key for p in points}) == 4
    assert grid.varying == ["cpus", "percpu"]
    assert all(p.config.seconds is None and p.config.ops == 3000 for p in points)


def test_default_grid_is_the_documented_one():
    grid = Grid.parse()
    assert len(grid.points()) == 12
    assert grid.varying == ["cpus", "percpu", "alloc_table"]
    assert {p.config.seconds for p in grid.points()} == {2.0}


def test_seeds_depend_on_the_point_and_the_repeat_only():
    p = Grid.parse(SMALL).points()
    assert derive_seed(p[0].key, 0) == derive_seed(p[0].key, 0)
    seeds = {derive_seed(q.key, r) for q in p for r in range(3)}
    assert len(seeds) == 12 and all(0 <= s < 2 ** 31 for s in seeds)
    with_seed2 = Grid.parse({**SMALL, "seed": "2"}).points()
    assert derive_seed(with_seed2[0].key, 0) != derive_seed(p[0].key, 0)


def test_shards_partition_the_grid():
    grid = Grid.parse({**SMALL, "seed": "1,2,3"})
    parts = [grid.points((i, 3)) for i in range(3)]
    assert sorted(p.index for part in parts for p in part) == list(range(len(grid.points())))
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(SweepError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("texts, needle", [
    ({"cpus": "1,0"}, "--cpus: 0"), ({"cpus": "1,x"}, "'x'"), ({"percpu": "on,maybe"}, "'maybe'"),
    ({"size": "16M,1Q"}, "1Q"), ({"cpus": "1,,2"}, "--cpus"), ({"orders": "0:0.5"}, "--orders"),
    ({"cpus": "2,2"}, "twice"), ({"seconds": "nan"}, "--seconds"), ({"fill": "2"}, "--fill"),
    ({"pin": "yes"}, "--pin"),
])
def test_bad_values_are_named(texts, needle):
    with pytest.raises(ConfigError, match=None) as e:
        Grid.parse(texts)
    assert needle in str(e.value)


def test_bad_repeat_and_warmup():
    with pytest.raises(ConfigError, match="--repeat"):
        Grid.parse(repeat=0)
    with pytest.raises(ConfigError, match="--warmup"):
        Grid.parse(warmup_s=-1)


def test_orders_lists_are_separated_by_semicolons():
    grid = Grid.parse({**SMALL, "cpus": "1", "percpu": "on", "orders": "0:1;0:0.5,2:0.5"})
    assert [p.config.orders for p in grid.points()] == [{0: 1.0}, {0: 0.5, 2: 0.5}]


# -- rows and files ---------------------------------------------------------------------------------

def test_rows_hold_every_option_and_figure(small_rows):
    grid, rows = small_rows
    assert len(rows) == 4
    for row, point in zip(rows, grid.points(), strict=True):
        for col in (*IDENTITY_COLUMNS, *OPTION_NAMES, "size_bytes", "throughput_ops_per_s", "duration_s",
                    "ops_steps", "locks_ci_lock_wait_ns_total", "locks_si_lock_contentions",
                    "tables_bytes_peak", "tables_bytes_static", "migration_lost_clusters", "violations",
                    "findings", "status", "oracle_failures"):
            assert col in row, col
        assert row["key"] == point.key and row["cpus"] == point.config.cpus
        assert row["run_seed"] == derive_seed(point.key, 0)
        assert row["violations"] == 0 and row["status"] == 0
        assert row["ops_steps"] >= 3000 and row["throughput_ops_per_s"] > 0
        assert row["size"] == "16M" and row["size_bytes"] == 16 << 20


def test_outputs_are_written_whole(small_rows, tmp_path):
    grid, rows = small_rows
    doc = document(grid.spec(), rows, {}, {"host": "here"}, None, complete=True)
    out = tmp_path / "sweep"
    write_outputs(out, doc)
    assert sorted(p.name for p in out.iterdir()) == sorted([CSV_NAME, JSON_NAME, *PLOT_FILES])
    back = json.loads((out / JSON_NAME).read_text())
    assert back["rows"] == json.loads(json.dumps(rows)) and back["complete"] and back["exit_status"] == 0
    assert [s["cpus"] for s in back["summary"]] == [1, 1, 2, 2]
    with open(out / CSV_NAME, newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and set(rows[0]) <= set(table[0])
    assert [int(r["cpus"]) for r in table] == [1, 1, 2, 2]
    for name in PLOT_FILES:
        w, h = _png_size(out / name)
        assert w >= 400 and h >= 300
    # written again over itself: still whole, nothing left beside it
    write_outputs(out, doc, plots=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    assert sorted(p.name for p in out.iterdir()) == sorted([CSV_NAME, JSON_NAME])


def test_plots_open_with_matplotlib(small_rows, tmp_path):
    import matplotlib.image
    _, rows = small_rows
    write_outputs(tmp_path / "o", document({}, rows, {}, {}, None, True))
    for name in PLOT_FILES:
        assert matplotlib.image.imread(tmp_path / "o" / name).ndim == 3


def test_a_violation_makes_the_sweep_fail(small_rows):
    _, rows = small_rows
    bad = [dict(rows[0], status=1, violations=1), *rows[1:]]
    assert document({}, bad, {}, {}, None, True)["exit_status"] == 1
    assert document({}, rows, {}, {}, None, True)["exit_status"] == 0


def test_shards_merged_equal_the_unsharded_sweep(small_rows):
    grid, rows = small_rows
    pieces = [(f"shard{i}", document(grid.spec(), _run(grid, (i, 2)), {}, {}, f"{i}/2", True)) for i in range(2)]
    assert [len(d["rows"]) for _, d in pieces] == [2, 2]
    merged = merge(pieces)
    assert merged["complete"]
    assert [{c: r[c] for c in SAME_IN_EVERY_RUN} for r in merged["rows"]] == \
        [{c: r[c] for c in SAME_IN_EVERY_RUN} for r in rows]
    assert [set(r) for r in merged["rows"]] == [set(r) for r in rows]
    half = merge(pieces[:1])
    assert not half["complete"]
    other = Grid.parse({**SMALL, "ops": "4000"})
    with pytest.raises(SweepError, match="'ops'"):
        merge([pieces[0], ("x", document(other.spec(), [], {}, {}, None, True))])


def test_dask_local_cluster_runs_the_points():
    distributed = pytest.importorskip("distributed")
    grid = Grid.parse({**SMALL, "percpu": "on"}, warmup_s=0.1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        rows = _run(grid, client=client)
    assert [r["cpus"] for r in rows] == [1, 2]
    assert all(r["status"] == 0 and r["throughput_ops_per_s"] > 0 for r in rows)
    assert [r["run_seed"] for r in rows] == [derive_seed(p.key, 0) for p in grid.points()]
