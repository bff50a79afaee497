"""Atomic writes: outputs appear whole or not at all, and nothing is overwritten silently."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from shmn.errors import ShmnError


def _suffix(path: Path) -> str:
    # Keep double extensions (".nii.gz", ".seg.nrrd") so writers that choose a format by name work.
    name = path.name
    for double in (".nii.gz", ".seg.nrrd", ".tar.gz"):
        if name.endswith(double):
            return double
    return path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise ShmnError(f"{target}: already exists; choose another output or remove it first")
    directory = target.parent if str(target.parent) else Path(".")
    ensure_writable_dir(directory)
    # The name is chosen before the file exists and the file is created inside the try: a SIGTERM
    # (Slicer's Cancel) landing anywhere in between still reaches the finally that removes it.
    tmp_path = directory / _temporary_name(target, ".part" + _suffix(target))
    umask = _current_umask()
    try:
        os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies
        yield tmp_path
        # After writing: some writers (safetensors) replace the file with a new private one.
        os.chmod(tmp_path, 0o666 & ~umask)
        if overwrite:
            os.replace(tmp_path, target)
        else:
            _link_new(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _temporary_name(target: Path, suffix: str) -> str:
    # 64 random bits: two writers (or a leftover of a killed run) never meet on one name.
    return f".{target.name}.{secrets.token_hex(8)}{suffix}"


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _link_new(tmp: Path, target: Path) -> None:
    """Put ``tmp`` in place only if ``target`` still does not exist: a hard link fails atomically when
    it does, where "check, then replace" would overwrite a file written in between."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise ShmnError(f"{target}: already exists; choose another output or remove it first") from None
    except OSError:  # file systems without hard links: the check-then-replace is the best there is
        if target.exists():
            raise ShmnError(f"{target}: already exists; choose another output or remove it first") from None
        os.replace(tmp, target)


def write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: object, overwrite: bool = True) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n", overwrite=overwrite)


def write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def ensure_writable_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed; raise one clear error when it cannot be written."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ShmnError(f"{directory}: output path exists and is not a folder; choose a folder with -o")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ShmnError(f"{directory}: cannot create output folder ({exc.strerror})") from None
    if not directory.is_dir():
        raise ShmnError(f"{directory}: output path exists and is not a folder")
    # Probe with a real file: os.access says yes to root even on a read-only file system.
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError:
        raise ShmnError(f"{directory}: output folder is not writable; choose another with -o") from None
    return directory


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path``, then rename it into place.

    With ``overwrite`` an existing folder is replaced only after the new one is complete (the old
    one is moved aside first and removed last); without it an existing folder is an error.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise ShmnError(f"{target}: already exists; use --overwrite or choose another output folder")
    ensure_writable_dir(target.parent)
    # As in atomic_path, names first and folders created inside the try, so that a SIGTERM at any
    # point leaves neither a .part folder nor the previous output moved aside.
    tmp = target.parent / _temporary_name(target, ".part")
    old = target.parent / _temporary_name(target, ".old")
    try:
        os.mkdir(tmp)
        os.chmod(tmp, 0o755)  # an ordinary output folder, whatever the umask
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        if old.exists() and not target.exists():  # interrupted between the two renames: put it back
            os.replace(old, target)
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
