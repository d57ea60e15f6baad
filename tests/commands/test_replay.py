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


@pytest.mark.parametrize("setting,needle", [("bogus=1", "'bogus'"), ("cpus=x", "'x'"),
                                            ("alloc_table=zzz", "'zzz'"), ("noequals", "noequals")])
def test_a_bad_set_is_one_line_naming_it(setting, needle, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["replay", "w1-t5", "--set", setting])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("shmswap: error: --set") and needle in err[0], err


def _recording(tmp_path, capsys) -> str:
    path = tmp_path / "s.race"
    assert main(["run", "--deterministic", "--cpus", "2", "--size", "256K", "--slots-per-cluster", "8", "--ops", "200",
                 "--quiet", "--record", str(path)]) == 0
    capsys.readouterr()
    return path.read_text()


def test_an_unknown_version_and_a_truncated_recording_are_refused(tmp_path, capsys) -> None:
    text = _recording(tmp_path, capsys)
    lines = text.splitlines(keepends=True)
    assert lines[0] == "# shmswap-script 2\n" and lines[-1] == "end 2\n"
    for name, body, needle in [
        ("v99.race", "# shmswap-script 99\n" + "".join(lines[1:]), "unknown script version '99'"),
        ("cut.race", "".join(lines[:-3]), "truncated"),               # cut before its expectations
        ("cut1.race", "".join(lines[:-2]), "truncated"),              # one expectation of two
        ("edit.race", "".join(lines[:-3] + lines[-1:]), "counts 2 expect lines"),
    ]:
        (tmp_path / name).write_text(body)
        with pytest.raises(SystemExit) as e:
            main(["replay", str(tmp_path / name)])
        assert e.value.code == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], (name, err)
    assert main(["replay", str(tmp_path / "s.race")]) == 0          # the whole one replays
    assert "every expectation held" in capsys.readouterr().out


def test_version_1_scripts_without_an_end_line_still_replay(capsys) -> None:
    src = resources.files("shmswap.runner").joinpath("races", "w1-t5.race").read_text()
    assert src.startswith("# shmswap-script 1\n") and "\nend " not in src
    assert main(["replay", "w1-t5"]) == 0
