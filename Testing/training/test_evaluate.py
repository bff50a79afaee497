"""Evaluation: metrics on masks with known answers, and `shmn evaluate` end to end on a real model file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from shmn.cli import main as cli_main
from shmn.training.config import load_config
from shmn.training.data import load_manifests, split_samples
from shmn.errors import ShmnError
from shmn.training.evaluate import evaluate, markdown_table, resolve_model, score_case, summarise
from shmn.measures.metrics import macs_metrics
from shmn.network.model import SHMN
from shmn.network.model_file import save_model

pytestmark = pytest.mark.xdist_group("evaluate")
P_SEVERE = 0.8


def test_scores_of_masks_with_known_answers():
    truth = np.zeros((10, 12, 14), bool)
    truth[1:3, 1:3, 1:5] = True  # lesion A: 16 voxels
    truth[6:8, 6:8, 6:8] = True  # lesion B: 8 voxels, missed
    predicted = np.zeros_like(truth)
    predicted[1:3, 1:3, 1:3] = True  # half of lesion A: 8 voxels
    ventricles = np.zeros_like(truth)
    ventricles[4:6, 2:8, 2:8] = True
    scores = score_case((2.0, 1.0, 1.0), pvl=(predicted, truth), ventricles=(ventricles, ventricles))
    assert scores["pvl_dice"] == pytest.approx(2 * 8 / (8 + 24))
    assert scores["pvl_lesion_f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)  # precision 1, recall 1/2
    assert (scores["pvl_lesions_true"], scores["pvl_lesions_predicted"]) == (2, 1)
    assert scores["pvl_avd_percent"] == pytest.approx(abs(8 - 24) / 24 * 100)
    assert scores["pvl_volume_ml"] == pytest.approx(8 * 2 / 1000) and scores["pvl_volume_true_ml"] == pytest.approx(24 * 2 / 1000)
    assert scores["ventricle_dice"] == 1.0
    # Lesion B's far corner (z=7, y=7, x=7) is the farthest surface point from the prediction.
    assert 0 < scores["pvl_hd95_mm"] <= math.dist((7 * 2, 7, 7), (2 * 2, 2, 2))
    assert "ventricle_dice" not in score_case((1, 1, 1), pvl=(predicted, truth))


def test_summary_skips_missing_labels_and_counts_infinite_distances():
    cases = [
        {"metrics": {"pvl_dice": 0.5, "pvl_hd95_mm": 4.0}, "macs_probability": 0.9, "macs_true": 1.0},
        {"metrics": {"pvl_dice": 0.0, "pvl_hd95_mm": float("inf")}, "macs_probability": 0.2, "macs_true": 0.0},
        {"metrics": {"ventricle_dice": 0.75}, "macs_probability": 0.6, "macs_true": 0.0},
        {"metrics": {}, "macs_probability": 0.4, "macs_true": 1.0},
        {"metrics": {}, "macs_probability": 0.7, "macs_true": None},  # no MACS label: skipped
    ]
    summary = summarise(cases)
    assert summary["pvl_dice"]["mean"] == 0.25 and summary["pvl_dice"]["n"] == 2
    assert summary["pvl_hd95_mm"] == {"n": 2, "infinite": 1, "mean": 4.0, "sd": 0.0, "median": 4.0}
    assert summary["ventricle_dice"]["n"] == 1 and "pvl_lesion_f1" not in summary
    macs = summary["macs"]
    assert macs["n"] == 4 and macs["accuracy"] == 0.5 and macs["auc"] == pytest.approx(0.75)
    table = markdown_table(summary)
    assert "| PVL Dice | 0.250 ± 0.250 | 0.250 | 2 |" in table and "(1 infinite)" in table and "| MACS AUC | 0.750 |" in table

    assert "ventricle_dice_by_visibility" not in summary and "boundary visible" not in table  # no case carries the figure


def test_summary_scores_the_motor_burden_macs_estimate_beside_the_network_head_and_names_each():
    truth = (1.0, 0.0, 1.0, 0.0)
    cases = [{"metrics": {}, "macs_true": y, "macs_probability": p, "macs_from_burden": b}
             for y, p, b in zip(truth, (0.4, 0.6, 0.3, 0.7), (0.9, 0.1, 0.8, 0.2))]
    cases.append({"metrics": {}, "macs_true": 1.0, "macs_probability": 0.5, "macs_from_burden": None})  # no burden: network only
    summary = summarise(cases)
    assert summary["macs"]["n"] == 5 and summary["macs_burden"]["n"] == 4
    assert summary["macs_burden"]["auc"] == 1.0 and summary["macs_burden"]["accuracy"] == 1.0
    assert summary["macs"]["auc"] < 0.5  # the head ranks them the wrong way round: the two are not mixed up
    table = markdown_table(summary)
    assert "| MACS AUC, motor burden, primary | 1.000 | | 4 |" in table and "| MACS AUC, network head |" in table
    assert "| MACS AUC |" not in table


def test_summary_splits_ventricle_dice_by_whether_the_image_shows_the_boundary():
    cases = [{"metrics": {"ventricle_dice": dice}, "ventricle_contrast_to_spread": figure}
             for dice, figure in ((0.9, 6.0), (0.94, 2.0), (0.5, 1.99), (0.6, -1.0), (0.8, None))]
    split = summarise(cases)["ventricle_dice_by_visibility"]
    assert split["visible"]["n"] == 2 and split["visible"]["mean"] == pytest.approx(0.92)
    assert split["not_visible"]["n"] == 2 and split["not_visible"]["mean"] == pytest.approx(0.55)  # None: in neither
    table = markdown_table(summarise(cases))
    assert "| Ventricle Dice, boundary visible | 0.920 ± 0.020 | 0.920 | 2 |" in table
    assert "| Ventricle Dice, boundary not visible | 0.550 ± 0.050 | 0.550 | 2 |" in table


@pytest.fixture(scope="module")
def known_model(tmp_path_factory):
    """A real model file whose answers are known: no lesion, no ventricle, P(severe) = 0.8 everywhere."""
    config = load_config("shmn4:tiny")
    model = SHMN(config.network)
    with torch.no_grad():
        for task, bias in (("pvl", [5.0, -5.0]), ("ventricles", [-5.0])):
            head = [m for m in model.decoders[task].head.modules() if isinstance(m, torch.nn.Conv3d)][-1]
            head.weight.zero_()
            head.bias.copy_(torch.tensor(bias))
        model.macs.fc2.weight.zero_()
        model.macs.fc2.bias.fill_(math.log(P_SEVERE / (1 - P_SEVERE)))
    run = tmp_path_factory.mktemp("known") / "run"
    run.mkdir()
    card = {"name": "known-answers", "version": "0.0.1", "grid": "tiny", "tasks": list(config.network.tasks),
            "preprocessing": json.loads(json.dumps(config.to_dict()["preprocess"]))}
    save_model(run / "model-best.safetensors", model, card)
    return run


def test_evaluate_cli_writes_metrics_json_and_table(small_cohort, known_model, capsys):
    data = [str(small_cohort / "pvl"), str(small_cohort / "macs")]
    assert cli_main(["-q", "evaluate", str(known_model), "--data", *data, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    results = json.loads((known_model / "evaluation-test.json").read_text())
    samples = split_samples(load_manifests(data), "test")
    assert [c["id"] for c in results["cases"]] == [s.id for s in samples]
    assert results["compared_on"].startswith("native grid") and results["model"]["name"] == "known-answers"
    assert results["boundary"].startswith("native") and "boundaries: native" in out  # shmn predict's default
    summary = results["summary"]
    n_pvl = sum(s.pvl is not None for s in samples)
    assert n_pvl and summary["pvl_dice"] == {"n": n_pvl, "infinite": 0, "mean": 0.0, "sd": 0.0, "median": 0.0}
    assert summary["pvl_lesion_f1"]["mean"] == 0.0 and summary["pvl_avd_percent"]["mean"] == 100.0
    assert summary["pvl_hd95_mm"]["infinite"] == n_pvl  # nothing predicted: no distance exists
    assert all(c["metrics"]["pvl_hd95_mm"] is None for c in results["cases"] if "pvl_hd95_mm" in c["metrics"])  # strict JSON
    labels = [s.macs for s in samples if s.macs is not None]
    expected = macs_metrics([P_SEVERE] * len(labels), labels)
    assert summary["macs"]["accuracy"] == pytest.approx(expected["accuracy"])
    # Inference runs as `shmn predict` does: bf16 on CPUs that have it, hence a few 1e-3 of slack.
    assert summary["macs"]["ece"] == pytest.approx(abs(np.mean(labels) - P_SEVERE), abs=5e-3)
    assert all(c["macs_probability"] == pytest.approx(P_SEVERE, abs=5e-3) for c in results["cases"])
    # no lesion anywhere: the burden estimate is its intercept alone, scored on zero mL in every motor region
    from shmn.measures.burden_macs import SHIPPED_BURDEN_MODEL
    from shmn.measures.motor_regions import REGIONS

    assert all(c["motor_lesion_ml"] == {region: 0.0 for region in REGIONS} and c["template_lesion_ml"] == 0.0 for c in results["cases"])
    no_burden = 1.0 / (1.0 + math.exp(-SHIPPED_BURDEN_MODEL.intercept))
    assert all(c["macs_from_burden"] == pytest.approx(no_burden) for c in results["cases"])
    if any(s.ventricles for s in samples):
        assert summary["ventricle_dice"]["mean"] == 0.0
    assert "| PVL Dice | 0.000 ± 0.000 |" in out and "| MACS accuracy, network head |" in out
    assert "| MACS accuracy, motor burden, primary |" in out and summary["macs_burden"]["n"] == len(labels)


def test_evaluate_refuses_empty_runs_and_splits(small_cohort, tmp_path):
    with pytest.raises(ShmnError, match="no model yet"):
        resolve_model(tmp_path)
    assert resolve_model(tmp_path / "model.safetensors") == tmp_path / "model.safetensors"
    with pytest.raises(ShmnError, match="no case in this split"):
        evaluate(tmp_path, [small_cohort / "pvl"], split="nonexistent")


def test_evaluate_scores_exactly_what_predict_writes(small_cohort, tmp_path):
    """One inference path and one threshold: evaluate's mask of a case is predict's pvl.nii.gz."""
    import SimpleITK as sitk

    from engine_fixtures import make_tiny_model
    from shmn.inference.predict import MASK_THRESHOLD, PredictOptions, load_predictor, predict_case
    from shmn.training.evaluate import evaluate_sample

    predictor = load_predictor(make_tiny_model(tmp_path)[0])
    sample = next(s for s in split_samples(load_manifests([small_cohort / "pvl"]), "test") if s.pvl is not None)
    case = evaluate_sample(predictor, sample, "cpu")
    scored = case["metrics"]
    report = predict_case(sample.image, tmp_path / "out", predictor, PredictOptions(device="cpu", probabilities=True))
    assert case["pvl_candidates_not_shown"] == report["pvl"]["not_shown"]["count"]
    folder = tmp_path / "out" / report["case"]
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pvl.nii.gz")))
    probability = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "pvl_probability.nii.gz")))
    spacing = sitk.ReadImage(str(folder / "pvl.nii.gz")).GetSpacing()
    # A random-weight model: probabilities straddle the threshold, so a different threshold would show.
    assert 0 < written.sum() < written.size and np.array_equal(written > 0, probability >= MASK_THRESHOLD)
    assert scored["pvl_volume_ml"] == pytest.approx(written.sum() * np.prod(spacing) / 1000)


def test_evaluate_with_a_cache_scores_what_it_scores_without_and_preprocesses_once(small_cohort, tmp_path):
    """`shmn evaluate --cache`: several models on one cohort preprocess each case once, and the numbers
    are those of the uncached path (the cached image is the one preprocessing made)."""
    from engine_fixtures import make_tiny_model

    model = make_tiny_model(tmp_path)[0]
    data = [small_cohort / "pvl"]
    cache = tmp_path / "cache"
    plain = evaluate(model, data, device="cpu", progress=False)
    cached = evaluate(model, data, device="cpu", progress=False, cache_dir=cache)
    entries = sorted(cache.glob("*.image.npz"))
    assert len(entries) == len(plain["cases"]) and not list(cache.glob("*.pvl.npz"))  # images only
    stamps = [e.stat().st_mtime_ns for e in entries]
    again = evaluate(model, data, device="cpu", progress=False, cache_dir=cache)
    assert [e.stat().st_mtime_ns for e in sorted(cache.glob("*.image.npz"))] == stamps  # read, not rewritten
    for first, second, third in zip(plain["cases"], cached["cases"], again["cases"]):
        assert first["id"] == second["id"] == third["id"]
        assert second["metrics"] == pytest.approx(first["metrics"]) and third["metrics"] == pytest.approx(first["metrics"])
        assert second["macs_probability"] == pytest.approx(first["macs_probability"], abs=1e-6)
        assert second["registration_ok"] == first["registration_ok"]


def test_evaluate_tta_scores_what_predict_tta_writes(small_cohort, tmp_path, capsys):
    """`shmn evaluate --tta` and `shmn predict --tta` share one path: the mirrored pass averaged in changes
    the mask of a random-weight model (not mirror-symmetric), and evaluate scores the mask predict writes."""
    import SimpleITK as sitk

    from engine_fixtures import make_tiny_model
    from shmn.inference.predict import PredictOptions, load_predictor, predict_case
    from shmn.training.evaluate import evaluate_sample

    model = make_tiny_model(tmp_path)[0]
    predictor = load_predictor(model)
    sample = next(s for s in split_samples(load_manifests([small_cohort / "pvl"]), "test") if s.pvl is not None)
    plain, mirrored = (evaluate_sample(predictor, sample, "cpu", tta=tta)["metrics"] for tta in (False, True))
    assert mirrored["pvl_volume_ml"] != pytest.approx(plain["pvl_volume_ml"])
    report = predict_case(sample.image, tmp_path / "out", predictor, PredictOptions(device="cpu", tta=True))
    written = sitk.ReadImage(str(tmp_path / "out" / report["case"] / "pvl.nii.gz"))
    assert mirrored["pvl_volume_ml"] == pytest.approx(sitk.GetArrayFromImage(written).sum() * np.prod(written.GetSpacing()) / 1000)
    assert report["inference"]["test_time_mirroring"].startswith("--tta")
    out = tmp_path / "metrics.json"
    for flag, expected in (([], True), (["--no-tta"], False)):  # on by default, as in shmn predict
        assert cli_main(["-q", "evaluate", str(model), "--data", str(small_cohort / "pvl"), "--device", "cpu", *flag, "-o", str(out)]) == 0
        assert json.loads(out.read_text())["test_time_mirroring"] is expected
        assert ("mirrored pass averaged in" in capsys.readouterr().out) is expected
