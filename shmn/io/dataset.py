"""An annotator's dataset: a folder of images made into a manifest, and which case has which label.

A dataset is the manifest format (shmn.io.manifest): a folder with ``manifest.json`` naming each
case's image, its PVL and ventricle masks and its MACS group, all optional but the image. A plain
folder of images becomes one with ``init_dataset`` (`shmn dataset init`; nothing is moved):

- images are taken from ``images/`` if the folder has one, else from the folder itself;
- a case's id is its file name without extensions, made file-name safe (and unique);
- masks already at ``labels/<kind>/<id>.nii.gz`` (shmn.io.labels) are picked up;
- splits are 70/10/20 (shmn.io.splits), stratified by which masks a case already has and seeded
  by case id, so re-creating the manifest for the same images gives the same splits.

``case_status`` / ``status_table`` (`shmn dataset status`) say which case has which label, and
flag a mask that the manifest names but the folder lacks.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from shmn.contract import LABEL_KINDS
from shmn.errors import ShmnError
from shmn.io.atomic import write_json
from shmn.io.labels import existing_labels
from shmn.io.manifest import MANIFEST_NAME, Case, Manifest, label_status, load_manifest, manifest_path, validate
from shmn.io.splits import assign_splits
from shmn.io.volume_io import case_name, is_image_path

IMAGES_FOLDER = "images"
SPLIT_SEED = 0
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def safe_case_id(name: str) -> str:
    """A manifest id from a file name (letters, digits, '.', '_', '-'; starts with a letter or digit)."""
    cleaned = _UNSAFE_ID.sub("_", name).lstrip("._-")
    return cleaned or "case"


def image_files(folder: Path) -> list[Path]:
    """The images a plain folder holds (``images/`` first), sorted by name; segmentations are not images."""
    folder = Path(folder)
    source = folder / IMAGES_FOLDER if (folder / IMAGES_FOLDER).is_dir() else folder
    return sorted(p for p in source.iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_image_path(p) and not p.name.endswith(".seg.nrrd"))


def _unique_ids(images: list[Path]) -> list[str]:
    ids, used = [], set()
    for image in images:
        base = safe_case_id(case_name(image))
        case_id, n = base, 2
        while case_id in used:  # "a.nii.gz" and "a.nrrd" in one folder
            case_id, n = f"{base}_{n}", n + 1
        used.add(case_id)
        ids.append(case_id)
    return ids


def split_cases(labels: dict, seed: int = SPLIT_SEED) -> dict:
    """case id -> split for ``{case id: kinds of mask it has}``: the same ids always get the same splits."""
    order = sorted(labels)
    strata = ["+".join(sorted(labels[case_id])) or "unlabelled" for case_id in order]
    return dict(zip(order, assign_splits(strata, np.random.default_rng(seed))))


def manifest_from_image_folder(folder, name: str = "") -> Manifest:
    """A new (unsaved) manifest for a folder of images; ShmnError naming the folder when it holds none."""
    folder = Path(folder).expanduser().absolute()
    if not folder.is_dir():
        raise ShmnError(f"{folder}: no such folder; expected a folder of images (NIfTI, NRRD or MHA)")
    images = image_files(folder)
    if not images:
        raise ShmnError(
            f"{folder}: no images found (NIfTI, NRRD or MHA files in the folder or in its {IMAGES_FOLDER}/ subfolder); "
            f"choose a dataset folder with a {MANIFEST_NAME} or a folder of images"
        )
    ids = _unique_ids(images)
    found = {case_id: existing_labels(folder, case_id) for case_id in ids}
    splits = split_cases({case_id: tuple(found[case_id]) for case_id in ids})
    cases = [
        Case(id=case_id, image=image.relative_to(folder).as_posix(), pvl=found[case_id].get("pvl"),
             ventricles=found[case_id].get("ventricles"), split=splits[case_id])
        for case_id, image in zip(ids, images)
    ]
    return Manifest(root=folder, cases=cases, name=name or folder.name,
                    description=f"Made by `shmn dataset init` from the images in {folder.name}", synthetic=False)


def init_dataset(folder, name: str = "") -> Manifest:
    """Write ``manifest.json`` for a plain folder of images; an existing manifest is never replaced."""
    folder = Path(folder).expanduser().absolute()
    if manifest_path(folder).is_file():
        raise ShmnError(f"{manifest_path(folder)}: the folder is already a dataset; see `shmn dataset status {folder}`")
    manifest = manifest_from_image_folder(folder, name)
    validate(manifest, check_files=True)
    write_json(manifest.path, manifest.to_dict(), overwrite=False)
    return load_manifest(folder)


@dataclass(frozen=True)
class OpenedDataset:
    manifest: Manifest
    created: bool  # True: the manifest was just written for a plain folder of images


def open_dataset(path) -> OpenedDataset:
    """The dataset at ``path`` (folder or manifest.json); a plain image folder gets a manifest first."""
    path = Path(path).expanduser().absolute()  # case paths resolve against it, whatever the working directory
    if manifest_path(path).exists():
        return OpenedDataset(load_manifest(path, check_files=False), created=False)
    if not path.is_dir():
        raise ShmnError(f"{path}: no such dataset folder; choose a folder with images or a {MANIFEST_NAME}")
    return OpenedDataset(init_dataset(path), created=True)


@dataclass(frozen=True)
class CaseStatus:
    """Which labels one case has; ``missing`` lists masks the manifest names but the folder lacks."""

    id: str
    split: str
    pvl: bool
    ventricles: bool
    macs: str | None
    missing: tuple = ()

    def has(self, label: str) -> bool:
        return getattr(self, label) not in (None, False)


def case_status(manifest: Manifest) -> list[CaseStatus]:
    rows = []
    for case in manifest.cases:
        missing = tuple(kind for kind in LABEL_KINDS if case.has(kind) and not (manifest.root / getattr(case, kind)).is_file())
        rows.append(CaseStatus(case.id, case.split, case.has("pvl"), case.has("ventricles"), case.macs, missing))
    return rows


def status_summary(manifest: Manifest) -> str:
    """``12 cases: PVL 6, ventricles 3, MACS 9``."""
    status = label_status(manifest)
    return f"{status['cases']} cases: PVL {status['pvl']}, ventricles {status['ventricles']}, MACS {status['macs']}"


STATUS_COLUMNS = ("case", "split", "PVL", "ventricles", "MACS")


def status_cells(row: CaseStatus) -> tuple:
    def mask(kind: str) -> str:
        return "MISSING FILE" if kind in row.missing else ("yes" if getattr(row, kind) else "-")

    return (row.id, row.split, mask("pvl"), mask("ventricles"), row.macs or "-")


def status_table(manifest: Manifest) -> str:
    """A plain-text table, one row per case, then the summary line."""
    rows = [STATUS_COLUMNS] + [status_cells(row) for row in case_status(manifest)]
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(STATUS_COLUMNS))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines + [status_summary(manifest)])


def status_record(manifest: Manifest) -> dict:
    """The status as JSON: the dataset, the counts, one entry per case."""
    return {"dataset": str(manifest.path), "counts": label_status(manifest),
            "cases": [{**asdict(row), "missing": list(row.missing)} for row in case_status(manifest)]}
