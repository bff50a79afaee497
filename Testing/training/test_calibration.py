"""MACS calibration: a real fit lowers ECE on an over-confident set; `shmn calibrate` writes a new model
file whose card holds the calibration, `shmn predict` and `shmn evaluate` use it, and nothing is overwritten."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.special import expit

from shmn.cli import main as cli_main
from shmn.errors import ShmnError
from shmn.inference.calibration import calibrate_macs, calibration_from_card, logit
from shmn.io.model_card import read_card
from shmn.measures.metrics import expected_calibration_error
from shmn.training.calibration import fit_calibration, negative_log_likelihood, reliability_figure

pytestmark = pytest.mark.xdist_group("calibration")


def overconfident_set(n: int = 4000, sharpen: float = 3.0, seed: int = 0):
    """Cases whose true p(severe) is known; the 'network' reports logits ``sharpen`` times too large."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0.0, 1.5, n)
    labels = (rng.uniform(size=n) < expit(true_logit)).astype(float)
    return sharpen * true_logit, labels


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_calibration_lowers_ece_on_an_overconfident_set(method):
    logits, labels = overconfident_set()
    fit = fit_calibration(logits, labels, method)
    assert fit.ece_before == pytest.approx(expected_calibration_error(expit(logits), labels))
    assert fit.ece_before > 0.08  # the constructed set really is over-confident
    assert fit.ece_after < 0.03 and fit.ece_after < fit.ece_before / 3
    assert fit.nll_after < fit.nll_before
    if method == "temperature":
        assert fit.parameters["temperature"] == pytest.approx(3.0, rel=0.1)  # it recovers the sharpening
    else:
        assert fit.parameters["a"] == pytest.approx(1 / 3.0, rel=0.1) and abs(fit.parameters["b"]) < 0.1
    # The fit is the NLL minimum: nudging the parameter either way is worse.
    for factor in (0.9, 1.1):
        assert negative_log_likelihood(fit.slope * factor * logits + fit.intercept, labels) > fit.nll_after
    figure = reliability_figure(logits, labels, fit, "test")
    assert len(figure.axes[0].lines) == 3  # diagonal, before, after


def test_a_well_calibrated_set_is_left_almost_alone():
    logits, labels = overconfident_set(sharpen=1.0, seed=1)
    assert fit_calibration(logits, labels).parameters["temperature"] == pytest.approx(1.0, abs=0.1)


def test_fit_refuses_bad_input():
    with pytest.raises(ShmnError, match="at least 2"):
        fit_calibration([0.3], [1.0])
    with pytest.raises(ShmnError, match="labels must be 0"):
        fit_calibration([0.3, 0.2], [1.0, 2.0])
    with pytest.raises(ShmnError, match="--method"):
        fit_calibration([0.3, 0.2], [1.0, 0.0], "isotonic")


def test_card_calibration_is_applied_and_reported():
    card = {"calibration": {"method": "temperature", "parameters": {"temperature": 2.0}, "split": "val", "n_cases": 9,
                            "ece_before": 0.2, "ece_after": 0.05}}
    calibration = calibration_from_card(card, "m.safetensors")
    probability, entry = calibrate_macs(expit(3.0), 3.0, calibration)
    assert probability == pytest.approx(expit(1.5))
    assert entry["calibrated"] is True
    assert entry["calibration"]["method"] == "temperature scaling" and entry["calibration"]["fitted_on"] == {"split": "val", "n_cases": 9}
    assert entry["calibration"]["uncalibrated_probability_severe"] == pytest.approx(expit(3.0), abs=1e-4)
    # Without the logit (an older engine result) it is recovered from the probability.
    assert calibrate_macs(expit(3.0), None, calibration)[0] == pytest.approx(expit(1.5), abs=1e-6)
    assert logit(1.0) < 20 and math.isfinite(logit(0.0))
    probability, entry = calibrate_macs(0.7, 0.8473, None)
    assert probability == 0.7 and entry["calibrated"] is False and "shmn calibrate" in entry["calibration"]["note"]
    platt = calibration_from_card({"calibration": {"method": "platt", "parameters": {"a": 0.5, "b": -1.0}}}, "m")
    assert platt.probability(2.0) == pytest.approx(expit(0.0))


