"""One synthetic subject's pathology, drawn in the reference (MNI) space.

A latent severity in [0, 1] drives everything: how far the lateral ventricles grow into the white
matter they lost (ex-vacuo enlargement, mostly at the trigones), how many periventricular lesions
there are and how large, and, in severe subjects, lesions that reach from the ventricle wall toward
the thalamus, the internal capsule and the WM under the central cortex. Lesions are irregular blobs
(an ellipsoid whose margin is warped by smooth noise) kept inside cerebral WM.

The subject's smooth deformation, scaling and head pose are applied later, in one resampling
(acquisition.py); statistics that must be judged against the anatomy are measured here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from shmn.synthesis.atlas import MOTOR_DECAY_MM, PATHOLOGY_REACH_MM, ReferenceSpace
from shmn.synthesis.fields import ball_box, box_around, smooth_noise

PERIVENTRICULAR_MM = 15.0  # "periventricular": within this distance of the (enlarged) ventricle wall
SEED_MAX_MM = 6.0  # lesion centres lie at most this far from the ventricle wall
MIN_LESION_ML = 0.4  # every subject has PVL that survives thick-slice acquisition


@dataclass
class Pathology:
    """Masks on the reference grid plus the numbers that describe them."""

    severity: float
    ventricles: np.ndarray  # bool, enlarged lateral ventricles
    ventricle_fraction: np.ndarray  # float32 0..1, the same with sub-voxel edges (for rendering)
    lesions: np.ndarray  # bool
    lesion_box: tuple[slice, ...]  # bounding box of the lesions (+ a margin)
    lesion_texture: np.ndarray  # float32 within lesion_box: brightness relative to the lesion mean (1 +- patchiness)
    stats: dict = field(default_factory=dict)


def draw_severity(rng: np.random.Generator) -> float:
    """Skewed toward mild, as in a PVL clinic: most children walk and use their hands."""
    return float(rng.beta(1.4, 2.0))


@dataclass
class VentricleGrowth:
    mask: np.ndarray  # bool, the enlarged lateral ventricles
    fraction: np.ndarray  # float32 0..1, the same with sub-voxel edges
    grow_mm: float
    box: tuple[slice, ...]  # where the growth was computed
    wall_mm: np.ndarray  # within ``box``: distance from the new wall, outward (estimate, see below)


def enlarge_ventricles(rng: np.random.Generator, ref: ReferenceSpace, severity: float) -> VentricleGrowth:
    """Grow the lateral ventricles into the neighbouring WM, more at the trigones, with an irregular wall."""
    grow_mm = rng.uniform(0.2, 1.5) + 6.0 * severity * rng.uniform(0.6, 1.2)
    posterior_gain = rng.uniform(0.4, 1.0)  # colpocephaly: trigones and occipital horns widen most
    reach = grow_mm * (1 + posterior_gain) * 1.6 + SEED_MAX_MM + 2 * ref.spacing_mm
    box = box_around(ref.dist_ventricles_mm <= reach, 1)
    d = ref.dist_ventricles_mm[box]
    noise = smooth_noise(rng, d.shape, 6.0 / ref.spacing_mm)
    local_grow = grow_mm * (1 + posterior_gain * ref.posterior[box]) + (0.3 * grow_mm + 0.4) * noise
    boundary = np.maximum(local_grow, 0) + ref.spacing_mm / 2
    fraction_box = np.clip(0.5 + (boundary - d) / ref.spacing_mm, 0, 1)
    fraction_box *= ref.wm[box] | ref.ventricles[box]  # only WM is lost; deep grey matter stays
    fraction_box[ref.ventricles[box]] = 1.0
    fraction = np.zeros(ref.shape, np.float32)
    fraction[box] = fraction_box
    # The wall moved out by ``boundary``, which varies slowly: distance to it ~ old distance - boundary.
    return VentricleGrowth(mask=fraction > 0.5, fraction=fraction, grow_mm=float(grow_mm), box=box,
                           wall_mm=d - boundary)


class _WallDistance:
    """Distance (mm) from voxels to the wall of a mask, through a k-d tree of its surface voxels."""

    def __init__(self, mask: np.ndarray, spacing: float):
        box = box_around(mask, 1)
        surface = mask[box] & ~ndimage.binary_erosion(mask[box])
        offset = np.array([b.start for b in box])
        self.tree = cKDTree((np.argwhere(surface) + offset) * spacing)
        self.spacing = spacing

    def __call__(self, voxels: np.ndarray, up_to_mm: float = np.inf) -> np.ndarray:
        """Distances; beyond ``up_to_mm`` (which makes the search much faster) they read as inf."""
        if len(voxels) == 0:
            return np.zeros(0, np.float32)
        return self.tree.query(voxels * self.spacing, distance_upper_bound=up_to_mm)[0].astype(np.float32)


def _ellipsoid_lesion(rng, ref: ReferenceSpace, centre: np.ndarray, radius_mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """An irregular blob around ``centre`` (voxel index): (box, mask within the box)."""
    axes = np.array([1.0, rng.uniform(0.55, 1.0), rng.uniform(0.35, 0.8)])
    axes = axes / np.cbrt(axes.prod()) * radius_mm / ref.spacing_mm  # same volume as a ball of radius_mm
    box = ball_box(centre, axes.max() * 1.6 + 1, ref.shape)
    grid = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij"), -1) - centre
    local = grid @ Rotation.random(random_state=rng).as_matrix()
    radius = np.sqrt(((local / axes) ** 2).sum(-1))
    margin = 1.0 + 0.35 * smooth_noise(rng, radius.shape, 2.5 / ref.spacing_mm)
    return box, radius < margin


def _tract_lesion(rng, ref: ReferenceSpace, start: np.ndarray, target: np.ndarray, radius_mm: float):
    """A tube from ``start`` toward ``target`` (voxel indices) with an irregular wall: (box, mask)."""
    lo = np.maximum(np.minimum(start, target) - radius_mm * 2 / ref.spacing_mm - 1, 0).astype(int)
    hi = np.minimum(np.maximum(start, target) + radius_mm * 2 / ref.spacing_mm + 2, ref.shape).astype(int)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).astype(np.float32)
    axis = target - start
    t = np.clip(((grid - start) @ axis) / max(float(axis @ axis), 1e-6), 0, 1)
    dist_mm = np.linalg.norm(grid - (start + t[..., None] * axis), axis=-1) * ref.spacing_mm
    taper = 1.0 - 0.4 * t  # thinner as it reaches into the capsule or the corona radiata
    wall = radius_mm * taper * (1.0 + 0.35 * smooth_noise(rng, dist_mm.shape, 2.5 / ref.spacing_mm))
    return box, dist_mm < wall


def _pick(rng, voxels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return voxels[rng.choice(len(voxels), p=weights / weights.sum())]


def place_lesions(rng: np.random.Generator, ref: ReferenceSpace, growth: VentricleGrowth, severity: float):
    """PVL lesion mask (bool) and how many blobs / tract lesions were drawn."""
    allowed = ref.wm & ~growth.mask & (ref.dist_ventricles_mm <= PATHOLOGY_REACH_MM)
    near_wall = allowed[growth.box] & (growth.wall_mm > 0) & (growth.wall_mm <= SEED_MAX_MM)
    seeds = np.argwhere(near_wall) + [b.start for b in growth.box]
    d_wall = growth.wall_mm[near_wall]
    zyx = tuple(seeds.T)
    prior = (0.2 + ref.posterior[zyx]) * (0.4 + np.exp(-ref.dist_wmh_mm[zyx] / 6.0)) * np.exp(-d_wall / 3.0)

    lesions = np.zeros(ref.shape, bool)
    n_blobs = 1 + int(rng.poisson(1.0 + 6.0 * severity))
    for _ in range(n_blobs):
        radius = min(14.0, rng.uniform(3.5, 5.0) + 7.0 * severity * rng.uniform(0.5, 1.3))
        box, blob = _ellipsoid_lesion(rng, ref, _pick(rng, seeds, prior), radius)
        lesions[box] |= blob

    # Severe PVL reaches the motor paths: tubes from the wall toward the nearest motor-zone WM.
    n_tracts = int(rng.binomial(2, float(np.clip((severity - 0.3) / 0.45, 0, 1))))
    motor = np.argwhere((ref.motor_zone & allowed)[ref.pathology_box]) + [b.start for b in ref.pathology_box]
    motor_prior = prior * np.exp(-ref.dist_motor_mm[zyx] / 10.0)
    for _ in range(n_tracts):
        start = _pick(rng, seeds, motor_prior).astype(np.float32)
        reach = np.linalg.norm(motor - start, axis=1) * ref.spacing_mm
        candidates = motor[(reach >= 6) & (reach <= 28)]
        if len(candidates) == 0:
            continue
        target = candidates[rng.integers(len(candidates))].astype(np.float32)
        box, tube = _tract_lesion(rng, ref, start, target, rng.uniform(2.0, 3.5) + 2.0 * severity)
        lesions[box] |= tube

    lesions &= allowed
    while lesions.sum() * ref.voxel_ml < MIN_LESION_ML:  # a faint subject still has visible PVL
        box, blob = _ellipsoid_lesion(rng, ref, _pick(rng, seeds, prior), rng.uniform(4.0, 6.0))
        lesions[box] |= blob & allowed[box]
    return lesions, {"blobs": n_blobs, "tract_lesions": n_tracts}


def lesion_texture(rng: np.random.Generator, ref: ReferenceSpace, lesions: np.ndarray):
    """(box, relative brightness within it): gliosis is patchy, not a flat plateau."""
    box = box_around(lesions, 3)
    return box, 1.0 + 0.12 * smooth_noise(rng, lesions[box].shape, 2.0 / ref.spacing_mm)


def make_pathology(rng: np.random.Generator, ref: ReferenceSpace, severity: float) -> Pathology:
    growth = enlarge_ventricles(rng, ref, severity)
    lesions, counts = place_lesions(rng, ref, growth, severity)
    lesion_box, texture = lesion_texture(rng, ref, lesions)
    pathology = Pathology(severity=severity, ventricles=growth.mask, ventricle_fraction=growth.fraction,
                          lesions=lesions, lesion_box=lesion_box, lesion_texture=texture)
    pathology.stats = reference_statistics(ref, pathology) | counts | {"ventricle_growth_mm": round(growth.grow_mm, 2)}
    return pathology


def reference_statistics(ref: ReferenceSpace, pathology: Pathology) -> dict:
    """Numbers measured in the reference (MNI) space, where the anatomy's labels are known."""
    voxels = np.argwhere(pathology.lesions)
    zyx = tuple(voxels.T)
    wall = _WallDistance(pathology.ventricles, ref.spacing_mm)(voxels, PERIVENTRICULAR_MM + 1e-3)
    motor_weight = np.exp(-ref.dist_motor_mm[zyx] / MOTOR_DECAY_MM)
    n = max(len(voxels), 1)
    return {
        "severity": round(pathology.severity, 4),
        # Lesion volume weighted by closeness to the motor paths: what decides the MACS group.
        "motor_burden_ml": round(float(motor_weight.sum()) * ref.voxel_ml, 4),
        "reference_lesion_volume_ml": round(len(voxels) * ref.voxel_ml, 3),
        "reference_ventricle_volume_ml": round(float(pathology.ventricles.sum()) * ref.voxel_ml, 3),
        "periventricular_wm_fraction": round(float((ref.wm[zyx] & (wall <= PERIVENTRICULAR_MM)).sum()) / n, 4),
        "posterior_fraction": round(float((ref.posterior[zyx] > 0.5).sum()) / n, 4),
        "motor_zone_fraction": round(float(ref.motor_zone[zyx].sum()) / n, 4),
    }
