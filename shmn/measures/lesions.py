"""Lesion geometry: connected components, lesion centres, centre density maps and their peaks.

All arrays are (z, y, x) (SimpleITK's array order); ``spacing_zyx`` is the voxel size in mm in the
same order (``image.GetSpacing()[::-1]``). Centres are continuous voxel indices (z, y, x); turn
them into physical points with the image's ``TransformContinuousIndexToPhysicalPoint((x, y, z))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

# 26-connectivity: voxels touching by a face, an edge or a corner belong to the same lesion.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)
# Face neighbours: a voxel is on a lesion's border when one of its 6 faces touches background.
_FACES = ndimage.generate_binary_structure(3, 1)


@dataclass(frozen=True)
class Lesion:
    label: int  # index in lesion_components' label map
    centre_zyx: tuple[float, float, float]  # continuous voxel index
    volume_ml: float
    voxels: int


def _spacing(spacing_zyx: Sequence[float]) -> np.ndarray:
    spacing = np.asarray(spacing_zyx, dtype=float).reshape(-1)
    if spacing.shape != (3,) or not np.all(spacing > 0):
        raise ValueError(f"spacing_zyx: {tuple(spacing_zyx)}; expected three positive voxel sizes in mm (z, y, x)")
    return spacing


def lesion_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of ``mask > 0``: (int32 label map with 1..n, n)."""
    labels, n = ndimage.label(np.asarray(mask) > 0, structure=CONNECTIVITY_26)
    return labels.astype(np.int32, copy=False), int(n)


def without_small_components(mask: np.ndarray, spacing_zyx: Sequence[float], min_ml: float) -> np.ndarray:
    """``mask > 0`` without the 26-connected components smaller than ``min_ml`` (uint8)."""
    labels, n = lesion_components(mask)
    keep = np.zeros(n + 1, dtype=bool)
    if n:
        voxel_ml = float(np.prod(_spacing(spacing_zyx))) / 1000.0
        keep[1:] = np.bincount(labels.ravel(), minlength=n + 1)[1:] * voxel_ml >= min_ml
    return keep[labels].astype(np.uint8)


def outer_border(component: np.ndarray) -> np.ndarray:
    """Voxels of ``component`` with a face on the outside (internal cavities filled first)."""
    filled = ndimage.binary_fill_holes(component)
    # border_value=0: voxels on the array's edge count as border, as if background lay beyond it.
    return filled & ~ndimage.binary_erosion(filled, structure=_FACES, border_value=0)


def lesion_centres(mask: np.ndarray, spacing_zyx: Sequence[float]) -> list[Lesion]:
    """One Lesion per 26-connected component, centre = centre of mass of its outer border voxels.

    The border (not the whole body) is what the paper uses: it marks the lesion's outline, so a
    crescent-shaped periventricular lesion gets its centre inside its hull rather than biased
    toward its thickest part.
    """
    voxel_ml = float(np.prod(_spacing(spacing_zyx))) / 1000.0
    labels, n = lesion_components(mask)
    lesions = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        # One voxel of margin so that erosion sees background around the lesion inside the crop.
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        component = labels[box] == index
        border = outer_border(component)
        offset = np.array([s.start for s in box], dtype=float)
        centre = np.argwhere(border).mean(axis=0) + offset
        voxels = int(component.sum())
        lesions.append(Lesion(index, tuple(float(c) for c in centre), voxels * voxel_ml, voxels))
    return lesions


def gaussian_blobs(
    shape: Sequence[int],
    centres_zyx: Sequence[Sequence[float]],
    spacing_zyx: Sequence[float],
    sigma_mm: float,
) -> np.ndarray:
    """float32 map: max over centres of exp(-d^2 / (2 sigma^2)), d in mm (peak 1 at each centre)."""
    spacing = _spacing(spacing_zyx)
    if sigma_mm <= 0:
        raise ValueError(f"sigma_mm: {sigma_mm}; must be > 0")
    density = np.zeros(tuple(shape), dtype=np.float32)
    axes = [np.arange(size, dtype=np.float32) for size in shape]
    for centre in centres_zyx:
        # The Gaussian is separable: an outer product of three 1-D profiles costs one pass per blob.
        g = [np.exp(-(((ax - c) * s) ** 2) / (2 * sigma_mm**2)) for ax, c, s in zip(axes, centre, spacing)]
        np.maximum(density, g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :], out=density)
    return density


def density_map(mask: np.ndarray, spacing_zyx: Sequence[float], sigma_mm: float = 4.0) -> np.ndarray:
    """The localization target: a Gaussian blob of peak 1 at each lesion centre (max where blobs meet)."""
    centres = [lesion.centre_zyx for lesion in lesion_centres(mask, spacing_zyx)]
    return gaussian_blobs(np.shape(mask), centres, spacing_zyx, sigma_mm)


def density_peaks(
    density: np.ndarray,
    spacing_zyx: Sequence[float],
    threshold: float = 0.3,
    min_distance_mm: float = 8.0,
) -> list[tuple[float, float, float]]:
    """Lesion centres read back from a density map, highest peak first.

    A peak is a local maximum (over a box of +-min_distance_mm) at least ``threshold`` high; a flat
    top gives one peak at its centre; peaks closer than ``min_distance_mm`` to a higher one are
    dropped (the box is a cheap separable filter, the distance check makes the rule Euclidean).
    """
    spacing = _spacing(spacing_zyx)
    density = np.asarray(density, dtype=np.float32)
    size = tuple(int(2 * np.floor(min_distance_mm / s) + 1) for s in spacing)
    local_max = (density == ndimage.maximum_filter(density, size=size, mode="nearest")) & (density >= threshold)
    plateaus, n = ndimage.label(local_max, structure=CONNECTIVITY_26)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    centres = np.array(ndimage.center_of_mass(local_max, plateaus, index), dtype=float).reshape(n, 3)
    heights = np.asarray(ndimage.maximum(density, plateaus, index), dtype=float).reshape(n)
    kept: list[np.ndarray] = []
    for i in np.argsort(-heights, kind="stable"):
        if all(np.linalg.norm((centres[i] - k) * spacing) >= min_distance_mm for k in kept):
            kept.append(centres[i])
    return [tuple(float(c) for c in centre) for centre in kept]
