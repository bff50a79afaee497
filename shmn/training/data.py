"""Training data: manifests -> samples (which labels each case shows) -> cached model-grid arrays ->
augmented torch items and batches.

Splits
------
The target tasks (PVL, MACS) follow each case's ``split`` field (the manifests' 70/10/20 split):
"train" cases train, "val" cases validate (loss for ReduceLROnPlateau, best-model choice), "test"
cases are left to ``shmn evaluate``. The localization task uses the PVL masks (lesion centres come
from them).

The auxiliary ventricle task gets its own 9:1 train/validation split (paper section 3) among the
ventricle-labelled cases of the train and val splits, in manifest order (manifests in the order
given), after keeping only the first ``ventricle_label_limit`` of them (SHMN-4*: 10). To keep every
validation image out of training, the val-split cases of that pool are always on the validation
side; when they are fewer than ``ventricle_val_fraction`` of the pool (rounded, at least 1 when the
pool has 2 or more), the last train-split cases of the pool also have their ventricle mask held out:
they still train on their other labels and join the validation set with the ventricle mask only.
Ventricle masks beyond the limit are not used at all (the case trains with pseudo-labels when
``loss.pseudo_labels`` is on). Test-split masks are never touched here.

A sample exposes only the labels of the enabled tasks; cases exposing none are dropped (unless
pseudo-labels are on and the ventricle branch exists: such cases are the semi-supervised part).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset, default_collate

from shmn.training.case_cache import CaseCache
from shmn.training.config import TrainConfig
from shmn.errors import ShmnError
from shmn.io.manifest import Case, Manifest, load_manifest
from shmn.io.volume_io import read_volume

DENSE_KEYS = ("pvl", "density", "ventricles")


@dataclass(frozen=True)
class Sample:
    id: str  # unique across the manifests of a run
    image: Path
    pvl: Path | None = None  # exposed labels only; None = not shown to the loss
    ventricles: Path | None = None
    macs: float | None = None  # 1.0 severe, 0.0 mild
    source: str = ""  # manifest name
    role: str = "train"  # train | val | test | ventricle-val
    case_id: str = ""


@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]
    notes: dict = field(default_factory=dict)


# Values a binary mask may hold: 0/1, or 0/255 as many tools save them.
BINARY_LABEL_VALUES = ({0, 1}, {0, 255})
# How far (in mask voxels) an image corner may lie outside the mask's grid: rounding of origins.
COVERAGE_TOLERANCE_VOXELS = 1.0


def image_grid(path: Path) -> tuple[sitk.Image, tuple[int, ...]]:
    """(a 1-voxel image carrying the image's spacing, origin and direction; its size), from the header
    alone where the format allows: checking a mask's coverage needs no pixel data."""
    from shmn.io.volume_io import quiet_itk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        if Path(path).is_dir():
            raise RuntimeError("a DICOM folder has no single header")
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError:
        image = read_volume(path, check_values=False)  # gives the one-line error for a bad file
        return image, tuple(image.GetSize())
    grid = sitk.Image([1] * reader.GetDimension(), sitk.sitkUInt8)
    grid.SetSpacing(reader.GetSpacing())
    grid.SetOrigin(reader.GetOrigin())
    grid.SetDirection(reader.GetDirection())
    return grid, tuple(reader.GetSize())


def check_label_mask(mask: sitk.Image, image_path: Path, mask_path: Path, case_id: str) -> None:
    """Refuse a training or evaluation mask that is not binary or does not cover its image.

    A mask labelled 0..5 would otherwise train as lesion everywhere it is non-zero, and a mask on a
    grid that misses its image resamples to an empty mask: both silently teach or score the wrong thing.
    """
    values = set(np.unique(sitk.GetArrayViewFromImage(mask)).tolist())
    if not any(values <= allowed for allowed in BINARY_LABEL_VALUES):
        shown = sorted(values)[:8]
        raise ShmnError(
            f"{mask_path}: case {case_id!r} mask holds the values {shown}{' ...' if len(values) > 8 else ''}; "
            "expected a binary mask (0/1 or 0/255)"
        )
    image, size = image_grid(image_path)
    mask_size = np.array(mask.GetSize(), dtype=float)
    low = -0.5 - COVERAGE_TOLERANCE_VOXELS
    high = mask_size - 0.5 + COVERAGE_TOLERANCE_VOXELS
    for corner in np.ndindex(2, 2, 2):
        index = [(n - 1) * c for n, c in zip(size, corner)]
        point = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
        inside = np.array(mask.TransformPhysicalPointToContinuousIndex(point))
        if np.any(inside < low) or np.any(inside > high):
            raise ShmnError(
                f"{mask_path}: case {case_id!r} mask grid does not cover its image {image_path} (image corner "
                f"{tuple(round(v, 1) for v in point)} mm lies outside the mask); expected the mask on the image's grid"
            )


def load_manifests(paths: Sequence[str | Path | Manifest]) -> list[Manifest]:
    """Manifests from paths (Manifest objects pass through); the same manifest twice is an error."""
    if not paths:
        raise ShmnError("--data: no manifest given; pass one or more dataset folders or manifest.json files")
    manifests = [p if isinstance(p, Manifest) else load_manifest(p) for p in paths]
    roots = [m.path.resolve() for m in manifests]
    if len(set(roots)) != len(roots):
        raise ShmnError("--data: the same manifest is given twice")
    return manifests


def _entries(manifests: Sequence[Manifest]) -> list[tuple[Manifest, Case, str]]:
    """(manifest, case, unique id); ids shared by two manifests are prefixed with the manifest name."""
    counts: dict[str, int] = {}
    for m in manifests:
        for c in m.cases:
            counts[c.id] = counts.get(c.id, 0) + 1
    entries = []
    for i, m in enumerate(manifests):
        prefix = m.name or m.root.name or f"data{i}"
        entries.extend((m, c, c.id if counts[c.id] == 1 else f"{prefix}-{c.id}") for c in m.cases)
    return entries


def _sample(manifest: Manifest, case: Case, uid: str, role: str, pvl: bool, ventricles: bool, macs: bool) -> Sample:
    return Sample(
        id=uid,
        image=manifest.resolve(case.image),
        pvl=manifest.resolve(case.pvl) if pvl and case.pvl else None,
        ventricles=manifest.resolve(case.ventricles) if ventricles and case.ventricles else None,
        macs=(1.0 if case.macs == "severe" else 0.0) if macs and case.macs else None,
        source=manifest.name,
        role=role,
        case_id=case.id,
    )


def _labelled(sample: Sample) -> bool:
    return sample.pvl is not None or sample.ventricles is not None or sample.macs is not None


def ventricle_pool(manifests: Sequence[Manifest], limit: int | None, val_fraction: float) -> tuple[list[str], set[str], int]:
    """(pool ids in manifest order, ids whose ventricle mask validates, masks left unused)."""
    labelled = [(c, uid) for _m, c, uid in _entries(manifests) if c.ventricles and c.split in ("train", "val")]
    pool = labelled if limit is None else labelled[:limit]
    n_val = max(1, round(len(pool) * val_fraction)) if len(pool) >= 2 and val_fraction > 0 else 0
    held = {uid for c, uid in pool if c.split == "val"}
    train_side = [uid for c, uid in pool if c.split == "train"]
    missing = max(0, n_val - len(held))
    if missing:
        held.update(train_side[-missing:])
    return [uid for _c, uid in pool], held, len(labelled) - len(pool)


def training_splits(manifests: Sequence[Manifest], cfg: TrainConfig) -> Splits:
    """The training and validation samples of a run (see the module docstring for the rules)."""
    tasks = set(cfg.network.tasks)
    wants_pvl, wants_vent, wants_macs = bool(tasks & {"pvl", "localization"}), "ventricles" in tasks, "macs" in tasks
    pool, held, unused = ventricle_pool(manifests, cfg.ventricle_label_limit, cfg.ventricle_val_fraction) if wants_vent else ([], set(), 0)
    pool_set = set(pool)
    semi_supervised = wants_vent and cfg.loss.pseudo_labels
    train, val = [], []
    for m, c, uid in _entries(manifests):
        if c.split == "train":
            s = _sample(m, c, uid, "train", wants_pvl, uid in pool_set and uid not in held, wants_macs)
            if _labelled(s) or semi_supervised:
                train.append(s)
            if uid in held:
                val.append(_sample(m, c, uid, "ventricle-val", False, True, False))
        elif c.split == "val":
            s = _sample(m, c, uid, "val", wants_pvl, uid in pool_set, wants_macs)
            if _labelled(s):
                val.append(s)
    if not any(_labelled(s) for s in train):
        raise ShmnError(
            f"--data: no train-split case carries a label for the tasks {', '.join(cfg.network.tasks)}; "
            "check the manifests' 'split' fields and labels"
        )
    notes = {
        "train_cases": len(train),
        "val_cases": len(val),
        "train_labels": _count(train),
        "val_labels": _count(val),
        "ventricle_labels": {"pool": len(pool), "validation": len(held), "unused": unused, "limit": cfg.ventricle_label_limit},
        "pseudo_labels": semi_supervised,
        "rule": "targets follow each case's split; ventricle masks 9:1 within train+val (data.py docstring)",
    }
    return Splits(train, val, notes)


def split_samples(manifests: Sequence[Manifest], split: str) -> list[Sample]:
    """Every case of ``split`` with every label it has (evaluation)."""
    return [_sample(m, c, uid, split, True, True, True) for m, c, uid in _entries(manifests) if c.split == split]


def _count(samples: Sequence[Sample]) -> dict[str, int]:
    return {
        "pvl": sum(s.pvl is not None for s in samples),
        "ventricles": sum(s.ventricles is not None for s in samples),
        "macs": sum(s.macs is not None for s in samples),
    }


def describe_training_data(manifests: Sequence[Manifest], splits: Splits) -> dict:
    """The model card's training-data entry."""
    return {
        "synthetic": all(m.synthetic for m in manifests),
        "any_synthetic": any(m.synthetic for m in manifests),
        "manifests": [
            {"name": m.name, "description": m.description, "synthetic": m.synthetic, "cases": len(m.cases)} for m in manifests
        ],
        **{k: v for k, v in splits.notes.items() if k != "rule"},
    }


def augmentation():
    """Joint random transforms of image, brain and masks (MONAI dictionary transforms).

    Left-right flips are safe: PVL is bilateral and the model grid is MNI-aligned (x = last axis).
    Masks use nearest neighbour and the density map bilinear, so labels stay aligned with the image.
    """
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ["image", "brain", "pvl", "density", "ventricles"]
    return Compose(
        [
            RandFlipd(keys, prob=0.5, spatial_axis=2, allow_missing_keys=True),
            RandAffined(
                keys,
                prob=0.5,
                rotate_range=(0.1, 0.1, 0.1),  # radians, about 6 degrees: residual registration error
                scale_range=(0.08, 0.08, 0.08),  # children's brains differ in size after affine registration too
                translate_range=(2, 2, 2),  # voxels
                mode=["bilinear", "nearest", "nearest", "bilinear", "nearest"],
                padding_mode="zeros",
                allow_missing_keys=True,
            ),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandShiftIntensityd("image", offsets=0.1, prob=0.5),
            RandGaussianNoised("image", prob=0.3, std=0.05),
        ]
    )


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one item: a function of (seed, epoch, index) only, so that resumed
    runs and any number of loader workers draw the same transforms."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class ShmnDataset(Dataset):
    """Items are dicts of tensors (the batch contract of shmn.network.losses, without the batch axis).

    Set ``epoch`` before each epoch (the trainer does): augmentation depends on it.
    """

    def __init__(self, samples: Sequence[Sample], cache: CaseCache, augment: bool = False, seed: int = 0):
        self.samples = list(samples)
        self.cache = cache
        self.augment = augmentation() if augment else None
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        arrays = {k: v[None] for k, v in self.cache.load(sample).items()}  # channel axis first
        shape = arrays["image"].shape
        if self.augment is not None:
            self.augment.set_random_state(seed=item_seed(self.seed, self.epoch, index))
            arrays = {k: np.asarray(v) for k, v in self.augment(arrays).items()}
            # Intensity changes and padding must not put signal outside the (moved) brain.
            arrays["image"] = arrays["image"] * (arrays["brain"] > 0.5)
        item = {"image": torch.as_tensor(np.ascontiguousarray(arrays["image"], dtype=np.float32))}
        for key in DENSE_KEYS:
            value = arrays.get(key)
            item[key] = torch.zeros(shape, dtype=torch.float32) if value is None else torch.as_tensor(
                np.ascontiguousarray(value, dtype=np.float32)
            )
        item["has_pvl"] = torch.tensor(sample.pvl is not None)
        item["has_ventricles"] = torch.tensor(sample.ventricles is not None)
        item["has_macs"] = torch.tensor(sample.macs is not None)
        item["macs"] = torch.tensor(0.0 if sample.macs is None else sample.macs, dtype=torch.float32)
        item["id"] = sample.id
        item["index"] = index
        return item


def collate(items: list[dict]) -> dict:
    """Stack items into the batch dict of the contracts: tensors (B, ...), "id" a list of strings."""
    return default_collate(items)
