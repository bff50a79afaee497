"""What report.json lists of a case's lesions: one row per lesion component on the input's grid (centre in RAS mm,
volume), and the localization head's peaks carried from the model grid to RAS mm (shmn.inference.predict)."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import SimpleITK as sitk

from shmn.io.volume_io import index_to_ras
from shmn.measures.lesions import density_peaks, lesion_centres
from shmn.preprocessing.preprocess import PreprocessedCase


def lesion_rows(pvl: sitk.Image, fields: dict[int, dict] | None = None, labels: Collection[int] | None = None,
                voxels: bool = True) -> list[dict]:
    """Per 26-connected component of the mask ``pvl``: centre (centre of mass of its outer border) in RAS mm, volume
    and (``voxels``) voxel count, plus ``fields[label]``; only the components in ``labels`` when given; largest first.
    Labels are lesion_components' numbering of ``pvl``."""
    rows = [
        {
            "centre_ras_mm": [round(v, 2) for v in index_to_ras(pvl, lesion.centre_zyx[::-1])],
            "volume_ml": round(lesion.volume_ml, 4),
            **({"voxels": lesion.voxels} if voxels else {}),
            **((fields or {}).get(lesion.label) or {}),
        }
        for lesion in lesion_centres(sitk.GetArrayViewFromImage(pvl), pvl.GetSpacing()[::-1])
        if labels is None or lesion.label in labels
    ]
    return sorted(rows, key=lambda row: -row["volume_ml"])


def localization_centres(density: np.ndarray | None, case: PreprocessedCase, threshold: float,
                         min_distance_mm: float) -> list[dict] | None:
    """Peaks of the localization head, model grid -> MNI point -> native point -> RAS mm (None: no such head)."""
    if density is None:
        return None
    density = np.where(case.brain, density, 0.0)
    peaks = density_peaks(density, case.reference.GetSpacing()[::-1], threshold, min_distance_mm)
    centres = []
    for peak in peaks:
        mni = case.reference.TransformContinuousIndexToPhysicalPoint([float(v) for v in peak[::-1]])
        x, y, z = case.transform.TransformPoint(mni)
        height = float(density[tuple(int(round(v)) for v in peak)])
        centres.append({"centre_ras_mm": [round(-x, 2), round(-y, 2), round(z, 2)], "peak": round(height, 3)})
    return centres
