"""Evaluation metrics: segmentation overlap, surface distance, lesion detection, volumes, MACS.

Masks are numpy arrays (z, y, x) of the same shape (anything > 0 is foreground); ``spacing_zyx``
is the voxel size in mm in the same order. Conventions for empty masks are stated per function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_roc_auc

from shmn.measures.lesions import lesion_components


def _binary(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask) > 0


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = _binary(pred), _binary(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the reference's {truth.shape}")
    return pred, truth


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    # MONAI metrics take (batch, channel, *spatial) one-hot-like tensors.
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2|P∩T| / (|P|+|T|); 1.0 when both are empty (nothing to find, nothing wrongly found)."""
    pred, truth = _pair(pred, truth)
    value = compute_dice(_as_batch(pred), _as_batch(truth), include_background=True, ignore_empty=False)
    return float(value.reshape(-1)[0])


def hd95(pred: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """95th-percentile Hausdorff distance in mm, as the MICCAI 2017 WMH segmentation challenge
    defines it (its evaluation.py, getHausdorff): each mask's boundary is the mask minus its
    in-plane 2D erosion (radius 1 along x and y, none across slices, ITK's BinaryErode), the
    distances from every boundary voxel of one mask to the nearest of the other are taken both
    ways, and the result is the larger of the two 95th percentiles.

    On thick-slice images this differs from a 3D surface distance: the slabs at the top and
    bottom of a lesion are not all boundary, only their in-plane rims are.

    0.0 when both masks are empty (they agree); ``inf`` when exactly one is empty (no distance is
    defined and any finite number would flatter the prediction) -- average it with care (e.g. report
    how many cases were infinite, or use a median).
    """
    import SimpleITK as sitk
    from scipy.spatial import cKDTree

    pred, truth = _pair(pred, truth)
    if pred.ndim != 3:
        raise ValueError(f"hd95 needs 3D masks (z, y, x), got {pred.ndim} dimensions")
    if not pred.any() and not truth.any():
        return 0.0
    if not pred.any() or not truth.any():
        return float("inf")
    spacing = np.array([float(s) for s in spacing_zyx])

    def boundary_points_mm(mask: np.ndarray) -> np.ndarray:
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        eroded = sitk.GetArrayViewFromImage(sitk.BinaryErode(image, (1, 1, 0)))
        return np.argwhere(mask & (eroded == 0)) * spacing

    pred_points, truth_points = boundary_points_mm(pred), boundary_points_mm(truth)
    truth_to_pred = cKDTree(pred_points).query(truth_points, k=1)[0]
    pred_to_truth = cKDTree(truth_points).query(pred_points, k=1)[0]
    return float(max(np.percentile(truth_to_pred, 95), np.percentile(pred_to_truth, 95)))


@dataclass(frozen=True)
class LesionDetection:
    """Lesion-wise detection, as in the MICCAI 2017 WMH segmentation challenge."""

    precision: float
    recall: float
    f1: float
    n_true: int  # 26-connected lesions in the reference
    n_pred: int  # 26-connected components in the prediction
    true_detected: int  # reference lesions overlapped by at least one predicted voxel
    pred_correct: int  # predicted components overlapping at least one reference voxel
    false_positives: int  # n_pred - pred_correct
    false_negatives: int  # n_true - true_detected

    def as_dict(self) -> dict:
        return asdict(self)


def lesion_f1(pred: np.ndarray, truth: np.ndarray) -> LesionDetection:
    """A reference lesion is found when any predicted voxel lies in it; a predicted component
    that overlaps no reference voxel is a false positive.

    recall = found / n_true (1.0 when there is no reference lesion); precision = correct
    components / n_pred (1.0 when nothing is predicted); f1 = 2PR/(P+R) (0.0 when P+R = 0). So
    both empty gives 1/1/1, and any miss or false alarm against an empty side gives f1 = 0.
    """
    pred, truth = _pair(pred, truth)
    truth_labels, n_true = lesion_components(truth)
    pred_labels, n_pred = lesion_components(pred)
    true_detected = int(np.count_nonzero(np.unique(truth_labels[pred])))
    pred_correct = int(np.count_nonzero(np.unique(pred_labels[truth])))
    recall = true_detected / n_true if n_true else 1.0
    precision = pred_correct / n_pred if n_pred else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return LesionDetection(
        precision, recall, f1, n_true, n_pred, true_detected, pred_correct, n_pred - pred_correct, n_true - true_detected
    )


def volume_ml(mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    return int(np.count_nonzero(_binary(mask))) * float(np.prod([float(s) for s in spacing_zyx])) / 1000.0


def abs_volume_difference_percent(pred: np.ndarray, truth: np.ndarray) -> float:
    """|V_pred - V_true| / V_true * 100 (both on the same grid, so voxel counts suffice).

    0.0 when both are empty, ``inf`` when only the reference is empty.
    """
    pred, truth = _pair(pred, truth)
    v_pred, v_true = int(pred.sum()), int(truth.sum())
    if v_true == 0:
        return 0.0 if v_pred == 0 else float("inf")
    return abs(v_pred - v_true) / v_true * 100.0


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Binary ECE: the severe-class probability is cut into ``bins`` equal bins over [0, 1]; ECE is
    the sample-weighted mean of |fraction of severe cases - mean probability| over non-empty bins."""
    p = np.asarray(probabilities, dtype=float).reshape(-1)
    y = np.asarray(labels, dtype=float).reshape(-1)
    # Bin i holds [i/bins, (i+1)/bins); p = 1.0 goes to the last bin.
    which = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(ece)


def macs_metrics(probabilities: Sequence[float], labels: Sequence[float], threshold: float = 0.5) -> dict[str, float]:
    """MACS classification metrics; severe (label 1) is the positive class; p > threshold = severe.

    accuracy; f1 of the severe class (0.0 when there is no severe case and none is predicted, as
    scikit-learn does); auc (MONAI's ROC AUC; nan when only one group is present); ece (10 bins).
    """
    p = np.asarray(probabilities, dtype=float).reshape(-1)
    y = np.asarray(labels, dtype=float).reshape(-1)
    if p.shape != y.shape or p.size == 0:
        raise ValueError(f"macs_metrics: {p.size} probabilities for {y.size} labels; expected the same, non-zero count")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("macs_metrics: labels must be 0 (mild) or 1 (severe)")
    predicted = p > threshold
    positive = y == 1
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    fn = int(np.sum(~predicted & positive))
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
    auc = (
        float(compute_roc_auc(torch.from_numpy(p), torch.from_numpy(y)))
        if 0 < positive.sum() < y.size
        else float("nan")
    )
    return {
        "accuracy": float(np.mean(predicted == positive)),
        "f1": float(f1),
        "auc": auc,
        "ece": expected_calibration_error(p, y),
        "n": int(y.size),
    }
