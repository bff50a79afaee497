"""`shmn predict` as functions: one input volume -> OUT/<case>/ with masks, seg.nrrd, report, overview.

read (validated) -> preprocess with the model card's grid and parameters -> inference -> PVL and
ventricle probabilities back onto the INPUT's own voxel grid through physical coordinates (linear
interpolation of the probabilities, then the 0.5 threshold: smoother than nearest-neighbour masks
when the input is finer than the model grid) -> lesions as 26-connected components in native space
(volumes from the native spacing, centres in RAS mm) and lesion centres from the localization head
-> everything written into a temporary folder renamed into place at the end (shmn.io.atomic.atomic_dir).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

from shmn.io.atomic import atomic_dir, ensure_writable_dir
from shmn.io.claim import claim_case
from shmn.errors import ShmnError
from shmn.inference.brain import brain_fields, template_on_native
from shmn.inference.calibration import BURDEN_CARD_KEY, calibrate_macs, calibration_from_card, check_calibrations
from shmn.inference.engine import InferenceOptions, InferenceResult
from shmn.inference.flips import MIRRORING_NOTE, model_grid_passes
from shmn.inference.masks import (LesionsNotShown, min_lesion_ml, native_probability, split_shown_lesions, threshold_mask,
                                  with_enclosed, without_not_shown, without_specks)
from shmn.inference.motor import case_motor_burden
from shmn.inference.native_boundary import refine_native
from shmn.inference.findings import lesion_rows, localization_centres
from shmn.measures.lesion_uncertainty import REVIEW_DISAGREEMENT, REVIEW_UNCERTAINTY_BITS, ReviewThresholds, lesion_review
from shmn.measures.ventricle_visibility import csf_brighter_than_tissue
from shmn.io.digest import sha256_of
from shmn.network.model import SHMN
from shmn import contract
from shmn.network.model_file import load_model
from shmn.network.refiner import Refiner, linked_refiner
from shmn.inference.refine import lesion_path
from shmn.reporting.overview import render_overview
from shmn.inference.card_config import grid_from_card, preprocess_config_from_card
from shmn.preprocessing.preprocess import PreprocessConfig, PreprocessedCase, preprocess
from shmn.io.registry import registered_entry_for_card, resolve_model
from shmn.reporting.case_report import write_case_report
from shmn.reporting.report import ModelInfo, build_report, overview_caption
from shmn.io.segfile import write_segmentation
from shmn.io.volume_io import InputWarning, case_name, geometry, read_volume

OUTPUT_FILES = {
    "pvl": contract.PVL_FILE,
    "ventricles": contract.VENTRICLES_FILE,
    "segmentation": contract.SEGMENTATION_FILE,
    "report": contract.REPORT_FILE,
    "overview": contract.OVERVIEW_FILE,
    "report_html": contract.REPORT_HTML_FILE,  # the case report for the chart (shmn.reporting.case_report)
    "report_pdf": contract.REPORT_PDF_FILE,
    "brain": contract.BRAIN_FILE,  # the extracted brain (when the model's preprocessing extracts one)
}
# Written with --probabilities: what the masks were thresholded from (e.g. pseudo-label confidence).
PROBABILITY_FILES = contract.PROBABILITY_FILES
# A voxel is lesion / ventricle where the model's probability, on the input's grid, is at least this
# (the argmax of the paper's 2-class softmax). `shmn predict` and `shmn evaluate` both threshold here.
MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class PredictOptions:
    device: str = "auto"
    register: bool = True  # False: the input is already in MNI space
    overwrite: bool = False
    sliding_window: bool = False
    cpu_bf16: bool | None = None  # None: bf16 autocast on CPUs with native bf16 (see shmn.inference.engine)
    pvl_threshold: float = MASK_THRESHOLD
    # Lesion components smaller than this are dropped from the mask; None: one voxel of the grid the lesion
    # probability was made on (2 mm: 0.008 mL; 1 mm path: 0.001 mL). A smaller component is no finding of
    # that grid, only the edge of a probability bump crossing 0.5 after linear resampling. 0 keeps all.
    min_lesion_ml: float | None = None
    ventricle_threshold: float | None = None  # None: the model card's operating threshold (`shmn calibrate`), else MASK_THRESHOLD
    localization_threshold: float = 0.3  # density peak height (the training blobs peak at 1)
    localization_min_distance_mm: float = 8.0
    probabilities: bool = False  # also write <task>_probability.nii.gz (float32, 0-1, input grid)
    anonymise: bool = False  # report.html/pdf without the patient's name, ID, date and file name
    # Test-time left-right mirroring: the plain and the mirrored pass averaged, and per-lesion disagreement between
    # them (one more forward pass, shmn.inference.flips). On by default since it helped on both OOD cohorts (README).
    tta: bool = True
    lesion_review_uncertainty: float = REVIEW_UNCERTAINTY_BITS  # shmn.measures.lesion_uncertainty
    lesion_review_disagreement: float = REVIEW_DISAGREEMENT
    lesion_1mm: bool | None = None  # None: the 1 mm lesion refiner when the model links one; False: 2 mm (shmn.inference.refine)
    native_boundary: bool = True  # lesion and ventricle boundaries read from the input's own intensities (shmn.inference.native_boundary)
    # Lesion components that do not stand out from the tissue around them leave the mask, listed in the report
    # (shmn.measures.lesion_visibility); False: every component the threshold gives stays.
    lesions_shown_only: bool = True


@dataclass
class Predictor:
    """A loaded model with everything needed to run and describe it."""

    network: SHMN
    card: dict
    info: ModelInfo
    preprocess: PreprocessConfig
    warnings: list[str] = dataclasses.field(default_factory=list)  # written into every report it makes
    refiner: Refiner | None = None  # the 1 mm lesion refiner the registry entry links (shmn.network.refiner)

    @property
    def ventricle_threshold(self) -> float:
        """The card's ventricle operating threshold (chosen on validation cases by `shmn calibrate`), else 0.5."""
        value = (self.card.get("operating_thresholds") or {}).get("ventricles", MASK_THRESHOLD)
        return float(value)

    def thresholds(self, options: "PredictOptions") -> PredictOptions:
        """``options`` with a ventricle threshold of None replaced by the model's."""
        if options.ventricle_threshold is not None:
            return options
        return dataclasses.replace(options, ventricle_threshold=self.ventricle_threshold)


