"""Atomic writes: a result appears whole or not at all, and nothing is left beside it."""

from __future__ import annotations

import pytest

from exo2ego_edge.atomic import atomic_dir, atomic_file


@pytest.mark.parametrize("old_is_folder", [True, False])
def test_overwrite_replaces_a_folder_or_a_file_and_leaves_nothing_beside_it(tmp_path, old_is_folder):
    out = tmp_path / "out"
    if old_is_folder:
        out.mkdir()
        (out / "old.txt").write_text("old")
    else:
        out.write_text("old")
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in out.iterdir()] == ["new.txt"]


def test_a_failed_block_keeps_the_old_result_and_removes_its_temp(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "f.txt") as f:
        f.write("half")
        raise RuntimeError("crash")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "old.txt").read_text() == "old"


def test_an_existing_result_needs_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError), atomic_dir(tmp_path / "out"):
        pass
