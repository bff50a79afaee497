"""One synthetic case, from its seed to a FLAIR image and masks on a clinical grid plus its statistics.

Each case draws from its own generator, ``np.random.default_rng([seed, dataset_code, index])``, so
a case is the same whatever the cohort's size, and cases can be built in any order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.synthesis.acquisition import (
    SizeProfile, acquire, affine_part, as_image, clinical_grid, draw_plan, mask_from_fraction, subject_transform,
)
from shmn.synthesis.atlas import ReferenceSpace
from shmn.synthesis.contrast import draw_contrast, render_flair, scanner_image
from shmn.synthesis.subject import draw_severity, make_pathology
from shmn.io.volume_io import write_volume

DATASET_CODES = {"pvl": 1, "macs": 2}


@dataclass
class SyntheticCase:
    id: str
    dataset: str
    image: sitk.Image  # int16 FLAIR on the clinical grid
    pvl: sitk.Image  # uint8 mask, same grid
    ventricles: sitk.Image  # uint8 mask, same grid
    stats: dict
    flip_draw: float  # uniform draw that decides whether this case's MACS label is flipped (label noise)


def case_rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, DATASET_CODES[dataset], index])


def make_case(ref: ReferenceSpace, profile: SizeProfile, seed: int, dataset: str, index: int, case_id: str) -> SyntheticCase:
    rng = case_rng(seed, dataset, index)
    # Scalars first, arrays after: a case's settings do not depend on how its arrays consumed the generator.
    severity = draw_severity(rng)
    flip_draw = float(rng.random())
    contrast = draw_contrast(rng)
    plan = draw_plan(rng, profile)

    pathology = make_pathology(rng, ref, severity)
    flair = render_flair(rng, ref, pathology, contrast)
    transform = subject_transform(rng, plan, ref)
    grid = clinical_grid(plan, ref)
    image, lesion_fraction, ventricle_fraction = acquire(
        ref, transform, affine_part(plan, ref), grid,
        [(flair, None), (pathology.lesions, ref.pathology_box), (pathology.ventricles, ref.pathology_box)],
        margin_mm=plan.deformation_mm,
    )
    pvl = mask_from_fraction(lesion_fraction)
    ventricles = mask_from_fraction(ventricle_fraction)
    stored = scanner_image(rng, image, contrast)

    voxel_ml = float(np.prod(grid.GetSpacing())) / 1000.0
    stats = {
        "lesion_count": int(ndimage.label(pvl, structure=np.ones((3, 3, 3)))[1]),  # 26-connected components
        "lesion_volume_ml": round(float(pvl.sum()) * voxel_ml, 3),
        "ventricle_volume_ml": round(float(ventricles.sum()) * voxel_ml, 3),
        "size": [int(n) for n in grid.GetSize()],
        **plan.summary(),
        **pathology.stats,
        "contrast": contrast.as_dict(),
    }
    return SyntheticCase(id=case_id, dataset=dataset, image=as_image(stored, grid), pvl=as_image(pvl, grid),
                         ventricles=as_image(ventricles, grid), stats=stats, flip_draw=flip_draw)


def write_case(dataset_folder: Path, case: SyntheticCase) -> None:
    """Image and its labels where the dataset layout wants them (hidden ground truth under groundtruth/)."""
    write_volume(case.image, dataset_folder / "images" / f"{case.id}.nii.gz")
    pvl_folder = ("labels" if case.dataset == "pvl" else "groundtruth") + "/pvl"
    write_volume(case.pvl, dataset_folder / pvl_folder / f"{case.id}.nii.gz")
    write_volume(case.ventricles, dataset_folder / "groundtruth" / "ventricles" / f"{case.id}.nii.gz")
