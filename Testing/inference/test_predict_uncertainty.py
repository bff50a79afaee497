"""`shmn predict` end to end with the per-lesion uncertainty and the MACS calibration entry: report.json
carries the fields, they are what the written probability map gives, and the overview marks flagged lesions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from engine_fixtures import make_tiny_model
from shmn.cli import main
from shmn.measures.lesion_uncertainty import binary_entropy_bits
from shmn.measures.lesion_visibility import split_by_visibility
from shmn.measures.lesions import lesion_components
from shmn.reporting.overview import REVIEW_COLOUR, render_overview

pytestmark = pytest.mark.xdist_group("predict-uncertainty")


def _review_pixels(path) -> int:
    import matplotlib.image
    from matplotlib.colors import to_rgb

    picture = matplotlib.image.imread(str(path))[..., :3]
    return int(np.sum(np.all(np.abs(picture - np.array(to_rgb(REVIEW_COLOUR))) < 0.06, axis=-1)))


@pytest.fixture(scope="module")
def predicted(anatomy, tmp_path_factory):
    from test_predict import write_case

    root = tmp_path_factory.mktemp("uncertainty")
    model, _ = make_tiny_model(root)
    path = write_case(anatomy, root / "in", "case1")
    out = root / "out"
    assert main(["predict", str(path), "-o", str(out), "--model", str(model), "--device", "cpu", "--quiet", "--probabilities", "--tta"]) == 0
    # The same case with every component kept, to check which ones the default left out.
    assert main(["predict", str(path), "-o", str(root / "all"), "--model", str(model), "--device", "cpu", "--quiet", "--tta",
                 "--keep-lesions-not-shown"]) == 0
    return out / "case1", json.loads((out / "case1" / "report.json").read_text(encoding="utf-8"))


def test_report_lesions_carry_probability_uncertainty_and_review(predicted):
    folder, report = predicted
    lesions = report["pvl"]["lesions"]
    assert lesions, "the random-weight model calls some voxels lesion"
    probability = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pvl_probability.nii.gz")))
    labels, n = lesion_components(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pvl.nii.gz"))))
    assert n == len(lesions)
    # Each lesion's figures are those of its own voxels in the written probability map (matched by size).
    by_size = {}
    for label in range(1, n + 1):
        inside = probability[labels == label]
        by_size.setdefault(int(inside.size), []).append((float(inside.mean()), float(binary_entropy_bits(inside).mean())))
    threshold = report["thresholds"]["lesion_review_uncertainty_bits"]
    for lesion in lesions:
        assert (lesion["mean_probability"], lesion["uncertainty"]) in [
            (pytest.approx(p, abs=1e-3), pytest.approx(h, abs=1e-3)) for p, h in by_size[lesion["voxels"]]]
        assert 0.5 <= lesion["mean_probability"] <= 1.0 and 0.0 <= lesion["uncertainty"] <= 1.0
        assert 0.0 <= lesion["tta_disagreement"] <= 0.5
        flagged = lesion["uncertainty"] > threshold or lesion["tta_disagreement"] > report["thresholds"]["lesion_review_tta_disagreement"]
        assert lesion["review"] is flagged
    assert report["timings_s"]["tta"] > 0
    assert report["macs"]["calibrated"] is False and "no calibration" in report["macs"]["calibration"]["note"]


def test_components_the_image_does_not_show_leave_the_mask_and_are_listed(predicted):
    folder, report = predicted
    every = sitk.ReadImage(str(folder.parent.parent / "all" / "case1" / "pvl.nii.gz"))
    image = sitk.ReadImage(report["input"]["path"], sitk.sitkFloat32)
    ventricles = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "ventricles.nii.gz")))
    shown, not_shown, rows = split_by_visibility(sitk.GetArrayFromImage(every), sitk.GetArrayFromImage(image),
                                                 image.GetSpacing()[::-1], ventricles)
    section = report["pvl"]["not_shown"]
    # (What leaves the mask on an image that shows nothing: Testing/inference/test_lesions_not_shown.py.)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pvl.nii.gz"))) > 0, shown)
    assert section["count"] == len(section["candidates"]) == sum(not row.visible for row in rows)
    assert sorted(c["contrast_to_spread"] for c in section["candidates"]) == pytest.approx(
        sorted(row.contrast_to_spread for row in rows if not row.visible), abs=0.01)
    assert section["volume_ml"] == pytest.approx(not_shown.sum() * np.prod(image.GetSpacing()) / 1000, abs=1e-3)
    assert report["pvl"]["volume_ml"] == pytest.approx(shown.sum() * np.prod(image.GetSpacing()) / 1000, abs=1e-3)
    assert any("do not stand out from the tissue around them" in warning for warning in report["warnings"]) is (section["count"] > 0)


def test_overview_marks_the_flagged_lesions(predicted):
    folder, report = predicted
    flagged = any(lesion["review"] for lesion in report["pvl"]["lesions"]) or report["pvl"]["not_shown"]["count"] > 0
    assert (_review_pixels(folder / "overview.png") > 0) is flagged


def test_overview_paints_review_lesions_in_the_review_colour(anatomy, tmp_path):
    from test_predict import DIRECTIONS, brain_on_grid

    image = brain_on_grid(anatomy.template, DIRECTIONS["RAS"])
    centre = [s // 2 for s in image.GetSize()]
    pvl = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    pvl.CopyInformation(image)
    for dx in range(-2, 3):
        for dy in range(-2, 3):
            pvl[centre[0] + dx, centre[1] + dy, centre[2]] = 1
    ventricles = sitk.Image(pvl)
    ventricles *= 0
    focus = list(image.TransformIndexToPhysicalPoint(centre))
    focus_ras = [-focus[0], -focus[1], focus[2]]
    render_overview(tmp_path / "plain.png", image, pvl, ventricles, focus_ras, "plain")
    render_overview(tmp_path / "review.png", image, pvl, ventricles, focus_ras, "review", review=pvl)
    render_overview(tmp_path / "none.png", image, pvl, ventricles, focus_ras, "none flagged", review=ventricles)
    assert _review_pixels(tmp_path / "plain.png") == 0 == _review_pixels(tmp_path / "none.png")
    assert _review_pixels(tmp_path / "review.png") > 20  # the lesion in at least two planes, plus the legend


def _dimmed(image: sitk.Image, lesion: np.ndarray, contrast: float) -> sitk.Image:
    """``image`` with one lesion's excess over its surrounding white matter cut to ``contrast`` of itself."""
    from scipy import ndimage

    values = sitk.GetArrayFromImage(image).astype(np.float32)
    ring = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion, iterations=1)
    background = float(np.median(values[ring]))
    values[lesion] = background + contrast * (values[lesion] - background)
    dimmed = sitk.GetImageFromArray(values)
    dimmed.CopyInformation(image)
    return dimmed


