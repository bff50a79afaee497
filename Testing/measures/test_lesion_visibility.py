"""Lesions the image does not show, on constructed images with known answers (the end-to-end check that
`shmn predict` leaves them out of the mask and lists them is Testing/inference/test_predict_uncertainty.py)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from shmn.inference.masks import split_shown_lesions, without_not_shown
from shmn.measures.lesion_visibility import VISIBLE_MIN_CONTRAST_TO_SPREAD, lesion_contrasts, split_by_visibility
from shmn.measures.lesions import lesion_components

SHAPE = (40, 48, 64)
SPACING_ZYX = (1.0, 1.0, 1.0)
TISSUE, NOISE = 100.0, 5.0


def ball(centre, radius: float) -> np.ndarray:
    grid = np.indices(SHAPE, dtype=float)
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre))) <= radius


def tissue_image(seed: int = 0) -> np.ndarray:
    return (TISSUE + NOISE * np.random.default_rng(seed).standard_normal(SHAPE)).astype(np.float32)


def three_candidates():
    """A bright lesion (+6 spreads), a cyst darker than the tissue (-6) and a component the image does not show (+0)."""
    image = tissue_image()
    bright, dark, invisible = ball((20, 24, 12), 3), ball((20, 24, 32), 3), ball((20, 24, 52), 3)
    image[bright] += 6 * NOISE
    image[dark] -= 6 * NOISE
    return image, bright, dark, invisible


def test_contrast_is_read_in_units_of_the_tissues_spread_and_its_sign_is_kept():
    image, bright, dark, invisible = three_candidates()
    labels, n = lesion_components(bright | dark | invisible)
    figures = {row.label: row.contrast_to_spread for row in lesion_contrasts(image, labels, n, SPACING_ZYX)}
    assert abs(figures[labels[20, 24, 12]] - 6) < 1.0
    assert abs(figures[labels[20, 24, 32]] + 6) < 1.0
    assert abs(figures[labels[20, 24, 52]]) < 1.0


def test_only_the_component_the_image_does_not_show_leaves_the_mask():
    image, bright, dark, invisible = three_candidates()
    shown, not_shown, rows = split_by_visibility(bright | dark | invisible, image, SPACING_ZYX)
    assert np.array_equal(shown, bright | dark)  # a dark (cavitated) lesion is shown too
    assert np.array_equal(not_shown, invisible)
    assert sum(not row.visible for row in rows) == 1


def test_the_ventricles_are_not_read_as_tissue():
    """A lesion capping a frontal horn: the dark CSF around more than half of it would make the shell's level low
    and its spread wide; left out, the lesion reads against the white matter alone."""
    image = tissue_image(1)
    lesion = ball((20, 24, 30), 3)
    ventricle = (np.indices(SHAPE)[2] >= 29) & ~lesion
    image[lesion] += 3 * NOISE
    image[ventricle] -= 80.0  # nulled CSF, as noisy as the tissue
    labels, n = lesion_components(lesion)
    with_csf = lesion_contrasts(image, labels, n, SPACING_ZYX)[0].contrast_to_spread
    without_csf = lesion_contrasts(image, labels, n, SPACING_ZYX, outside=ventricle)[0].contrast_to_spread
    assert abs(without_csf - 3) < 1.0
    assert abs(with_csf - 3) > 1.0  # what the exclusion is for


def test_a_component_with_too_little_tissue_around_it_stays():
    image = np.zeros(SHAPE, np.float32)  # background everywhere: no tissue level to read
    candidate = ball((20, 24, 32), 3)
    image[candidate] = TISSUE
    shown, not_shown, rows = split_by_visibility(candidate, image, SPACING_ZYX)
    assert rows[0].contrast_to_spread is None and rows[0].visible
    assert np.array_equal(shown, candidate) and not not_shown.any()


def test_unreadable_voxels_neither_hide_a_lesion_nor_set_the_tissue_level():
    image, bright, dark, invisible = three_candidates()
    image[:, :, 56:] = np.nan  # a converter's outside-the-field-of-view voxels, next to the third candidate
    image[20, 24, 12] = np.nan  # and one inside the bright lesion
    shown, not_shown, rows = split_by_visibility(bright | dark | invisible, image, SPACING_ZYX)
    assert np.array_equal(shown, bright | dark) and np.array_equal(not_shown, invisible)
    assert all(row.contrast_to_spread is not None and np.isfinite(row.contrast_to_spread) for row in rows)


def _image(array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_split_lists_the_left_out_candidate_with_its_centre_volume_and_figure():
    image, bright, dark, invisible = three_candidates()
    native = _image(image)
    pvl = _image((bright | invisible).astype(np.uint8))
    shown, not_shown = split_shown_lesions(pvl, native, _image(np.zeros(SHAPE, np.uint8)))
    assert np.array_equal(sitk.GetArrayFromImage(shown) > 0, bright)
    assert np.array_equal(sitk.GetArrayFromImage(not_shown.mask) > 0, invisible)
    [candidate] = not_shown.candidates
    assert abs(candidate["volume_ml"] - invisible.sum() / 1000) < 1e-4
    assert abs(candidate["contrast_to_spread"]) < VISIBLE_MIN_CONTRAST_TO_SPREAD
    # LPS index (52, 24, 20) -> RAS: x and y change sign (identity direction, origin 0)
    np.testing.assert_allclose(candidate["centre_ras_mm"], [-52, -24, 20], atol=0.6)


class _Grid:
    """What without_not_shown reads of a preprocessed case: the model grid and the model-to-native transform."""

    def __init__(self):
        self.reference = _image(np.zeros((20, 24, 32), np.float32), spacing=(2.0, 2.0, 2.0))
        self.transform = sitk.AffineTransform(3)


def test_the_motor_burden_loses_the_left_out_component_on_the_model_grid_and_keeps_the_shown_one():
    case = _Grid()
    probability = np.zeros((20, 24, 32), np.float32)
    probability[9:12, 11:14, 5:8] = 0.9  # model-grid voxels of the bright lesion (native x 10-16)
    probability[9:12, 11:14, 25:28] = 0.9  # ... and of the one the image does not show (native x 50-56)
    image, bright, dark, invisible = three_candidates()
    native = _image(image)
    shown, not_shown = split_shown_lesions(_image((bright | invisible).astype(np.uint8)), native, _image(np.zeros(SHAPE, np.uint8)))
    kept = without_not_shown(probability, 0.5, case, shown, not_shown.mask)
    assert kept[10, 12, 6] == np.float32(0.9) and kept[10, 12, 26] == 0.0
    assert without_not_shown(probability, 0.5, case, shown, _image(np.zeros(SHAPE, np.uint8))) is probability


def _report(lesions_not_shown):
    from shmn.reporting.report import ModelInfo, build_report

    model = ModelInfo(name="m", version="1", sha256="ab", file="m.safetensors", registered=False, tasks=["pvl", "ventricles"],
                      grid={}, training_data="synthetic phantoms", intended_use="research", metrics={})
    lesion = {"centre_ras_mm": [10.0, -20.0, 15.0], "volume_ml": 0.4, "voxels": 400}
    return build_report(case="c", input_path="c.nii.gz", input_geometry={}, macs_probability=None, pvl_volume_ml=0.4,
                        lesions=[lesion], localization_centres=None, ventricle_volume_ml=None, model=model, preprocessing={},
                        inference={}, thresholds={}, outputs={}, timings_s={}, warnings=[], lesions_not_shown=lesions_not_shown)


CANDIDATES = [{"centre_ras_mm": [-12.0, 5.0, 20.0], "volume_ml": 0.25, "contrast_to_spread": 0.7},
              {"centre_ras_mm": [14.0, 3.0, 22.0], "volume_ml": 0.05, "contrast_to_spread": -0.2}]


def test_report_findings_summary_and_case_report_say_what_was_left_out():
    from shmn.reporting.case_report import not_shown_rows
    from shmn.reporting.report import findings, summary_row

    report = _report(CANDIDATES)
    section = report["pvl"]["not_shown"]
    assert section["count"] == 2 and section["volume_ml"] == 0.3 and section["candidates"] == CANDIDATES
    assert report["pvl"]["lesion_count"] == 1  # the mask's lesions only
    [warning] = report["warnings"]
    assert "2 lesion candidate(s)" in warning and "0.30 mL" in warning and "left out of the lesion mask" in warning
    assert "PVL 0.40 mL in 1 lesion(s) (+2 candidate(s) the image does not show: check)" in findings(report)
    assert summary_row(report, 1.0)["lesion_candidates_not_shown"] == "2"
    assert not_shown_rows(report["pvl"]) == [("Candidates not shown by the image (not in the mask; check)", "2 (0.30 mL; centres in report.json)")]


def test_nothing_left_out_or_not_checked_claims_nothing():
    from shmn.reporting.case_report import not_shown_rows
    from shmn.reporting.report import findings, summary_row

    for candidates, count in (([], "0"), (None, "")):
        report = _report(candidates)
        assert report["warnings"] == [] and not_shown_rows(report["pvl"]) == []
        assert "PVL 0.40 mL in 1 lesion(s)" in findings(report) and not any("check" in part for part in findings(report))
        assert summary_row(report, 1.0)["lesion_candidates_not_shown"] == count
    assert _report(None)["pvl"]["not_shown"] is None
