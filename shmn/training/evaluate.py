"""Evaluation: ``evaluate(model, manifests, split)`` -> per-case and summary metrics (also `shmn evaluate`).

Each case of the split goes through `shmn predict`'s own inference path (shmn.inference.predict.predict_native:
preprocessing with the model card's parameters, the network, the probabilities brought back onto the
case's NATIVE voxel grid and thresholded at predict's MASK_THRESHOLD) and is compared there with the
manifest's masks, so the numbers describe what a user gets. Metrics
(shmn.measures.metrics): PVL Dice, HD95 (mm), lesion-wise F1, absolute volume difference (%), volumes (mL);
ventricle Dice; MACS accuracy, F1, AUC and ECE over the split, of the network head (``macs``) and of the
burden estimate (``macs_burden``). A metric is skipped for a case that
lacks its label or a model that lacks the task. Each case also records ``macs_from_burden``, the burden
MACS estimate on its predicted lesions (shmn.measures.burden_macs; ranked by ``rank_estimates``), with
``motor_lesion_ml`` (lesion mL per motor region) and ``template_lesion_ml`` (all of it) it was scored from.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from shmn.training.checkpoint import RunFiles
from shmn.training.data import Sample, load_manifests, split_samples
from shmn.errors import ShmnError
from shmn.io.manifest import Manifest
from shmn.measures.metrics import abs_volume_difference_percent, dice, hd95, lesion_f1, macs_metrics, volume_ml
from shmn.measures.ventricle_visibility import VISIBLE_MIN_CONTRAST_TO_SPREAD
from shmn.io.volume_io import read_volume, same_geometry

# (key in a case's metrics, label in the table); the summary gives mean, sd, median and n of each.
CASE_METRICS = (
    ("pvl_dice", "PVL Dice"),
    ("pvl_hd95_mm", "PVL HD95 (mm)"),
    ("pvl_lesion_f1", "PVL lesion-wise F1"),
    ("pvl_avd_percent", "PVL abs. volume difference (%)"),
    ("ventricle_dice", "Ventricle Dice"),
)
# Evaluation caches images only; the density map's width enters label entries' keys, which it never reads.
DENSITY_SIGMA_UNUSED = 4.0
MACS_METRICS = (("accuracy", "MACS accuracy"), ("f1", "MACS F1 (severe)"), ("auc", "MACS AUC"), ("ece", "MACS ECE"))
# The two MACS estimates a case has (report.json): the network's head and the motor-burden estimate, which the
# report calls primary; the table names each once both are there.
MACS_ESTIMATES = (("macs", "macs_probability", "network head"), ("macs_burden", "macs_from_burden", "motor burden, primary"))


def resolve_model(model: str | Path) -> str | Path:
    """A run folder means its best model (else its last); anything else goes to the model registry/path resolver."""
    path = Path(model)
    if path.is_dir():
        files = RunFiles(path)
        for candidate in (files.best_model, files.last_model):
            if candidate.exists():
                return candidate
        raise ShmnError(f"{path}: run folder holds no model yet (model-best.safetensors); train it first")
    return model


def _mask_array(prediction, task: str) -> np.ndarray | None:
    """predict_native's ``task`` mask as a (z, y, x) bool array; None when the model lacks the task."""
    return sitk.GetArrayFromImage(prediction.masks[task]) > 0 if prediction.has(task) else None