@pytest.mark.parametrize("entry, message", [
    ({"method": "isotonic", "parameters": {}}, "expected {method"),
    ({"method": "temperature", "parameters": {"temperature": 0.0}}, "expected > 0"),
    ({"method": "temperature", "parameters": {"temperature": "2"}}, "expected a finite number"),
    ({"method": "platt", "parameters": {"a": float("nan"), "b": 0.0}}, "expected a finite number"),
    ("temperature", "expected {method"),
])
def test_damaged_calibration_entries_are_refused(entry, message):
    with pytest.raises(ShmnError, match="m.safetensors: model card 'calibration"):
        calibration_from_card({"calibration": entry}, "m.safetensors")
    with pytest.raises(ShmnError, match=message):
        calibration_from_card({"calibration": entry}, "m.safetensors")


# ---------------------------------------------------------------- `shmn calibrate` end to end


@pytest.fixture(scope="module")
def calibrated(small_cohort, tmp_path_factory):
    """A tiny real model calibrated by the command on the MACS cohort's train split (6 cases of both groups:
    the tiny cohort's val split holds one case)."""
    from engine_fixtures import make_tiny_model

    folder = tmp_path_factory.mktemp("calibrate")
    source, _ = make_tiny_model(folder)
    output = folder / "tiny-calibrated.safetensors"
    args = ["-q", "calibrate", str(source), "--data", str(small_cohort / "macs"), "--split", "train", "-o", str(output), "--device", "cpu"]
    assert cli_main(args) == 0
    return source, output, args


def test_calibrate_writes_a_new_model_whose_card_holds_the_calibration(calibrated, small_cohort):
    from shmn.training.data import load_manifests, split_samples

    source, output, _ = calibrated
    card = read_card(output)
    entry = card["calibration"]
    samples = [s for s in split_samples(load_manifests([small_cohort / "macs"]), "train") if s.macs is not None]
    assert entry["method"] == "temperature" and entry["parameters"]["temperature"] > 0
    assert entry["split"] == "train" and entry["n_cases"] == len(samples) and entry["cases"] == [s.id for s in samples]
    assert 0 < entry["n_severe"] < entry["n_cases"]
    assert entry["ece_after"] <= entry["ece_before"] + 1e-6 and entry["nll_after"] <= entry["nll_before"] + 1e-9
    assert "equal-width" in entry["ece_bins"]
    assert card["version"] == read_card(source)["version"] + "+calibrated"
    figure = output.with_name("tiny-calibrated.reliability.png")
    assert entry["reliability_diagram"] == figure.name and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The train cases with a ventricle mask chose the ventricle operating threshold.
    from shmn.training.calibration import VENTRICLE_THRESHOLDS

    with_ventricles = [s.id for s in split_samples(load_manifests([small_cohort / "macs"]), "train") if s.ventricles is not None]
    assert with_ventricles, "the small cohort's MACS train split should hold ventricle masks"
    thresholds = card["operating_thresholds"]
    assert thresholds["ventricles"] in VENTRICLE_THRESHOLDS and thresholds["cases"] == with_ventricles and thresholds["split"] == "train"
    assert max(thresholds["mean_dice"].values()) == thresholds["mean_dice"][f"{thresholds['ventricles']:g}"]
    # Same weights: only the card differs.
    from safetensors.numpy import load_file

    before, after = load_file(str(source)), load_file(str(output))
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)


def test_predict_and_evaluate_use_the_calibration(calibrated, small_cohort, tmp_path):
    from shmn.inference.predict import PredictOptions, load_predictor, predict_case
    from shmn.training.data import load_manifests, split_samples
    from shmn.training.evaluate import evaluate

    source, output, _ = calibrated
    sample = split_samples(load_manifests([small_cohort / "macs"]), "test")[0]
    plain = predict_case(sample.image, tmp_path / "plain", load_predictor(source), PredictOptions(device="cpu"))
    report = predict_case(sample.image, tmp_path / "calibrated", load_predictor(output), PredictOptions(device="cpu"))
    assert plain["macs"]["calibrated"] is False and "shmn calibrate" in plain["macs"]["calibration"]["note"]
    macs = report["macs"]
    assert macs["calibrated"] is True and macs["calibration"]["method"] == "temperature scaling"
    raw = macs["calibration"]["uncalibrated_probability_severe"]
    assert raw == pytest.approx(plain["macs"]["probability_severe"], abs=1e-4)
    temperature = read_card(output)["calibration"]["parameters"]["temperature"]
    assert macs["probability_severe"] == pytest.approx(expit(logit(raw) / temperature), abs=2e-3)
    assert macs["group"] == ("severe" if macs["probability_severe"] > 0.5 else "mild")
    written = json.loads((tmp_path / "calibrated" / report["case"] / "report.json").read_text(encoding="utf-8"))
    assert written["macs"] == macs
    # The ventricle mask is thresholded at the card's operating threshold (0.5 without one), and says so.
    assert plain["thresholds"]["ventricle_probability"] == 0.5
    assert report["thresholds"]["ventricle_probability"] == read_card(output)["operating_thresholds"]["ventricles"]
    # `shmn evaluate` scores the calibrated probability: on the fitting split it reproduces the card's ECE.
    results = evaluate(output, [small_cohort / "macs"], split="train", device="cpu", progress=False)
    assert results["summary"]["macs"]["ece"] == pytest.approx(read_card(output)["calibration"]["ece_after"], abs=2e-3)


