"""On-disk cache of preprocessed training cases, so that registration runs once per case, not per epoch.

Each case gives up to three files in the cache folder (compressed npz, written atomically):

- ``<case>.<key>.image.npz``: the model-grid image, the brain mask and the MNI -> native affine.
  The key hashes the image file (absolute path, size, modification time), the PreprocessConfig
  and the cache format, so a changed image or a changed preprocessing option means a new entry.
- ``<case>.<key>.pvl.npz``: the PVL mask on the model grid and its lesion-centre density map;
  key = image key + the mask file (path, size, mtime) + the density sigma.
- ``<case>.<key>.ventricles.npz``: the ventricle mask on the model grid.

Labels have their own keys because annotators edit them (SHMNTraining): a corrected mask is
resampled again through the stored affine, without redoing the registration. Loading uses
``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterable

import numpy as np
import SimpleITK as sitk

from shmn import __version__
from shmn.io.atomic import atomic_path, ensure_writable_dir
from shmn.errors import ShmnError
from shmn.measures.lesions import density_map
from shmn.preprocessing.preprocess import PreprocessConfig, PreprocessedCase, model_grid_reference, preprocess, to_model_grid
from shmn.io.volume_io import read_volume

CACHE_FORMAT = 1  # bump when what a cache entry means changes
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class CacheStats:
    hits: int = 0  # entries found (image, pvl and ventricle entries counted separately)
    misses: int = 0  # entries computed now
    registrations: int = 0  # images preprocessed (registered) now
    seconds: float = 0.0
    warnings: dict[str, str] = field(default_factory=dict)  # case id -> registration warning

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _file_stamp(path: Path) -> list:
    try:
        stat = path.stat()
    except OSError as exc:
        raise ShmnError(f"{path}: cannot read ({exc.strerror}); the manifest names a file that is missing") from None
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as stream:
            np.savez_compressed(stream, **arrays)


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ShmnError(f"{path}: damaged cache entry ({exc}); delete it and run again") from None


def _affine_arrays(transform: sitk.Transform) -> np.ndarray:
    """matrix (9), translation (3), centre (3) of the MNI -> native affine, float64."""
    try:
        affine = sitk.AffineTransform(transform)
    except (RuntimeError, TypeError):
        raise ShmnError(f"preprocessing returned a {transform.GetName()}; the training cache stores affine transforms only") from None
    return np.concatenate([affine.GetMatrix(), affine.GetTranslation(), affine.GetCenter()]).astype(np.float64)


def _affine_from(values: np.ndarray) -> sitk.AffineTransform:
    affine = sitk.AffineTransform(3)
    affine.SetMatrix([float(v) for v in values[:9]])
    affine.SetTranslation([float(v) for v in values[9:12]])
    affine.SetCenter([float(v) for v in values[12:15]])
    return affine


class CaseCache:
    """Preprocessed model-grid arrays of training cases, keyed as the module docstring says."""

    def __init__(self, folder: str | Path, config: PreprocessConfig, density_sigma_mm: float):
        self.folder = Path(folder)
        self.config = config
        self.density_sigma_mm = float(density_sigma_mm)
        self._config_digest = _digest([CACHE_FORMAT, __version__, dataclasses.asdict(config)])

    # Keys and paths -----------------------------------------------------------------------------
    def _image_key(self, image: Path) -> str:
        return _digest([self._config_digest, _file_stamp(image)])

    def image_path(self, case_id: str, image: Path) -> Path:
        return self.folder / f"{_SAFE.sub('_', case_id)}.{self._image_key(image)}.image.npz"

    def label_path(self, case_id: str, image: Path, kind: str, label: Path) -> Path:
        extra = self.density_sigma_mm if kind == "pvl" else None
        key = _digest([self._image_key(image), kind, _file_stamp(label), extra])
        return self.folder / f"{_SAFE.sub('_', case_id)}.{key}.{kind}.npz"

    # Filling ------------------------------------------------------------------------------------
    def prepare(self, samples: Iterable, progress: Callable[[Iterable], Iterable] = iter) -> CacheStats:
        """Make sure every sample's image and exposed labels are cached; return what was done.

        ``samples`` have ``id``, ``image`` and ``pvl``/``ventricles`` paths (None = not used).
        """
        ensure_writable_dir(self.folder)
        stats = CacheStats()
        start = time.perf_counter()
        for sample in progress(list(samples)):
            self._prepare_one(sample, stats)
        stats.seconds = round(time.perf_counter() - start, 3)
        return stats

    def _prepare_one(self, sample, stats: CacheStats) -> None:
        image_entry = self.image_path(sample.id, sample.image)
        case: PreprocessedCase | None = None
        if image_entry.exists():
            stats.hits += 1
        else:
            case = preprocess(read_volume(sample.image), self.config)
            stats.registrations += 1
            stats.misses += 1
            meta = {"quality": case.quality, "params": case.params, "timings_s": case.timings_s}
            _save(
                image_entry,
                image=case.image.astype(np.float32),
                brain=case.brain.astype(bool),
                affine=_affine_arrays(case.transform),
                meta=np.array(json.dumps(meta, default=str)),
                # What the 1 mm lesion path needs of the 2 mm case (shmn.inference.refine): N4's field, the z-score.
                **({"log_bias_field": case.log_bias_field.astype(np.float32)} if case.log_bias_field is not None else {}),
                normalisation=np.array([case.normalisation["mean"], case.normalisation["std"]], np.float64),
            )
            if not case.quality.get("ok", True):
                stats.warnings[sample.id] = str(case.quality.get("warning") or "registration quality is poor")
        for kind in ("pvl", "ventricles"):
            label = getattr(sample, kind)
            if label is None:
                continue
            entry = self.label_path(sample.id, sample.image, kind, label)
            if entry.exists():
                stats.hits += 1
                continue
            case = case or self._rebuild_case(image_entry)
            mask_image = read_volume(label, check_values=False)
            from shmn.training.data import check_label_mask  # data imports this module

            check_label_mask(mask_image, sample.image, label, getattr(sample, "case_id", "") or sample.id)
            mask = (to_model_grid(mask_image, case) > 0).astype(np.uint8)
            if kind == "pvl":
                spacing = (self.config.grid.spacing_mm,) * 3
                _save(entry, mask=mask, density=density_map(mask, spacing, self.density_sigma_mm).astype(np.float32))
            else:
                _save(entry, mask=mask)
            stats.misses += 1

    def preprocessed(self, sample) -> PreprocessedCase:
        """The sample's preprocessed image (from the cache, preprocessing and caching it first when missing):
        what inference needs of it, registration quality included (`shmn evaluate --cache`). The native brain
        mask is not cached: evaluation scores the lesion and ventricle masks only."""
        image_entry = self.image_path(sample.id, sample.image)
        if not image_entry.exists():  # the image only: its labels are read on the native grid by the caller
            self.prepare([SimpleNamespace(id=sample.id, image=sample.image, pvl=None, ventricles=None)])
        case = self._rebuild_case(image_entry)
        case.quality = self.quality(sample)
        data = _load(image_entry)
        if "normalisation" in data:  # entries written before the 1 mm lesion path lack it: that path then stays off
            case.normalisation = dict(zip(("mean", "std"), map(float, data["normalisation"])))
            case.log_bias_field = data.get("log_bias_field")
        return case

    def _rebuild_case(self, image_entry: Path) -> PreprocessedCase:
        """Enough of a PreprocessedCase to resample labels: the grid and the stored affine."""
        data = _load(image_entry)
        return PreprocessedCase(
            image=data["image"], brain=data["brain"], reference=model_grid_reference(self.config.grid),
            transform=_affine_from(data["affine"]), quality={}, params={}, timings_s={},
        )

    # Reading ------------------------------------------------------------------------------------
    def load(self, sample) -> dict[str, np.ndarray]:
        """image (float32), brain (bool) and, for each exposed label, pvl/density or ventricles."""
        image_entry = self.image_path(sample.id, sample.image)
        if not image_entry.exists():
            raise ShmnError(f"{image_entry}: cache entry missing for case {sample.id!r}; the cache was emptied during training")
        data = _load(image_entry)
        arrays = {"image": data["image"], "brain": data["brain"]}
        if sample.pvl is not None:
            pvl = _load(self.label_path(sample.id, sample.image, "pvl", sample.pvl))
            arrays["pvl"], arrays["density"] = pvl["mask"], pvl["density"]
        if sample.ventricles is not None:
            arrays["ventricles"] = _load(self.label_path(sample.id, sample.image, "ventricles", sample.ventricles))["mask"]
        return arrays

    def quality(self, sample) -> dict:
        data = _load(self.image_path(sample.id, sample.image))
        return json.loads(str(data["meta"]))["quality"]
