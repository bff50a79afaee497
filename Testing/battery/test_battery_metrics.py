"""Battery, metrics: HD95 as the WMH segmentation challenge defines it (the README cites it), on
thick-slice cases where a 3D surface distance gives another number."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial import KDTree

from shmn.measures.metrics import hd95


def wmh_challenge_hd95(pred: np.ndarray, truth: np.ndarray, spacing_zyx) -> float:
    """getHausdorff of the challenge's evaluation.py, line for line (test image = reference)."""
    test_image = sitk.GetImageFromArray(truth.astype(np.uint8))
    test_image.SetSpacing([float(s) for s in spacing_zyx[::-1]])
    result_image = sitk.GetImageFromArray(pred.astype(np.uint8))
    result_image.CopyInformation(test_image)
    e_test, e_result = sitk.BinaryErode(test_image, (1, 1, 0)), sitk.BinaryErode(result_image, (1, 1, 0))
    h_test = sitk.GetArrayFromImage(sitk.Subtract(test_image, e_test))
    h_result = sitk.GetArrayFromImage(sitk.Subtract(result_image, e_result))
    test_points = [test_image.TransformIndexToPhysicalPoint(x.tolist()) for x in np.transpose(np.flipud(np.nonzero(h_test)))]
    result_points = [test_image.TransformIndexToPhysicalPoint(x.tolist()) for x in np.transpose(np.flipud(np.nonzero(h_result)))]

    def distances(a, b):
        return KDTree(a, leafsize=100).query(b, k=1, eps=0, p=2)[0]

    return max(np.percentile(distances(test_points, result_points), 95), np.percentile(distances(result_points, test_points), 95))


def test_thick_slice_false_positive_counts_by_its_in_plane_rim():
    """Reference: a 30x30 mm lesion over three 5 mm slices (in-plane rims 3 x 116 voxels). Prediction:
    the same plus a 6x6 mm false positive 26 mm beside it in the middle slice (rim 20 voxels). The
    challenge's boundary is the in-plane rim, so the 20 far voxels are 20/368 = 5.4 % of the
    prediction's boundary: the 95th percentile reaches them, 26.0 mm. A 3D surface also counts the
    lesion's top and bottom faces (900 voxels each) and dilutes them below 5 %: 0 mm."""
    spacing = (5.0, 1.0, 1.0)
    truth = np.zeros((8, 40, 80), bool)
    truth[2:5, 5:35, 5:35] = True
    pred = truth.copy()
    pred[3, 17:23, 60:66] = True
    assert hd95(pred, truth, spacing) == pytest.approx(26.0)
    assert hd95(truth, pred, spacing) == pytest.approx(26.0)  # the max of both directions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_equals_the_challenge_code_on_random_thick_slice_lesions(seed):
    rng = np.random.default_rng(seed)
    spacing = (4.5, 0.9, 0.9)
    truth = np.zeros((10, 48, 48), bool)
    pred = np.zeros_like(truth)
    for mask in (truth, pred):
        for _ in range(4):
            z, y, x = rng.integers(1, 8), rng.integers(4, 40), rng.integers(4, 40)
            mask[z:z + rng.integers(1, 3), y:y + rng.integers(2, 8), x:x + rng.integers(2, 8)] = True
    assert hd95(pred, truth, spacing) == pytest.approx(wmh_challenge_hd95(pred, truth, spacing), abs=1e-9)


def test_empty_mask_conventions_are_kept():
    empty = np.zeros((4, 6, 6), bool)
    one = empty.copy()
    one[1, 2, 2] = True
    assert hd95(empty, empty, (3, 1, 1)) == 0.0
    assert hd95(one, empty, (3, 1, 1)) == float("inf") and hd95(empty, one, (3, 1, 1)) == float("inf")
