"""Calibration of the MACS probability (`shmn calibrate`): fit on validation cases, record in a new model file.

The network's MACS logit z of every labelled case of a split (``val`` by default: cases the model was
not trained on) is collected through `shmn predict`'s own inference path; then either
- temperature scaling (Guo et al. 2017): p = sigmoid(z / T), one parameter, keeps the ranking and the
  0.5 decision, the safe choice for a few dozen cases; or
- Platt scaling: p = sigmoid(a z + b), two parameters, can also move the decision threshold,
is fitted by minimising the negative log-likelihood with scipy's L-BFGS-B. Expected calibration error
(ECE) is measured before and after with shmn.measures.metrics.expected_calibration_error: 10 equal-width
bins of p(severe) over [0, 1], sample-weighted |observed severe fraction - mean probability|.
A reliability diagram (PNG) is drawn next to the new model file. The weights are copied unchanged;
the card gains ``"calibration"`` (shmn.inference.calibration applies it in `shmn predict`).

With ``--macs-burden`` the burden MACS estimate's score (shmn.measures.burden_macs, fitted on our phantoms) is
recalibrated on the same cases by Platt scaling (card ``"burden_calibration"``): its ranking travelled to
out-of-distribution cohorts, its operating point did not (README, "MACS against the OOD cohorts' noise-free groups").

The same cases with a ventricle mask also choose the ventricle map's operating threshold
(``"operating_thresholds"`` in the card; predict's 0.5 otherwise): the threshold of best mean Dice on each
case's native grid among VENTRICLE_THRESHOLDS. A plain-BCE ventricle head can rank voxels well yet stay
under-confident (the domain-randomised model's ventricle probability peaked at 0.41 after 9 epochs:
Dice 0 at 0.5, about 0.7 at 0.3), which is what this corrects; too few cases leave the threshold at 0.5.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from shmn.errors import ShmnError
from shmn.inference.calibration import BURDEN_CARD_KEY, CARD_KEY, METHOD_NAMES, METHODS
from shmn.measures.metrics import expected_calibration_error

ECE_BINS = 10
RELIABILITY_SUFFIX = ".reliability.png"
# log T is searched within these bounds: T from 1/150 to 150 covers any network that is not broken.
LOG_TEMPERATURE_BOUNDS = (-5.0, 5.0)
# Ventricle operating thresholds tried (the mask is probability >= threshold); 0.5 is predict's default.
VENTRICLE_THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)
THRESHOLDS_KEY = "operating_thresholds"
VERSION_SUFFIX = "+calibrated"  # semver build metadata: same weights, another card (so another sha256)


@dataclass(frozen=True)
class CalibrationConfig:
    method: str = "temperature"  # "temperature" | "platt"
    split: str = "val"
    bins: int = ECE_BINS
    macs_burden: bool = False  # also recalibrate the burden MACS estimate's score (card BURDEN_CARD_KEY)


@dataclass(frozen=True)
class CalibrationFit:
    method: str
    parameters: dict  # {"temperature": T} or {"a": a, "b": b}
    slope: float
    intercept: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return expit(self.slope * np.asarray(logits, dtype=float) + self.intercept)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(logits), computed stably from the logits."""
    z = np.asarray(logits, dtype=float)
    y = np.asarray(labels, dtype=float)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _check(logits: Sequence[float], labels: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(logits, dtype=float).reshape(-1)
    y = np.asarray(labels, dtype=float).reshape(-1)
    if z.shape != y.shape or z.size < 2:
        raise ShmnError(f"calibration: {z.size} logits for {y.size} labels; expected the same count, at least 2")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ShmnError("calibration: labels must be 0 (mild) or 1 (severe)")
    if not np.isfinite(z).all():
        raise ShmnError("calibration: the network gave a non-finite MACS logit; the model is broken")
    return z, y


def fit_calibration(logits: Sequence[float], labels: Sequence[float], method: str = "temperature", bins: int = ECE_BINS) -> CalibrationFit:
    """Fit ``method`` on (logit, label) pairs by NLL; ECE and NLL before and after."""
    if method not in METHODS:
        raise ShmnError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    z, y = _check(logits, labels)
    if method == "temperature":
        result = minimize(lambda v: negative_log_likelihood(z * math.exp(-v[0]), y), x0=[0.0], method="L-BFGS-B",
                          bounds=[LOG_TEMPERATURE_BOUNDS])
        temperature = math.exp(float(result.x[0]))
        slope, intercept, parameters = 1.0 / temperature, 0.0, {"temperature": temperature}
    else:
        result = minimize(lambda v: negative_log_likelihood(v[0] * z + v[1], y), x0=[1.0, 0.0], method="L-BFGS-B")
        slope, intercept = float(result.x[0]), float(result.x[1])
        parameters = {"a": slope, "b": intercept}
    after = slope * z + intercept
    return CalibrationFit(
        method=method, parameters=parameters, slope=slope, intercept=intercept,
        nll_before=negative_log_likelihood(z, y), nll_after=negative_log_likelihood(after, y),
        ece_before=expected_calibration_error(expit(z), y, bins), ece_after=expected_calibration_error(expit(after), y, bins),
    )


def refuse_reversed(fit: CalibrationFit, config: CalibrationConfig) -> CalibrationFit:
    """``fit``, unless it turns the probability round (Platt's a <= 0: on the fitting cases the network's MACS head ranks
    the groups backwards, and the calibrated model would call the most severe-looking child the mildest)."""
    if fit.slope <= 0:
        raise ShmnError(f"--method {fit.method}: on these {config.split} cases the network's MACS head ranks the groups the wrong way "
                        f"round (fitted a = {fit.slope:.3g} <= 0), and the fit would turn its probability round; nothing written. "
                        "Use --method temperature (keeps the ranking) or more cases")
    return fit


def _reliability_points(probabilities: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty equal-width bin: mean probability, observed severe fraction, count."""
    which = np.minimum((probabilities * bins).astype(int), bins - 1)
    kept = [b for b in range(bins) if np.any(which == b)]
    mean_p = np.array([probabilities[which == b].mean() for b in kept])
    observed = np.array([labels[which == b].mean() for b in kept])
    counts = np.array([np.sum(which == b) for b in kept])
    return mean_p, observed, counts


def reliability_figure(logits: Sequence[float], labels: Sequence[float], fit: CalibrationFit, title: str, bins: int = ECE_BINS):
    """Observed severe fraction against mean predicted probability per bin, before and after calibration."""
    from matplotlib.figure import Figure

    z, y = _check(logits, labels)
    figure = Figure(figsize=(5.2, 5.2), dpi=100)
    ax = figure.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="#888888", linestyle="dashed", linewidth=1, label="perfect calibration")
    for probabilities, colour, name, ece in ((expit(z), "#d62728", "uncalibrated", fit.ece_before),
                                             (fit.probabilities(z), "#1f77b4", METHOD_NAMES[fit.method], fit.ece_after)):
        mean_p, observed, counts = _reliability_points(probabilities, y, bins)
        ax.plot(mean_p, observed, color=colour, marker="o", label=f"{name} (ECE {ece:.3f})")
        for x, o, n in zip(mean_p, observed, counts):
            ax.annotate(str(int(n)), (x, o), textcoords="offset points", xytext=(4, -10), fontsize=7, color=colour)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted p(severe) in bin")
    ax.set_ylabel("observed fraction severe (MACS III-V)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    figure.text(0.5, 0.005, f"{bins} equal-width bins; numbers: cases per bin. Synthetic-data model, not for clinical use.",
                ha="center", va="bottom", fontsize=7)
    figure.subplots_adjust(bottom=0.14)
    return figure


def reliability_path(model_output: str | Path) -> Path:
    path = Path(model_output)
    return path.with_name(path.name.removesuffix(".safetensors") + RELIABILITY_SUFFIX)


def collect_logits(predictor, samples, device: str, progress: bool = True) -> tuple[list[float], list[float], list[str], list[float | None]]:
    """(raw MACS logits, labels, case ids, burden scores) of the samples with a MACS label, through predict's inference
    path; the burden score is the shipped burden estimate's logit on the case's lesions (None without a lesion output)."""
    from shmn.inference.motor import burden_macs_fields
    from shmn.inference.predict import MASK_THRESHOLD, PredictOptions, predict_native
    from shmn.io.volume_io import read_volume
    from shmn.progress import progress_bar

    labelled = [s for s in samples if s.macs is not None]
    logits, labels, ids, scores = [], [], [], []
    for sample in progress_bar(labelled, desc="calibration cases", unit="case", enabled=progress):
        prediction = predict_native(read_volume(sample.image), predictor, PredictOptions(device=device), source=str(sample.image))
        logits.append(float(prediction.result.macs_logit))
        labels.append(float(sample.macs))
        ids.append(sample.id)
        scores.append(burden_macs_fields(prediction.result.pvl_probability, prediction.prep, MASK_THRESHOLD)["burden_score"])
    return logits, labels, ids, scores


def burden_calibration_entry(scores: Sequence[float | None], labels: Sequence[float], ids: Sequence[str], config: CalibrationConfig,
                             manifests) -> dict:
    """The card's BURDEN_CARD_KEY entry: Platt scaling of the burden score on these cases (a site whose children reach
    MACS III-V at other burdens than our phantoms moves the estimate's operating point, not its ranking, when a > 0)."""
    if any(score is None for score in scores):
        raise ShmnError("--macs-burden: the model has no lesion output, so no burden estimate to calibrate")
    fit = fit_calibration(scores, labels, "platt", config.bins)
    if fit.slope <= 0:  # more lesion would then lower the risk: the cases cannot carry the fit
        raise ShmnError(f"--macs-burden: on these {len(labels)} cases the fit turns the burden estimate round (a = {fit.slope:.3g} <= 0: "
                        "more lesion would mean less risk); calibrate on more cases, with lesion burden in both groups")
    return {"method": "platt", "parameters": fit.parameters, "of": "the burden MACS estimate's score (shmn.measures.burden_macs)",
            "split": config.split, "n_cases": len(labels), "n_severe": int(sum(labels)), "ece_bins": f"{config.bins} equal-width bins over [0, 1]",
            "ece_before": round(fit.ece_before, 4), "ece_after": round(fit.ece_after, 4),
            "nll_before": round(fit.nll_before, 4), "nll_after": round(fit.nll_after, 4),
            "manifests": [str(m) for m in manifests], "cases": list(ids)}


def choose_threshold(probabilities: Sequence[np.ndarray], references: Sequence[np.ndarray],
                     thresholds: Sequence[float] = VENTRICLE_THRESHOLDS) -> tuple[float, dict]:
    """The threshold of best mean Dice of ``probability >= t`` against the references, and every t's mean Dice
    (ties: the one nearest 0.5)."""
    from shmn.measures.metrics import dice

    scores = {float(t): float(np.mean([dice(p >= t, r) for p, r in zip(probabilities, references)])) for t in thresholds}
    best = max(scores, key=lambda t: (round(scores[t], 6), -abs(t - 0.5)))
    return best, {f"{t:g}": round(v, 4) for t, v in scores.items()}


def fit_ventricle_threshold(predictor, samples, device: str, progress: bool = True) -> dict | None:
    """The ventricle operating threshold fitted on the ``samples`` with a ventricle mask (None: none has one)."""
    import SimpleITK as sitk

    from shmn.inference.predict import PredictOptions, predict_native
    from shmn.io.volume_io import read_volume
    from shmn.progress import progress_bar
    from shmn.training.evaluate import _label_on

    if "ventricles" not in predictor.info.tasks:
        return None
    labelled = [s for s in samples if s.ventricles is not None]
    if not labelled:
        return None
    probabilities, references = [], []
    for sample in progress_bar(labelled, desc="ventricle threshold cases", unit="case", enabled=progress):
        native = read_volume(sample.image)
        # The network's own map: the native-grid boundary refinement starts from the threshold chosen here.
        prediction = predict_native(native, predictor, PredictOptions(device=device, native_boundary=False), source=str(sample.image))
        probabilities.append(sitk.GetArrayFromImage(prediction.probabilities["ventricles"]))
        references.append(_label_on(native, sample.ventricles, sample.image, sample.case_id or sample.id))
    threshold, dice_by_threshold = choose_threshold(probabilities, references)
    return {"ventricles": threshold, "chosen_by": "best mean Dice on the native grid", "mean_dice": dice_by_threshold,
            "cases": [s.id for s in labelled]}


def _check_outputs(model_path: Path, output: Path, overwrite: bool) -> Path:
    if output.suffix != ".safetensors":
        raise ShmnError(f"-o {output}: expected a .safetensors file name")
    if output.resolve() == model_path.resolve():
        raise ShmnError(f"-o {output}: is the model being calibrated; write the calibrated model to another path")
    figure = reliability_path(output)
    for path in (output, figure):
        if path.exists() and not overwrite:
            raise ShmnError(f"{path}: already exists; use --overwrite to replace it or choose another -o path")
    if not output.parent.is_dir():
        raise ShmnError(f"-o {output}: folder {output.parent} does not exist")
    return figure


def calibrate_model(model, manifests, output: str | Path, config: CalibrationConfig = CalibrationConfig(), device: str = "auto",
                    overwrite: bool = False, progress: bool = True) -> dict:
    """Fit the calibration of ``model`` (run folder, file or registry name) on the manifests' ``config.split``
    cases; write ``output`` (weights unchanged, card + calibration) and its reliability diagram. Returns the card entry."""
    from shmn.devices import resolve_device
    from shmn.inference.predict import load_predictor
    from shmn.io.atomic import write_bytes
    from shmn.network.model_file import save_model
    from shmn.reporting.figures import png_bytes
    from shmn.training.data import load_manifests, split_samples
    from shmn.training.evaluate import resolve_model

    if config.method not in METHODS:
        raise ShmnError(f"--method {config.method!r}: expected one of {', '.join(METHODS)}")
    resolve_device(device)
    predictor = load_predictor(resolve_model(model))
    model_path = Path(predictor.info.file)
    output = Path(output)
    figure_path = _check_outputs(model_path, output, overwrite)
    if getattr(predictor.network, "macs", None) is None:
        raise ShmnError(f"{model_path}: the model has no MACS classifier; nothing to calibrate")
    samples = split_samples(load_manifests(manifests), config.split)
    logits, labels, ids, burden_scores = collect_logits(predictor, samples, device, progress)
    groups = set(labels)
    if len(labels) < 2 or len(groups) < 2:
        raise ShmnError(f"--split {config.split}: {len(labels)} case(s) with a MACS group ({', '.join(sorted('severe' if g else 'mild' for g in groups)) or 'none'}); "
                        "calibration needs at least 2, of both groups")
    fit = refuse_reversed(fit_calibration(logits, labels, config.method, config.bins), config)
    name = f"{predictor.info.name} {predictor.info.version}"
    figure = reliability_figure(logits, labels, fit, f"MACS reliability, {name}\n{config.split} split, {len(labels)} cases", config.bins)
    entry = {
        "method": fit.method,
        "parameters": fit.parameters,
        "split": config.split,
        "n_cases": len(labels),
        "n_severe": int(sum(labels)),
        "ece_bins": f"{config.bins} equal-width bins over [0, 1]",
        "ece_before": round(fit.ece_before, 4),
        "ece_after": round(fit.ece_after, 4),
        "nll_before": round(fit.nll_before, 4),
        "nll_after": round(fit.nll_after, 4),
        "manifests": [str(m) for m in manifests],
        "cases": ids,
        "reliability_diagram": figure_path.name,
        "source_model": {"file": str(model_path), "sha256": predictor.info.sha256},
        "fitted": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    thresholds = fit_ventricle_threshold(predictor, samples, device, progress)
    card = dict(predictor.card)
    card[CARD_KEY] = entry
    if config.macs_burden:
        card[BURDEN_CARD_KEY] = burden_calibration_entry(burden_scores, labels, ids, config, manifests)
    if thresholds is not None:
        card[THRESHOLDS_KEY] = dict(thresholds, split=config.split)
    version = str(card.get("version") or predictor.info.version)
    card["version"] = version if version.endswith(VERSION_SUFFIX) else version + VERSION_SUFFIX
    write_bytes(figure_path, png_bytes(figure))
    entry = dict(entry, sha256=save_model(output, predictor.network, card))
    if thresholds is not None:
        entry["operating_thresholds"] = card[THRESHOLDS_KEY]
    if config.macs_burden:
        entry["burden_calibration"] = card[BURDEN_CARD_KEY]
    return entry
