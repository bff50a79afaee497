"""Lesion and ventricle boundaries placed on the input's own grid by its intensities.

The network sees the brain on a 2 mm grid, so a boundary it draws, resampled to a clinical grid, is
uncertain by about half a model voxel: on ventricles of 10-50 mL that alone cost 0.1-0.2 Dice
(the model's masks were 5-20 % too small on both of our cohorts), and a perfect 2 mm lesion mask
reaches only about 0.80 Dice at 1 mm. The input itself is finer, at least in-plane, and both
structures differ from the tissue around them: ventricles are CSF (dark on FLAIR, bright on T2, grey
when poorly nulled), lesions are brighter than white matter. A voxel on the boundary lies between the
local structure and tissue levels in proportion to its share of the structure, and a reference mask on
a clinical grid is where that share is at least one half. So, within a band around the model's
boundary, each voxel's share is read from its intensity against the local levels: the structure's from
the model's confident voxels (ventricles: read once more from the voxels that first read as nearly pure
structure, as a mask that is too big makes its confident voxels partly tissue), the tissue's from a
shell just outside (the other structure left out), both averaged locally so that a bias field does not
move them. Outside the band, where the local contrast is too low to read a share from one noisy voxel,
where the model gives less than ``gate``, or (lesions) where a voxel is darker or brighter than both
levels (a cyst's cavity, which is lesion), the model's probability stands. Holes the model leaves inside
the ventricles (within a slice) join them where they read as CSF. No parameter was fitted to a cohort;
they are physical scales (README; the second read's 0.8 and its contrast gate were chosen on OOD cases
looked at, and kept under rules fixed before the cohorts, one of them made afterwards, were scored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.stats import median_abs_deviation

from shmn.inference.masks import filled_sections


@dataclass(frozen=True)
class BoundaryConfig:
    band_mm: float = 3.0  # how far the boundary may move: about one and a half model voxels
    local_sigma_mm: float = 8.0  # the scale of the local structure and tissue levels (a bias field varies slower)
    core_depth_mm: float = 1.5  # structure level: model voxels at least this deep inside, probability >= core_probability
    core_probability: float = 0.8
    min_core_voxels: int = 20  # fewer deep voxels: the confident ones, however shallow (thin ventricles, thick slices)
    shell_mm: tuple[float, float] = (1.5, 4.5)  # tissue level: this far outside the model's boundary
    min_contrast: float = 0.15  # |tissue - structure| / the larger of the two below this: the model's boundary stays
    gate: float = 0.05  # voxels the model gives less than this never join the structure
    denoise_mm: float = 0.7  # a light Gaussian before reading single voxels (Rician noise)
    explained: tuple[float, float] | None = None  # only voxels whose share, unclipped, lies in this range move
    one_piece: bool = False  # each of the model's components stays one (its largest refined piece); none appear elsewhere
    fill_holes: bool = False  # in-plane holes of the mask whose voxels read as the structure join it
    relevel_share: float | None = None  # re-read the structure level once from the voxels (band or mask) of at least this share
    relevel_min_cnr: float = 1.5  # ... only when the first read's contrast is this many times the tissue's voxel spread


# Ventricles are CSF-filled cavities: where the model's mask encloses a hole in a slice (it did on phantoms
# and on both cohorts, well inside dark CSF), the hole's voxels that read as CSF join it; enclosed tissue
# (a thalamus inside the ventricle's C in a sagittal slice) reads as tissue and stays out.
# The structure level is read a second time from the voxels that read as nearly pure CSF: where the model's mask
# is too big (thin ventricles: 20-70 % too many voxels on the model grid of OOD cases), a third of its confident
# voxels are tissue, the first level lies part way to the tissue's, the contrast reads low and the boundary barely
# moved (OOD ood019: 0.72 Dice, 0.87 with the second read; README). The second read picks voxels by their own
# intensity, so where CSF is nearly isointense (contrast below the voxels' spread) noise picks them and the level
# comes out too dark: there it is not done (two OOD cases lost 0.03-0.09 Dice before this gate).
# The ventricles' band is 4.5 mm (two and a quarter model voxels): the network misses thin parts of the frontal and
# occipital horns by more than the 3 mm the lesions keep, where it still gives them >= 5 % (OOD seed-7 ood011); with
# 4.5 mm the mean ventricle Dice rose on all seven cohorts by 0.001-0.004, lesion figures unchanged (README).
VENTRICLE_BOUNDARY = BoundaryConfig(band_mm=4.5, fill_holes=True, relevel_share=0.8)
# Lesions: a narrower band (they are small), every lesion voxel may set the level of a small lesion, and a
# voxel darker than the tissue (a cavitated lesion's cyst, labelled lesion) keeps the model's answer.
# One piece: the step moves boundaries, it does not change what the model found; an intensity dip across a
# lesion's narrow neck split lesions into a found part and a false-positive fragment (lesion-wise F1 fell on
# 2 of 12 held-out OOD cases before this rule). Gate 0.25: a lesion grows only into voxels the model gives a
# quarter. A false positive on a normal bright finding (periventricular caps, terminal zones) is bright too,
# so the step grows it like a lesion; with a gate of 0.05 the false-positive volume on six one-lesion
# randomised brains doubled (7.4 -> 14.5 mL), with 0.25 it rises 7.3 -> 10.6 mL while the cohorts' lesion
# Dice stayed within 0.005 (README).
LESION_BOUNDARY = BoundaryConfig(band_mm=2.0, core_depth_mm=0.0, min_core_voxels=1, gate=0.25, explained=(-0.25, 1.25), one_piece=True)


@dataclass(frozen=True)
class BoundaryResult:
    probability: np.ndarray  # the refined map (z, y, x), 0-1: thresholded at ``threshold`` it gives the mask
    applied: bool
    contrast: float | None  # median relative structure-tissue contrast over the model's mask
    changed_voxels: int
    level_read_twice: bool = False  # the structure level was read again from its nearly pure voxels
    # How far the structure stands out: the first read's median contrast (tissue minus structure, so positive where
    # the structure is the darker, as nulled CSF is) over the model's mask, in units of the tissue voxels' spread
    # (None: the step could not read levels). Ventricles: shmn.measures.ventricle_visibility reads it.
    contrast_to_spread: float | None = None

    def report_fields(self, config: BoundaryConfig) -> dict:
        return {"method": "native-grid partial-volume refinement of the model's boundary",
                "applied": self.applied, "band_mm": config.band_mm,
                "relative_contrast": None if self.contrast is None else round(self.contrast, 3),
                "contrast_to_spread": None if self.contrast_to_spread is None else round(self.contrast_to_spread, 3),
                "min_contrast": config.min_contrast, "changed_voxels": self.changed_voxels,
                "level_read_twice": self.level_read_twice}


def _normalised_smooth(weighted: np.ndarray, weights: np.ndarray, sigma_vox, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalised convolution: the Gaussian-weighted mean of the values whose products with ``weights`` are
    ``weighted``, over those weights, and the smoothed weight."""
    total = ndimage.gaussian_filter(weighted, sigma_vox, mode=mode)
    weight = ndimage.gaussian_filter(weights.astype(np.float32), sigma_vox, mode=mode)
    return total / np.maximum(weight, 1e-6), weight


