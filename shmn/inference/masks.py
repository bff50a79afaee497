"""Model-grid probabilities onto the input's own grid, and from there into masks: the threshold and, for
lesions, the smallest component the lesion grid can resolve (shmn.inference.predict.predict_native)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from shmn.measures.lesions import without_small_components
from shmn.preprocessing.preprocess import PreprocessedCase, to_native


def native_probability(probability: np.ndarray | None, case: PreprocessedCase, native: sitk.Image) -> sitk.Image:
    """A model-grid probability map on the input's grid (linear; zeros when the model lacks the task)."""
    if probability is None:
        probability = np.zeros(case.brain.shape, dtype=np.float32)
    on_native = to_native(np.where(case.brain, probability, 0.0), case, native, interpolation="linear")
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
