"""The table-memory study (shmswap/experiments/memory.py): static vs dynamic tables, measured."""

from __future__ import annotations

import pytest

from shmswap.config import ConfigError
from shmswap.experiments.memory import MemoryStudy, parse_fill, plot_memory, points_csv, run_memory

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def doc() -> dict:
    return run_memory(MemoryStudy(sizes=("16M", "64M", "1T"), fills=("25%", "8M"), max_allocs=2000))


def _point(doc: dict, size: str, tables: str, fill: str, pattern: str) -> dict:
    [p] = [p for p in doc["points"] if (p["size"], p["tables"], p["fill"], p["pattern"]) == (size, tables, fill,
                                                                                           pattern)]
    return p


def test_parse_fill() -> None:
    assert parse_fill("0.5").fraction == 0.5
    assert parse_fill("25%").fraction == 0.25
    assert parse_fill("1G").bytes == 1 << 30
    for bad in ("0", "2", "1.5", "-1", "x", "110%"):
        with pytest.raises(ConfigError, match="--fills"):
            parse_fill(bad)


def test_static_vs_dynamic(doc: dict) -> None:
    spc = 512
    s = _point(doc, "64M", "static", "25%", "packed")
    assert s["table_bytes"] == s["static_table_bytes"] == 32 * spc * 8
    packed = _point(doc, "64M", "dynamic", "25%", "packed")
    scattered = _point(doc, "64M", "dynamic", "25%", "scattered")
    assert packed["slots_in_use"] == scattered["slots_in_use"] >= 0.25 * 16384
    # 8 clusters hold the packed fill, 16 half-full ones the scattered; the header's cluster keeps its table
    assert packed["table_objects"] == 8 + 1 and scattered["table_objects"] == 16 + 1
    assert packed["table_bytes"] < scattered["table_bytes"] < s["table_bytes"]
    for p in doc["points"]:
        assert p["check_ok"] and p["shm_bytes"] > 0 and p["swapon_s"] > 0
        assert p["shm_tables_bytes"] >= (p["table_objects"] - 1) * spc * 8 if p["tables"] == "dynamic" else True


def test_one_tebibyte_is_cheap_and_measured(doc: dict) -> None:
    s = _point(doc, "1T", "static", "8M", "packed")
    d = _point(doc, "1T", "dynamic", "8M", "packed")
    assert s["table_bytes"] == 2 << 30                       # 8 bytes per slot
    assert d["table_bytes"] == (4 + 1) * 4096                # 8 MiB in use: 4 clusters, and the header's
    assert d["shm_bytes"] < s["shm_bytes"]
    [sv] = [x for x in doc["savings"] if (x["size"], x["fill"], x["pattern"]) == ("1T", "8M", "packed")]
    assert sv["saved_fraction"] > 0.999


def test_skipped_points_are_listed(doc: dict) -> None:
    reasons = {(s["size"], s["fill"], s["pattern"]): s["reason"] for s in doc["skipped"]}
    assert "allocation calls" in reasons[("1T", "25%", "packed")]
    assert not any(p["size"] == "1T" and p["fill"] == "25%" for p in doc["points"])


def test_csv_and_plot(doc: dict) -> None:
    lines = points_csv(doc).splitlines()
    assert lines[0].startswith("size,size_bytes,clusters,tables,fill,pattern")
    assert len(lines) == 1 + len(doc["points"]) + len(doc["skipped"])
    assert plot_memory(doc).startswith(PNG)