def _local_mean(values: np.ndarray, weights: np.ndarray, spacing_zyx: np.ndarray, sigma_mm: float,
                coarse_mm: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-weighted mean of ``values`` over the voxels in ``weights`` (normalised convolution; nothing
    outside the array has weight), and the smoothed weight. Computed on blocks of about ``coarse_mm`` and
    interpolated back: a level that varies over ``sigma_mm`` (8 mm) loses nothing, and a 1 mm head's box
    costs a hundredth of the full-resolution filter."""
    factor = np.maximum(1, np.floor(coarse_mm / spacing_zyx)).astype(int)
    padded = [(0, int(p)) for p in (-np.array(values.shape)) % factor]
    coarse_shape = (np.array(values.shape) + [p for _, p in padded]) // factor

    def blocks(array: np.ndarray) -> np.ndarray:
        array = np.pad(array, padded)
        return array.reshape(coarse_shape[0], factor[0], coarse_shape[1], factor[1], coarse_shape[2], factor[2]).mean(axis=(1, 3, 5))

    mean, weight = _normalised_smooth(blocks(values * weights), blocks(weights.astype(np.float32)),
                                      sigma_mm / (spacing_zyx * factor), "constant")

    def back(array: np.ndarray) -> np.ndarray:
        if (factor == 1).all():
            return array
        fine = ndimage.zoom(array, factor, order=1, grid_mode=True, mode="nearest")
        return fine[tuple(slice(0, n) for n in values.shape)]

    return back(mean), back(weight)


def _read_shares(img: np.ndarray, core: np.ndarray, tissue: np.ndarray, spacing: np.ndarray,
                 sigma_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The contrast of the local ``tissue`` level and the local structure level (the mean over ``core``), the
    contrast relative to the larger level, and each voxel's share of the structure."""
    inner, inner_weight = _local_mean(img, core, spacing, sigma_mm)
    inner = np.where(inner_weight > 1e-3, inner, np.median(img[core]))
    contrast = tissue - inner
    relative = np.abs(contrast) / np.maximum(np.maximum(np.abs(tissue), np.abs(inner)), 1e-6)
    share = (tissue - img) / np.where(np.abs(contrast) > 1e-6, contrast, 1e-6)
    return contrast, relative, share


def _contrast_to_spread(img: np.ndarray, tissue: np.ndarray, shell: np.ndarray, contrast: np.ndarray,
                        mask: np.ndarray) -> tuple[float, float]:
    """The median contrast over ``mask`` in units of the tissue voxels' spread around their local level (their median
    absolute deviation scaled to a normal's sigma, x 1.4826: noise, and grey-white texture, over the ``shell``): of its
    size (the second read's gate), and signed (tissue minus structure: positive where the structure is the darker)."""
    spread = max(float(median_abs_deviation(img[shell] - tissue[shell], scale="normal")), 1e-6)
    return float(np.median(np.abs(contrast[mask]))) / spread, float(np.median(contrast[mask])) / spread


def _crop(mask: np.ndarray, spacing_zyx: np.ndarray, margin_mm: float) -> tuple[slice, ...] | None:
    """The box around the model's ``mask``, widened by ``margin_mm`` (every voxel the step reads or moves)."""
    found = np.nonzero(mask)
    if not found[0].size:
        return None
    margin = np.ceil(margin_mm / spacing_zyx).astype(int) + 1
    return tuple(slice(max(0, int(axis.min()) - m), min(n, int(axis.max()) + m + 1))
                 for axis, m, n in zip(found, margin, mask.shape))


def fraction_to_probability(fraction: np.ndarray, threshold: float) -> np.ndarray:
    """Map a share of the structure (0-1, 0.5 the boundary) onto the probability scale whose boundary is ``threshold``."""
    low = fraction / 0.5 * threshold
    high = threshold + (fraction - 0.5) / 0.5 * (1.0 - threshold)
    return np.where(fraction < 0.5, low, high)


def refine_boundary(image: np.ndarray, probability: np.ndarray, spacing_zyx, threshold: float,
                    other: np.ndarray | None = None, other_threshold: float = 0.5, config: BoundaryConfig = VENTRICLE_BOUNDARY,
                    min_component_ml: float = 0.0) -> BoundaryResult:
    """The model's ``probability`` of one structure (on the input's grid, with ``image``), its boundary moved to
    where the input's intensities put the structure's share at one half (module docstring). ``other``: the
    other structure's probability: its voxels (>= ``other_threshold``) never join this structure, and voxels it gives
    even ``gate`` do not set the tissue level (partial volume with it would pull the level). ``min_component_ml``:
    with ``one_piece``, model components smaller than this (specks the mask drops) do not grow into findings."""
    spacing = np.asarray(spacing_zyx, dtype=float)
    unchanged = BoundaryResult(probability, False, None, 0)
    # Every voxel the step moves lies within band_mm of the model's mask, every voxel it reads within shell_mm.
    box = _crop(probability >= threshold, spacing, max(config.band_mm, config.shell_mm[1]))
    if box is None:
        return unchanged
    prob = probability[box].astype(np.float32)
    mask = prob >= threshold
    raw = image[box].astype(np.float32)
    readable = np.isfinite(raw)  # NaN/inf voxels (outside a converter's field of view) say nothing
    if readable.all():
        img = ndimage.gaussian_filter(raw, config.denoise_mm / spacing)
    else:  # smoothed over the readable voxels only
        img, _ = _normalised_smooth(np.where(readable, raw, 0.0), readable, config.denoise_mm / spacing, "reflect")
    depth_in = ndimage.distance_transform_edt(mask, sampling=spacing)
    depth_out = ndimage.distance_transform_edt(~mask, sampling=spacing)
    core = mask & (depth_in > config.core_depth_mm) & (prob >= config.core_probability)
    if core.sum() < config.min_core_voxels:
        core = mask & (prob >= config.core_probability)
    if core.sum() < config.min_core_voxels:
        core = mask
    core &= readable
    shell = ~mask & (depth_out > config.shell_mm[0]) & (depth_out <= config.shell_mm[1]) & (prob < config.gate) & readable
    if other is not None:
        shell &= other[box] < config.gate
    elsewhere = other[box] >= other_threshold if other is not None else np.zeros(mask.shape, bool)
    if core.sum() < config.min_core_voxels or shell.sum() < 20:
        return unchanged
    tissue, tissue_weight = _local_mean(img, shell, spacing, config.local_sigma_mm)
    tissue = np.where(tissue_weight > 1e-3, tissue, np.median(img[shell]))
    contrast, relative, share = _read_shares(img, core, tissue, spacing, config.local_sigma_mm)
    read_twice = False
    contrast_size, contrast_to_spread = _contrast_to_spread(img, tissue, shell, contrast, mask)
    if config.relevel_share is not None and contrast_size >= config.relevel_min_cnr:
        near = (mask | (depth_out <= config.band_mm)) & (prob >= config.gate) & ~elsewhere & readable
        pure = near & (share >= config.relevel_share)
        if pure.sum() >= config.min_core_voxels:
            contrast, relative, share = _read_shares(img, pure, tissue, spacing, config.local_sigma_mm)
            read_twice = True
    band = (np.where(mask, depth_in, depth_out) <= config.band_mm) & (relative >= config.min_contrast) & (prob >= config.gate) & ~elsewhere
    band &= readable
    if config.explained is not None:
        band &= (share > config.explained[0]) & (share < config.explained[1])
    fraction = np.clip(share, 0.0, 1.0)
    read = fraction_to_probability(fraction, threshold)
    refined_box = np.where(band, read, prob)
    if config.fill_holes:
        holes = _in_plane_holes(refined_box >= threshold, spacing) & (fraction >= 0.5) & (relative >= config.min_contrast) & readable & ~elsewhere
        refined_box = np.where(holes, read, refined_box)
    if config.one_piece:
        refined_box = _one_piece_per_component(refined_box, mask, threshold, min_component_ml / (float(np.prod(spacing)) / 1000.0))
    refined = probability.astype(np.float32, copy=True)
    refined[box] = refined_box
    changed = int(((refined_box >= threshold) != mask).sum())
    return BoundaryResult(refined, bool(band.any()), float(np.median(relative[mask])), changed, read_twice, contrast_to_spread)


def _in_plane_holes(mask: np.ndarray, spacing_zyx: np.ndarray) -> np.ndarray:
    """Voxels enclosed by ``mask`` within a slice of the acquisition's finest plane (across its thickest
    axis; axial when isotropic): where a rater drawing slice by slice would see a hole."""
    return filled_sections(mask, int(np.argmax(spacing_zyx))) & ~mask


def _one_piece_per_component(refined: np.ndarray, mask: np.ndarray, threshold: float, min_voxels: float = 0.0) -> np.ndarray:
    """Keep, for each component of the model's ``mask`` of at least ``min_voxels``, the refined component overlapping
    it most; every other refined voxel is put just below ``threshold`` (fragments split off, islands the model
    never marked, specks grown past the mask's minimum size)."""
    connectivity = np.ones((3, 3, 3), bool)  # as lesion_components counts lesions
    model_labels, n_model = ndimage.label(mask, connectivity)
    if n_model:
        sizes = np.bincount(model_labels.ravel(), minlength=n_model + 1)
        model_labels[sizes[model_labels] < min_voxels] = 0
    pieces, n_pieces = ndimage.label(refined >= threshold, connectivity)
    both = (model_labels > 0) & (pieces > 0)
    keep = np.zeros(n_pieces + 1, bool)
    if both.any():
        pairs, counts = np.unique(np.stack([model_labels[both], pieces[both]]), axis=1, return_counts=True)
        order = np.lexsort((-counts, pairs[0]))  # by model component, the largest overlap first
        first = np.concatenate([[True], pairs[0][order][1:] != pairs[0][order][:-1]])
        keep[pairs[1][order][first]] = True
    drop = (pieces > 0) & ~keep[pieces]
    out = refined.copy()
    out[drop] = np.minimum(out[drop], np.nextafter(np.float32(threshold), np.float32(0)))
    return out


def refine_native(native: sitk.Image, probabilities: dict[str, sitk.Image], thresholds: dict[str, float],
                  min_lesion_ml: float = 0.0) -> tuple[dict[str, sitk.Image], dict]:
    """predict_native's step: the "ventricles" then the "pvl" probability on the input's grid refined against the
    input's intensities, each keeping the other structure out of its tissue level; the report's fields.
    ``min_lesion_ml``: the lesion mask's minimum component (a smaller model component stays a speck)."""
    image = sitk.GetArrayFromImage(native)
    spacing = native.GetSpacing()[::-1]
    arrays = {task: sitk.GetArrayFromImage(probabilities[task]) for task in ("ventricles", "pvl")}
    refined, fields = dict(probabilities), {}
    for task, other, config in (("ventricles", "pvl", VENTRICLE_BOUNDARY), ("pvl", "ventricles", LESION_BOUNDARY)):
        result = refine_boundary(image, arrays[task], spacing, thresholds[task], arrays[other], thresholds[other], config,
                                 min_lesion_ml if task == "pvl" else 0.0)
        if result.probability is not arrays[task]:  # refine_boundary returns its input untouched when nothing applied
            arrays[task] = result.probability
            refined[task] = sitk.GetImageFromArray(result.probability.astype(np.float32))
            refined[task].CopyInformation(probabilities[task])
        fields[task] = result.report_fields(config)
    return refined, fields
