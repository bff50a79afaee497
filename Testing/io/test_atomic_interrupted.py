"""Atomic writers interrupted at their most awkward moments leave nothing behind and lose nothing.

A SIGTERM (Slicer's Cancel) makes `shmn predict`'s handler raise SystemExit in the main thread between
any two bytecodes. These tests raise it right after the temporary file or folder has been created, and
between the two renames that replace an existing folder: the moments a real signal hits only rarely
(once seen as a flaky killed-batch test under load).
"""

from __future__ import annotations

import os

import pytest

from shmn.io import atomic
from shmn.io.atomic import atomic_dir, atomic_path


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _interrupt_after(monkeypatch, name: str, marker: str = ""):
    """Make ``os.<name>`` do its job, then raise SystemExit as the signal handler would, on its first
    call whose path holds ``marker`` (the writable-folder probe opens an unnamed file first)."""
    real = getattr(os, name)
    seen = []

    def interrupted(*args, **kwargs):
        result = real(*args, **kwargs)
        if marker in os.fspath(args[0]) and not seen:
            seen.append(args)
            raise SystemExit(143)
        return result

    monkeypatch.setattr(atomic.os, name, interrupted)


def test_a_signal_right_after_the_temporary_file_exists_leaves_no_part_file(monkeypatch, tmp_path):
    _interrupt_after(monkeypatch, "open", ".part")
    with pytest.raises(SystemExit):
        with atomic_path(tmp_path / "report.json") as tmp:
            tmp.write_text("{}")
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "report.json").exists()


def test_a_signal_right_after_the_temporary_folder_exists_leaves_no_part_folder(monkeypatch, tmp_path):
    _interrupt_after(monkeypatch, "mkdir", ".part")
    with pytest.raises(SystemExit):
        with atomic_dir(tmp_path / "case1") as tmp:
            (tmp / "pvl.nii.gz").write_bytes(b"x")
    assert _leftovers(tmp_path) == []
    assert not (tmp_path / "case1").exists()


def test_a_signal_between_the_two_renames_puts_the_previous_output_back(monkeypatch, tmp_path):
    (tmp_path / "case1").mkdir()
    (tmp_path / "case1" / "report.json").write_text("previous")
    _interrupt_after(monkeypatch, "replace")  # the first rename moves the old folder aside
    with pytest.raises(SystemExit):
        with atomic_dir(tmp_path / "case1", overwrite=True) as tmp:
            (tmp / "report.json").write_text("new")
    assert (tmp_path / "case1" / "report.json").read_text() == "previous"
    assert _leftovers(tmp_path) == []


def test_an_overwriting_folder_write_replaces_the_old_one_and_cleans_up(tmp_path):
    (tmp_path / "case1").mkdir()
    (tmp_path / "case1" / "stale.txt").write_text("old")
    with atomic_dir(tmp_path / "case1", overwrite=True) as tmp:
        (tmp / "report.json").write_text("new")
    assert sorted(p.name for p in (tmp_path / "case1").iterdir()) == ["report.json"]
    assert _leftovers(tmp_path) == []


def test_written_files_and_folders_get_the_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "d") as tmp:
            pass
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