def load_predictor(model: str | os.PathLike | None = None, registries: list[Path] | None = None, device: str = "cpu") -> Predictor:
    """Resolve a registry name, name@version, .safetensors path or None (the default) and load it."""
    path, entry = resolve_model(model, registries)
    network, card = load_model(path, expected_sha256=entry["sha256"] if entry else None, device=device)
    # The refiner lies beside the registered file; a copy given by path (below) runs without it.
    refiner = linked_refiner(entry, path)
    notes: list[str] = []
    name = version = None
    if not entry:
        # A file given by path: its card may claim a registered name@version. Only the registry's
        # sha256 can confirm that claim; a copy with other bytes must not report under that name.
        digest = sha256_of(path)
        claimed = registered_entry_for_card(card, registries)
        if claimed is not None and str(claimed["sha256"]).lower() == digest:
            entry = claimed
        elif claimed is not None:
            name, version = f"unregistered model, sha256 {digest}", "unregistered"
            notes.append(
                f"model {path}: its card claims {claimed['name']} {claimed['version']}, but its sha256 {digest} is not the "
                f"registry's {claimed['sha256']}: the file was changed or damaged; results are from an unregistered model"
            )
    entry = entry or {}
    check_calibrations(card, str(path))  # a damaged calibration entry fails here, before any case
    info = ModelInfo(
        name=name or entry.get("name") or card.get("name") or Path(path).name.removesuffix(".safetensors"),
        version=version or entry.get("version") or card.get("version") or "unversioned",
        sha256=entry.get("sha256") or sha256_of(path),
        file=str(path),
        registered=bool(entry),
        tasks=list(network.config.tasks),
        grid=dataclasses.asdict(grid_from_card(card, str(path))),
        training_data=entry.get("training_data") or card.get("training_data"),
        intended_use=entry.get("intended_use") or card.get("intended_use"),
        metrics=entry.get("metrics") or card.get("metrics"),
    )
    return Predictor(network, card, info, preprocess_config_from_card(card, str(path)), notes, refiner)


def _voxel_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


# What predict_case reports through on_stage, in order.
CASE_STAGES = ("read", "preprocess", "inference", "write")


