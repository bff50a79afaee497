"""The dataset manifest: the one format that the phantom writes and that training, evaluation
and the SHMNTraining module read and update.

A dataset is a folder with ``manifest.json``::

    {
      "format": "shmn-manifest/1",
      "name": "macs",                      # free text
      "description": "...",
      "synthetic": true,                   # phantom data says so
      "cases": [
        {
          "id": "macs_007",                # unique within the manifest, file-name safe
          "image": "images/macs_007.nii.gz",  # FLAIR, path relative to the manifest's folder
          "pvl": null | "labels/pvl/....nii.gz",         # PVL mask on the image's grid
          "ventricles": null | "labels/ventricles/....nii.gz",
          "macs": null | "mild" | "severe",  # MACS I-II = mild, III-V = severe
          "split": "train" | "val" | "test"  # the target task's 70/10/20 split
        }
      ]
    }

A missing or null label means "not labelled": the loss term for it is skipped. Lesion centres are
not stored: they are derived from the PVL mask (connected components -> centre of mass).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from shmn.contract import MACS_GROUPS
from shmn.io.atomic import write_json
from shmn.errors import ShmnError

FORMAT = "shmn-manifest/1"
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val", "test")
LABEL_KEYS = ("pvl", "ventricles", "macs")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Case:
    id: str
    image: str
    pvl: str | None = None
    ventricles: str | None = None
    macs: str | None = None
    split: str = "train"

    def has(self, label: str) -> bool:
        return getattr(self, label) is not None


@dataclass
class Manifest:
    root: Path
    cases: list[Case]
    name: str = ""
    description: str = ""
    synthetic: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    def resolve(self, relative: str | None) -> Path | None:
        return None if relative is None else (self.root / relative)

    def case(self, case_id: str) -> Case:
        for case in self.cases:
            if case.id == case_id:
                return case
        raise ShmnError(f"{self.path}: no case with id {case_id!r}")

    def split(self, name: str) -> list[Case]:
        return [c for c in self.cases if c.split == name]

    def with_case(self, updated: Case) -> "Manifest":
        cases = [updated if c.id == updated.id else c for c in self.cases]
        if updated.id not in {c.id for c in self.cases}:
            cases.append(updated)
        return replace(self, cases=cases)

    def to_dict(self) -> dict:
        data = {"format": FORMAT, "name": self.name, "description": self.description, "synthetic": self.synthetic}
        data.update(self.extra)
        data["cases"] = [asdict(c) for c in self.cases]
        return data

    def save(self) -> Path:
        validate(self, check_files=False)
        return write_json(self.path, self.to_dict())


def manifest_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def load_manifest(path: str | os.PathLike, check_files: bool = True) -> Manifest:
    """Read and validate a manifest (a manifest.json file or its folder)."""
    p = manifest_path(path)
    if not p.exists():
        raise ShmnError(f"{p}: no such manifest; expected a dataset folder with {MANIFEST_NAME} (see `shmn phantom`)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShmnError(f"{p}: not valid JSON ({exc}); expected an SHMN manifest") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ShmnError(f"{p}: 'format' is {data.get('format') if isinstance(data, dict) else None!r}; expected {FORMAT!r}")
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list):
        raise ShmnError(f"{p}: 'cases' must be a list of cases")
    known = {f for f in Case.__dataclass_fields__}
    cases = []
    for i, raw in enumerate(raw_cases):
        if not isinstance(raw, dict) or "id" not in raw or "image" not in raw:
            raise ShmnError(f"{p}: case {i} needs at least 'id' and 'image'")
        unknown = set(raw) - known
        if unknown:
            raise ShmnError(f"{p}: case {raw['id']!r} has unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        cases.append(Case(**raw))
    extra = {k: v for k, v in data.items() if k not in ("format", "name", "description", "synthetic", "cases")}
    manifest = Manifest(root=p.parent, cases=cases, name=data.get("name", ""), description=data.get("description", ""),
                        synthetic=bool(data.get("synthetic", False)), extra=extra)
    validate(manifest, check_files=check_files)
    return manifest


def validate(manifest: Manifest, check_files: bool = True) -> None:
    where = manifest.path
    seen: set[str] = set()
    for case in manifest.cases:
        if not isinstance(case.id, str) or not _ID_RE.match(case.id):
            raise ShmnError(f"{where}: case id {case.id!r} must be letters, digits, '.', '_' or '-'")
        if case.id in seen:
            raise ShmnError(f"{where}: case id {case.id!r} appears twice")
        seen.add(case.id)
        if case.split not in SPLITS:
            raise ShmnError(f"{where}: case {case.id!r} has split {case.split!r}; expected one of {', '.join(SPLITS)}")
        if case.macs is not None and case.macs not in MACS_GROUPS:
            raise ShmnError(f"{where}: case {case.id!r} has macs {case.macs!r}; expected 'mild', 'severe' or null")
        for key in ("image", "pvl", "ventricles"):
            rel = getattr(case, key)
            if rel is None:
                continue
            if not isinstance(rel, str) or os.path.isabs(rel) or Path(rel).is_absolute():
                raise ShmnError(f"{where}: case {case.id!r} {key} path {rel!r} must be relative to the manifest's folder")
            if not inside_dataset(rel):
                # "../../elsewhere/x.nii.gz" would train on (or let a label save overwrite) a file outside the dataset.
                raise ShmnError(f"{where}: case {case.id!r} {key} path {rel!r} leaves the dataset folder; expected a path inside it")
            if check_files and not (manifest.root / rel).exists():
                raise ShmnError(f"{where}: case {case.id!r} {key} file {rel} does not exist")


def inside_dataset(relative: str) -> bool:
    """Whether a manifest path stays inside the dataset folder once "." and ".." are applied (both "/"
    and "\\" count as separators, so a manifest written on Windows is judged the same). A symbolic link
    inside the folder may still point elsewhere: that is the dataset owner's choice, not the manifest's."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            return False
    return depth > 0


def label_status(manifest: Manifest) -> dict[str, int]:
    """How many cases carry each label (for listings and the SHMNTraining case table)."""
    return {key: sum(c.has(key) for c in manifest.cases) for key in LABEL_KEYS} | {"cases": len(manifest.cases)}
