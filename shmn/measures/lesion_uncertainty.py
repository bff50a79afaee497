"""Per-lesion uncertainty: how sure the model is of each lesion it reports, and which ones to look at twice.

For every lesion (a 26-connected component of the thresholded PVL mask, shmn.measures.lesions) over
its own voxels on the input's grid:
- ``mean_probability``: the mean PVL probability (>= the mask threshold by construction);
- ``uncertainty``: the mean binary entropy H(p) = -p log2 p - (1-p) log2(1-p), in bits (0: the model
  is certain, 1: p = 0.5). A faint lesion the model barely calls has p near the threshold and a high
  entropy; a bright, clear one has p near 1 and an entropy near 0. Small lesions are mostly border,
  where the probability (linearly resampled from the model grid) falls toward 0.5, so they score higher:
  that is intended, a 2-voxel lesion deserves a second look;
- ``disagreement`` (only with test-time flips, ``shmn predict --tta``): the mean over the lesion of the
  per-voxel standard deviation of the PVL probability across the mirror-flipped passes.
A lesion is flagged ``review`` when its uncertainty exceeds ``ReviewThresholds.uncertainty_bits`` or
its flip disagreement exceeds ``ReviewThresholds.disagreement`` (reason "model unsure"), and, on an image whose CSF
is brighter than the tissue around the ventricles (not nulled: shmn.measures.ventricle_visibility), when it touches
the ventricle mask (a voxel of it in or next to the mask; reason "next to bright CSF"): there the partial volume of bright CSF at
the ventricle wall looks like a periventricular lesion, and however sure the model is, the image cannot tell them
apart. Flags only: the masks and volumes stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
from scipy import ndimage

from shmn.measures.ventricle_visibility import NEXT_TO_BRIGHT_CSF

# Mean entropy above 0.5 bits: on average the voxels' p is below ~0.89 (H(0.89) = 0.5 bits), i.e. the
# model gives at least about one chance in nine that a typical voxel of the lesion is not lesion.
REVIEW_UNCERTAINTY_BITS = 0.6
# A mean flip-to-flip standard deviation of 0.1: mirror images of the same brain disagree by 0.1 in p.
REVIEW_DISAGREEMENT = 0.1
MODEL_UNSURE = "model unsure"


@dataclass(frozen=True)
class ReviewThresholds:
    uncertainty_bits: float = REVIEW_UNCERTAINTY_BITS
    disagreement: float = REVIEW_DISAGREEMENT


@dataclass(frozen=True)
class LesionUncertainty:
    label: int  # the component's label in lesion_components' map
    mean_probability: float
    uncertainty: float  # mean binary entropy in bits
    disagreement: Optional[float]  # mean flip standard deviation; None without test-time flips
    model_unsure: bool  # entropy or flip disagreement above its threshold
    next_to_bright_csf: bool = False  # touches ventricles whose CSF is brighter than the tissue around them

    @property
    def review(self) -> bool:
        return self.model_unsure or self.next_to_bright_csf

    def report_fields(self) -> dict:
        fields = {"mean_probability": round(self.mean_probability, 4), "uncertainty": round(self.uncertainty, 4)}
        if self.disagreement is not None:
            fields["tta_disagreement"] = round(self.disagreement, 4)
        fields["review"] = self.review
        if self.review:
            fields["review_reason"] = "; ".join(reason for reason, flagged in ((MODEL_UNSURE, self.model_unsure),
                                                                               (NEXT_TO_BRIGHT_CSF, self.next_to_bright_csf)) if flagged)
        return fields


def binary_entropy_bits(probability: np.ndarray) -> np.ndarray:
    """H(p) in bits, elementwise; 0 at p = 0 and p = 1."""
    p = np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = -(p * np.log2(p)) - ((1.0 - p) * np.log2(1.0 - p))
    return np.nan_to_num(terms, nan=0.0)


def lesion_uncertainty(labels: np.ndarray, n: int, probability: np.ndarray, disagreement: Optional[np.ndarray] = None,
                       thresholds: ReviewThresholds = ReviewThresholds()) -> list[LesionUncertainty]:
    """One entry per component 1..n of ``labels`` (label order); arrays share one grid."""
    if n == 0:
        return []
    if np.shape(probability) != np.shape(labels) or (disagreement is not None and np.shape(disagreement) != np.shape(labels)):
        raise ValueError("lesion_uncertainty: labels, probability and disagreement must share one grid")
    # Only the lesions' own voxels are read: a clinical volume has millions of voxels, lesions thousands.
    inside = np.asarray(labels) > 0
    owner = np.asarray(labels)[inside]
    counts = np.bincount(owner, minlength=n + 1)[1:].astype(np.float64)

    def mean_per_lesion(values: np.ndarray) -> np.ndarray:
        return np.bincount(owner, weights=np.asarray(values, dtype=np.float64), minlength=n + 1)[1:] / np.maximum(counts, 1)

    p_inside = np.asarray(probability)[inside]
    mean_p = mean_per_lesion(p_inside)
    entropy = mean_per_lesion(binary_entropy_bits(p_inside))
    spread = None if disagreement is None else mean_per_lesion(np.asarray(disagreement)[inside])
    index = np.arange(1, n + 1)
    rows = []
    for i, label in enumerate(index):
        flip = None if spread is None else float(spread[i])
        unsure = bool(entropy[i] > thresholds.uncertainty_bits or (flip is not None and flip > thresholds.disagreement))
        rows.append(LesionUncertainty(int(label), float(mean_p[i]), float(entropy[i]), flip, unsure))
    return rows


def flag_next_to_bright_csf(labels: np.ndarray, lesions: list[LesionUncertainty], ventricles: np.ndarray) -> list[LesionUncertainty]:
    """Mark the lesions that touch ``ventricles`` (a voxel in or next to them, 26-neighbourhood): for an image whose
    CSF is bright, where the ventricle wall's partial volume looks like a lesion (arrays share one grid)."""
    near = ndimage.binary_dilation(np.asarray(ventricles, dtype=bool), structure=np.ones((3, 3, 3), bool))
    touching = set(np.unique(np.asarray(labels)[near]).tolist()) - {0}
    return [replace(lesion, next_to_bright_csf=True) if lesion.label in touching else lesion for lesion in lesions]


