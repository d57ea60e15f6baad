"""Tests of shmswap.commands.common: results written whole, with the mode open() would give."""

import os

import pytest

from shmswap.commands.common import write_atomically


def test_write_atomically_gives_the_umask_mode_and_leaves_no_temporary(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomically(str(tmp_path / "r.json"), "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").read_text() == "{}"
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_write_atomically_keeps_the_old_file_when_the_write_fails(tmp_path):
    (tmp_path / "r.json").write_text("old")

    class Boom:
        def __str__(self):
            raise RuntimeError("no")

    with pytest.raises(TypeError):
        write_atomically(str(tmp_path / "r.json"), Boom())
    assert (tmp_path / "r.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
