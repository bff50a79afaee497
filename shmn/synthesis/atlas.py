"""The reference space every synthetic subject is drawn in: the real MNI152 anatomy, prepared once.

The anatomy (MNI152 T1 template + aparc+aseg on its grid) is cropped to the brain's bounding box
and block-averaged to the cohort's working spacing (1 mm for paper size, 2 mm for small). From the
labels come the maps the subject generator needs: the lateral ventricles, the cerebral white
matter where PVL may lie, distance maps (to the ventricles, to the WM-hypointensity caps that are
the location prior, to the motor zone) and the motor-relevance weight behind the MACS burden.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.io.anatomy import (
    CAUDATE,
    CEREBRAL_WM,
    INFERIOR_LATERAL_VENTRICLES,
    LATERAL_VENTRICLES,
    PALLIDUM,
    PUTAMEN,
    THALAMUS,
    WM_HYPOINTENSITIES,
    Anatomy,
)
from shmn.synthesis.fields import block_mean, box_around

CHOROID_PLEXUS = (31, 63)  # lies inside the trigones: part of the ventricle a reader would outline
CENTRAL_CORTEX = (1017, 1022, 1024, 2017, 2022, 2024)  # paracentral, postcentral, precentral
WM_MEDIAN_T1 = 7200.0  # median of the template in cerebral WM: T1 values are expressed relative to it
MARGIN_MM = 8  # room around the brain so that deformed subjects are not cut
MOTOR_DECAY_MM = 8.0  # how fast a lesion's motor relevance falls off outside the motor zone
PATHOLOGY_REACH_MM = 45.0  # ventricle growth and lesions (tracts to the central WM included) stay this close


@dataclass(frozen=True)
class ReferenceSpace:
    """Arrays are (z, y, x) on ``grid``'s geometry (an empty image that only carries it)."""

    grid: sitk.Image
    spacing_mm: float
    t1: np.ndarray  # float32, template intensity / WM median (WM ~ 1, CSF < 0.5, 0 outside)
    brain: np.ndarray  # bool, inside the brain (holes such as the ventricles filled)
    ventricles: np.ndarray  # bool, lateral ventricles incl. inferior horns and choroid plexus
    wm: np.ndarray  # bool, cerebral white matter incl. WM hypointensities: where PVL may lie
    motor_zone: np.ndarray  # bool, WM by the thalamus, the internal capsule, WM under the central cortex
    dist_ventricles_mm: np.ndarray  # float32, distance to the (original) lateral ventricles
    dist_wmh_mm: np.ndarray  # float32, distance to the WM-hypointensity label (PVL location prior)
    dist_motor_mm: np.ndarray  # float32, distance to the motor zone
    posterior: np.ndarray  # float32 0..1, rises from the foramen of Monro back to the trigones
    ras_mm: tuple[np.ndarray, np.ndarray, np.ndarray]  # RAS coordinate of each voxel along x, y, z (broadcastable)
    brain_box: tuple[slice, slice, slice]  # bounding box of the brain
    pathology_box: tuple[slice, slice, slice]  # where ventricles and lesions can ever be (with room to spare)
    brain_centre_mm: tuple[float, float, float]  # LPS centre of mass of the brain
    head: Any | None = None  # shmn.synthesis.head.HeadSpace: the grown grid heads are drawn on (None: brains only)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.t1.shape

    @property
    def voxel_ml(self) -> float:
        return self.spacing_mm ** 3 / 1000.0

    def image(self, array: np.ndarray, box: tuple[slice, ...] | None = None) -> sitk.Image:
        """An array on this grid (or the part of it in ``box``) as an image carrying the grid's geometry."""
        box = box or tuple(slice(0, n) for n in self.shape)
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[box]))
        image.SetSpacing(self.grid.GetSpacing())
        image.SetDirection(self.grid.GetDirection())
        image.SetOrigin(self.grid.TransformIndexToPhysicalPoint([int(b.start) for b in box[::-1]]))
        return image

    def box_corners_mm(self, box: tuple[slice, ...]) -> np.ndarray:
        """LPS mm of the 8 corners of an index box, shape (8, 3)."""
        ranges = [(float(b.start), float(b.stop - 1)) for b in box[::-1]]  # (x, y, z)
        return np.array([self.grid.TransformContinuousIndexToPhysicalPoint(c) for c in itertools.product(*ranges)])


def _crop_box(brain: np.ndarray, margin: int, factor: int) -> list[tuple[int, int]]:
    """Per-axis (start, stop) around the brain, grown so every extent is divisible by ``factor``."""
    box = []
    for axis, extent in enumerate(brain.shape):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(brain.any(axis=other))[0]
        start, stop = int(idx[0]) - margin, int(idx[-1]) + 1 + margin
        stop += (-(stop - start)) % factor
        box.append((start, stop))
    return box


