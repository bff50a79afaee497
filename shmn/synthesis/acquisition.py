"""From the reference space to a clinical acquisition: subject shape, head pose, scanner grid.

One transform maps each scanner point to the reference space: the inverse head pose (rigid, a few
to 15 degrees), the subject's scaling (a child's brain is smaller than MNI152) with a little shear,
then a smooth random displacement field. The scanner grid has its own orientation code (RAS, LAS
with a negative determinant, LPS, or an oblique direction), in-plane spacing and slice thickness.

Partial volume: the grid is sampled on a finer grid (steps of about the working spacing) and each
acquired voxel is the mean of its sub-samples, so a 5 mm slice averages 5 mm of anatomy. The
whole chain is turned once into a dense displacement field on the fine grid and every channel
(image, lesion mask, ventricle mask) is warped with it: one interpolation per image, one evaluation
of the transform per subject, and the masks are sampled only where they can be.
Masks are the sub-voxel fraction > 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from shmn.synthesis.atlas import ReferenceSpace
from shmn.synthesis.fields import block_mean, smooth_noise

# Direction matrices (columns = where i, j, k point, in LPS) of the axis-aligned codes.
ORIENTATIONS = {
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "LAS": np.diag([1.0, -1.0, 1.0]),  # determinant -1, as dcm2niix often writes
    "LPS": np.eye(3),
}
ORIENTATION_WEIGHTS = {"RAS": 0.3, "LAS": 0.3, "LPS": 0.2, "oblique": 0.2}


@dataclass(frozen=True)
class SizeProfile:
    """How large a cohort's images are: the working spacing and the acquisition ranges."""

    name: str
    work_spacing_mm: int
    in_plane_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    thin_slice_probability: float  # share of 3D (isotropic-ish) acquisitions
    margin_mm: tuple[float, float]  # field of view beyond the brain, each side


SIZES = {
    "paper": SizeProfile("paper", 1, (0.8, 1.2), (2.0, 5.0), 0.25, (6.0, 16.0)),
    "small": SizeProfile("small", 2, (3.4, 4.0), (3.6, 4.6), 0.0, (4.0, 8.0)),
}


@dataclass(frozen=True)
class Plan:
    """One subject's random shape, pose and scanner settings."""

    orientation: str
    direction: tuple[float, ...]  # 9 values, row-major, LPS
    spacing: tuple[float, float, float]  # i, j (in-plane), k (slice)
    head_rotation_deg: float
    head_rotation_axis: tuple[float, float, float]
    head_shift_mm: tuple[float, float, float]
    scale: tuple[float, float, float]
    shear: tuple[float, float, float]
    deformation_mm: float
    margins_mm: tuple[float, ...]  # low/high margin along i, j, k

    def summary(self) -> dict:
        return {
            "orientation": self.orientation,
            "direction_determinant": round(float(np.linalg.det(np.reshape(self.direction, (3, 3)))), 3),
            "spacing_mm": [round(float(s), 3) for s in self.spacing],
            "head_rotation_deg": round(float(self.head_rotation_deg), 2),
            "scale": [round(float(s), 3) for s in self.scale],
            "deformation_mm": round(float(self.deformation_mm), 2),
        }


def _oblique(rng: np.random.Generator) -> np.ndarray:
    """An oblique axial plane: a tilt about left-right (AC-PC style) plus a little about the others."""
    base = ORIENTATIONS["RAS"] if rng.random() < 0.5 else ORIENTATIONS["LPS"]
    angles = np.radians([rng.uniform(10, 25) * rng.choice([-1, 1]), rng.uniform(-8, 8), rng.uniform(-8, 8)])
    return Rotation.from_euler("xyz", angles).as_matrix() @ base


CHILD_SCALES = (0.82, 0.95)  # default: a school-age child's brain against MNI152's adult size


