"""Small building blocks shared by the phantom's modules: smooth random fields, boxes, block means."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], correlation_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation (float32).

    Long correlations are drawn on a coarser grid and interpolated up: the same look for a
    fraction of the cost of smoothing the full-size array.
    """
    step = max(1, int(correlation_vox // 2))
    coarse_shape = tuple(max(2, -(-n // step) + 1) for n in shape)
    noise = ndimage.gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), correlation_vox / step,
                                    mode="wrap")
    if step > 1:
        noise = ndimage.zoom(noise, [n / c for n, c in zip(shape, coarse_shape)], order=1)
    noise = noise[tuple(slice(0, n) for n in shape)]
    std = float(noise.std())
    return (noise - noise.mean()) / (std if std > 0 else 1.0)


def box_around(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array."""
    box = []
    for axis, extent in enumerate(mask.shape):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        if idx.size == 0:
            return tuple(slice(0, n) for n in mask.shape)
        box.append(slice(max(0, int(idx[0]) - margin), min(extent, int(idx[-1]) + 1 + margin)))
    return tuple(box)


def ball_box(centre_vox: np.ndarray, radius_vox: float, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Slices of the cube of half-size ``radius_vox`` around a voxel, clipped to the array."""
    r = int(np.ceil(radius_vox))
    return tuple(slice(max(0, int(c) - r), min(n, int(c) + r + 1)) for c, n in zip(centre_vox, shape))


def block_mean(array: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Mean over non-overlapping blocks of ``factors`` voxels along (z, y, x), as float32.

    Summing the strided views is several times faster than numpy's mean over reshaped axes.
    """
    fz, fy, fx = factors
    z, y, x = array.shape[0] // fz, array.shape[1] // fy, array.shape[2] // fx
    total = np.zeros((z, y, x), np.float32)
    for i, j, k in itertools.product(range(fz), range(fy), range(fx)):
        total += array[i:z * fz:fz, j:y * fy:fy, k:x * fx:fx]
    total *= np.float32(1.0 / (fz * fy * fx))
    return total