def _cut(array: np.ndarray, box: list[tuple[int, int]]) -> np.ndarray:
    """Crop with zero padding where the box leaves the array."""
    pads, slices = [], []
    for (start, stop), extent in zip(box, array.shape):
        pads.append((max(0, -start), max(0, stop - extent)))
        slices.append(slice(max(0, start), min(extent, stop)))
    return np.pad(array[tuple(slices)], pads)


def _distance(mask: np.ndarray, spacing: float) -> np.ndarray:
    if not mask.any():
        return np.full(mask.shape, 1e3, np.float32)
    return ndimage.distance_transform_edt(~mask, sampling=spacing).astype(np.float32)


def build_reference(anatomy: Anatomy, spacing_mm: int = 1) -> ReferenceSpace:
    """Prepare the anatomy at an integer working spacing (1 or 2 mm)."""
    factor = int(spacing_mm)
    template = sitk.GetArrayFromImage(anatomy.template).astype(np.float32)
    labels = sitk.GetArrayFromImage(anatomy.labels)
    brain_1mm = ndimage.binary_fill_holes((template > 0) | (labels > 0))
    box = _crop_box(brain_1mm, MARGIN_MM, factor)
    labels = _cut(labels, box)

    def fraction(*indices: int) -> np.ndarray:
        return block_mean(np.isin(labels, indices), (factor,) * 3)

    t1 = block_mean(_cut(template, box), (factor,) * 3) / WM_MEDIAN_T1
    brain = block_mean(_cut(brain_1mm, box), (factor,) * 3) > 0.5
    ventricles = fraction(*LATERAL_VENTRICLES, *INFERIOR_LATERAL_VENTRICLES, *CHOROID_PLEXUS) > 0.5
    wm = (fraction(*CEREBRAL_WM, WM_HYPOINTENSITIES) > 0.5) & ~ventricles
    thalamus = fraction(*THALAMUS) > 0.5
    medial = fraction(*THALAMUS, *CAUDATE) > 0.5
    lentiform = fraction(*PUTAMEN, *PALLIDUM) > 0.5
    central = fraction(*CENTRAL_CORTEX) > 0.5
    wmh = fraction(WM_HYPOINTENSITIES) > 0.5
    s = float(factor)

    # Motor zone: the corticospinal and thalamocortical paths a PVL lesion can cut. The internal
    # capsule has no aseg label: it is the WM squeezed between thalamus/caudate and the lentiform nucleus.
    internal_capsule = wm & (_distance(medial, s) <= 7) & (_distance(lentiform, s) <= 7)
    by_thalamus = wm & (_distance(thalamus, s) <= 5)
    under_central = wm & (_distance(central, s) <= 12)
    motor_zone = internal_capsule | by_thalamus | under_central

    grid = sitk.Image([int(n) for n in t1.shape[::-1]], sitk.sitkUInt8)
    grid.SetDirection(anatomy.template.GetDirection())
    grid.SetSpacing((s, s, s))
    start = [float(b[0]) + (factor - 1) / 2.0 for b in box[::-1]]  # box is (z, y, x); index is (x, y, z)
    grid.SetOrigin(anatomy.template.TransformContinuousIndexToPhysicalPoint(start))
    ras = _ras_axes(grid)
    # 0 in front of y = -5 mm (RAS), 1 behind y = -35 mm: the trigones and occipital horns, where PVL is commonest.
    posterior = np.broadcast_to(np.clip((-ras[1] - 5.0) / 30.0, 0.0, 1.0), t1.shape).astype(np.float32)
    dist_ventricles = _distance(ventricles, s)
    centre = np.argwhere(brain).mean(axis=0)[::-1]  # (x, y, z) index
    return ReferenceSpace(
        brain_box=box_around(brain, 0), pathology_box=box_around(brain & (dist_ventricles <= PATHOLOGY_REACH_MM), 1),
        brain_centre_mm=grid.TransformContinuousIndexToPhysicalPoint(centre.tolist()),
        grid=grid, spacing_mm=s, t1=t1, brain=brain, ventricles=ventricles, wm=wm,
        motor_zone=motor_zone, dist_ventricles_mm=dist_ventricles, dist_wmh_mm=_distance(wmh, s),
        dist_motor_mm=_distance(motor_zone, s), posterior=posterior, ras_mm=ras,
    )


def _ras_axes(grid: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS x, y, z of each voxel as arrays broadcastable to (z, y, x); the grid is axis-aligned."""
    nx, ny, nz = grid.GetSize()
    origin = np.array(grid.GetOrigin())
    step = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())
    lps_x = origin[0] + step[0, 0] * np.arange(nx)
    lps_y = origin[1] + step[1, 1] * np.arange(ny)
    lps_z = origin[2] + step[2, 2] * np.arange(nz)
    return (
        (-lps_x).astype(np.float32)[None, None, :],
        (-lps_y).astype(np.float32)[None, :, None],
        lps_z.astype(np.float32)[:, None, None],
    )
