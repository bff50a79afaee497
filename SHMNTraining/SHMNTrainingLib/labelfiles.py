"""Writing a case's labels into the dataset: masks, kept previous versions, manifest update.

No Slicer here: masks arrive as SimpleITK images already on the image's grid (casescene.py puts
them there), so this file only deals with files:

- each mask is written to ``labels/<kind>/<id>.nii.gz`` under a temporary name and renamed into
  place (a crash leaves the old file or the new one, never half of one);
- the file it replaces (the manifest's old path and/or the target itself) is first copied to
  ``labels/.history/<kind>/<id>.<UTC time>.nii.gz``: nothing is ever overwritten without a copy;
- the manifest is re-read from disk (another save may have happened since it was opened), the
  case updated and the manifest written atomically, last, so it only names files that exist.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field, replace
from pathlib import Path

import SimpleITK as sitk

from .dataset import LABEL_FOLDER, LABEL_KINDS, LABEL_SUFFIX, labelPath
from .engineaccess import shmn

HISTORY_FOLDER = f"{LABEL_FOLDER}/.history"
KEEP = object()  # "leave the MACS group as it is"
FILE_MODE = 0o644  # temporary files are private (mkstemp); a saved label is an ordinary dataset file


def utcStamp(now: float | None = None) -> str:
    """UTC time down to the microsecond: history files sort in the order they were saved."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


def historyPath(root: Path, kind: str, caseId: str, stamp: str) -> Path:
    """A free history file name for one previous version (``-2``, ``-3``... when saved twice a second)."""
    folder = Path(root) / HISTORY_FOLDER / kind
    candidate, n = folder / f"{caseId}.{stamp}{LABEL_SUFFIX}", 2
    while candidate.exists():
        candidate, n = folder / f"{caseId}.{stamp}-{n}{LABEL_SUFFIX}", n + 1
    return candidate


def keepCopy(source: Path, root: Path, kind: str, caseId: str, stamp: str) -> Path:
    target = historyPath(root, kind, caseId, stamp)
    shmn("io.atomic").ensure_writable_dir(target.parent)
    with shmn("io.atomic").atomic_path(target, overwrite=False) as tmp:
        shutil.copy2(source, tmp)
    return target


def writeMask(mask: sitk.Image, path: Path) -> Path:
    """A uint8 0/1 mask, gzip-compressed NIfTI, renamed into place when complete."""
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    with shmn("io.atomic").atomic_path(path) as tmp:
        sitk.WriteImage(mask, str(tmp), True)
        os.chmod(tmp, FILE_MODE)
    return Path(path)


@dataclass
class SavedLabels:
    """What one save did (shown in the log and checked by the tests)."""

    caseId: str
    written: dict[str, Path] = field(default_factory=dict)  # kind -> new mask file
    kept: list[Path] = field(default_factory=list)  # previous versions copied to the history
    macs: str | None = None
    manifest: object = None  # the manifest as saved


def saveLabels(datasetPath, caseId: str, masks: dict[str, sitk.Image], macs=KEEP, now: float | None = None) -> SavedLabels:
    """Write ``masks`` (kind -> mask on the image's grid) and the MACS group of one case (see module docstring)."""
    manifest_module = shmn("io.manifest")
    unknown = set(masks) - set(LABEL_KINDS)
    if unknown:
        raise ValueError(f"unknown label kinds {sorted(unknown)}; expected {LABEL_KINDS}")
    if macs is not KEEP and macs is not None and macs not in manifest_module.MACS_GROUPS:
        raise ValueError(f"MACS group {macs!r}: expected one of {manifest_module.MACS_GROUPS} or None")
    manifest = manifest_module.load_manifest(datasetPath, check_files=False)
    case = manifest.case(caseId)
    root = manifest.root
    stamp = utcStamp(now)
    result = SavedLabels(caseId)
    changes = {}
    for kind, mask in masks.items():
        relative = labelPath(kind, caseId)
        target = root / relative
        previous = {root / getattr(case, kind)} if case.has(kind) else set()
        previous.add(target)
        for old in sorted(p for p in previous if p.is_file()):
            result.kept.append(keepCopy(old, root, kind, caseId, stamp))
        result.written[kind] = writeMask(mask, target)
        changes[kind] = relative
    if macs is not KEEP:
        changes["macs"] = macs
    result.macs = changes.get("macs", case.macs)
    updated = manifest.with_case(replace(case, **changes))
    updated.save()
    result.manifest = updated
    return result
