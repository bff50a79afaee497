"""The head around the brain: what every clinical FLAIR has and the brain template lacks.

No head template is in the anatomy cache, so the head is built here from the brain: layers at a
distance from the brain's closed outline (the brain with its sulci closed, as the skull's inner
table follows it): extra-cerebral CSF (dark on FLAIR), the inner table (very dark), diploe with
marrow fat (bright), the outer table (very dark), scalp fat (bright) and skin; two eyes with their
lens and optic nerves in bright orbital fat, anterior-inferior; soft tissue of the face and the top
of the neck (muscle, a fat rim, the spinal canal) below. Thicknesses wander smoothly around each
subject's draw, and intensities are drawn per subject.

The geometry (distance map, the grid) is built once per reference space (``HeadSpace``); a
subject's head is a cheap per-voxel lookup on it (``render_head``). The head grid is the
reference grid grown on every side (more below, for the neck), at the same spacing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.synthesis.fields import block_mean, smooth_noise

HEAD_MARGIN_MM = 34.0  # room around the brain's box for CSF, skull and scalp (and the eyes in front)
NECK_MM = 80.0  # extra room below the brain for the top of the neck
CLOSING_MM = 6.0  # the inner table bridges sulci narrower than this


@dataclass(frozen=True)
class HeadSpace:
    """The reference grid grown around the brain; arrays are (z, y, x) on ``grid``."""

    grid: sitk.Image
    spacing_mm: float
    brain: np.ndarray  # bool, the reference brain on this grid
    dist_mm: np.ndarray  # float32, distance outside the brain's closed outline (0 inside it)
    ras_mm: tuple[np.ndarray, np.ndarray, np.ndarray]  # RAS x, y, z per voxel (broadcastable)
    brain_bottom_mm: float  # RAS z of the lowest brain voxel (the brainstem's end)
    brain_box_ras: tuple[tuple[float, float], ...]  # (min, max) RAS of the brain along x, y, z


@dataclass(frozen=True)
class HeadLook:
    """One subject's head: layer thicknesses (mm) and FLAIR levels (white matter = 1)."""

    csf_mm: float
    inner_table_mm: float
    diploe_mm: float
    outer_table_mm: float
    scalp_mm: float
    bone: float
    marrow: float
    fat: float
    skin: float
    muscle: float
    vitreous: float
    nerve: float

    def as_dict(self) -> dict:
        return {k: round(v, 3) for k, v in asdict(self).items()}


def draw_head_look(rng: np.random.Generator, scale: float = 1.0) -> HeadLook:
    """Children have thinner skulls and scalps; ``scale`` (subject size / MNI152) shrinks them a little."""
    thin = 0.7 + 0.3 * min(1.0, scale)
    return HeadLook(
        csf_mm=rng.uniform(1.5, 5.0), inner_table_mm=rng.uniform(1.0, 2.5) * thin,
        diploe_mm=rng.uniform(0.8, 3.5) * thin, outer_table_mm=rng.uniform(1.0, 2.0) * thin,
        scalp_mm=rng.uniform(3.0, 9.0) * thin, bone=rng.uniform(0.02, 0.1), marrow=rng.uniform(0.7, 1.5),
        fat=rng.uniform(1.1, 1.9), skin=rng.uniform(0.5, 0.9), muscle=rng.uniform(0.45, 0.8),
        vitreous=rng.uniform(0.05, 0.25), nerve=rng.uniform(0.8, 1.1),
    )


def _axes(grid: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS x, y, z of an axis-aligned grid's voxels, broadcastable to (z, y, x)."""
    nx, ny, nz = grid.GetSize()
    origin = np.array(grid.GetOrigin())
    step = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())
    return (
        (-(origin[0] + step[0, 0] * np.arange(nx))).astype(np.float32)[None, None, :],
        (-(origin[1] + step[1, 1] * np.arange(ny))).astype(np.float32)[None, :, None],
        (origin[2] + step[2, 2] * np.arange(nz)).astype(np.float32)[:, None, None],
    )


def _closed_distance(brain: np.ndarray, spacing: float) -> np.ndarray:
    """Distance (mm) outside the brain closed by CLOSING_MM, computed on a >= 2 mm copy (it is smooth)."""
    factor = max(1, round(2.0 / spacing))
    pads = [(0, (-n) % factor) for n in brain.shape]
    coarse = block_mean(np.pad(brain, pads).astype(np.float32), (factor,) * 3) > 0.5 if factor > 1 else brain
    step = spacing * factor
    grown = ndimage.distance_transform_edt(~coarse, sampling=step) <= CLOSING_MM
    closed = ndimage.distance_transform_edt(grown, sampling=step) > CLOSING_MM
    closed = ndimage.binary_fill_holes(closed | coarse)
    dist = ndimage.distance_transform_edt(~closed, sampling=step).astype(np.float32)
    if factor > 1:
        dist = ndimage.zoom(dist, factor, order=1)[tuple(slice(0, n) for n in brain.shape)]
        # Upsampling blurs the outline: the exact brain is always inside.
        dist[brain] = 0.0
    return dist


