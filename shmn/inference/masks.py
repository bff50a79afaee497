"""Model-grid probabilities onto the input's own grid, and from there into masks: the threshold and, for
lesions, the smallest component the lesion grid can resolve and the components the image shows, for ventricles
what they enclose (shmn.inference.predict.predict_native)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.inference.findings import lesion_rows
from shmn.measures.lesion_visibility import split_by_visibility
from shmn.measures.lesions import lesion_components, without_small_components
from shmn.preprocessing.preprocess import PreprocessedCase, to_native


def output_region(brain: np.ndarray) -> np.ndarray:
    """Where the network's answers count on the model grid: the brain mask with its enclosed holes filled.

    The skull-stripped MNI152 template that cuts the brain is 0 inside half of the lateral ventricles (a
    10.7 mL hole at 1 mm), so the model-grid brain mask has a hole there: the network's input is zero in it, as
    it was in training, and the network still answers there (a median ventricle probability of 0.98 on one OOD
    case). Cut with the holed mask, those answers were lost wherever the hole reaches the ventricle's edge."""
    return ndimage.binary_fill_holes(brain)


def native_probability(probability: np.ndarray | None, case: PreprocessedCase, native: sitk.Image) -> sitk.Image:
    """A model-grid probability map on the input's grid (linear; zeros when the model lacks the task)."""
    if probability is None:
        probability = np.zeros(case.brain.shape, dtype=np.float32)
    on_native = to_native(np.where(output_region(case.brain), probability, 0.0), case, native, interpolation="linear")
    on_native.CopyInformation(native)
    return on_native


def threshold_mask(probability: sitk.Image, threshold: float) -> sitk.Image:
    mask = sitk.Cast(probability >= threshold, sitk.sitkUInt8)
    mask.CopyInformation(probability)
    return mask


def min_lesion_ml(requested: float | None, lesion_voxel_mm: float) -> float:
    """The requested minimum lesion volume (`PredictOptions.min_lesion_ml`), or by default one voxel of the lesion grid (mL)."""
    return lesion_voxel_mm ** 3 / 1000.0 if requested is None else float(requested)


def without_specks(mask: sitk.Image, min_ml: float) -> sitk.Image:
    """``mask`` without its components smaller than ``min_ml``."""
    if min_ml <= 0:
        return mask
    kept = sitk.GetImageFromArray(without_small_components(sitk.GetArrayViewFromImage(mask), mask.GetSpacing()[::-1], min_ml))
    kept.CopyInformation(mask)
    return kept


def filled_sections(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` (bool, 3D) with the holes of each of its plane sections across ``axis`` filled: one fill with a
    structuring element that lies in the plane, so each section is filled on its own, as a 2D fill would."""
    structure = np.zeros((3, 3, 3), bool)
    plane = [slice(None)] * 3
    plane[axis] = 1
    structure[tuple(plane)] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(mask, structure)


def with_enclosed(mask: sitk.Image) -> sitk.Image:
    """``mask`` with every voxel it encloses within a plane section along any of the grid's three axes.

    For the lateral ventricles: they are fluid-filled cavities, and what a ventricle encloses in a slice is
    ventricle by the label's own definition (choroid plexus, poorly nulled CSF, flow artefacts;
    shmn.synthesis.randomised.labels.VENTRICLE_CLASSES). Where such contents read like tissue the network left
    rings with holes inside (both OOD cohorts' worst ventricle cases). Nothing is added outside the mask's
    outline in some slice: a C-shaped ventricle around the thalamus does not close, so the thalamus stays out.
    Measured with v2.7 (README "What the ventricles enclose"): OOD ventricle Dice 0.856 -> 0.872 (seed 0) and
    0.795 -> 0.811 (seed 7, not looked at while choosing the rule), in-distribution 0.9452 -> 0.9451."""
    array = sitk.GetArrayFromImage(mask).astype(bool)
    found = np.nonzero(array)
    if not found[0].size:
        return mask
    box = tuple(slice(int(axis.min()), int(axis.max()) + 1) for axis in found)
    inside = array[box]
    array[box] = filled_sections(inside, 0) | filled_sections(inside, 1) | filled_sections(inside, 2)
    out = sitk.GetImageFromArray(array.astype(np.uint8))
    out.CopyInformation(mask)
    return out


@dataclass(frozen=True)
class LesionsNotShown:
    """The lesion components the image does not show (shmn.measures.lesion_visibility), taken out of the mask."""

    mask: sitk.Image  # uint8 0/1 on the input's grid
    candidates: list[dict]  # per component: centre (RAS mm), volume (mL), contrast to the tissue's spread; largest first


def split_shown_lesions(pvl: sitk.Image, native: sitk.Image, ventricles: sitk.Image) -> tuple[sitk.Image, LesionsNotShown]:
    """(the lesion mask without the components that do not stand out from the tissue around them, those components)."""
    spacing_zyx = native.GetSpacing()[::-1]
    shown, not_shown, contrasts = split_by_visibility(sitk.GetArrayViewFromImage(pvl), sitk.GetArrayViewFromImage(native),
                                                      spacing_zyx, sitk.GetArrayViewFromImage(ventricles))
    hidden = {row.label: {"contrast_to_spread": round(row.contrast_to_spread, 2)} for row in contrasts if not row.visible}
    candidates = lesion_rows(pvl, hidden, labels=hidden, voxels=False) if hidden else []
    images = []
    for array in (shown, not_shown):
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.CopyInformation(pvl)
        images.append(image)
    return images[0], LesionsNotShown(images[1], candidates)


def without_not_shown(probability: np.ndarray, threshold: float, case: PreprocessedCase, shown: sitk.Image,
                      not_shown: sitk.Image) -> np.ndarray:
    """The model-grid lesion probability without its thresholded components that, on the input's grid, became only
    lesions the image does not show: the motor burden (template space) reads the model grid, and must not count what
    the lesion mask left out."""
    def footprint(mask: sitk.Image) -> np.ndarray:  # model-grid voxels that any native voxel of the mask reaches
        on_grid = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), case.reference, case.transform, sitk.sitkLinear, 0.0)
        return sitk.GetArrayViewFromImage(on_grid) > 0

    labels, _ = lesion_components(np.asarray(probability) >= threshold)
    dropped = np.setdiff1d(np.unique(labels[footprint(not_shown)]), np.unique(labels[footprint(shown)]))
    dropped = dropped[dropped > 0]
    return np.where(np.isin(labels, dropped), 0.0, probability).astype(np.asarray(probability).dtype, copy=False) if dropped.size else probability