def review_mask(labels: np.ndarray, lesions: list[LesionUncertainty]) -> np.ndarray:
    """The voxels of the lesions flagged for review (bool, the labels' grid)."""
    lookup = np.zeros(max([lesion.label for lesion in lesions] + [int(np.max(labels, initial=0))]) + 1, dtype=bool)
    for lesion in lesions:
        lookup[lesion.label] = lesion.review
    return lookup[labels] if lookup.any() else np.zeros(np.shape(labels), dtype=bool)


def lesion_review(pvl, probability, disagreement=None, thresholds: ReviewThresholds = ReviewThresholds(), bright_csf_ventricles=None):
    """On SimpleITK images of one grid (the thresholded mask, its probability, optionally the flip
    disagreement and, on an image whose CSF is bright, the ventricle mask): ({component label: LesionUncertainty},
    uint8 image of the lesions flagged for review)."""
    import SimpleITK as sitk

    from shmn.measures.lesions import lesion_components

    labels, n = lesion_components(sitk.GetArrayViewFromImage(pvl))
    spread = None if disagreement is None else sitk.GetArrayViewFromImage(disagreement)
    lesions = lesion_uncertainty(labels, n, sitk.GetArrayViewFromImage(probability), spread, thresholds)
    if bright_csf_ventricles is not None:
        lesions = flag_next_to_bright_csf(labels, lesions, sitk.GetArrayViewFromImage(bright_csf_ventricles))
    flagged = sitk.GetImageFromArray(review_mask(labels, lesions).astype(np.uint8))
    flagged.CopyInformation(pvl)
    return {lesion.label: lesion for lesion in lesions}, flagged
