"""The OOD cohort's acquisitions (see ood_phantom.py): a clinical grid, the template-space volumes imaged on it with a
box or a Gaussian slice profile, and a polynomial bias field. Part of the outsider's generator: no shmn code."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

ORIENTATIONS = {  # LPS direction columns of the (i, j, k) axes
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "LAS": np.diag([1.0, -1.0, 1.0]),
    "LPS": np.diag([1.0, 1.0, 1.0]),
}


def acquisition_grid(rng, fov_centre, gap: float = 0.0, isotropic_mm: float | None = None) -> tuple[sitk.Image, int, str, str, float, tuple]:
    """The grid of a 2D acquisition; ``gap``: the space between slices as a share of their thickness;
    ``isotropic_mm``: a 3D acquisition's voxels instead (the 2D draws are still made: the same stream). Last: the
    array shape (z, y, x) the box acquisition's grid has (the noise draws that stream makes)."""
    plane = str(rng.choice(["axial", "axial", "coronal", "sagittal"]))
    code = str(rng.choice(list(ORIENTATIONS)))
    thick = float(rng.uniform(3.0, 6.0))
    in_plane = float(rng.uniform(0.7, 1.0))
    axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
    extent = np.array([180.0, 216.0, 180.0])
    spacing = [in_plane] * 3
    spacing[axis] = thick
    box_shape = tuple(int(math.ceil(e / s)) for e, s in zip(extent, spacing))[::-1]
    spacing[axis] = thick * (1.0 + gap)
    if isotropic_mm is not None:
        thick, spacing = isotropic_mm, [isotropic_mm] * 3
    size = [int(math.ceil(e / s)) for e, s in zip(extent, spacing)]
    tilt = sitk.Euler3DTransform((0, 0, 0), *np.deg2rad(rng.uniform(-15, 15, 3) * (rng.random() < 0.6)))
    direction = np.array(tilt.GetMatrix()).reshape(3, 3) @ ORIENTATIONS[code]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(direction.ravel().tolist())
    half = direction @ (np.array(spacing) * (np.array(size) - 1) / 2)
    grid.SetOrigin((np.array(fov_centre) - half).tolist())
    oblique = bool(not np.allclose(direction, ORIENTATIONS[code]))
    return grid, axis, plane, code + (" oblique" if oblique else ""), thick, box_shape


def _sub_slices(volumes: list, template, transform: sitk.Transform, grid: sitk.Image, axis: int, factor: int,
                shift_mm: float) -> tuple[np.ndarray, float]:
    """The template-space ``volumes`` (one resampling of a vector image) on a copy of ``grid`` with ``factor``
    sub-slices per slice, the first ``shift_mm`` from the slice's centre; (z, y, x, c) and the sub-slice spacing."""
    source = sitk.Compose([sitk.GetImageFromArray(v.astype(np.float32)) for v in volumes])
    source.CopyInformation(template.image)
    fine = sitk.Image([n * factor if a == axis else n for a, n in enumerate(grid.GetSize())], sitk.sitkVectorFloat32, len(volumes))
    spacing = list(grid.GetSpacing())
    spacing[axis] = grid.GetSpacing()[axis] / factor
    fine.SetSpacing(spacing)
    fine.SetDirection(grid.GetDirection())
    shift = np.zeros(3)
    shift[axis] = shift_mm
    fine.SetOrigin((np.array(grid.GetOrigin()) + np.array(grid.GetDirection()).reshape(3, 3) @ shift).tolist())
    return sitk.GetArrayFromImage(sitk.Resample(source, fine, transform, sitk.sitkLinear, 0.0)), spacing[axis]


def acquire_box_profile(volumes: list, template, transform: sitk.Transform, grid: sitk.Image, axis: int) -> list:
    """Sample the template-space ``volumes`` on a fine copy of ``grid`` (sub-slices about 1.5 mm apart) and average
    each slice's thickness: a box slice profile."""
    thick = grid.GetSpacing()[axis]
    factor = max(1, int(round(thick / 1.5)))
    sampled, _ = _sub_slices(volumes, template, transform, grid, axis, factor, -(thick - thick / factor) / 2)
    np_axis = 2 - axis
    shape = list(sampled.shape)
    shape[np_axis:np_axis + 1] = [shape[np_axis] // factor, factor]
    averaged = sampled.reshape(shape).mean(axis=np_axis + 1)
    return [averaged[..., c] for c in range(len(volumes))]


def acquire_gaussian_profile(volumes: list, template, transform: sitk.Transform, grid: sitk.Image, axis: int,
                             thick: float) -> list:
    """Sample the template-space ``volumes`` on a fine copy of ``grid`` (sub-slices about 0.75 mm apart, one at each
    slice centre): the first (the signal) is weighted across slices by a Gaussian slice profile of FWHM ``thick``
    (it reaches into the gap and the neighbours, as a 2D sequence's does), the others (labels) are read at the slice
    centre."""
    step = grid.GetSpacing()[axis]
    factor = max(3, int(round(step / 0.75)))
    factor += 1 - factor % 2  # odd: the middle sub-slice is the slice centre
    sampled, fine_mm = _sub_slices(volumes, template, transform, grid, axis, factor, -(factor // 2) * (step / factor))
    np_axis = 2 - axis
    centres = [slice(None)] * 3
    centres[np_axis] = slice(factor // 2, None, factor)
    signal = ndimage.gaussian_filter1d(sampled[..., 0], thick / 2.3548 / fine_mm, axis=np_axis, mode="nearest")
    return [signal[tuple(centres)]] + [sampled[..., c][tuple(centres)] for c in range(1, len(volumes))]


def polynomial_bias(shape, rng) -> np.ndarray:
    axes = [np.linspace(-1, 1, n) for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    c = rng.normal(0, 0.2, 9)
    return np.exp(c[0] * x + c[1] * y + c[2] * z + c[3] * x * y + c[4] * y * z + c[5] * x * z + c[6] * x * x + c[7] * y * y + c[8] * z * z)