@dataclass
class NativePrediction:
    """One volume through the model, back on the input's own voxel grid (see predict_native)."""

    prep: PreprocessedCase  # the volume on the model grid, with its registration and brain mask
    result: InferenceResult  # the model-grid outputs (probabilities, localization, MACS), device, precision
    probabilities: dict[str, sitk.Image]  # "pvl", "ventricles": float 0-1 on the input's grid (zeros: task absent)
    masks: dict[str, sitk.Image]  # the same thresholded: uint8 0/1
    lesion_grid: str = ""  # which lesion path made probabilities["pvl"] (shmn.inference.refine)
    min_lesion_ml: float = 0.0  # lesion components smaller than this were dropped from masks["pvl"]
    boundary: dict | None = None  # what the native-grid boundary refinement did per task (None: not run)
    network_probabilities: dict[str, sitk.Image] | None = None  # before that refinement (None: the same as probabilities)
    # With --tta: the PVL probability's per-voxel spread over the plain and the mirrored pass, model grid (shmn.inference.flips).
    flip_spread: np.ndarray | None = None
    not_shown: LesionsNotShown | None = None  # lesion components taken out because the image does not show them
    burden_lesions: np.ndarray | None = None  # the model-grid PVL probability the motor burden reads (without not_shown)

    def has(self, task: str) -> bool:
        """Whether the model has the segmentation ``task`` ("pvl" or "ventricles")."""
        return getattr(self.result, {"pvl": "pvl_probability", "ventricles": "ventricle_probability"}[task]) is not None


def predict_native(native: sitk.Image, predictor: Predictor, options: PredictOptions = PredictOptions(), timings: dict | None = None,
                   on_stage: Callable[[str], None] = lambda stage: None, source: str = "input",
                   prep: PreprocessedCase | None = None) -> NativePrediction:
    """The one inference path of `shmn predict` and `shmn evaluate`: preprocess with the model card's
    parameters -> the network -> probabilities onto the input's grid -> the options' thresholds.
    ``source`` names the input in preprocessing's errors (e.g. "not a head MRI"). ``prep``: this input
    already preprocessed with the model card's parameters (`shmn evaluate --cache`), so it is not done again."""
    timings = {} if timings is None else timings
    options = predictor.thresholds(options)
    if prep is None:
        prep = preprocess(native, dataclasses.replace(predictor.preprocess, register=options.register), source=source)
    for key in ("brain_extraction", "register", "resample", "n4", "normalise"):
        timings[key] = float(prep.timings_s.get(key, 0.0))
    on_stage("preprocess")

    inference = InferenceOptions(device=options.device, sliding_window=options.sliding_window, cpu_bf16=options.cpu_bf16)
    # --tta: the plain and the left-right mirrored pass averaged; the PVL probability's spread between them
    result, flip_spread, tta_seconds = model_grid_passes(predictor.network, prep.image, inference, mirrored=options.tta)
    timings.update(inference=result.seconds, **({"tta": tta_seconds} if options.tta else {}))
    on_stage("inference")

    tick = time.perf_counter()
    probabilities = {
        "pvl": native_probability(result.pvl_probability, prep, native),
        "ventricles": native_probability(result.ventricle_probability, prep, native),
    }
    lesions = lesion_path(native, prep, result.pvl_probability, predictor.refiner, probabilities["pvl"], options.lesion_1mm,
                          predictor.info.name, options.cpu_bf16)
    probabilities["pvl"] = lesions.probability
    smallest = min_lesion_ml(options.min_lesion_ml, lesions.voxel_mm or predictor.preprocess.grid.spacing_mm)
    network, boundary = dict(probabilities), None
    if options.native_boundary and result.pvl_probability is not None and result.ventricle_probability is not None:
        probabilities, boundary = refine_native(native, probabilities, {"pvl": options.pvl_threshold, "ventricles": options.ventricle_threshold},
                                                smallest)
    masks = {
        "pvl": without_specks(threshold_mask(probabilities["pvl"], options.pvl_threshold), smallest),
        # What the ventricles enclose in a slice is ventricle (choroid plexus, poorly nulled CSF): masks.with_enclosed.
        "ventricles": with_enclosed(threshold_mask(probabilities["ventricles"], options.ventricle_threshold)),
    }
    not_shown, burden_lesions = None, result.pvl_probability
    if options.lesions_shown_only and result.pvl_probability is not None:
        masks["pvl"], not_shown = split_shown_lesions(masks["pvl"], native, masks["ventricles"])
        if not_shown.candidates:
            burden_lesions = without_not_shown(result.pvl_probability, options.pvl_threshold, prep, masks["pvl"], not_shown.mask)
    timings["postprocess"] = time.perf_counter() - tick - lesions.seconds
    if lesions.seconds:
        timings["lesion_1mm"] = lesions.seconds
    return NativePrediction(prep, result, probabilities, masks, lesions.lesion_grid, smallest, boundary, network, flip_spread,
                            not_shown, burden_lesions)


