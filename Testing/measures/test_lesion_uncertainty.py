"""Per-lesion uncertainty on constructed probability maps with known answers (the end-to-end check that
`shmn predict` writes the fields is Testing/inference/test_predict_uncertainty.py)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.measures.lesion_uncertainty import (
    REVIEW_UNCERTAINTY_BITS, ReviewThresholds, binary_entropy_bits, lesion_review, lesion_uncertainty, review_mask,
)
from shmn.measures.lesions import lesion_components

SHAPE = (40, 48, 64)


def blob(centre, radius_vox: float, peak: float, edge_vox: float = 0.5) -> np.ndarray:
    """A lesion as a network sees it: a plateau of ``peak`` inside ``radius_vox`` with a soft edge."""
    grid = np.indices(SHAPE, dtype=float)
    distance = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    return peak / (1.0 + np.exp((distance - radius_vox) / edge_vox))


def faint_and_bright() -> np.ndarray:
    """A bright lesion (p up to 0.999) and a faint one (p up to 0.75) of the same size (~0.9 mL at 1 mm), far apart."""
    return np.maximum(blob((20, 24, 16), 6.0, 0.999), blob((20, 24, 48), 6.0, 0.75)).astype(np.float32)


def test_binary_entropy_in_bits():
    np.testing.assert_allclose(binary_entropy_bits(np.array([0.0, 0.5, 1.0, 0.11])), [0.0, 1.0, 0.0, 0.4999], atol=1e-3)


def test_faint_lesion_is_more_uncertain_than_a_bright_one():
    probability = faint_and_bright()
    labels, n = lesion_components(probability >= 0.5)
    assert n == 2
    lesions = {("bright" if labels[20, 24, 16] == lesion.label else "faint"): lesion for lesion in lesion_uncertainty(labels, n, probability)}
    bright, faint = lesions["bright"], lesions["faint"]
    assert faint.uncertainty > bright.uncertainty + 0.2
    assert faint.mean_probability < bright.mean_probability
    assert 0.5 <= faint.mean_probability < 0.7 and 0.5 < bright.mean_probability < 0.99
    # The default threshold flags the faint lesion only, and the review mask holds exactly its voxels.
    assert faint.review and not bright.review
    assert faint.uncertainty > REVIEW_UNCERTAINTY_BITS > bright.uncertainty
    np.testing.assert_array_equal(review_mask(labels, list(lesions.values())), labels == faint.label)
    assert faint.disagreement is None and "tta_disagreement" not in faint.report_fields()


def test_flip_disagreement_flags_a_confident_but_unstable_lesion():
    probability = faint_and_bright()
    labels, n = lesion_components(probability >= 0.5)
    bright_label = labels[20, 24, 16]
    disagreement = np.where(labels == bright_label, 0.3, 0.01).astype(np.float32)
    lesions = {lesion.label: lesion for lesion in lesion_uncertainty(labels, n, probability, disagreement)}
    assert lesions[bright_label].disagreement == pytest.approx(0.3) and lesions[bright_label].review
    assert lesions[bright_label].report_fields()["tta_disagreement"] == 0.3
    # A looser threshold lets both through; a stricter one flags both.
    assert not any(lesion.review for lesion in lesion_uncertainty(labels, n, probability, disagreement, ReviewThresholds(1.0, 0.5)))
    assert all(lesion.review for lesion in lesion_uncertainty(labels, n, probability, None, ReviewThresholds(0.0, 0.5)))


def test_lesion_review_on_images_and_report_fields():
    probability = sitk.GetImageFromArray(faint_and_bright())
    probability.SetSpacing((0.9, 1.1, 2.0))
    mask = sitk.Cast(probability >= 0.5, sitk.sitkUInt8)
    by_label, flagged = lesion_review(mask, probability)
    assert flagged.GetSpacing() == probability.GetSpacing() and flagged.GetPixelID() == sitk.sitkUInt8
    assert sorted(lesion.review for lesion in by_label.values()) == [False, True]
    fields = next(lesion for lesion in by_label.values() if lesion.review).report_fields()
    assert set(fields) == {"mean_probability", "uncertainty", "review"} and fields["review"] is True
    assert lesion_uncertainty(np.zeros(SHAPE, np.int32), 0, np.zeros(SHAPE)) == []
    with pytest.raises(ValueError, match="share one grid"):
        lesion_uncertainty(np.ones((2, 2, 2), np.int32), 1, np.zeros((3, 3, 3)))
