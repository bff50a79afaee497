"""What a scanner and a clinical protocol do to the image, on the model grid:

- resolution: a thick-slice 2D acquisition (2-6 mm in the child's own millimetres, larger once the brain
  is scaled up to the template, with a slice profile and optional gaps) along a random axis, plus the
  in-plane blur of a coarser matrix, then back to the model grid by linear interpolation, as
  preprocessing's resampling does (written here: MONAI has no slice-acquisition model);
- motion ghosts: copies of the image along the phase-encoding axis from k-space lines scaled down
  (written here: MONAI has no ghosting transform);
- bias field, Rician noise, Gibbs ringing, histogram shift and gamma: MONAI's random transforms.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class ArtefactConfig:
    thick_slice_probability: float = 0.75
    slice_thickness_mm: tuple[float, float] = (2.0, 6.0)  # in the child's millimetres
    gap_probability: float = 0.4
    gap_mm: tuple[float, float] = (0.2, 1.5)
    in_plane_mm: tuple[float, float] = (0.4, 1.3)
    brain_scale: tuple[float, float] = (0.75, 1.0)  # a child's brain against the adult template
    ghost_probability: float = 0.15
    bias_probability: float = 0.8
    noise_probability: float = 0.8
    gibbs_probability: float = 0.2
    histogram_shift_probability: float = 0.3
    gamma_probability: float = 0.5


def _sample_along(volume: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``volume`` at fractional ``positions`` along ``axis`` (clamped to the ends)."""
    n = volume.shape[axis]
    positions = np.clip(positions, 0.0, n - 1.0)
    low = np.floor(positions).astype(int)
    high = np.minimum(low + 1, n - 1)
    frac = (positions - low).astype(np.float32)
    shape = [1, 1, 1]
    shape[axis] = len(positions)
    frac = frac.reshape(shape)
    return np.take(volume, low, axis=axis) * (1.0 - frac) + np.take(volume, high, axis=axis) * frac


def thick_slices(image: np.ndarray, spacing_mm: float, axis: int, thickness_mm: float, gap_mm: float,
                 in_plane_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Acquire ``image`` as slices ``thickness_mm`` thick every ``thickness_mm + gap_mm`` along ``axis`` and
    bring it back to the grid. The slice profile is a Gaussian of FWHM = thickness (a real profile is
    closer to a rounded box; SynthSeg uses a Gaussian too)."""
    sigma = thickness_mm / 2.355 / spacing_mm
    out = ndimage.gaussian_filter1d(image, sigma, axis=axis, mode="nearest", truncate=3.0) if sigma > 0.3 else image
    in_plane_sigma = 0.5 * np.sqrt(max(0.0, in_plane_mm**2 - spacing_mm**2)) / spacing_mm
    if in_plane_sigma > 0.2:
        for other in range(3):
            if other != axis:
                out = ndimage.gaussian_filter1d(out, in_plane_sigma, axis=other, mode="nearest")
    step = (thickness_mm + gap_mm) / spacing_mm
    if step <= 1.0:
        return out.astype(np.float32)
    n = image.shape[axis]
    offset = rng.uniform(0.0, step)
    centres = np.arange(offset, n, step)
    if len(centres) < 2:
        return out.astype(np.float32)
    slices = _sample_along(out, axis, centres)
    # back to the grid: each grid position between two slice centres, linearly
    return _sample_along(slices, axis, (np.arange(n) - offset) / step).astype(np.float32)


def ghosts(image: np.ndarray, axis: int, n_ghosts: int, strength: float) -> np.ndarray:
    """Motion ghosts: every ``n_ghosts``-th k-space line along ``axis`` scaled by (1 - strength)."""
    spectrum = np.fft.fftn(image)
    index = [slice(None)] * 3
    index[axis] = slice(0, None, max(2, n_ghosts))
    spectrum[tuple(index)] *= 1.0 - strength
    return np.abs(np.fft.ifftn(spectrum)).astype(np.float32)


@lru_cache(maxsize=1)
def _monai_transforms(config: ArtefactConfig):
    """Built once per process (a worker's copy); re-seeded per sample."""
    from monai.transforms import (
        RandAdjustContrast,
        RandBiasField,
        RandGibbsNoise,
        RandHistogramShift,
        RandRicianNoise,
    )

    return (
        RandBiasField(degree=3, coeff_range=(0.0, 0.3), prob=config.bias_probability),
        RandGibbsNoise(prob=config.gibbs_probability, alpha=(0.0, 0.6)),
        RandRicianNoise(prob=config.noise_probability, std=0.3, relative=True, sample_std=True, channel_wise=True),
        RandHistogramShift(num_control_points=(4, 10), prob=config.histogram_shift_probability),
        RandAdjustContrast(prob=config.gamma_probability, gamma=(0.6, 1.6)),
    )


def scanner(image: np.ndarray, spacing_mm: float, rng: np.random.Generator, config: ArtefactConfig) -> tuple[np.ndarray, dict]:
    """Apply the acquisition and the artefacts; return the image and what was drawn."""
    record: dict = {}
    scale = rng.uniform(*config.brain_scale)
    record["brain_scale"] = round(float(scale), 3)
    if rng.random() < config.thick_slice_probability:
        axis = int(rng.integers(0, 3))
        thickness = rng.uniform(*config.slice_thickness_mm)
        gap = rng.uniform(*config.gap_mm) if rng.random() < config.gap_probability else 0.0
        in_plane = rng.uniform(*config.in_plane_mm)
        # In the template's millimetres a child's slices are thicker by 1 / scale (registration scales the brain up).
        image = thick_slices(image, spacing_mm, axis, thickness / scale, gap / scale, in_plane / scale, rng)
        record["slices"] = {"axis": axis, "thickness_mm": round(float(thickness), 2), "gap_mm": round(float(gap), 2)}
    if rng.random() < config.ghost_probability:
        axis = int(rng.integers(0, 3))
        image = ghosts(image, axis, int(rng.integers(2, 5)), rng.uniform(0.1, 0.5))
        record["ghosts_axis"] = axis
    channel = image[None].astype(np.float32)
    for transform in _monai_transforms(config):
        transform.set_random_state(seed=int(rng.integers(0, 2**31 - 1)))
        if transform.__class__.__name__ == "RandAdjustContrast":
            channel = np.clip(channel, 0.0, None)  # gamma needs non-negative values
        channel = np.asarray(transform(channel), dtype=np.float32)
    return np.clip(channel[0], 0.0, None), record
