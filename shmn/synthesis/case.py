"""One synthetic case, from its seed to a FLAIR image and masks on a clinical grid plus its statistics.

Each case draws from its own generator, ``np.random.default_rng([seed, dataset_code, index])``, so
a case is the same whatever the cohort's size, and cases can be built in any order.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.io.volume_io import write_volume
from shmn.synthesis.acquisition import (
    CHILD_SCALES,
    Plan,
    SizeProfile,
    acquire,
    affine_part,
    as_image,
    clinical_grid,
    draw_plan,
    mask_from_fraction,
    scanner_extent,
    subject_transform,
)
from shmn.synthesis.atlas import ReferenceSpace
from shmn.synthesis.contrast import draw_contrast, render_flair, scanner_image
from shmn.synthesis.head import draw_head_look, render_head
from shmn.synthesis.subject import draw_severity, make_pathology

DATASET_CODES = {"pvl": 1, "macs": 2}
# Fields of view of head cases: a tight box around the brain, the whole head down to the neck, or a
# 2D thick-slice stack that covers only part of the brain (top or bottom cut off).
FIELDS_OF_VIEW = {"brain": 0.25, "head": 0.45, "partial": 0.30}
SCALP_MM = 24.0  # a whole-head field of view reaches this far beyond the brain's box


@dataclass(frozen=True)
class CaseOptions:
    """What kind of cases to make (the same for a whole cohort)."""

    heads: bool = True  # False: brain-only images (0 outside the brain), as before heads existed
    scale_range: tuple[float, float] = CHILD_SCALES  # subject size / MNI152, drawn per case
    twin: bool = False  # heads only: also render the same case without its head (benchmarks)


@dataclass(frozen=True)
class HeadPlan:
    field_of_view: str
    neck_mm: float  # how far below the brain's box a whole-head field of view reaches
    covered: float  # partial: share of the brain's extent along the slice axis that is acquired
    keep_top: bool  # partial: the top of the brain is acquired (else the bottom)
    slice_mm: float  # partial: 2D slice thickness

    def summary(self) -> dict:
        out = {"field_of_view": self.field_of_view}
        if self.field_of_view == "partial":
            out.update(covered=round(self.covered, 3), kept="top" if self.keep_top else "bottom")
        return out


def draw_head_plan(rng: np.random.Generator) -> HeadPlan:
    kinds = list(FIELDS_OF_VIEW)
    return HeadPlan(field_of_view=str(rng.choice(kinds, p=list(FIELDS_OF_VIEW.values()))),
                    neck_mm=float(rng.uniform(15.0, 60.0)), covered=float(rng.uniform(0.75, 0.95)),
                    keep_top=bool(rng.random() < 0.6), slice_mm=float(rng.uniform(4.0, 6.0)))


def _head_extent(plan: Plan, head_plan: HeadPlan, ref: ReferenceSpace) -> tuple[Plan, tuple[np.ndarray, np.ndarray] | None]:
    """The plan (thick slices for a partial stack) and the scanner extent its field of view covers."""
    brain = scanner_extent(plan, ref, ref.box_corners_mm(ref.brain_box))
    if head_plan.field_of_view == "brain":
        return plan, None
    (x0, x1), (y0, y1), (z0, z1) = ref.head.brain_box_ras
    corners_ras = np.array([[x, y, z] for x in (x0 - SCALP_MM, x1 + SCALP_MM) for y in (y0 - SCALP_MM, y1 + SCALP_MM)
                            for z in (z0 - head_plan.neck_mm, z1 + SCALP_MM)])
    low, high = scanner_extent(plan, ref, corners_ras * [-1.0, -1.0, 1.0])
    if head_plan.field_of_view == "head":
        return plan, (low, high)
    plan = dataclasses.replace(plan, spacing=(plan.spacing[0], plan.spacing[1], max(plan.spacing[2], head_plan.slice_mm)),
                               margins_mm=plan.margins_mm[:4] + (0.0, 0.0), deformation_mm=plan.deformation_mm)
    k_low, k_high = brain[0][2], brain[1][2]
    length = head_plan.covered * (k_high - k_low)
    # k runs inferior -> superior on axial stacks (RAS, LAS, LPS and the oblique ones all have k ~ +S).
    k0, k1 = (k_high - length, k_high) if head_plan.keep_top else (k_low, k_low + length)
    low[2], high[2] = k0 + plan.deformation_mm, k1 - plan.deformation_mm  # clinical_grid adds the deformation back
    return plan, (low, high)


@dataclass
class SyntheticCase:
    id: str
    dataset: str
    image: sitk.Image  # int16 FLAIR on the clinical grid
    pvl: sitk.Image  # uint8 mask, same grid
    ventricles: sitk.Image  # uint8 mask, same grid
    stats: dict
    flip_draw: float  # uniform draw that decides whether this case's MACS label is flipped (label noise)
    brain: sitk.Image | None = None  # uint8 reference brain mask, same grid
    brain_only_twin: sitk.Image | None = None  # CaseOptions.twin: the same acquisition without the head


def case_rng(seed: int, dataset: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, DATASET_CODES[dataset], index])


def make_case(ref: ReferenceSpace, profile: SizeProfile, seed: int, dataset: str, index: int, case_id: str,
              options: CaseOptions = CaseOptions(heads=False)) -> SyntheticCase:
    rng = case_rng(seed, dataset, index)
    # Scalars first, arrays after: a case's settings do not depend on how its arrays consumed the generator.
    severity = draw_severity(rng)
    flip_draw = float(rng.random())
    contrast = draw_contrast(rng)
    plan = draw_plan(rng, profile, options.scale_range)
    heads = options.heads and ref.head is not None
    # The head draws from its own stream: the subject (pathology, pose, noise) is the one it would be without it.
    head_rng = np.random.default_rng([seed, DATASET_CODES[dataset], index, 1])
    head_plan = draw_head_plan(head_rng) if heads else None
    look = draw_head_look(head_rng, float(np.mean(plan.scale))) if heads else None

    pathology = make_pathology(rng, ref, severity)
    flair = render_flair(rng, ref, pathology, contrast)
    transform = subject_transform(rng, plan, ref, ref.head.grid if heads else None)
    extent = None
    if heads:
        plan, extent = _head_extent(plan, head_plan, ref)
    grid = clinical_grid(plan, ref, extent)
    channels = [(flair, None), (pathology.lesions, ref.pathology_box), (pathology.ventricles, ref.pathology_box),
                (ref.brain, ref.brain_box)]
    intracranial_ml = None
    if heads:
        head_flair, intracranial = render_head(head_rng, ref.head, look, contrast.csf)
        head_image = sitk.GetImageFromArray(head_flair)
        head_image.CopyInformation(ref.head.grid)
        channels.append((head_image, None))
        intracranial_ml = float(intracranial.sum()) * ref.head.spacing_mm ** 3 / 1000.0 * float(np.prod(plan.scale))
    acquired = acquire(ref, transform, affine_part(plan, ref), grid, channels, margin_mm=plan.deformation_mm)
    image, lesion_fraction, ventricle_fraction, brain_fraction = acquired[:4]
    pvl = mask_from_fraction(lesion_fraction)
    ventricles = mask_from_fraction(ventricle_fraction)
    brain = mask_from_fraction(brain_fraction)
    twin = None
    if heads and options.twin:  # the same noise on the same grid, without the head
        twin = as_image(scanner_image(copy.deepcopy(rng), image, contrast), grid)
    if heads:
        image = image + acquired[4]
    stored = scanner_image(rng, image, contrast)

    voxel_ml = float(np.prod(grid.GetSpacing())) / 1000.0
    stats = {
        "lesion_count": int(ndimage.label(pvl, structure=np.ones((3, 3, 3)))[1]),  # 26-connected components
        "lesion_volume_ml": round(float(pvl.sum()) * voxel_ml, 3),
        "ventricle_volume_ml": round(float(ventricles.sum()) * voxel_ml, 3),
        "size": [int(n) for n in grid.GetSize()],
        "brain_volume_ml": round(float(brain.sum()) * voxel_ml, 2),
        "head": head_plan.summary() | {"look": look.as_dict(), "intracranial_volume_ml": round(intracranial_ml, 1)}
        if heads else None,
        **plan.summary(),
        **pathology.stats,
        "contrast": contrast.as_dict(),
    }
    return SyntheticCase(id=case_id, dataset=dataset, image=as_image(stored, grid), pvl=as_image(pvl, grid),
                         ventricles=as_image(ventricles, grid), stats=stats, flip_draw=flip_draw,
                         brain=as_image(brain, grid), brain_only_twin=twin)


def write_case(dataset_folder: Path, case: SyntheticCase) -> None:
    """Image and its labels where the dataset layout wants them (hidden ground truth under groundtruth/)."""
    write_volume(case.image, dataset_folder / "images" / f"{case.id}.nii.gz")
    pvl_folder = ("labels" if case.dataset == "pvl" else "groundtruth") + "/pvl"
    write_volume(case.pvl, dataset_folder / pvl_folder / f"{case.id}.nii.gz")
    write_volume(case.ventricles, dataset_folder / "groundtruth" / "ventricles" / f"{case.id}.nii.gz")
    if case.brain is not None:  # the reference brain mask, for brain extraction's evaluation
        write_volume(case.brain, dataset_folder / "labels" / "brain" / f"{case.id}.nii.gz")
