"""The lesion refiner's training bank: domain-randomised 1 mm samples, cut to the ROI, with their stage-1 prior.

One ``.npz`` per sample (``sample-<seed>.npz``), written atomically, so a killed bank build resumes by
skipping the files already there. Each holds, inside the periventricular box (shmn.preprocessing.roi):

- ``image``: the 1 mm FLAIR-like image, z-scored inside the 1 mm template brain (float16);
- ``pvl``: the lesion target (uint8);
- ``prior``: the stage-1 lesion probability: the 1 mm image 2x average-pooled onto the 2 mm grid,
  z-scored inside the 2 mm brain, through the 2 mm SHMN, resampled linearly back to 1 mm (float16).

``bank.json`` records what the bank was made with (box, synthesis, stage-1 model sha256); a resumed
build with another stage-1 model or box is refused, since its samples would not be alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shmn.errors import ShmnError
from shmn.io.atomic import atomic_path, write_json
from shmn.preprocessing.preprocess import GRIDS, GridSpec, model_grid_reference
from shmn.preprocessing.roi import RoiBox, coarse_to_roi, pool_to_coarse

BANK_FORMAT = "shmn-lesion-refiner-bank/1"
BANK_FILE = "bank.json"
SEED_OFFSET = 700_000  # bank seeds: SEED_OFFSET + index (no other synthetic set uses this range)


@dataclass(frozen=True)
class BankSpec:
    box: RoiBox                 # on the fine grid
    coarse: GridSpec            # the stage-1 model's grid
    anatomies: tuple[str, ...] = ("mni152",)  # ICBM 2009 stays held out for the OOD cohort
    stage1_sha256: str = ""

    def describe(self) -> dict:
        return {"format": BANK_FORMAT, "roi": self.box.to_card(), "coarse_grid": {"spacing_mm": self.coarse.spacing_mm, "size": list(self.coarse.size)},
                "anatomies": list(self.anatomies), "stage1_sha256": self.stage1_sha256,
                "synthesis": "shmn.synthesis.randomised.sampler.synthesise(SEED_OFFSET + index, fine grid, SynthesisConfig(anatomies))"}


def sample_path(folder: Path, seed: int) -> Path:
    return Path(folder) / f"sample-{seed}.npz"


def stage1_prior(image: np.ndarray, brain: np.ndarray, spec: BankSpec, stage1) -> np.ndarray:
    """The cascade's prior for a 1 mm image: ``stage1`` (array -> 2 mm lesion probability) on the pooled image, back at 1 mm in the box."""
    from shmn.synthesis.randomised.anatomies import template_brain

    coarse_brain = template_brain(spec.coarse)
    probability = stage1(pool_to_coarse(image, brain, coarse_brain))
    return coarse_to_roi(np.where(coarse_brain, probability, 0.0), model_grid_reference(spec.coarse), spec.box)


def make_sample(seed: int, spec: BankSpec, stage1) -> dict[str, np.ndarray]:
    from shmn.synthesis.randomised.sampler import SynthesisConfig, synthesise

    sample = synthesise(seed, spec.box.grid, SynthesisConfig(anatomies=spec.anatomies))
    roi = spec.box.slices
    return {
        "image": sample.image[roi].astype(np.float16),
        "pvl": sample.pvl[roi].astype(np.uint8),
        "prior": stage1_prior(sample.image, sample.brain, spec, stage1).astype(np.float16),
        "seed": np.int64(seed),
        "pvl_voxels_outside_roi": np.int64(int(sample.pvl.sum()) - int(sample.pvl[roi].sum())),
    }


def write_sample(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)


def _check_bank(folder: Path, spec: BankSpec) -> None:
    described = spec.describe()
    path = folder / BANK_FILE
    if path.exists():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ShmnError(f"{path}: damaged bank description ({exc}); remove the bank folder and build it again") from None
        if existing != described:
            raise ShmnError(f"{path}: this bank was made with another box, grid or stage-1 model; use a new --work folder")
    else:
        write_json(path, described)


def build_bank(folder: str | Path, count: int, spec: BankSpec, stage1, progress=None) -> list[Path]:
    """Make samples 0..count-1 (skipping those already written); returns all their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _check_bank(folder, spec)
    seeds = [SEED_OFFSET + index for index in range(count)]
    todo = [seed for seed in seeds if not sample_path(folder, seed).exists()]
    for seed in (progress(todo) if progress else todo):
        write_sample(sample_path(folder, seed), make_sample(seed, spec, stage1))
    return [sample_path(folder, seed) for seed in seeds]


def read_sample(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as data:
            return {key: data[key] for key in ("image", "pvl", "prior")}
    except (OSError, ValueError, KeyError) as exc:
        raise ShmnError(f"{path}: damaged bank sample ({type(exc).__name__}: {exc}); delete it and resume the bank") from None


def shipped_stage1(model=None):
    """(predict function array -> 2 mm lesion probability, sha256) of the registry's model (default: the default)."""
    from shmn.inference.engine import InferenceOptions, run_inference
    from shmn.inference.predict import load_predictor

    predictor = load_predictor(model)

    def predict(image: np.ndarray) -> np.ndarray:
        return run_inference(predictor.network, image, InferenceOptions(device="cpu")).pvl_probability

    return predict, predictor.info.sha256


def default_spec(stage1_sha256: str, box: RoiBox | None = None) -> BankSpec:
    from shmn.preprocessing.roi import template_roi

    return BankSpec(box or template_roi(GRIDS["paper"]), GRIDS["fast"], stage1_sha256=stage1_sha256)