@dataclass
class _Analysis:
    """Everything computed for one case before anything is written."""

    pvl: sitk.Image
    ventricles: sitk.Image
    report_fields: dict
    probabilities: dict[str, sitk.Image]  # only with PredictOptions.probabilities
    brain: sitk.Image | None = None  # the extracted brain on the input's grid
    template_outline: sitk.Image | None = None  # the registered template brain on the input's grid (overview)
    review: sitk.Image | None = None  # the lesions flagged for review (model unsure, next to bright CSF), for the overview
    motor: object | None = None  # shmn.inference.motor.CaseMotorBurden (None: the model has no lesion output)


def _analyse(native: sitk.Image, case: str, input_path: Path, predictor: Predictor, options: PredictOptions, timings: dict,
             on_stage: Callable[[str], None] = lambda stage: None) -> _Analysis:
    options = predictor.thresholds(options)
    prediction = predict_native(native, predictor, options, timings, on_stage, source=str(input_path))
    prep, result, probabilities = prediction.prep, prediction.result, prediction.probabilities
    tick = time.perf_counter()
    # --tta: the PVL probability's spread under a left-right flip, on the input's grid.
    disagreement = None if prediction.flip_spread is None else native_probability(prediction.flip_spread, prep, native)
    pvl, ventricles = prediction.masks["pvl"], prediction.masks["ventricles"]
    voxel_ml = _voxel_ml(native)
    has_pvl, has_ventricles = prediction.has("pvl"), prediction.has("ventricles")
    macs_probability, macs_calibration = calibrate_macs(result.macs_probability, result.macs_logit,
                                                        calibration_from_card(predictor.card, predictor.info.file))
    review_thresholds = ReviewThresholds(options.lesion_review_uncertainty, options.lesion_review_disagreement)
    # Per-lesion uncertainty is the network's own (its probability before the native-grid boundary step).
    network_pvl = (prediction.network_probabilities or probabilities)["pvl"]
    bright_csf = ventricles if has_ventricles and csf_brighter_than_tissue(prediction.boundary) else None
    uncertainty, review = lesion_review(pvl, network_pvl, disagreement, review_thresholds, bright_csf) if has_pvl else (None, None)
    if review is not None and prediction.not_shown is not None and prediction.not_shown.candidates:
        review = sitk.Or(review, prediction.not_shown.mask)  # the overview outlines both: places to look twice
    fields = dict(
        case=case,
        input_path=str(input_path),
        input_geometry=geometry(native),
        macs_probability=macs_probability,
        macs_calibration=macs_calibration,
        pvl_volume_ml=float(sitk.GetArrayViewFromImage(pvl).sum()) * voxel_ml if has_pvl else None,
        lesions=lesion_rows(pvl, {label: row.report_fields() for label, row in uncertainty.items()} if uncertainty else None) if has_pvl else [],
        lesions_not_shown=prediction.not_shown.candidates if prediction.not_shown is not None else None,
        localization_centres=localization_centres(result.localization, prep, options.localization_threshold,
                                                  options.localization_min_distance_mm),
        ventricle_volume_ml=float(sitk.GetArrayViewFromImage(ventricles).sum()) * voxel_ml if has_ventricles else None,
        model=predictor.info,
        preprocessing={"params": prep.params, "registration_quality": prep.quality, "timings_s": prep.timings_s},
        inference={"device": result.device, "precision": result.precision, "mode": result.mode, "lesion_grid": prediction.lesion_grid,
                   "boundary": prediction.boundary or {"method": "the model's, resampled (--boundary model)"},
                   "test_time_mirroring": MIRRORING_NOTE[options.tta]},
        thresholds={
            "pvl_probability": options.pvl_threshold,
            "pvl_min_component_ml": round(prediction.min_lesion_ml, 6),
            "ventricle_probability": options.ventricle_threshold,
            "ventricle_mask": "probability >= ventricle_probability, plus what it encloses in a slice along any axis",
            "localization_peak": options.localization_threshold,
            "lesion_review_uncertainty_bits": options.lesion_review_uncertainty,
            **({"lesion_review_tta_disagreement": options.lesion_review_disagreement} if options.tta else {}),
        },
        outputs={k: v for k, v in dict(OUTPUT_FILES, **({f"{k}_probability": PROBABILITY_FILES[k] for k in PROBABILITY_FILES} if options.probabilities else {})).items()
                 if k != "brain" or prep.brain_native is not None},
        warnings=list(predictor.warnings) + [w for w in [prep.quality.get("warning")] if w] + list(result.warnings),
        brain=brain_fields(prep, native),
    )
    motor = case_motor_burden(prediction.burden_lesions, prep, native, options.pvl_threshold, result.macs_probability is not None,
                              calibration_from_card(predictor.card, predictor.info.file, BURDEN_CARD_KEY))
    fields["burden"] = motor.report_fields if motor else None
    timings["postprocess"] += time.perf_counter() - tick
    kept = {k: v for k, v in probabilities.items() if options.probabilities}
    brain = prep.brain_native.mask if prep.brain_native is not None else None
    return _Analysis(pvl, ventricles, fields, kept, brain, template_on_native(prep, native), review=review, motor=motor)