def build_head_space(ref) -> HeadSpace:
    """The head grid around a ReferenceSpace (shmn.synthesis.atlas) and its distance map."""
    s = ref.spacing_mm
    direction = np.array(ref.grid.GetDirection()).reshape(3, 3)
    pad = int(np.ceil(HEAD_MARGIN_MM / s))
    neck = int(np.ceil(NECK_MM / s))
    # Index axis 2 is superior-inferior on the template's axis-aligned grid: the neck goes on its inferior side.
    inferior_low = direction[2, 2] > 0
    pads = [(pad + neck, pad) if inferior_low else (pad, pad + neck), (pad, pad), (pad, pad)]  # (z, y, x)
    brain = np.pad(ref.brain, pads)
    grid = sitk.Image([int(n) for n in brain.shape[::-1]], sitk.sitkUInt8)
    grid.SetSpacing(ref.grid.GetSpacing())
    grid.SetDirection(ref.grid.GetDirection())
    grid.SetOrigin(ref.grid.TransformIndexToPhysicalPoint([-pads[2][0], -pads[1][0], -pads[0][0]]))
    ras = _axes(grid)
    where = np.nonzero(brain)
    box = tuple((float(ras[a].ravel()[where[2 - a]].min()), float(ras[a].ravel()[where[2 - a]].max())) for a in range(3))
    return HeadSpace(grid=grid, spacing_mm=s, brain=brain, dist_mm=_closed_distance(brain, s), ras_mm=ras,
                     brain_bottom_mm=box[2][0], brain_box_ras=box)


def _ellipsoid(ras, centre, radii) -> np.ndarray:
    x, y, z = ras
    return ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((z - centre[2]) / radii[2]) ** 2 <= 1.0


def _tube(ras, start, end, radius: float) -> np.ndarray:
    """Voxels within ``radius`` mm of the segment start-end (RAS mm)."""
    x, y, z = ras
    a, b = np.array(start, np.float32), np.array(end, np.float32)
    axis = b - a
    t = np.clip(((x - a[0]) * axis[0] + (y - a[1]) * axis[1] + (z - a[2]) * axis[2]) / float(axis @ axis), 0, 1)
    return (x - a[0] - t * axis[0]) ** 2 + (y - a[1] - t * axis[1]) ** 2 + (z - a[2] - t * axis[2]) ** 2 <= radius ** 2


def render_head(rng: np.random.Generator, head: HeadSpace, look: HeadLook, csf: float) -> tuple[np.ndarray, np.ndarray]:
    """(FLAIR outside the brain on the head grid, 0 inside it; intracranial mask: brain + extra-cerebral CSF).

    ``csf`` is the subject's CSF level, the same as in its ventricles.
    """
    (x0, x1), (y0, y1), (z0, z1) = head.brain_box_ras
    # Thickness wanders smoothly (about +-1.5 mm) around the subject's draw.
    wobble = 1.5 * smooth_noise(rng, head.dist_mm.shape, 12.0 / head.spacing_mm)
    d = head.dist_mm + np.where(head.dist_mm > 0, wobble * np.minimum(1.0, head.dist_mm / 3.0), 0.0)
    edges = np.cumsum([look.csf_mm, look.inner_table_mm, look.diploe_mm, look.outer_table_mm, look.scalp_mm, 1.0])
    levels = np.array([0.0, csf, look.bone, look.marrow, look.bone, look.fat, look.skin, 0.0], np.float32)
    layer = np.where(head.dist_mm > 0, 1 + np.searchsorted(edges, d), 0)
    flair = levels[np.clip(layer, 0, len(levels) - 1)]
    intracranial = layer <= 1

    ras = head.ras_mm
    width, depth = (x1 - x0) / 2.0, (y1 - y0) / 2.0
    cx = (x0 + x1) / 2.0
    # Face and neck soft tissue: muscle under a fat rim, below the skull base (outside the cranium).
    outside = layer >= 4
    neck_axis = (cx, y0 + 0.42 * (y1 - y0), 0.0)
    neck = (((ras[0] - neck_axis[0]) / (0.62 * width)) ** 2 + ((ras[1] - neck_axis[1]) / (0.55 * depth)) ** 2 <= 1.0) \
        & (ras[2] < z0 + 0.25 * (z1 - z0))
    face = _ellipsoid(ras, (cx, y0 + 0.80 * (y1 - y0), z0 + 0.15 * (z1 - z0)), (0.72 * width, 0.30 * (y1 - y0), 0.28 * (z1 - z0)))
    soft = (neck | face) & outside & (layer != 6)
    rim = soft & ~ndimage.binary_erosion(soft, iterations=max(1, round(4.0 / head.spacing_mm)))
    flair = np.where(soft, np.where(rim, look.fat, look.muscle), flair).astype(np.float32)
    canal = _tube(ras, (cx, neck_axis[1] - 0.15 * depth, z0 - NECK_MM), (cx, neck_axis[1] - 0.15 * depth, z0 + 5.0), 7.0)
    flair[canal & soft] = csf

    # Eyes: vitreous (fluid, suppressed) with a lens, in orbital fat, optic nerves back toward the chiasm.
    eye_y, eye_z = y1 - 0.14 * (y1 - y0), z0 + 0.36 * (z1 - z0)
    for side in (-1.0, 1.0):
        centre = (cx + side * 0.24 * (x1 - x0), eye_y, eye_z)
        radius = 11.5 * max(0.8, min(1.0, (x1 - x0) / 140.0))
        orbit = _ellipsoid(ras, centre, (radius * 1.5, radius * 1.7, radius * 1.4)) & (layer >= 3)
        flair[orbit] = look.fat
        nerve = _tube(ras, centre, (cx + side * 6.0, eye_y - 0.25 * (y1 - y0), eye_z + 12.0), 2.2) & (head.dist_mm > 0)
        flair[nerve & (layer >= 2)] = look.nerve
        eye = _ellipsoid(ras, centre, (radius,) * 3) & (head.dist_mm > 0)
        flair[eye] = look.vitreous
        lens = _ellipsoid(ras, (centre[0], centre[1] + 0.8 * radius, centre[2]), (4.0, 2.0, 4.0)) & eye
        flair[lens] = look.skin
    flair[head.brain] = 0.0
    return flair, intracranial