def test_calibrate_never_overwrites(calibrated, capsys):
    source, output, args = calibrated
    before = output.read_bytes()
    assert cli_main(args) == 2
    error = capsys.readouterr().err
    assert f"{output}: already exists; use --overwrite" in error and error.count("\n") == 1
    assert output.read_bytes() == before
    same = [a if a != str(output) else str(source) for a in args] + ["--overwrite"]
    assert cli_main(same) == 2
    assert "is the model being calibrated" in capsys.readouterr().err


def test_calibrate_needs_both_groups(small_cohort, tmp_path, capsys):
    from engine_fixtures import make_tiny_model

    source, _ = make_tiny_model(tmp_path)
    args = ["-q", "calibrate", str(source), "--data", str(small_cohort / "pvl"), "-o", str(tmp_path / "out.safetensors"), "--device", "cpu"]
    assert cli_main(args) == 2
    assert "calibration needs at least 2, of both groups" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists()


def test_an_under_confident_ventricle_map_gets_a_lower_operating_threshold():
    """A head that ranks voxels right but never reaches 0.5 (the randomised model's ventricles): 0.5 finds
    nothing, the chosen threshold finds the ventricles."""
    from shmn.training.calibration import choose_threshold

    rng = np.random.default_rng(0)
    references, probabilities = [], []
    for _ in range(2):
        reference = np.zeros((20, 20, 20), bool)
        reference[6:14, 5:15, 7:12] = True
        probabilities.append(np.where(reference, 0.35, 0.02) + rng.uniform(-0.01, 0.01, reference.shape))
        references.append(reference)
    threshold, dice_by_threshold = choose_threshold(probabilities, references)
    assert dice_by_threshold["0.5"] == 0.0 and 0.05 < threshold < 0.35 and dice_by_threshold[f"{threshold:g}"] == 1.0
    # A confident map keeps the default (ties go to the threshold nearest 0.5).
    confident = [np.where(r, 0.95, 0.01) for r in references]
    assert choose_threshold(confident, references)[0] == 0.5


# ---------------------------------------------------------------- the burden MACS estimate's recalibration (--macs-burden)


def site_scores(n: int = 400, seed: int = 0):
    """Burden scores of a site whose children reach MACS III-V at a smaller burden than our phantoms: the true
    p(severe) is sigmoid(1.5 * score + 3), where the shipped estimate says sigmoid(score)."""
    rng = np.random.default_rng(seed)
    scores = rng.uniform(-3.0, 0.5, n)
    labels = (rng.uniform(size=n) < expit(1.5 * scores + 3.0)).astype(float)
    return scores, labels


def test_the_burden_score_is_recalibrated_to_a_sites_operating_point():
    from shmn.training.calibration import CalibrationConfig, burden_calibration_entry

    scores, labels = site_scores()
    entry = burden_calibration_entry(list(scores), list(labels), [f"c{i}" for i in range(len(labels))], CalibrationConfig(split="test"), ["site.json"])
    assert entry["method"] == "platt" and entry["n_cases"] == 400 and entry["split"] == "test"
    assert entry["parameters"]["a"] == pytest.approx(1.5, abs=0.5) and entry["parameters"]["b"] == pytest.approx(3.0, abs=0.8)
    assert entry["ece_after"] < 0.5 * entry["ece_before"] and entry["nll_after"] < entry["nll_before"]
    # Cases that turn the estimate round (more burden, less severe) cannot carry a fit; a model without lesions has no score.
    with pytest.raises(ShmnError, match="turns the burden estimate round"):
        burden_calibration_entry(list(scores), list(1.0 - labels), [], CalibrationConfig(), [])
    with pytest.raises(ShmnError, match="no lesion output"):
        burden_calibration_entry([None, None], [0.0, 1.0], ["a", "b"], CalibrationConfig(), [])


