"""Pathology painted on a source label map before it is deformed: enlarged ventricles and PVL lesions of
every clinical shape, with a burden from none to severe.

Shapes (after the clinical descriptions of PVL in preterm children):

- punctate: small round foci (1-3 mm) scattered in the periventricular white matter;
- irregular periventricular: patches cut from a smooth random field along the ventricle wall;
- confluent: a broad band hugging the ventricles, mostly around the trigones and occipital horns;
- cystic (cavitated): a CSF-like cavity in the white matter with a bright gliotic rim; the cavity and
  the rim are both lesion.

Lesions replace white matter only (``labels.LESION_HOSTS``); they lie mostly posterior and, in the
severe group, reach toward the motor paths (the anatomy's motor weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from shmn.synthesis.randomised import labels as L
from shmn.synthesis.randomised.anatomies import SourceAnatomy
from shmn.synthesis.randomised.spatial import smooth_noise

SEVERITIES = ("none", "mild", "moderate", "severe")


@dataclass(frozen=True)
class PathologyConfig:
    severity_weights: tuple[float, float, float, float] = (0.1, 0.35, 0.3, 0.25)  # none, mild, moderate, severe
    ventricle_growth_mm: tuple[float, float] = (0.0, 6.0)  # extra wall thickness, scaled by severity
    cyst_probability: float = 0.35  # chance a moderate or severe case has cysts
    # Slit-like ventricles: the share of subjects without or with mild PVL whose lateral ventricles are narrowed
    # instead of grown, and the range of the share of their wall (the outermost voxel layer) moved inward. The
    # source anatomies' adult ventricles are otherwise the smallest the network ever sees. 0: never, and no random
    # number is drawn for it (the random stream of earlier configurations stays the same).
    ventricle_narrowing_probability: float = 0.0
    ventricle_narrowing_wall: tuple[float, float] = (0.3, 0.8)


def posterior_weight(anatomy: SourceAnatomy) -> np.ndarray:
    """0 in front of y = -5 mm (RAS), 1 behind y = -35 mm: the trigones and occipital horns."""
    return np.broadcast_to(np.clip((-anatomy.ras[1] - 5.0) / 30.0, 0.0, 1.0), anatomy.labels.shape)


def enlarge_ventricles(labels: np.ndarray, anatomy: SourceAnatomy, growth_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Grow the lateral ventricles into the surrounding white and deep grey matter, more at the back and
    irregularly (ex vacuo dilatation after white-matter loss). Returns the new distance-to-ventricle map."""
    if growth_mm <= 0:
        return anatomy.dist_ventricles_mm
    reach = growth_mm * (0.4 + 0.6 * posterior_weight(anatomy)) * np.clip(1.0 + 0.35 * smooth_noise(labels.shape, rng, 8), 0.2, 2.0)
    grown = (anatomy.dist_ventricles_mm < reach) & np.isin(labels, (L.WHITE_MATTER, L.DEEP_GREY))
    labels[grown] = L.VENTRICLE
    return np.maximum(anatomy.dist_ventricles_mm - reach, 0.0).astype(np.float32)


def narrow_ventricles(labels: np.ndarray, anatomy: SourceAnatomy, wall_share: float, rng: np.random.Generator) -> np.ndarray | None:
    """Move about ``wall_share`` of the lateral ventricles' wall inward by one voxel, in smooth patches, giving the
    freed voxels to the white matter: the slit-like ventricles of many children. On the model grid the adult
    ventricles are only a few voxels thick (at 2 mm two thirds of their voxels touch the wall), so one voxel is
    the step. Returns the new distance-to-ventricle map, or None (labels unchanged) when less than a quarter of
    the ventricles would be left."""
    ventricles = labels == L.VENTRICLE
    spacing = anatomy.spacing_mm
    wall = ventricles & ~ndimage.binary_erosion(ventricles)  # the voxels with a face on the outside
    noise = smooth_noise(labels.shape, rng, 8)
    moved = wall & (noise < np.quantile(noise[wall], wall_share)) if wall.any() else wall
    kept = ventricles & ~moved
    if kept.sum() < 0.25 * ventricles.sum():
        return None
    labels[moved] = L.WHITE_MATTER
    return ndimage.distance_transform_edt(~kept, sampling=spacing).astype(np.float32)


