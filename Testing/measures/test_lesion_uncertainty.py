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
from shmn.measures.ventricle_visibility import bright_csf_lesion_warning, csf_brighter_than_tissue

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
    assert set(fields) == {"mean_probability", "uncertainty", "review", "review_reason"} and fields["review"] is True
    assert fields["review_reason"] == "model unsure"
    assert "review_reason" not in next(lesion for lesion in by_label.values() if not lesion.review).report_fields()
    assert lesion_uncertainty(np.zeros(SHAPE, np.int32), 0, np.zeros(SHAPE)) == []
    with pytest.raises(ValueError, match="share one grid"):
        lesion_uncertainty(np.ones((2, 2, 2), np.int32), 1, np.zeros((3, 3, 3)))


def bright_lesion_by_a_ventricle() -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """The bright lesion of faint_and_bright with a box of ventricle next to its edge (x 22-25, the lesion ending at
    x 21), the faint one far from it; (mask, probability, ventricles) on one grid."""
    array = faint_and_bright()
    ventricles = np.zeros(SHAPE, np.uint8)
    ventricles[14:27, 18:31, 22:26] = 1
    images = [sitk.GetImageFromArray(a) for a in ((array >= 0.5).astype(np.uint8), array, ventricles)]
    for image in images:
        image.SetSpacing((0.9, 1.1, 2.0))
    return tuple(images)


def test_lesions_touching_ventricles_of_bright_csf_are_flagged_with_the_reason():
    mask, probability, ventricles = bright_lesion_by_a_ventricle()
    assert sitk.GetArrayViewFromImage(mask)[20, 24, 21] and not sitk.GetArrayViewFromImage(mask)[20, 24, 22]  # neighbours
    plain, _ = lesion_review(mask, probability)
    flagged, review = lesion_review(mask, probability, bright_csf_ventricles=ventricles)
    labels, _ = lesion_components(sitk.GetArrayViewFromImage(mask))
    bright, faint = int(labels[20, 24, 16]), int(labels[20, 24, 48])
    assert not plain[bright].review and flagged[bright].review and flagged[bright].next_to_bright_csf
    assert flagged[bright].report_fields()["review_reason"] == "next to bright CSF"
    # the faint lesion, far from the ventricles, keeps its own flag and only its own reason
    assert plain[faint].review and flagged[faint].report_fields()["review_reason"] == "model unsure"
    assert sitk.GetArrayViewFromImage(review)[20, 24, 16] == 1  # the overview outlines it
    # one voxel between them: it does not touch
    far = sitk.GetArrayFromImage(ventricles)
    far = np.roll(far, 1, axis=2)
    moved = sitk.GetImageFromArray(far)
    moved.CopyInformation(ventricles)
    assert not lesion_review(mask, probability, bright_csf_ventricles=moved)[0][bright].review
    rows = [lesion.report_fields() for lesion in flagged.values()]
    warning = bright_csf_lesion_warning(rows)
    assert warning.startswith("1 lesion(s) touch the ventricles") and "next to bright CSF" in warning
    assert bright_csf_lesion_warning([lesion.report_fields() for lesion in plain.values()]) is None


def test_csf_brighter_than_tissue_reads_the_boundary_steps_figure():
    assert csf_brighter_than_tissue({"ventricles": {"contrast_to_spread": -0.4}})
    assert not csf_brighter_than_tissue({"ventricles": {"contrast_to_spread": 0.7}})  # barely darker: not visible, not bright
    assert not csf_brighter_than_tissue(None) and not csf_brighter_than_tissue({"pvl": {}})  # --boundary model: not measured