def test_a_recalibrated_burden_estimate_moves_its_group_and_says_so():
    from shmn.inference.calibration import BURDEN_CARD_KEY
    from shmn.measures.burden_macs import SHIPPED_BURDEN_MODEL, macs_from_burden
    from shmn.measures.motor_regions import REGIONS, SIDES, MotorBurden, RegionBurden

    card = {BURDEN_CARD_KEY: {"method": "platt", "parameters": {"a": 1.0, "b": 3.0}, "split": "test", "n_cases": 24,
                              "ece_before": 0.33, "ece_after": 0.1}}
    calibration = calibration_from_card(card, "m.safetensors", BURDEN_CARD_KEY)
    burden = MotorBurden(tuple(RegionBurden(region, side, 0.3, 10.0) for region in REGIONS for side in SIDES), 2.0, all_lesion_ml=2.0)
    plain, recalibrated = macs_from_burden(burden), macs_from_burden(burden, calibration=calibration)
    score = SHIPPED_BURDEN_MODEL.score(burden)
    assert plain["recalibrated"] is False and "recalibration" not in plain and plain["group"] == "mild"
    assert recalibrated["probability_severe"] == pytest.approx(expit(score + 3.0), abs=1e-4) and recalibrated["group"] == "severe"
    assert recalibrated["recalibrated"] is True and recalibrated["score"] == plain["score"]
    assert recalibrated["recalibration"]["uncalibrated_probability_severe"] == plain["probability_severe"]
    assert recalibrated["recalibration"]["fitted_on"] == {"split": "test", "n_cases": 24}
    with pytest.raises(ShmnError, match="model card 'burden_calibration.parameters.a'"):
        calibration_from_card({BURDEN_CARD_KEY: {"method": "platt", "parameters": {"a": "1", "b": 0.0}}}, "m.safetensors", BURDEN_CARD_KEY)


def test_predict_and_evaluate_use_the_cards_burden_recalibration(calibrated, small_cohort, tmp_path):
    from shmn.inference.calibration import BURDEN_CARD_KEY
    from shmn.inference.predict import PredictOptions, load_predictor, predict_case
    from shmn.network.model_file import save_model
    from shmn.training.data import load_manifests, split_samples
    from shmn.training.evaluate import evaluate

    _, output, _ = calibrated
    predictor = load_predictor(output)
    site = tmp_path / "site.safetensors"
    save_model(site, predictor.network, {**predictor.card, BURDEN_CARD_KEY: {"method": "platt", "parameters": {"a": 0.5, "b": 2.0}, "n_cases": 24}})
    sample = split_samples(load_manifests([small_cohort / "macs"]), "test")[0]
    report = predict_case(sample.image, tmp_path / "out", load_predictor(site), PredictOptions(device="cpu"))
    burden = report["macs_from_burden"]
    assert burden["recalibrated"] is True and burden["probability_severe"] == pytest.approx(expit(0.5 * burden["score"] + 2.0), abs=1e-4)
    page = (tmp_path / "out" / report["case"] / "report.html").read_text(encoding="utf-8")
    assert f"{burden['probability_severe']:.2f} (recalibrated on 24 cases)" in page
    case = evaluate(site, [small_cohort / "macs"], split="test", device="cpu", progress=False)["cases"][0]
    assert case["macs_from_burden"] == pytest.approx(expit(0.5 * case["burden_score"] + 2.0), abs=1e-6)
    assert case["burden_score"] == pytest.approx(burden["score"], abs=1e-3)
    # A damaged entry fails when the model is loaded, naming it.
    damaged = tmp_path / "damaged.safetensors"
    save_model(damaged, predictor.network, {**predictor.card, BURDEN_CARD_KEY: {"method": "platt", "parameters": {"a": float("inf"), "b": 0.0}}})
    with pytest.raises(ShmnError, match="'burden_calibration.parameters.a' is inf"):
        load_predictor(damaged)


def test_a_platt_fit_that_turns_the_network_round_is_refused():
    """On OOD seed 0 Platt scaling of v2.7's MACS head came out at a = -7.3 (the head ranks that cohort backwards):
    written, the model would have called the most severe-looking children the mildest."""
    from shmn.training.calibration import CalibrationConfig, refuse_reversed

    logits, labels = overconfident_set(400)
    config = CalibrationConfig(method="platt", split="test")
    assert refuse_reversed(fit_calibration(logits, labels, "platt"), config).slope > 0
    with pytest.raises(ShmnError, match="ranks the groups the wrong way round"):
        refuse_reversed(fit_calibration(logits, 1.0 - labels, "platt"), config)
    assert refuse_reversed(fit_calibration(logits, 1.0 - labels, "temperature"), config).slope > 0  # temperature never turns it round