def _label_on(native: sitk.Image, path: Path, image_path: Path, case_id: str) -> np.ndarray:
    from shmn.training.data import check_label_mask

    label = read_volume(path, check_values=False)
    check_label_mask(label, image_path, path, case_id)  # a 0..5 or off-grid mask would score the wrong thing
    if not same_geometry(label, native):
        # Masks should share the image's grid; if not, bring them there through physical space.
        label = sitk.Resample(label, native, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
    return sitk.GetArrayFromImage(label) > 0


def score_case(spacing_zyx: Sequence[float], pvl: tuple | None = None, ventricles: tuple | None = None) -> dict:
    """Segmentation metrics of one case; ``pvl``/``ventricles`` are (predicted, reference) mask pairs."""
    scores: dict = {}
    if pvl is not None:
        predicted, reference = pvl
        detection = lesion_f1(predicted, reference)
        scores.update(
            pvl_dice=dice(predicted, reference),
            pvl_hd95_mm=hd95(predicted, reference, spacing_zyx),
            pvl_lesion_f1=detection.f1,
            pvl_lesions_true=detection.n_true,
            pvl_lesions_predicted=detection.n_pred,
            pvl_avd_percent=abs_volume_difference_percent(predicted, reference),
            pvl_volume_ml=volume_ml(predicted, spacing_zyx),
            pvl_volume_true_ml=volume_ml(reference, spacing_zyx),
        )
    if ventricles is not None:
        predicted, reference = ventricles
        scores.update(
            ventricle_dice=dice(predicted, reference),
            ventricle_volume_ml=volume_ml(predicted, spacing_zyx),
            ventricle_volume_true_ml=volume_ml(reference, spacing_zyx),
        )
    return scores


def _statistics(values: list[float]) -> dict:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    out = {"n": len(values), "infinite": len(values) - len(finite)}
    if finite:
        out.update(mean=float(np.mean(finite)), sd=float(np.std(finite)), median=float(np.median(finite)))
    return out


def summarise(cases: list[dict]) -> dict:
    """Mean/sd/median/n per case metric (infinite values counted, not averaged) and the MACS metrics."""
    summary = {}
    for key, _label in CASE_METRICS:
        values = [c["metrics"][key] for c in cases if key in c["metrics"]]
        if values:
            summary[key] = _statistics(values)
    # Ventricle Dice apart where the image shows a ventricle boundary and where it does not (report.json's
    # ventricles.visibility): the second is the network's shape estimate.
    by_visibility = {}
    for name, visible in (("visible", True), ("not_visible", False)):
        values = [c["metrics"]["ventricle_dice"] for c in cases if "ventricle_dice" in c["metrics"]
                  and c.get("ventricle_contrast_to_spread") is not None
                  and (c["ventricle_contrast_to_spread"] >= VISIBLE_MIN_CONTRAST_TO_SPREAD) is visible]
        if values:
            by_visibility[name] = _statistics(values)
    if by_visibility:
        summary["ventricle_dice_by_visibility"] = by_visibility
    for key, field, _label in MACS_ESTIMATES:
        pairs = [(c[field], c["macs_true"]) for c in cases if c.get("macs_true") is not None and c.get(field) is not None]
        if pairs:
            scores = macs_metrics([p for p, _ in pairs], [y for _, y in pairs])
            summary[key] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in scores.items()}
    return summary


def markdown_table(summary: dict) -> str:
    rows = ["| metric | mean ± sd | median | n |", "|---|---|---|---|"]
    for key, label in CASE_METRICS:
        stats = summary.get(key)
        if not stats:
            continue
        mean = f"{stats['mean']:.3f} ± {stats['sd']:.3f}" if "mean" in stats else "—"
        median = f"{stats['median']:.3f}" if "median" in stats else "—"
        note = f" ({stats['infinite']} infinite)" if stats["infinite"] else ""
        rows.append(f"| {label} | {mean} | {median} | {stats['n']}{note} |")
    for name, label in (("visible", "boundary visible"), ("not_visible", "boundary not visible")):
        stats = (summary.get("ventricle_dice_by_visibility") or {}).get(name)
        if stats:
            rows.append(f"| Ventricle Dice, {label} | {stats['mean']:.3f} ± {stats['sd']:.3f} | {stats['median']:.3f} | {stats['n']} |")
    both = all(summary.get(key) for key, _field, _label in MACS_ESTIMATES)
    for key, _field, estimate in MACS_ESTIMATES:
        macs = summary.get(key)
        if not macs:
            continue
        for metric, label in MACS_METRICS:
            value = macs.get(metric)
            name = f"{label}, {estimate}" if both or key != "macs" else label
            rows.append(f"| {name} | {'—' if value is None else f'{value:.3f}'} | | {macs['n']} |")
    return "\n".join(rows)


