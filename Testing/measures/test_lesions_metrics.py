"""Lesion geometry and evaluation metrics on masks with known answers."""

import math

import numpy as np
import pytest

from shmn.measures.lesions import (
    density_map,
    density_peaks,
    gaussian_blobs,
    lesion_centres,
    lesion_components,
    without_small_components,
)
from shmn.measures.metrics import (
    abs_volume_difference_percent,
    dice,
    expected_calibration_error,
    hd95,
    lesion_f1,
    macs_metrics,
    volume_ml,
)


def empty(shape=(16, 16, 16)) -> np.ndarray:
    return np.zeros(shape, dtype=np.uint8)


# --- lesions -----------------------------------------------------------------------------------


def test_components_are_26_connected():
    mask = empty()
    mask[2:4, 2:4, 2:4] = 1
    mask[4, 4, 4] = 1  # touches the first cube by a corner only: same lesion under 26-connectivity
    mask[10:12, 10:12, 10:12] = 1
    labels, n = lesion_components(mask)
    assert n == 2
    assert labels[4, 4, 4] == labels[2, 2, 2] != labels[10, 10, 10]


def test_components_smaller_than_the_minimum_volume_are_dropped():
    mask = np.zeros((20, 20, 20), dtype=np.uint8)
    mask[2:4, 2:4, 2:4] = 1  # 8 voxels
    mask[10, 10, 10] = 1  # 1 voxel
    mask[15:17, 15:17, 15] = 1  # 4 voxels
    mask[17, 17, 16] = 1  # diagonal neighbour: the same 26-connected component (5 voxels)
    # 1 mm voxels: 0.005 mL keeps the 8- and 5-voxel components, drops the single voxel
    kept = without_small_components(mask, (1.0, 1.0, 1.0), 0.005)
    assert kept.dtype == np.uint8 and kept.sum() == 13 and kept[10, 10, 10] == 0 and kept[17, 17, 16] == 1
    # 2 mm voxels (0.008 mL each): one voxel is exactly one 2 mm voxel and stays
    assert without_small_components(mask, (2.0, 2.0, 2.0), 0.008).sum() == 14
    assert without_small_components(mask, (1.0, 1.0, 1.0), 0.0).sum() == 14
    assert without_small_components(np.zeros((4, 4, 4)), (1.0, 1.0, 1.0), 0.01).sum() == 0


def test_centre_and_volume_of_a_cube():
    mask = empty()
    mask[2:5, 3:6, 4:7] = 1
    (lesion,) = lesion_centres(mask, spacing_zyx=(2.0, 1.0, 1.0))
    assert lesion.centre_zyx == pytest.approx((3.0, 4.0, 5.0))
    assert lesion.volume_ml == pytest.approx(27 * 2.0 / 1000)
    assert lesion.voxels == 27


def test_centre_is_the_centre_of_mass_of_the_outer_border():
    # A 5^3 cube (x 2..6) with a 4-voxel spur along +x (x 7..10) from the middle of its face.
    mask = empty((12, 12, 16))
    mask[3:8, 3:8, 2:7] = 1
    mask[5, 5, 7:11] = 1
    (lesion,) = lesion_centres(mask, (1, 1, 1))
    # Border: 98 shell voxels of the cube minus the one the spur covers (x sum 98*4 - 6), plus the
    # spur's 4 voxels (x 7+8+9+10): 101 voxels.
    x_border = (98 * 4 - 6 + 34) / 101
    x_body = (125 * 4 + 34) / 129
    assert lesion.centre_zyx == pytest.approx((5.0, 5.0, x_border))
    assert abs(x_border - x_body) > 0.01  # the whole-body centre would fail this test


def test_internal_cavity_does_not_shift_the_centre():
    mask = empty()
    mask[4:11, 4:11, 4:11] = 1
    mask[8, 7, 7] = 0  # off-centre hole: its walls are not part of the outer border
    (lesion,) = lesion_centres(mask, (1, 1, 1))
    assert lesion.centre_zyx == pytest.approx((7.0, 7.0, 7.0))


def test_density_map_has_unit_peaks_and_gaussian_profile():
    mask = empty((16, 16, 24))
    mask[3:6, 4:7, 4:7] = 1  # centre (4, 5, 5)
    mask[10, 10, 18] = 1  # single voxel: centre (10, 10, 18)
    spacing = (2.0, 1.0, 1.0)
    density = density_map(mask, spacing, sigma_mm=3.0)
    assert density.dtype == np.float32
    assert density[4, 5, 5] == pytest.approx(1.0) and density[10, 10, 18] == pytest.approx(1.0)
    assert density[5, 5, 5] == pytest.approx(math.exp(-(2.0**2) / (2 * 9)), rel=1e-5)  # one z voxel = 2 mm
    assert density[4, 5, 8] == pytest.approx(math.exp(-(3.0**2) / (2 * 9)), rel=1e-5)
    assert density.max() == pytest.approx(1.0)


