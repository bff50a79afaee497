"""`shmn predict` writes the motor-pathway burden and both MACS estimates (issue 13, "MACS explained").

A real tiny SHMN (random weights, 4 mm grid) on the MNI152 brain resampled onto a clinical-like grid:
report.json must hold motor_burden, macs_from_burden and macs_primary, agree with the burden measured
from the same model's model-grid lesion probability, and the overview and case report must show them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from engine_fixtures import make_tiny_model
from shmn.inference.motor import template_lesion_mask
from shmn.inference.predict import MASK_THRESHOLD, PredictOptions, load_predictor, predict_case, predict_native
from shmn.measures.burden_macs import MACS_PRIMARY, SHIPPED_BURDEN_MODEL
from shmn.measures.motor_regions import REGIONS, SIDES, motor_burden

pytestmark = pytest.mark.xdist_group("predict")


@pytest.fixture(scope="module")
def case(anatomy, tmp_path_factory):
    folder = tmp_path_factory.mktemp("motor")
    model_path, _ = make_tiny_model(folder)
    predictor = load_predictor(model_path)
    reference = sitk.Image([80, 96, 48], sitk.sitkFloat32)
    reference.SetSpacing((2.2, 2.2, 3.5))
    reference.SetDirection(np.diag([-1.0, -1.0, 1.0]).flatten().tolist())  # RAS voxel order
    reference.SetOrigin((88.0, 105.0, -72.0))
    image = sitk.Resample(anatomy.template, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    path = folder / "flair.nii.gz"
    sitk.WriteImage(image, str(path), True)
    report = predict_case(path, folder / "out", predictor, PredictOptions(device="cpu"))
    return {"report": report, "dir": folder / "out" / "flair", "image": image, "predictor": predictor}


def test_report_holds_the_motor_burden_and_both_estimates(case):
    report = json.loads((case["dir"] / "report.json").read_text(encoding="utf-8"))
    burden = report["motor_burden"]
    assert [(r["region"], r["side"]) for r in burden["regions"]] == [(region, side) for region in REGIONS for side in SIDES]
    for row in burden["regions"]:
        assert row["region_ml"] > 0 and row["lesion_ml"] >= 0 and 0 <= row["share"] <= 1
    assert burden["totals"]["both"]["lesion_ml"] == pytest.approx(sum(r["lesion_ml"] for r in burden["regions"]), abs=1e-3)
    assert "Juelich" in burden["atlas"] and "MNI152" in burden["space"]
    estimate = report["macs_from_burden"]
    assert 0.0 <= estimate["probability_severe"] <= 1.0 and estimate["group"] in ("mild", "severe")
    assert report["macs_primary"] == MACS_PRIMARY
    assert 0.0 <= report["macs"]["probability_severe"] <= 1.0  # the network's estimate is still there


def test_burden_is_the_model_grid_lesion_mask_measured_in_the_regions(case):
    """The same model on the same image: the burden recomputed from predict_native's model-grid probability."""
    prediction = predict_native(case["image"], case["predictor"], PredictOptions(device="cpu"))
    mask = template_lesion_mask(prediction.result.pvl_probability, prediction.prep, MASK_THRESHOLD)
    expected = motor_burden(mask, prediction.prep.reference)
    written = {(r["region"], r["side"]): r["lesion_ml"] for r in case["report"]["motor_burden"]["regions"]}
    for row in expected.rows:
        assert written[(row.region, row.side)] == pytest.approx(row.lesion_ml, abs=1e-3)
    assert case["report"]["macs_from_burden"]["probability_severe"] == pytest.approx(SHIPPED_BURDEN_MODEL.probability(expected), abs=1e-3)
    assert case["report"]["motor_burden"]["all_lesions_ml"] == pytest.approx(float(mask.sum()) * 0.064, rel=1e-3)  # 4 mm voxels


def test_case_report_lists_the_burden_table_and_the_primary_estimate(case):
    html = (case["dir"] / "report.html").read_text(encoding="utf-8")
    assert 'id="burden"' in html and "Corticospinal tract, posterior limb of internal capsule" in html
    assert 'id="macs-from-burden"' in html and 'id="macs-primary"' in html
    assert "All lesions, in a motor region or not" in html  # the burden score's all-lesions term
    assert "Juelich" in html  # the regions are called approximations, and from which atlases
    assert (case["dir"] / "report.pdf").stat().st_size > 0 and (case["dir"] / "overview.png").stat().st_size > 0