def _pick(weights: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """n voxel indices (rows of z, y, x) drawn with probability proportional to ``weights``."""
    flat = weights.ravel()
    total = float(flat.sum())
    if n <= 0 or total <= 0:
        return np.zeros((0, 3), int)
    chosen = rng.choice(flat.size, size=n, p=flat / total)
    return np.stack(np.unravel_index(chosen, weights.shape), axis=1)


def _ellipsoid(labels: np.ndarray, centre: np.ndarray, radii_vox: np.ndarray, rng: np.random.Generator) -> tuple[tuple[slice, ...], np.ndarray]:
    """(box, mask within the box) of a randomly oriented ellipsoid."""
    reach = int(np.ceil(radii_vox.max())) + 1
    box = tuple(slice(max(0, int(c) - reach), min(n, int(c) + reach + 1)) for c, n in zip(centre, labels.shape))
    grids = np.meshgrid(*[np.arange(b.start, b.stop) - c for b, c in zip(box, centre)], indexing="ij")
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    coords = np.stack(grids, -1) @ q
    return box, ((coords / radii_vox) ** 2).sum(-1) <= 1.0


def _paint(labels: np.ndarray, mask: np.ndarray, cls: int, box: tuple[slice, ...] | None = None) -> None:
    target = labels if box is None else labels[box]
    target[mask & np.isin(target, L.LESION_HOSTS)] = cls


def punctate(labels, anatomy, dist_v, rng, n: int) -> None:
    s = anatomy.spacing_mm
    where = (labels == L.WHITE_MATTER) & (dist_v >= 1.0) & (dist_v <= 15.0)
    for centre in _pick(where * (0.3 + posterior_weight(anatomy)), rng, n):
        box, mask = _ellipsoid(labels, centre, rng.uniform(0.8, 3.0, 3) / s, rng)
        _paint(labels, mask, L.LESION, box)


def irregular(labels, anatomy, dist_v, rng, n: int, motor_pull: float) -> None:
    """Patches of a smooth random field within a ball, along the ventricle wall."""
    s = anatomy.spacing_mm
    where = (labels == L.WHITE_MATTER) & (dist_v <= 6.0)
    weights = where * (0.2 + posterior_weight(anatomy) + motor_pull * anatomy.motor)
    for centre in _pick(weights, rng, n):
        radius = rng.uniform(3.0, 9.0) / s
        box, ball = _ellipsoid(labels, centre, radius * rng.uniform(0.6, 1.0, 3), rng)
        noise = smooth_noise(ball.shape, rng, max(2, int(ball.shape[0] / 2)))
        depth = rng.uniform(4.0, 12.0)
        mask = ball & (noise > rng.uniform(-0.6, 0.6)) & (dist_v[box] <= depth)
        _paint(labels, mask, L.LESION, box)


def confluent(labels, anatomy, dist_v, rng, motor_pull: float) -> None:
    """A broad periventricular band, thickest at the back, with an irregular outer edge."""
    back = posterior_weight(anatomy)
    band = rng.uniform(2.0, 7.0) * (0.5 + 0.5 * back + 0.3 * motor_pull * anatomy.motor)
    band = band * np.clip(1.0 + 0.4 * smooth_noise(labels.shape, rng, 10), 0.0, 2.0)
    mask = (dist_v <= band) & (back + 0.3 * motor_pull * anatomy.motor > rng.uniform(0.5, 0.9))
    _paint(labels, mask, L.LESION)


def cysts(labels, anatomy, dist_v, rng, n: int) -> None:
    """Cavities (CSF-like) with a gliotic rim 1-2 mm thick (bright on FLAIR)."""
    s = anatomy.spacing_mm
    where = (labels == L.WHITE_MATTER) & (dist_v >= 3.0) & (dist_v <= 12.0)
    for centre in _pick(where * (0.2 + posterior_weight(anatomy)), rng, n):
        radii = rng.uniform(2.0, 6.0, 3) / s
        rim = max(1.0, rng.uniform(1.0, 2.0) / s)
        box, outer = _ellipsoid(labels, centre, radii + rim, rng)
        # the same orientation for the cavity: shrink the outer ellipsoid by the rim thickness
        inner = ndimage.binary_erosion(outer, iterations=int(round(rim)))
        if not inner.any():  # a cyst smaller than the rim at this grid: keep its central voxel as the cavity
            inner = np.zeros_like(outer)
            inner[tuple(n // 2 for n in outer.shape)] = True
            inner &= outer
        _paint(labels, outer & ~inner, L.CYST_RIM, box)
        _paint(labels, inner, L.CYST, box)


def add_pathology(labels: np.ndarray, anatomy: SourceAnatomy, rng: np.random.Generator, config: PathologyConfig) -> dict:
    """Paint ventricles and lesions in place; return what was drawn (for the sample's record and MACS)."""
    severity = SEVERITIES[int(rng.choice(4, p=np.array(config.severity_weights) / sum(config.severity_weights)))]
    level = SEVERITIES.index(severity)
    lo, hi = config.ventricle_growth_mm
    growth = rng.uniform(lo, hi) * level / 3.0 + rng.uniform(0.0, 1.0)  # normal children vary too
    narrowed = None
    if level <= 1 and config.ventricle_narrowing_probability > 0 and rng.random() < config.ventricle_narrowing_probability:
        narrowed = narrow_ventricles(labels, anatomy, rng.uniform(*config.ventricle_narrowing_wall), rng)
    if narrowed is not None:  # a negative growth: the wall moved inward
        dist_v, growth = narrowed, 0.0
    else:
        dist_v = enlarge_ventricles(labels, anatomy, growth, rng)
    motor_pull = (0.0, 0.2, 0.6, 1.5)[level]
    shapes: list[str] = []
    if level >= 1:
        punctate(labels, anatomy, dist_v, rng, int(rng.integers(0, (4, 10, 15)[level - 1] + 1)))
        shapes.append("punctate")
        n_irregular = int(rng.integers(1 if level >= 2 else 0, (3, 6, 10)[level - 1] + 1))
        irregular(labels, anatomy, dist_v, rng, n_irregular, motor_pull)
        shapes.append("irregular")
    if level >= 2 and rng.random() < (0.3 if level == 2 else 0.7):
        confluent(labels, anatomy, dist_v, rng, motor_pull)
        shapes.append("confluent")
    if level >= 2 and rng.random() < config.cyst_probability:
        cysts(labels, anatomy, dist_v, rng, int(rng.integers(1, 5)))
        shapes.append("cystic")
    return {"severity": severity, "ventricle_growth_mm": round(float(growth), 2), "ventricles_narrowed": narrowed is not None,
            "shapes": shapes, "dist_ventricles_mm": dist_v}