def draw_plan(rng: np.random.Generator, profile: SizeProfile, scale_range: tuple[float, float] = CHILD_SCALES) -> Plan:
    codes = list(ORIENTATION_WEIGHTS)
    orientation = str(rng.choice(codes, p=list(ORIENTATION_WEIGHTS.values())))
    direction = _oblique(rng) if orientation == "oblique" else ORIENTATIONS[orientation]
    in_plane = rng.uniform(*profile.in_plane_mm)
    thin = rng.random() < profile.thin_slice_probability
    if thin:  # 3D FLAIR: isotropic, about 1 mm
        in_plane = rng.uniform(max(profile.in_plane_mm[0], 1.0), max(profile.in_plane_mm[1], 1.0))
    thickness = in_plane if thin else rng.uniform(*profile.slice_mm)
    axis = rng.normal(size=3)
    mean_scale = rng.uniform(*scale_range)
    return Plan(
        orientation=orientation, direction=tuple(float(v) for v in direction.ravel()),
        spacing=(float(in_plane), float(in_plane), float(thickness)),
        head_rotation_deg=float(rng.uniform(3.0, 15.0)), head_rotation_axis=tuple(float(v) for v in axis / np.linalg.norm(axis)),
        head_shift_mm=tuple(float(v) for v in rng.uniform(-8, 8, 3)),
        scale=tuple(float(v) for v in mean_scale * rng.uniform(0.96, 1.04, 3)),
        shear=tuple(float(v) for v in rng.uniform(-0.03, 0.03, 3)), deformation_mm=float(rng.uniform(1.5, 4.0)),
        margins_mm=tuple(float(v) for v in rng.uniform(*profile.margin_mm, 6)),
    )


def affine_part(plan: Plan, ref: ReferenceSpace) -> sitk.AffineTransform:
    """Scanner point -> reference point, without the nonlinear part (inverse pose, then shape)."""
    centre = np.array(ref.brain_centre_mm)
    pose = Rotation.from_rotvec(np.radians(plan.head_rotation_deg) * np.array(plan.head_rotation_axis)).as_matrix()
    shape = np.diag(1.0 / np.array(plan.scale))
    shape[0, 1], shape[1, 2], shape[0, 2] = plan.shear
    # x_ref = centre + shape @ (pose.T @ x_scanner + shift): the brain sits near the scanner's isocentre.
    matrix = shape @ pose.T
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(matrix.ravel().tolist())
    transform.SetTranslation((centre + shape @ np.array(plan.head_shift_mm)).tolist())
    return transform


def deformation(rng: np.random.Generator, plan: Plan, ref: ReferenceSpace,
                domain: sitk.Image | None = None) -> sitk.DisplacementFieldTransform:
    """Smooth random displacement (reference space), at most ``plan.deformation_mm`` long.

    ``domain`` (default: the reference grid) is the region it is defined on; heads need the head grid.
    """
    step = 8.0
    domain = domain if domain is not None else ref.grid
    size = [int(np.ceil(n * ref.spacing_mm / step)) + 3 for n in domain.GetSize()]
    field = np.stack([smooth_noise(rng, tuple(size[::-1]), 2.0) for _ in range(3)], axis=-1)
    field *= plan.deformation_mm / max(float(np.linalg.norm(field, axis=-1).max()), 1e-6)
    image = sitk.GetImageFromArray(field.astype(np.float64), isVector=True)
    image.SetSpacing((step, step, step))
    image.SetDirection(domain.GetDirection())
    image.SetOrigin(domain.TransformContinuousIndexToPhysicalPoint([-step / ref.spacing_mm] * 3))
    return sitk.DisplacementFieldTransform(image)


def subject_transform(rng: np.random.Generator, plan: Plan, ref: ReferenceSpace,
                      domain: sitk.Image | None = None) -> sitk.CompositeTransform:
    # A composite applies its last transform first: affine (scanner -> reference), then the displacement.
    return sitk.CompositeTransform([deformation(rng, plan, ref, domain), affine_part(plan, ref)])


def scanner_extent(plan: Plan, ref: ReferenceSpace, corners_lps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) along the plan's i, j, k axes of reference points (LPS mm) as the scanner sees them."""
    inverse = affine_part(plan, ref).GetInverse()
    scanner = np.array([inverse.TransformPoint(p) for p in corners_lps])
    along = scanner @ np.reshape(plan.direction, (3, 3))  # coordinate of each corner along the grid's i, j, k axes
    return along.min(0), along.max(0)


def clinical_grid(plan: Plan, ref: ReferenceSpace, extent: tuple[np.ndarray, np.ndarray] | None = None) -> sitk.Image:
    """The acquired grid: covers the subject's brain plus the plan's margins, on the plan's axes.

    ``extent`` (low, high along i, j, k; see scanner_extent) replaces the brain's box when given.
    """
    direction = np.reshape(plan.direction, (3, 3))
    low, high = extent if extent is not None else scanner_extent(plan, ref, ref.box_corners_mm(ref.brain_box))
    margins = np.reshape(plan.margins_mm, (3, 2))
    low = low - margins[:, 0] - plan.deformation_mm
    high = high + margins[:, 1] + plan.deformation_mm
    spacing = np.array(plan.spacing)
    size = np.ceil((high - low) / spacing).astype(int) + 1
    grid = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    grid.SetSpacing(plan.spacing)
    grid.SetDirection(plan.direction)
    grid.SetOrigin((direction @ low).tolist())
    return grid


