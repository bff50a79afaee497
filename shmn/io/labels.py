"""A dataset case's label files: the one ``labels/<kind>/<id>.nii.gz`` layout, and saving with history.

Saving a case's labels (SHMN Training's Save, or any script) follows three rules:

- each mask is written to ``labels/<kind>/<id>.nii.gz`` under a temporary name and renamed into
  place (a crash leaves the old file or the new one, never half of one);
- the file it replaces (the manifest's old path and/or the target itself) is first copied to
  ``labels/.history/<kind>/<id>.<UTC time>.nii.gz``: nothing is ever overwritten without a copy;
- the manifest is re-read from disk (another save may have happened since it was opened), the
  case updated and the manifest written atomically, last, so it only names files that exist.

Masks arrive as SimpleITK images already on the case image's grid (the caller puts them there).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import SimpleITK as sitk

from shmn.contract import LABEL_KINDS, MACS_GROUPS
from shmn.errors import ShmnError
from shmn.io.atomic import atomic_path, ensure_writable_dir
from shmn.io.manifest import load_manifest

LABELS_FOLDER = "labels"
HISTORY_FOLDER = f"{LABELS_FOLDER}/.history"
LABEL_SUFFIX = ".nii.gz"
KEEP = object()  # "leave the MACS group as it is"
FILE_MODE = 0o644  # a saved label is an ordinary dataset file, whatever the umask of the GUI


def label_path(kind: str, case_id: str) -> str:
    """Where a case's mask of ``kind`` lives, relative to the dataset folder (``labels/pvl/c01.nii.gz``)."""
    if kind not in LABEL_KINDS:
        raise ShmnError(f"label kind {kind!r}: expected one of {', '.join(LABEL_KINDS)}")
    return f"{LABELS_FOLDER}/{kind}/{case_id}{LABEL_SUFFIX}"


def existing_labels(root: Path, case_id: str) -> dict[str, str]:
    """kind -> relative path of the masks already at their place for ``case_id``."""
    return {kind: label_path(kind, case_id) for kind in LABEL_KINDS if (Path(root) / label_path(kind, case_id)).is_file()}


def utc_stamp(now: float | None = None) -> str:
    """UTC time down to the microsecond: history files sort in the order they were saved."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


def history_path(root: Path, kind: str, case_id: str, stamp: str) -> Path:
    """A free history file name for one previous version (``-2``, ``-3``... when saved twice a second)."""
    folder = Path(root) / HISTORY_FOLDER / kind
    candidate, n = folder / f"{case_id}.{stamp}{LABEL_SUFFIX}", 2
    while candidate.exists():
        candidate, n = folder / f"{case_id}.{stamp}-{n}{LABEL_SUFFIX}", n + 1
    return candidate


def keep_copy(source: Path, root: Path, kind: str, case_id: str, stamp: str) -> Path:
    target = history_path(root, kind, case_id, stamp)
    ensure_writable_dir(target.parent)
    with atomic_path(target, overwrite=False) as tmp:
        shutil.copy2(source, tmp)
    return target


def write_mask(mask: sitk.Image, path: Path) -> Path:
    """A uint8 0/1 mask, gzip-compressed NIfTI, renamed into place when complete."""
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    with atomic_path(path) as tmp:
        sitk.WriteImage(mask, str(tmp), True)
        os.chmod(tmp, FILE_MODE)
    return Path(path)


@dataclass
class SavedLabels:
    """What one save did (for the log and the tests)."""

    case_id: str
    written: dict[str, Path] = field(default_factory=dict)  # kind -> new mask file
    kept: list[Path] = field(default_factory=list)  # previous versions copied to the history
    macs: str | None = None
    manifest: object = None  # the manifest as saved (shmn.io.manifest.Manifest)


def save_labels(dataset, case_id: str, masks: dict[str, sitk.Image], macs=KEEP, now: float | None = None) -> SavedLabels:
    """Write ``masks`` (kind -> mask on the image's grid) and the MACS group of one case (module docstring)."""
    unknown = set(masks) - set(LABEL_KINDS)
    if unknown:
        raise ShmnError(f"unknown label kinds {sorted(unknown)}; expected {', '.join(LABEL_KINDS)}")
    if macs is not KEEP and macs is not None and macs not in MACS_GROUPS:
        raise ShmnError(f"MACS group {macs!r}: expected one of {', '.join(MACS_GROUPS)} or none")
    manifest = load_manifest(dataset, check_files=False)
    case = manifest.case(case_id)
    root = manifest.root
    stamp = utc_stamp(now)
    result = SavedLabels(case_id)
    changes = {}
    for kind, mask in masks.items():
        relative = label_path(kind, case_id)
        target = root / relative
        previous = {root / getattr(case, kind)} if case.has(kind) else set()
        previous.add(target)
        for old in sorted(p for p in previous if p.is_file()):
            result.kept.append(keep_copy(old, root, kind, case_id, stamp))
        result.written[kind] = write_mask(mask, target)
        changes[kind] = relative
    if macs is not KEEP:
        changes["macs"] = macs
    result.macs = changes.get("macs", case.macs)
    updated = manifest.with_case(replace(case, **changes))
    updated.save()
    result.manifest = updated
    return result
