"""The periventricular region of interest of the 1 mm lesion path, in template (MNI) space.

PVL lives in the white matter around the lateral ventricles. The 1 mm lesion refiner runs only inside
one fixed box of the 1 mm ("paper") model grid: the template's lateral ventricles, grown by a margin
(25 mm by default), clipped to the grid. The box is derived once (``derive_roi``) and then travels in
the refiner's card, so inference never derives it again.

The 2 mm ("fast") and 1 mm ("paper") grids share their centre and cover the same box: fast voxel i
sits exactly between paper voxels 2i and 2i+1 on every axis, so a 2x average-pool maps 1 mm to 2 mm
(``pool_to_coarse``) and a linear resample through physical space maps 2 mm back to 1 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from shmn.errors import ShmnError
from shmn.preprocessing.preprocess import GridSpec, model_grid_reference, normalise

DEFAULT_MARGIN_MM = 25.0


@dataclass(frozen=True)
class RoiBox:
    """A box of a model grid: ``start_zyx`` (voxel index of its first corner) and ``size_zyx`` voxels."""

    grid: GridSpec
    start_zyx: tuple[int, int, int]
    size_zyx: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(s, s + n) for s, n in zip(self.start_zyx, self.size_zyx))

    def reference(self) -> sitk.Image:
        """An empty image with the box's geometry (MNI physical space)."""
        grid_reference = model_grid_reference(self.grid)
        origin = grid_reference.TransformIndexToPhysicalPoint([int(v) for v in self.start_zyx[::-1]])
        reference = sitk.Image([int(v) for v in self.size_zyx[::-1]], sitk.sitkUInt8)
        reference.SetSpacing(grid_reference.GetSpacing())
        reference.SetDirection(grid_reference.GetDirection())
        reference.SetOrigin(origin)
        return reference

    def to_card(self) -> dict:
        return {"grid": {"spacing_mm": self.grid.spacing_mm, "size": list(self.grid.size)},
                "start_zyx": list(self.start_zyx), "size_zyx": list(self.size_zyx)}

    @classmethod
    def from_card(cls, data: object, source: str = "card") -> "RoiBox":
        try:
            grid = GridSpec(float(data["grid"]["spacing_mm"]), tuple(int(v) for v in data["grid"]["size"]))
            start = tuple(int(v) for v in data["start_zyx"])
            size = tuple(int(v) for v in data["size_zyx"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ShmnError(f"{source}: 'roi' is damaged ({type(exc).__name__}: {exc}); expected "
                            "{grid: {spacing_mm, size}, start_zyx, size_zyx}") from None
        shape = grid.shape_zyx
        if len(start) != 3 or len(size) != 3 or len(grid.size) != 3 or any(
                s < 0 or n < 1 or s + n > m for s, n, m in zip(start, size, shape)):
            raise ShmnError(f"{source}: 'roi' box start {start} size {size} does not fit the grid {shape} (z, y, x)")
        return cls(grid, start, size)


def derive_roi(ventricles: np.ndarray, grid: GridSpec, margin_mm: float = DEFAULT_MARGIN_MM) -> RoiBox:
    """The bounding box of ``ventricles`` (bool, z y x on ``grid``) grown by ``margin_mm``, clipped to the grid."""
    where = np.argwhere(ventricles)
    if where.size == 0:
        raise ShmnError("derive_roi: the ventricle mask is empty")
    margin = int(round(margin_mm / grid.spacing_mm))
    low = np.maximum(where.min(axis=0) - margin, 0)
    high = np.minimum(where.max(axis=0) + 1 + margin, grid.shape_zyx)
    return RoiBox(grid, tuple(int(v) for v in low), tuple(int(v) for v in high - low))


def template_roi(grid: GridSpec, margin_mm: float = DEFAULT_MARGIN_MM) -> RoiBox:
    """``derive_roi`` on the MNI152 lateral ventricles (aparc+aseg) mapped onto ``grid``."""
    from shmn.synthesis.randomised import labels as L
    from shmn.synthesis.randomised.anatomies import mni152_labels

    return derive_roi(mni152_labels(grid) == L.VENTRICLE, grid, margin_mm)


def pool_to_coarse(image: np.ndarray, brain: np.ndarray, coarse_brain: np.ndarray) -> np.ndarray:
    """A 1 mm image (z y x, 0 outside ``brain``) on the 2 mm grid: brain-weighted 2x average pool,
    then z-scored inside ``coarse_brain`` (as preprocessing normalises on the 2 mm grid).

    Brain-weighted so that a 2 mm voxel at the brain's edge holds tissue, not tissue averaged with the
    zeros outside the 1 mm mask (preprocessing resamples the unmasked image and masks afterwards).
    """
    if any(n % 2 for n in image.shape) or tuple(n // 2 for n in image.shape) != coarse_brain.shape:
        raise ShmnError(f"pool_to_coarse: shape {image.shape} is not twice {coarse_brain.shape}")
    z, y, x = coarse_brain.shape
    weight = brain.astype(np.float32).reshape(z, 2, y, 2, x, 2).sum(axis=(1, 3, 5))
    total = np.where(brain, image, 0.0).astype(np.float32).reshape(z, 2, y, 2, x, 2).sum(axis=(1, 3, 5))
    pooled = np.where(weight > 0, total / np.maximum(weight, 1.0), 0.0).astype(np.float32)
    normalised, _stats = normalise(pooled, coarse_brain, (1.0, 99.0))
    return normalised


def coarse_to_roi(coarse: np.ndarray, coarse_reference: sitk.Image, box: RoiBox) -> np.ndarray:
    """A coarse-grid array (z y x) resampled linearly onto the box (physical space: identity transform)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(coarse, dtype=np.float32))
    image.CopyInformation(coarse_reference)
    out = sitk.Resample(image, box.reference(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)
