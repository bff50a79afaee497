"""How far to trust a pseudo-label (the model's ventricle mask of a case nobody has labelled).

`shmn predict` writes thresholded masks, not probabilities, so today the figure comes from the mask
itself: the lateral ventricles are two large connected bodies, and a mask whose voxels sit in its
two largest 26-connected components ("coherence" near 1) is far more plausible than a scatter of
specks. The registration check of the report is shown beside it (a failed registration puts the
mask in the wrong place, however coherent). When a probability map is available on the image grid
(``ventricles_probability.nii.gz``, see shmn.contract.PROBABILITY_FILES) the figure is the mean
max-probability inside the mask and the share of confident voxels (p < 0.1 or p > 0.9) around it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

CONFIDENT_LOW, CONFIDENT_HIGH = 0.1, 0.9
BAND_VOXELS = 2  # the neighbourhood of the mask where uncertainty matters (its border)
EXPECTED_BODIES = 2  # left and right lateral ventricle


@dataclass(frozen=True)
class PseudoLabelConfidence:
    basis: str  # "probability" or "mask shape"
    score: float  # 0-1, higher is more trustworthy
    volumeMl: float
    components: int
    coherence: float  # share of mask voxels in the two largest components
    meanMaxProbability: float | None = None
    confidentFraction: float | None = None
    registrationOk: bool | None = None
    registrationWarning: str | None = None

    def text(self) -> str:
        if self.volumeMl == 0:
            return "The model found no ventricles in this case: nothing to preview."
        lines = [f"Pseudo-label: {self.volumeMl:.1f} mL in {self.components} piece(s)."]
        if self.basis == "probability":
            lines.append(f"Confidence {self.score:.2f}: mean probability inside the mask; "
                         f"{100 * self.confidentFraction:.0f}% of the voxels around it are confident.")
        else:
            lines.append(f"Confidence {self.score:.2f}: share of the mask in its {EXPECTED_BODIES} largest bodies "
                         "(a shape check only: the engine wrote no probabilities). Look before you use it.")
        if self.registrationOk is False:
            lines.append(f"Registration check failed: {self.registrationWarning or 'see the report'}; do not use this mask.")
        return "\n".join(lines)


def components(mask: sitk.Image) -> tuple[int, np.ndarray]:
    """Number of 26-connected components and their sizes in voxels, largest first."""
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.Cast(mask > 0, sitk.sitkUInt8), True))
    sizes = np.bincount(sitk.GetArrayViewFromImage(labels).ravel())[1:]
    return len(sizes), np.sort(sizes)[::-1]


def coherence(sizes: np.ndarray) -> float:
    total = float(sizes.sum())
    return float(sizes[:EXPECTED_BODIES].sum()) / total if total else 0.0


def probabilityFigures(probability: sitk.Image, mask: sitk.Image) -> tuple[float, float]:
    """(mean probability inside the mask, share of confident voxels in the mask and its border band)."""
    p = sitk.GetArrayViewFromImage(probability).astype(np.float32)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    band = sitk.GetArrayViewFromImage(sitk.BinaryDilate(sitk.Cast(mask > 0, sitk.sitkUInt8), [BAND_VOXELS] * 3)) > 0
    mean = float(p[inside].mean()) if inside.any() else 0.0
    near = p[band]
    confident = float(((near < CONFIDENT_LOW) | (near > CONFIDENT_HIGH)).mean()) if near.size else 0.0
    return mean, confident


def pseudoLabelConfidence(maskPath: Path, probabilityPath: Path | None = None, report: dict | None = None) -> PseudoLabelConfidence:
    mask = sitk.ReadImage(str(maskPath))
    voxelMl = float(np.prod(mask.GetSpacing())) / 1000.0
    count, sizes = components(mask)
    volumeMl = float(sizes.sum()) * voxelMl
    quality = ((report or {}).get("preprocessing") or {}).get("registration_quality") or {}
    registration = {"registrationOk": quality.get("ok"), "registrationWarning": quality.get("warning")}
    shape = coherence(sizes)
    if probabilityPath is not None:
        probability = sitk.ReadImage(str(probabilityPath))
        mean, confident = probabilityFigures(probability, mask)
        return PseudoLabelConfidence("probability", mean, volumeMl, count, shape, mean, confident, **registration)
    return PseudoLabelConfidence("mask shape", shape, volumeMl, count, shape, **registration)
