"""Claiming an output folder before working on it, so two writers never lose each other's result.

``OUT/<case>/`` is built in a hidden ``OUT/.<case>.<random>.part`` folder and renamed into place at the
end (shmn.io.atomic.atomic_dir). Checking "does OUT/<case> exist?" before minutes of work and
replacing after it lets a second run (two scans called ``flair.nii.gz`` from different folders, two
Slicer users on one output folder) finish in between: both exit 0 and one result is gone. So a
writer first takes ``OUT/.<case>.lock`` with an operating-system lock (``flock``; ``msvcrt.locking`` on
Windows) and holds it until its folder is in place. The kernel drops the lock when the process dies,
even by SIGKILL, so a crashed run never blocks the next one; that next one also removes the crashed
run's half-built ``.part`` folders (nobody else can be using them while the lock is held).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

from shmn.errors import ShmnError

# Temporary files that are this old are leftovers of a killed run, not a concurrent writer's.
STALE_TEMP_SECONDS = 3600


def lock_path(out_dir: Path, case: str) -> Path:
    return Path(out_dir) / f".{case}.lock"


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


@contextlib.contextmanager
def claim_case(out_dir: str | os.PathLike, case: str) -> Iterator[Path]:
    """Hold ``OUT/.<case>.lock`` for the duration; another live holder makes this raise ShmnError.

    Yields the case's final folder ``OUT/<case>``. Stale ``.part``/``.old`` folders of the case are
    removed once the lock is held.
    """
    out_dir = Path(out_dir)
    busy = ShmnError(
        f"{out_dir / case}: another shmn run is writing this case right now; "
        "wait for it, or give this input another name or another output folder"
    )
    with exclusive(lock_path(out_dir, case), busy):
        remove_stale_parts(out_dir, case)
        yield out_dir / case


@contextlib.contextmanager
def exclusive(path: Path, busy: ShmnError, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an operating-system lock on ``path`` (created if needed, removed at the end); raise
    ``busy`` when another process still holds it after ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ShmnError(f"{path}: cannot create a lock file ({exc.strerror}); check the folder's permissions") from None
        if not _try_lock(fd):
            os.close(fd)
            if time.monotonic() >= deadline:
                raise busy
            time.sleep(0.05)
            continue
        # The previous holder may have removed the file between our open and our lock: then we hold
        # a lock on a file nobody else can find, so start again on the current one.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # removed while still locked, so a waiting writer re-opens a fresh file
        os.close(fd)


def remove_stale_parts(out_dir: Path, case: str) -> list[Path]:
    """Remove ``OUT/.<case>.<random>.part`` and ``.old`` folders left by a killed run (call with the lock held)."""
    # 16 hex digits since shmn.io.atomic names its temporaries itself; 8 characters from earlier versions' mkdtemp.
    pattern = re.compile(re.escape(f".{case}.") + r"([A-Za-z0-9_]{8}|[0-9a-f]{16})\.(part|old)")
    removed = []
    for entry in Path(out_dir).iterdir():
        if pattern.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def remove_stale_temp_files(folder: Path, name: str, max_age_s: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove ``.<name>.*.part*`` files (shmn.io.atomic.atomic_path's temporaries) older than ``max_age_s``.

    Younger ones may belong to a writer that is running now; a killed writer's are removed next time.
    """
    removed = []
    now = time.time()
    prefix = f".{name}."
    for entry in Path(folder).iterdir():
        if entry.name.startswith(prefix) and ".part" in entry.name[len(prefix):] and entry.is_file():
            try:
                if now - entry.stat().st_mtime > max_age_s:
                    entry.unlink()
                    removed.append(entry)
            except OSError:
                pass
    return removed