def _fine_grid(grid: sitk.Image, work_spacing: float) -> tuple[sitk.Image, tuple[int, int, int]]:
    """A grid whose blocks of ``factors`` sub-samples average to ``grid``'s voxels."""
    spacing = np.array(grid.GetSpacing())
    factors = np.maximum(1, np.round(spacing / work_spacing)).astype(int)
    fine_spacing = spacing / factors
    direction = np.reshape(grid.GetDirection(), (3, 3))
    shift = direction @ ((factors - 1) / 2.0 * fine_spacing)
    fine = sitk.Image([int(n * f) for n, f in zip(grid.GetSize(), factors)], sitk.sitkUInt8)
    fine.SetSpacing(fine_spacing.tolist())
    fine.SetDirection(grid.GetDirection())
    fine.SetOrigin((np.array(grid.GetOrigin()) - shift).tolist())
    return fine, tuple(int(f) for f in factors)


def _sub_box(ref: ReferenceSpace, box: tuple[slice, ...], affine: sitk.Transform, grid: sitk.Image,
             margin_mm: float) -> tuple[slice, slice, slice]:
    """The part of ``grid`` (z, y, x slices) that can see the reference ``box``."""
    inverse = affine.GetInverse()
    index = np.array([grid.TransformPhysicalPointToContinuousIndex(inverse.TransformPoint(p))
                      for p in ref.box_corners_mm(box)])
    pad = margin_mm / np.array(grid.GetSpacing()) + 1
    low = np.maximum(np.floor(index.min(0) - pad), 0).astype(int)
    high = np.minimum(np.ceil(index.max(0) + pad) + 1, grid.GetSize()).astype(int)
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low[::-1], high[::-1]))


def acquire(ref: ReferenceSpace, transform: sitk.Transform, affine: sitk.Transform, grid: sitk.Image,
            channels: list[tuple[np.ndarray | sitk.Image, tuple[slice, ...] | None]], margin_mm: float) -> list[np.ndarray]:
    """Each reference-space channel as acquired on ``grid`` (partial-volume averaged float32 arrays).

    A channel comes with the reference box outside which it is zero (or None): only the part of the
    grid that can see that box is sampled. ``affine`` is the transform without its displacement,
    which is at most ``margin_mm`` long. A channel given as an image (on its own grid, e.g. the
    head's) is sampled everywhere.
    """
    fine, factors = _fine_grid(grid, ref.spacing_mm)
    # Measured: a dense field plus Warp costs about half of resampling through the composite per channel.
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, fine.GetSize(), fine.GetOrigin(),
                                              fine.GetSpacing(), fine.GetDirection())
    size = grid.GetSize()
    acquired = []
    for channel, box in channels:
        box = None if isinstance(channel, sitk.Image) else box
        out_box = _sub_box(ref, box, affine, grid, margin_mm) if box is not None else tuple(slice(0, n) for n in size[::-1])
        fine_box = [slice(b.start * f, b.stop * f) for b, f in zip(out_box[::-1], factors)]  # x, y, z
        sub_field = field if box is None else field[fine_box[0], fine_box[1], fine_box[2]]
        source = channel if isinstance(channel, sitk.Image) else ref.image(channel.astype(np.float32, copy=False), box)
        warped = sitk.Warp(source, sub_field, sitk.sitkLinear,
                           sub_field.GetSize(), sub_field.GetOrigin(), sub_field.GetSpacing(), sub_field.GetDirection(), 0.0)
        result = np.zeros(size[::-1], np.float32)
        result[out_box] = block_mean(sitk.GetArrayViewFromImage(warped), factors[::-1])
        acquired.append(result)
    return acquired


def as_image(array: np.ndarray, grid: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(grid)
    return image


def mask_from_fraction(fraction: np.ndarray) -> np.ndarray:
    """Voxels more than half inside; a tiny structure that no voxel covers by half keeps its best voxels."""
    mask = fraction > 0.5
    if not mask.any() and fraction.max() > 0:
        mask = fraction >= 0.5 * fraction.max()
    return mask.astype(np.uint8)
