"""Where a lesion lies: its centre mapped into MNI152 space and named from the Desikan-Killiany atlas.

The predictor's registration is in report.json (``preprocessing.registration_quality.
matrix_mni_to_native_lps``, a 4x4 MNI -> input LPS matrix); its inverse takes a lesion centre from the
input into the template, where the aparc+aseg label under it names the region. PVL sits in white
matter, so a white-matter (or ventricle) label is completed with the nearest grey-matter structure
within ``NEAR_MM`` ("Left cerebral white matter, near superior parietal"). Without the matrix or the
anatomy cache the region is None and the report shows a dash.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk

from shmn.io.anatomy import CEREBRAL_WM, CSF, INFERIOR_LATERAL_VENTRICLES, LATERAL_VENTRICLES, WM_HYPOINTENSITIES, Anatomy

NEAR_MM = 15  # how far to look for a named grey-matter structure around a white-matter centre
NOT_LANDMARKS = {0, *CEREBRAL_WM, *LATERAL_VENTRICLES, *INFERIOR_LATERAL_VENTRICLES, CSF, WM_HYPOINTENSITIES}


def mni_to_native_matrix(report: dict) -> Optional[np.ndarray]:
    quality = ((report.get("preprocessing") or {}).get("registration_quality") or {})
    matrix = quality.get("matrix_mni_to_native_lps")
    if matrix is None:
        return None
    matrix = np.asarray(matrix, dtype=float)
    return matrix if matrix.shape == (4, 4) and np.isfinite(matrix).all() else None


def ras_to_mni_lps(centre_ras: Sequence[float], mni_to_native: np.ndarray) -> np.ndarray:
    native_lps = np.array([-centre_ras[0], -centre_ras[1], centre_ras[2], 1.0])
    return (np.linalg.inv(mni_to_native) @ native_lps)[:3]


def _pretty(name: str) -> str:
    name = name.replace("ctx-lh-", "left ").replace("ctx-rh-", "right ").replace("Left-", "Left ").replace("Right-", "Right ")
    return name.replace("-", " ").replace("_", " ").strip()


def region_at(point_lps: np.ndarray, anatomy: Anatomy) -> Optional[str]:
    labels = anatomy.labels
    index = labels.TransformPhysicalPointToIndex([float(v) for v in point_lps])
    size = labels.GetSize()
    if not all(0 <= i < n for i, n in zip(index, size)):
        return "outside the template"
    array = sitk.GetArrayViewFromImage(labels)
    x, y, z = index
    label = int(array[z, y, x])
    name = _pretty(anatomy.label_names.get(label, f"label {label}")) if label else "outside the brain"
    if label not in NOT_LANDMARKS:
        return name
    # Nearest landmark label in a cube around the centre (1 mm template voxels).
    r = NEAR_MM
    box = array[max(z - r, 0): z + r + 1, max(y - r, 0): y + r + 1, max(x - r, 0): x + r + 1]
    found = ~np.isin(box, list(NOT_LANDMARKS))
    if not found.any():
        return name
    offsets = np.argwhere(found) - np.array([min(z, r), min(y, r), min(x, r)])
    nearest = np.argwhere(found)[int(np.argmin((offsets ** 2).sum(axis=1)))]
    landmark = int(box[tuple(nearest)])
    return f"{name}, near {_pretty(anatomy.label_names.get(landmark, f'label {landmark}'))}"


def lesion_regions(report: dict, anatomy: Optional[Anatomy]) -> list[Optional[str]]:
    """One region name per lesion of report['pvl']['lesions'] (a lesion's own 'region' key wins)."""
    lesions = (report.get("pvl") or {}).get("lesions") or []
    matrix = mni_to_native_matrix(report)
    names: list[Optional[str]] = []
    for lesion in lesions:
        if lesion.get("region"):
            names.append(str(lesion["region"]))
        elif matrix is None or anatomy is None or lesion.get("centre_ras_mm") is None:
            names.append(None)
        else:
            names.append(region_at(ras_to_mni_lps(lesion["centre_ras_mm"], matrix), anatomy))
    return names