def _write_outputs(folder: Path, native: sitk.Image, analysis: _Analysis, predictor: Predictor, timings: dict, start: float,
                   anonymise: bool = False) -> dict:
    tick = time.perf_counter()
    sitk.WriteImage(analysis.pvl, str(folder / OUTPUT_FILES["pvl"]), True)
    sitk.WriteImage(analysis.ventricles, str(folder / OUTPUT_FILES["ventricles"]), True)
    if analysis.brain is not None:
        sitk.WriteImage(analysis.brain, str(folder / OUTPUT_FILES["brain"]), True)
    write_segmentation(folder / OUTPUT_FILES["segmentation"], analysis.pvl, analysis.ventricles)
    for task, probability in analysis.probabilities.items():
        sitk.WriteImage(sitk.Cast(probability, sitk.sitkFloat32), str(folder / PROBABILITY_FILES[task]), True)
    lesions = analysis.report_fields["lesions"]
    draft = build_report(**analysis.report_fields, timings_s=timings)
    caption = overview_caption(draft, predictor.info)
    shown_or_not = lesions or analysis.report_fields["lesions_not_shown"] or []
    focus = shown_or_not[0]["centre_ras_mm"] if shown_or_not else None
    render_overview(folder / OUTPUT_FILES["overview"], native, analysis.pvl, analysis.ventricles, focus, caption,
                    brain=analysis.brain, template_brain=analysis.template_outline, review=analysis.review,
                    motor_regions=analysis.motor.regions_native if analysis.motor else None, motor_report=draft)
    timings["write"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start
    report = build_report(**analysis.report_fields, timings_s=timings)
    (folder / OUTPUT_FILES["report"]).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_case_report(folder, report, native, analysis.pvl, analysis.ventricles, anonymise=anonymise)
    return report


def _read_input(input_path: Path) -> tuple[sitk.Image, list[str]]:
    """The validated input and what the reader warned about it (for report.json and stderr)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        native = read_volume(input_path)
    for other in (w for w in caught if not issubclass(w.category, InputWarning)):
        warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return native, [str(w.message) for w in caught if issubclass(w.category, InputWarning)]


def predict_case(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    model: Predictor | str | os.PathLike | None = None,
    options: PredictOptions = PredictOptions(),
    on_stage: Callable[[str], None] = lambda stage: None,
) -> dict:
    """Predict one volume (file or DICOM folder); returns the report written to OUT/<case>/report.json.

    ``on_stage`` is called after each of CASE_STAGES completes (progress for a single long case).
    """
    start = time.perf_counter()
    input_path = Path(input_path)
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    case = case_name(input_path)
    ensure_writable_dir(out_dir)
    # The case is claimed before its existence is checked and held until its folder is in place:
    # a second writer of the same case name is refused instead of silently replacing (or being
    # replaced by) this one (shmn.io.claim).
    with claim_case(out_dir, case) as target:
        if target.exists() and not options.overwrite:
            raise ShmnError(f"{target}: already exists; use --overwrite to replace it or choose another output folder")
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        native, input_warnings = _read_input(input_path)
        timings["read"] = time.perf_counter() - tick
        on_stage("read")
        # From here on everything lands in a temporary folder renamed into place only when the case is
        # complete: a failure (or Ctrl-C) anywhere below leaves no OUT/<case> behind.
        with atomic_dir(target, overwrite=options.overwrite) as folder:
            analysis = _analyse(native, case, input_path, predictor, options, timings, on_stage)
            analysis.report_fields["warnings"] = input_warnings + analysis.report_fields["warnings"]
            report = _write_outputs(folder, native, analysis, predictor, timings, start, options.anonymise)
    on_stage("write")
    return report