def test_density_peaks_recover_known_centres():
    spacing = (2.0, 2.0, 2.0)
    centres = [(5.0, 6.0, 7.0), (5.0, 6.0, 17.0)]  # 20 mm apart
    density = gaussian_blobs((12, 12, 24), centres, spacing, sigma_mm=4.0)
    faint = 0.2 * gaussian_blobs((12, 12, 24), [(10.0, 2.0, 12.0)], spacing, sigma_mm=4.0)
    density = np.maximum(density, faint)
    peaks = density_peaks(density, spacing, threshold=0.3, min_distance_mm=8.0)
    assert sorted(peaks) == [pytest.approx(c) for c in centres]  # the faint blob is below threshold
    # Two centres closer than min_distance give one peak.
    close = gaussian_blobs((12, 12, 24), [(5.0, 6.0, 7.0), (5.0, 6.0, 9.0)], spacing, sigma_mm=4.0)
    assert len(density_peaks(close, spacing, min_distance_mm=8.0)) == 1
    # A flat top gives one peak at its centre.
    plateau = np.zeros((12, 12, 12), np.float32)
    plateau[3:6, 4:8, 5:8] = 1.0
    assert density_peaks(plateau, (1, 1, 1), min_distance_mm=3.0) == [pytest.approx((4.0, 5.5, 6.0))]
    assert density_peaks(np.zeros((8, 8, 8), np.float32), (1, 1, 1)) == []


# --- metrics -----------------------------------------------------------------------------------


def test_dice_known_values():
    truth, pred = empty(), empty()
    truth[0, 0, 0:6] = 1
    pred[0, 0, 3:7] = 1  # overlap 3, sizes 6 and 4
    assert dice(pred, truth) == pytest.approx(0.6)
    assert dice(empty(), empty()) == 1.0
    assert dice(pred, empty()) == 0.0


def test_hd95_known_values():
    a, b = empty(), empty()
    a[5, 5, 5] = 1
    b[5, 5, 9] = 1
    assert hd95(a, b, (1.0, 1.0, 2.0)) == pytest.approx(8.0)  # 4 voxels of 2 mm along x
    c, d = empty(), empty()
    c[2:6, 2:6, 2:6] = 1
    d[2:6, 2:6, 4:8] = 1  # shifted by 2 voxels along x
    assert hd95(c, d, (1, 1, 1)) == pytest.approx(2.0)
    assert hd95(c, c, (1, 1, 1)) == 0.0
    assert hd95(empty(), empty(), (1, 1, 1)) == 0.0
    assert hd95(c, empty(), (1, 1, 1)) == math.inf


def test_lesion_f1_touching_and_non_touching_predictions():
    truth = empty()
    truth[2:4, 2:4, 2:4] = 1  # lesion A
    truth[10:12, 10:12, 10:12] = 1  # lesion B
    pred = empty()
    pred[3:6, 3:6, 3:6] = 1  # overlaps A by one corner voxel region
    pred[2:4, 10:12, 2:4] = 1  # touches nothing: false positive
    result = lesion_f1(pred, truth)
    assert (result.n_true, result.n_pred, result.true_detected, result.pred_correct) == (2, 2, 1, 1)
    assert (result.precision, result.recall, result.f1) == pytest.approx((0.5, 0.5, 0.5))
    assert (result.false_positives, result.false_negatives) == (1, 1)
    # Moving the first prediction one voxel beyond A (a gap, no overlap) makes it a miss too.
    apart = empty()
    apart[5:8, 5:8, 5:8] = 1
    assert lesion_f1(apart, truth).true_detected == 0 and lesion_f1(apart, truth).f1 == 0.0
    assert lesion_f1(truth, truth).f1 == 1.0
    assert lesion_f1(empty(), empty()).f1 == 1.0
    assert lesion_f1(pred, empty()).f1 == 0.0 and lesion_f1(empty(), truth).f1 == 0.0


def test_volumes():
    mask = empty()
    mask[0, 0, 0:10] = 1
    assert volume_ml(mask, (2.0, 1.0, 1.5)) == pytest.approx(10 * 3.0 / 1000)
    pred = empty()
    pred[0, 0, 0:8] = 1
    assert abs_volume_difference_percent(pred, mask) == pytest.approx(20.0)
    assert abs_volume_difference_percent(empty(), empty()) == 0.0
    assert abs_volume_difference_percent(pred, empty()) == math.inf


def test_macs_metrics_known_values():
    m = macs_metrics([0.9, 0.2, 0.6, 0.4], [1, 0, 0, 1])
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.5)  # tp 1, fp 1, fn 1
    assert m["auc"] == pytest.approx(0.75)  # 3 of 4 (severe, mild) pairs ranked right
    assert m["ece"] == pytest.approx((0.1 + 0.2 + 0.6 + 0.6) / 4)  # each sample alone in its bin
    assert m["n"] == 4
    assert macs_metrics([0.5, 0.5], [0, 1])["auc"] == pytest.approx(0.5)  # ties count half
    assert math.isnan(macs_metrics([0.3, 0.7], [1, 1])["auc"])
    assert macs_metrics([0.1, 0.2], [0, 0])["f1"] == 0.0
    with pytest.raises(ValueError):
        macs_metrics([0.1], [2])


def test_ece_shares_bins():
    assert expected_calibration_error([0.81, 0.89], [1, 0]) == pytest.approx(abs(0.5 - 0.85))
    assert expected_calibration_error([1.0, 0.0], [1, 0]) == 0.0
