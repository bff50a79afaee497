"""The dataset panel's data: open a dataset folder (or make one from a folder of images) and list its cases.

A dataset is the engine's manifest format (``shmn.io.manifest``): a folder with ``manifest.json`` that
names each case's image, its PVL and ventricle masks and its MACS group, all optional but the image.
A plain folder of images becomes a dataset by writing a manifest for it (nothing is moved): images
are taken from ``images/`` if the folder has one, else from the folder itself; masks already at
``labels/pvl/<id>.nii.gz`` / ``labels/ventricles/<id>.nii.gz`` are picked up; splits are drawn
70/10/20 with a fixed seed so that re-creating the manifest gives the same split.
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass
from pathlib import Path

from .engineaccess import shmn

IMAGES_FOLDER = "images"
LABEL_FOLDER = "labels"
LABEL_KINDS = ("pvl", "ventricles")  # mask labels; "macs" is a group in the manifest itself
LABEL_SUFFIX = ".nii.gz"
SPLIT_FRACTIONS = (("test", 0.2), ("val", 0.1))  # the rest is "train" (paper: 70/10/20)
SPLIT_SEED = 0
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


class CaseFilter(enum.Enum):
    """What the case table shows."""

    ALL = "all"
    MISSING_PVL = "pvl"
    MISSING_VENTRICLES = "ventricles"
    MISSING_MACS = "macs"
    MISSING_ANY = "any"

    def label(self) -> str:
        return {
            "all": "All cases",
            "pvl": "Missing PVL mask",
            "ventricles": "Missing ventricle mask",
            "macs": "Missing MACS group",
            "any": "Missing any label",
        }[self.value]

    def accepts(self, case) -> bool:
        if self is CaseFilter.ALL:
            return True
        if self is CaseFilter.MISSING_ANY:
            return not all(case.has(kind) for kind in ("pvl", "ventricles", "macs"))
        return not case.has(self.value)


@dataclass(frozen=True)
class CaseRow:
    """One row of the case table, as shown."""

    id: str
    split: str
    pvl: bool
    ventricles: bool
    macs: str | None
    suggested: str = "-"  # rank and score from `shmn suggest` (suggestions.py), "-" when not ranked

    @property
    def cells(self) -> tuple[str, str, str, str, str, str]:
        mark = {True: "yes", False: "-"}
        return (self.id, self.split, mark[self.pvl], mark[self.ventricles], self.macs or "-", self.suggested)


COLUMNS = ("Case", "Split", "PVL", "Ventricles", "MACS", "Suggested")


def caseRows(manifest, caseFilter: CaseFilter = CaseFilter.ALL, suggestions=None) -> list[CaseRow]:
    """The table's rows; ``suggestions`` (suggestions.Suggestions) fills the 'Suggested' column."""
    return [
        CaseRow(case.id, case.split, case.has("pvl"), case.has("ventricles"), case.macs,
                suggestions.cell(case.id) if suggestions is not None else "-")
        for case in manifest.cases
        if caseFilter.accepts(case)
    ]


def statusText(manifest) -> str:
    """``12 cases: PVL 6, ventricles 3, MACS 9``."""
    status = shmn("io.manifest").label_status(manifest)
    return f"{status['cases']} cases: PVL {status['pvl']}, ventricles {status['ventricles']}, MACS {status['macs']}"


def labelPath(kind: str, caseId: str) -> str:
    """Where a case's mask of ``kind`` lives, relative to the dataset folder."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}; expected one of {LABEL_KINDS}")
    return f"{LABEL_FOLDER}/{kind}/{caseId}{LABEL_SUFFIX}"


def safeCaseId(name: str) -> str:
    """A manifest id from a file name (letters, digits, '.', '_', '-'; starts with a letter or digit)."""
    cleaned = _UNSAFE_ID.sub("_", name).lstrip("._-")
    return cleaned or "case"


def imageFiles(folder: Path) -> list[Path]:
    """The images a plain folder holds (``images/`` first), sorted by name; masks in labels/ are not images."""
    volume_io = shmn("io.volume_io")
    source = folder / IMAGES_FOLDER if (folder / IMAGES_FOLDER).is_dir() else folder
    return sorted(p for p in source.iterdir() if p.is_file() and volume_io.is_image_path(p) and not p.name.endswith(".seg.nrrd"))


def assignSplits(ids: list[str], seed: int = SPLIT_SEED) -> dict[str, str]:
    """Seeded 70/10/20 split of ``ids``: the same ids always get the same splits."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    splits, start = {}, 0
    for split, fraction in SPLIT_FRACTIONS:
        count = int(round(fraction * len(order))) if len(order) >= 3 else 0  # tiny datasets: all training
        for caseId in order[start:start + count]:
            splits[caseId] = split
        start += count
    return {caseId: splits.get(caseId, "train") for caseId in ids}


def manifestFromImageFolder(folder: str | Path, name: str = ""):
    """A new (unsaved) manifest for a folder of images; ShmnError when it holds none."""
    manifest_module = shmn("io.manifest")
    volume_io = shmn("io.volume_io")
    folder = Path(folder)
    images = imageFiles(folder)
    if not images:
        raise shmn("errors").ShmnError(
            f"{folder}: no images found (NIfTI, NRRD or MHA files in the folder or in its {IMAGES_FOLDER}/ subfolder); "
            f"choose a dataset folder with a {manifest_module.MANIFEST_NAME} or a folder of images"
        )
    ids, used = [], set()
    for image in images:
        base = safeCaseId(volume_io.case_name(image))
        caseId, n = base, 2
        while caseId in used:  # "a.nii.gz" and "a.nrrd" in one folder
            caseId, n = f"{base}_{n}", n + 1
        used.add(caseId)
        ids.append(caseId)
    splits = assignSplits(ids)
    cases = []
    for caseId, image in zip(ids, images):
        existing = {kind: labelPath(kind, caseId) for kind in LABEL_KINDS if (folder / labelPath(kind, caseId)).is_file()}
        cases.append(manifest_module.Case(
            id=caseId,
            image=image.relative_to(folder).as_posix(),
            pvl=existing.get("pvl"),
            ventricles=existing.get("ventricles"),
            split=splits[caseId],
        ))
    return manifest_module.Manifest(
        root=folder, cases=cases, name=name or folder.name,
        description=f"Made by SHMN Training from the images in {folder.name}", synthetic=False,
    )


@dataclass(frozen=True)
class OpenedDataset:
    manifest: object  # shmn.io.manifest.Manifest
    created: bool  # True: the manifest was just written for a plain folder of images


def openDataset(path: str | Path) -> OpenedDataset:
    """The dataset at ``path`` (folder or manifest.json); a plain image folder gets a manifest first."""
    manifest_module = shmn("io.manifest")
    path = Path(path).expanduser().absolute()  # case paths resolve against it, whatever the working directory
    if manifest_module.manifest_path(path).exists():
        return OpenedDataset(manifest_module.load_manifest(path), created=False)
    if not path.is_dir():
        raise shmn("errors").ShmnError(f"{path}: no such dataset folder; choose a folder with images or a {manifest_module.MANIFEST_NAME}")
    manifest = manifestFromImageFolder(path)
    manifest.save()
    return OpenedDataset(manifest_module.load_manifest(path), created=True)
