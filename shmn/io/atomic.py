"""Atomic writes: outputs appear whole or not at all, and nothing is overwritten silently."""

from __future__ import annotations

import contextlib
import json
import os
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
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part" + _suffix(target), dir=directory)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes the file private; outputs get the ordinary permissions the umask allows.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        # Again after writing: some writers (safetensors) replace the file with a new private one.
        os.chmod(tmp_path, 0o666 & ~umask)
        if overwrite:
            os.replace(tmp_path, target)
        else:
            _link_new(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the result is an ordinary output folder
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
