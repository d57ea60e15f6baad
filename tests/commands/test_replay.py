"""``shmswap replay``: the shipped W12 race scripts by name print their outcome, both variants."""

from __future__ import annotations

from importlib import resources

import pytest

from shmswap.cli import main


@pytest.mark.parametrize("name,variant,findings", [
    ("w12-crossdev", "seed", "findings [['cluster 1', 'W12']]"),
    ("w12-crossdev", "merged", "findings none"),
    ("w12-past-end", "seed", "findings [['device 0', 'W12']]"),
    ("w12-past-end", "merged", "findings none"),
])
def test_the_w12_races_replay_with_their_outcome(name, variant, findings, capsys) -> None:
    assert main(["replay", name, "--set", f"alloc_table={variant}"]) == 0
    out = capsys.readouterr().out
    assert f"shmswap replay {name}: W12 (reference §10)" in out
    assert f"violations none, {findings}" in out and "every expectation held" in out


def test_list_names_them_and_a_w12_expectation_that_does_not_hold_fails(tmp_path, capsys) -> None:
    assert main(["replay", "--list"]) == 0
    names = [ln.split()[0] for ln in capsys.readouterr().out.splitlines()]
    assert {"w12-crossdev", "w12-past-end"} <= set(names)
    src = resources.files("shmswap.runner").joinpath("races", "w12-past-end.race").read_text()
    script = tmp_path / "wrong.race"
    script.write_text(src.replace("finding W12 device 0", "finding W12 cluster 1"))
    assert main(["replay", str(script)]) == 1
    assert "FAILED: line 29: expect finding W12 cluster 1: not so" in capsys.readouterr().out
