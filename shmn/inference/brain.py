"""The brain of one predicted case on the input's grid: report.json's ``brain`` entry (volume, extraction
method, estimated intracranial volume) and the registered template brain drawn on the overview."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from shmn.preprocessing.preprocess import TEMPLATE_INTRACRANIAL_ML, PreprocessedCase, to_native


def brain_fields(prep: PreprocessedCase, native: sitk.Image) -> dict | None:
    """report.json's ``brain``: the extracted brain's volume, how it was extracted, the intracranial volume."""
    if prep.brain_native is None:
        return None  # no extraction: report.build_report writes its "none" entry
    return {
        "volume_ml": round(prep.brain_native.volume_ml, 2),
        "extraction": {"method": prep.brain_native.method, "version": prep.brain_native.version,
                       "seconds": round(prep.brain_native.seconds, 2)},
        "intracranial_volume_ml": intracranial_volume_ml(prep, native),
    }


def template_on_native(prep: PreprocessedCase, native: sitk.Image) -> sitk.Image:
    """The model grid's template brain mask carried onto the input's grid: where registration put MNI152's brain."""
    from scipy import ndimage

    return to_native(ndimage.binary_fill_holes(prep.template_brain).astype(np.uint8), prep, native)


def intracranial_volume_ml(prep: PreprocessedCase, native: sitk.Image) -> float | None:
    """Estimated intracranial volume (eTIV): MNI152's intracranial volume times the registration's volume scale.

    Only where the whole head is in view (the whole template brain inside the field of view, and the
    extracted brain not touching the field of view's edge) and the registration check passed: a
    partial acquisition or a failed registration gives no number rather than a wrong one.
    """
    if not prep.quality.get("ok") or prep.quality.get("brain_in_field_of_view", 0.0) < 0.995:
        return None
    mask = sitk.GetArrayViewFromImage(prep.brain_native.mask)
    if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any() or mask[:, :, 0].any() or mask[:, :, -1].any():
        return None
    return round(TEMPLATE_INTRACRANIAL_ML * float(prep.quality.get("volume_scale", 1.0)), 1)
