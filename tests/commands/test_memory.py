"""``shmswap memory``: JSON, CSV and PNG outputs, the cover-letter comparison, bad input (exit 2)."""

from __future__ import annotations

import json

import pytest

from shmswap.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_json_csv_png(tmp_path, capsys) -> None:
    out = tmp_path / "mem"
    assert main(["memory", "--sizes", "16M,1T", "--fills", "25%,4M", "--max-allocs", "500", "--out", str(out),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "what the patch saves" in text and "significantly" in text and "not measured" in text
    assert sorted(p.name for p in out.iterdir()) == ["memory.csv", "memory.json", "memory.png"]
    assert (out / "memory.png").read_bytes().startswith(PNG)
    doc = json.loads((out / "memory.json").read_text())
    assert set(doc) >= {"study", "parameters", "cover_letter", "method", "points", "skipped", "savings", "files"}
    p = doc["points"][0]
    assert set(p) >= {"size", "tables", "fill", "pattern", "table_bytes", "shm_bytes", "shm_tables_bytes",
                      "swapon_s", "static_table_bytes", "check_ok"}
    big = [s for s in doc["savings"] if s["size"] == "1T"]
    assert big and all(s["saved_fraction"] > 0.999 for s in big)
    assert len((out / "memory.csv").read_text().splitlines()) == 1 + len(doc["points"]) + len(doc["skipped"])


def test_json_on_stdout(capsys) -> None:
    assert main(["memory", "--sizes", "16M", "--fills", "0.5", "--patterns", "packed", "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {p["tables"] for p in doc["points"]} == {"static", "dynamic"}


@pytest.mark.parametrize("args, word", [(["--sizes", "1Q"], "--sizes"), (["--sizes", "16M,1K"], "--sizes"),
                                        (["--fills", "2"], "--fills"), (["--tables", "lazy"], "--tables"),
                                        (["--patterns", "packed,packed"], "--patterns"),
                                        (["--max-allocs", "0"], "--max-allocs"),
                                        (["--slots-per-cluster", "100"], "--slots-per-cluster")])
def test_bad_input_exit_2_nothing_created(tmp_path, capsys, args, word) -> None:
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["memory", "--out", str(out), *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and word in err
    assert list(tmp_path.iterdir()) == []