def evaluate_sample(predictor, sample: Sample, device: str, cache=None, native_boundary: bool = True, tta: bool = True) -> dict:
    """One case's metrics; ``cache`` (a CaseCache with the model card's preprocessing) supplies, and keeps,
    the preprocessed image, so that several models evaluated on one cohort preprocess it once."""
    from shmn.inference.calibration import BURDEN_CARD_KEY, calibrate_macs, calibration_from_card
    from shmn.inference.motor import burden_macs_fields
    from shmn.inference.predict import MASK_THRESHOLD, PredictOptions, predict_native

    tick = time.perf_counter()
    native = read_volume(sample.image)
    prep = cache.preprocessed(sample) if cache is not None else None
    prediction = predict_native(native, predictor, PredictOptions(device=device, native_boundary=native_boundary, tta=tta), prep=prep)
    spacing_zyx = native.GetSpacing()[::-1]
    pvl, ventricles = _mask_array(prediction, "pvl"), _mask_array(prediction, "ventricles")
    scores = score_case(
        spacing_zyx,
        pvl=(pvl, _label_on(native, sample.pvl, sample.image, sample.case_id or sample.id)) if pvl is not None and sample.pvl is not None else None,
        ventricles=(ventricles, _label_on(native, sample.ventricles, sample.image, sample.case_id or sample.id)) if ventricles is not None and sample.ventricles is not None else None,
    )
    return {
        "id": sample.id,
        "source": sample.source,
        "metrics": scores,
        # What the report gives: the calibrated probability when the model's card holds a calibration.
        "macs_probability": calibrate_macs(prediction.result.macs_probability, prediction.result.macs_logit,
                                           calibration_from_card(predictor.card, predictor.info.file))[0],
        # The second, interpretable estimate: the burden score on the predicted lesions' motor-pathway burden.
        **burden_macs_fields(prediction.burden_lesions, prediction.prep, MASK_THRESHOLD,
                             calibration_from_card(predictor.card, predictor.info.file, BURDEN_CARD_KEY)),
        "macs_true": sample.macs,
        "registration_ok": bool(prediction.prep.quality.get("ok", True)),
        # How far the ventricles stand out from the tissue around them (the boundary step's read; None without it).
        "ventricle_contrast_to_spread": (prediction.boundary or {}).get("ventricles", {}).get("contrast_to_spread"),
        # Lesion components left out of the mask because the image does not show them (report.json pvl.not_shown).
        "pvl_candidates_not_shown": None if prediction.not_shown is None else len(prediction.not_shown.candidates),
        "seconds": round(time.perf_counter() - tick, 3),
    }


def evaluate(
    model: str | Path,
    manifests: Sequence[str | Path | Manifest],
    split: str = "test",
    device: str = "auto",
    progress: bool = True,
    cache_dir: str | Path | None = None,
    native_boundary: bool = True,
    tta: bool = True,
) -> dict:
    """Metrics of ``model`` (run folder, model file or registry name) on the ``split`` cases.

    ``cache_dir``: a preprocessing cache folder (`shmn train --cache`'s format, keyed by the preprocessing
    parameters and each image's size and time stamp), shared by every model with the same preprocessing."""
    from shmn.devices import resolve_device
    from shmn.inference.predict import MASK_THRESHOLD, load_predictor
    from shmn.progress import progress_bar

    resolve_device(device)  # a wrong or absent device fails before any case is read
    manifests = load_manifests(manifests)
    samples = split_samples(manifests, split)
    if not samples:
        raise ShmnError(f"--split {split}: the manifests have no case in this split")
    model_path = resolve_model(model)
    predictor = load_predictor(model_path)
    cache = None
    if cache_dir is not None:
        from shmn.training.case_cache import CaseCache

        cache = CaseCache(cache_dir, predictor.preprocess, density_sigma_mm=DENSITY_SIGMA_UNUSED)
    cases = [evaluate_sample(predictor, s, device, cache, native_boundary, tta) for s in progress_bar(samples, desc=f"evaluating {split}", unit="case", enabled=progress)]
    return {
        "model": {"name": predictor.info.name, "version": predictor.info.version, "sha256": predictor.info.sha256,
                  "file": predictor.info.file, "tasks": predictor.info.tasks},
        "split": split,
        "compared_on": "native grid (each case's own voxels; predictions brought back through the registration)",
        "threshold": MASK_THRESHOLD,
        "pvl_min_component": "one voxel of the lesion grid, as shmn predict (PredictOptions.min_lesion_ml)",
        "boundary": "native (read from each input's intensities)" if native_boundary else "model (2 mm, resampled)",
        "test_time_mirroring": tta,
        "manifests": [str(m.path) for m in manifests],
        "summary": summarise(cases),
        "cases": [_finite_or_none(c) for c in cases],
    }


def _finite_or_none(value):
    """Strict JSON: an infinite HD95 or volume difference (one mask empty) is written as null."""
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