def _lesion_on(prediction, truth: np.ndarray, review) -> dict:
    """report fields of the predicted lesion that covers most of ``truth`` (the dimmed lesion)."""
    labels, n = lesion_components(sitk.GetArrayFromImage(prediction.masks["pvl"]))
    assert n, "the shipped model found no lesion at all"
    label = max(range(1, n + 1), key=lambda k: int(np.sum((labels == k) & truth)))
    assert np.any((labels == label) & truth), "the shipped model missed the lesion"
    return review[label].report_fields()


@pytest.mark.slow
def test_shipped_model_is_less_sure_of_a_faint_lesion_than_of_the_same_lesion_bright(request):
    """A real model on a real phantom: the phantom's largest lesion as generated (bright) and with 30 % of
    its contrast (faint). The model still finds the faint one, with a lower mean probability and a higher
    uncertainty (on pvl_000 of `shmn phantom --seed 11 --n-pvl 4`: 0.46 -> 0.67 bits, mean p 0.85 -> 0.77)."""
    from shmn.errors import ShmnError
    from shmn.inference.predict import PredictOptions, load_predictor, predict_native
    from shmn.io.manifest import load_manifest
    from shmn.io.registry import shipped_registry_path
    from shmn.measures.lesion_uncertainty import lesion_review

    try:
        predictor = load_predictor(None, registries=[shipped_registry_path()])
    except ShmnError as exc:
        pytest.fail(f"the shipped default model is missing, so this check cannot run: {exc}")
    manifest = load_manifest(request.getfixturevalue("paper_cohort") / "pvl")
    case = max((c for c in manifest.cases if c.pvl),
               key=lambda c: int(sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.resolve(c.pvl)))).sum()))
    image = sitk.ReadImage(str(manifest.resolve(case.image)))
    truth = sitk.Resample(sitk.ReadImage(str(manifest.resolve(case.pvl))), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    labels, n = lesion_components(sitk.GetArrayFromImage(truth))
    largest = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    found = {}
    for name, contrast in (("bright", 1.0), ("faint", 0.3)):
        prediction = predict_native(_dimmed(image, largest, contrast), predictor, PredictOptions(device="cpu"))
        review, _ = lesion_review(prediction.masks["pvl"], prediction.probabilities["pvl"])
        found[name] = _lesion_on(prediction, largest, review)
    bright, faint = found["bright"], found["faint"]
    assert faint["uncertainty"] > bright["uncertainty"], found
    assert faint["mean_probability"] < bright["mean_probability"], found
