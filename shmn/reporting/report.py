"""report.json of one predicted case, and the one-row summary of it for summary.csv.

Keys (docs/DESIGN.md section 3, "at least"): case; macs.probability_severe (calibrated when the model
carries a calibration), macs.group, macs.calibrated, macs.calibration; pvl.volume_ml, pvl.lesions
[{centre_ras_mm, volume_ml, mean_probability, uncertainty, review}], pvl.not_shown (candidates the image does not show,
left out of the mask: shmn.measures.lesion_visibility), pvl.centres_from_localization; ventricles.volume_ml;
ventricles.visibility (how far the CSF stands out: shmn.measures.ventricle_visibility); model.name/version/sha256;
preprocessing (params, registration quality); timings_s; disclaimer; brain
(volume_ml, extraction method/version, intracranial_volume_ml where the whole head is in view) and
registration (ok, figures, warning: a failed check is never silent).
motor_burden (lesion mL, region mL and share per motor region and side, totals; in template space, regions
approximated from the Juelich and Desikan-Killiany atlases: shmn.measures.motor_regions), macs_from_burden
(the second, interpretable MACS estimate: probability_severe, group, score, terms, weights) and macs_primary
("network" or "burden": which of the two MACS estimates the report leads with; shmn.measures.burden_macs).
A task the model does not have is reported as null, never as a made-up zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from shmn import DISCLAIMER, __version__
from shmn.measures.ventricle_visibility import bright_csf_lesion_warning, reported_visibility, ventricle_visibility, visibility_warning
from shmn.measures.lesion_visibility import not_shown_section, not_shown_warning

MACS_THRESHOLD = 0.5  # paper: probability > 0.5 -> severe (MACS III-V)
SUMMARY_COLUMNS = (
    "case",
    "status",
    "error",
    "macs_group",
    "macs_probability_severe",
    "pvl_volume_ml",
    "lesion_count",
    "lesion_candidates_not_shown",
    "ventricle_volume_ml",
    "ventricle_boundary_visible",
    "registration_ok",
    "registration_nmi",
    "seconds",
)
NO_BURDEN = {"motor_burden": None, "macs_from_burden": None, "macs_primary": "network"}  # a model without lesion output
SYNTHETIC_CAPTION = "synthetic-trained model, not for clinical use"
RESEARCH_CAPTION = "research model, not validated for clinical use"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    file: str
    registered: bool
    tasks: list[str]
    grid: dict
    training_data: str | dict | None  # free text (registry) or the trainer's description (shmn.training.data.describe_training_data)
    intended_use: str | None
    metrics: dict | None

    @property
    def synthetic(self) -> bool:
        # Unknown provenance is treated like the shipped synthetic model: the stronger warning.
        data = self.training_data
        if isinstance(data, dict):
            return bool(data.get("synthetic") or data.get("any_synthetic") or "synthetic" not in data)
        return data is None or "synthetic" in data.lower()

    @property
    def training_statement(self) -> str:
        """One sentence on what the model was trained on."""
        data = self.training_data
        if data is None:
            return "training data not stated in the model card"
        if isinstance(data, str):
            return data
        kind = "synthetic phantom data only" if data.get("synthetic") else (
            "partly synthetic data" if data.get("any_synthetic") else "non-synthetic data")
        sets = ", ".join(f"{m.get('name', '?')} ({m.get('cases', '?')} cases)" for m in data.get("manifests", []))
        return f"trained on {kind}" + (f": {sets}" if sets else "")


def macs_group(probability: float | None) -> str | None:
    if probability is None:
        return None
    return "severe" if probability > MACS_THRESHOLD else "mild"


def disclaimer(model: ModelInfo) -> str:
    # The registry's texts are sentences of their own: their full stop is not doubled.
    use = f" Intended use: {model.intended_use.rstrip('.')}." if model.intended_use else ""
    return f"{DISCLAIMER} Model {model.name} {model.version}: {model.training_statement.rstrip('.')}.{use}"


def caption_disclaimer(model: ModelInfo) -> str:
    return SYNTHETIC_CAPTION if model.synthetic else RESEARCH_CAPTION


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def build_report(
    *,
    case: str,
    input_path: str,
    input_geometry: dict,
    macs_probability: float | None,
    pvl_volume_ml: float | None,
    lesions: list[dict],
    localization_centres: list[dict] | None,
    ventricle_volume_ml: float | None,
    model: ModelInfo,
    preprocessing: dict,
    inference: dict,
    thresholds: dict,
    outputs: dict,
    timings_s: dict,
    warnings: list[str],
    brain: dict | None = None,
    macs_calibration: dict | None = None,
    burden: dict | None = None,
    lesions_not_shown: list[dict] | None = None,
) -> dict:
    """The report as a JSON-ready dict (volumes in mL, positions in RAS mm)."""
    # Where the image shows no ventricle boundary (CSF not nulled), the volume is the model's shape estimate: say so.
    visibility = ventricle_visibility(inference.get("boundary")) if ventricle_volume_ml is not None else None
    # Lesion candidates the image does not show are out of the mask, never out of sight (shmn.measures.lesion_visibility).
    not_shown = not_shown_section(lesions_not_shown)
    warnings = list(warnings) + [w for w in [visibility and visibility_warning(visibility), bright_csf_lesion_warning(lesions),
                                             not_shown_warning(not_shown)] if w]
    return {
        "case": case,
        "input": {"path": input_path, "geometry": input_geometry},
        "macs": {
            "probability_severe": _round(macs_probability, 4),
            "group": macs_group(macs_probability),
            "threshold": MACS_THRESHOLD,
            "groups": {"mild": "MACS I-II", "severe": "MACS III-V"},
            # {calibrated: bool, calibration: method, parameters, fit, raw probability | note} (shmn.inference.calibration)
            **(macs_calibration or {}),
        },
        **(burden or NO_BURDEN),  # motor_burden, macs_from_burden, macs_primary (shmn.inference.motor)
        "pvl": {
            "volume_ml": _round(pvl_volume_ml),
            "lesion_count": None if pvl_volume_ml is None else len(lesions),
            "lesions": lesions,
            "not_shown": not_shown,
            "centres_from_localization": localization_centres,
        },
        "ventricles": {"volume_ml": _round(ventricle_volume_ml), "visibility": visibility},
        # The extracted brain (brain.nii.gz) and, where the whole head is in view, the intracranial volume.
        "brain": brain or {"volume_ml": None, "extraction": {"method": "none"}, "intracranial_volume_ml": None},
        # Never silent masks: a failed registration check is reported here and in warnings.
        "registration": _registration(preprocessing.get("registration_quality") or {}),
        "model": {
            "name": model.name,
            "version": model.version,
            "sha256": model.sha256,
            "file": model.file,
            "registered": model.registered,
            "tasks": model.tasks,
            "grid": model.grid,
            "training_data": model.training_data,
            "intended_use": model.intended_use,
            "metrics": model.metrics,
        },
        "thresholds": thresholds,
        "preprocessing": preprocessing,
        "inference": inference,
        "outputs": outputs,
        "timings_s": {key: round(float(value), 3) for key, value in timings_s.items()},
        "warnings": warnings,
        "engine": {"shmn_version": __version__},
        "disclaimer": disclaimer(model),
    }


def _registration(quality: dict) -> dict:
    keys = ("ok", "warning", "registered", "nmi", "brain_coverage", "brain_mask_dice", "scale", "template_brain_in_view", "start")
    return {key: quality.get(key) for key in keys if key in quality} | {"ok": bool(quality.get("ok", False))}


def summary_row(report: dict, seconds: float) -> dict:
    return {
        "case": report["case"],
        "status": "ok",
        "error": "",
        "macs_group": report["macs"]["group"] or "",
        "macs_probability_severe": _blank(report["macs"]["probability_severe"]),
        "pvl_volume_ml": _blank(report["pvl"]["volume_ml"]),
        "lesion_count": _blank(report["pvl"]["lesion_count"]),
        # Candidates the network marked that the image does not show (not in the mask; pvl.not_shown).
        "lesion_candidates_not_shown": _blank((report["pvl"].get("not_shown") or {}).get("count")),
        "ventricle_volume_ml": _blank(report["ventricles"]["volume_ml"]),
        # False: the image shows no ventricle boundary (CSF not nulled), the volume is the model's shape estimate.
        "ventricle_boundary_visible": _blank(reported_visibility(report)),
        # The registration check, for summary.html's quality plot.
        "registration_ok": _blank(report["preprocessing"].get("registration_quality", {}).get("ok")),
        "registration_nmi": _blank(report["preprocessing"].get("registration_quality", {}).get("nmi")),
        "seconds": f"{seconds:.1f}",
    }


def failure_row(case: str, error: str, seconds: float) -> dict:
    row = {column: "" for column in SUMMARY_COLUMNS}
    row.update(case=case, status="failed", error=error, seconds=f"{seconds:.1f}")
    return row


def _blank(value) -> str:
    return "" if value is None else str(value)


def findings(report: dict, describe_group: bool = False) -> list[str]:
    """The report's findings as short phrases (MACS group, PVL volume and count, ventricle volume)."""
    macs = report["macs"]
    pvl = report["pvl"]
    parts = []
    from_burden = report.get("macs_from_burden")
    burden_primary = bool(from_burden) and report.get("macs_primary") == "burden"
    if from_burden and burden_primary:  # the primary estimate comes first
        parts.append(f"MACS from motor burden (primary): {from_burden['group']} (p {from_burden['probability_severe']:.2f})")
    if macs["group"] is not None:
        head = "MACS, network head (secondary)" if burden_primary else "MACS"
        if describe_group:
            parts.append(f"{head}: {macs['group']} ({macs['groups'][macs['group']]}, p(severe) = {macs['probability_severe']:.2f})")
        else:
            parts.append(f"{head} {macs['group']} (p(severe) {macs['probability_severe']:.2f})")
    if from_burden and not burden_primary:
        parts.append(f"MACS from motor burden (secondary): {from_burden['group']} (p {from_burden['probability_severe']:.2f})")
    if pvl["volume_ml"] is not None:
        left_out = (pvl.get("not_shown") or {}).get("count")
        parts.append(f"PVL {pvl['volume_ml']:.2f} mL in {pvl['lesion_count']} lesion(s)"
                     + (f" (+{left_out} candidate(s) the image does not show: check)" if left_out else ""))
    if report["ventricles"]["volume_ml"] is not None:
        unclear = reported_visibility(report) is False
        parts.append(f"ventricles {report['ventricles']['volume_ml']:.1f} mL" + (" (boundary not visible: check)" if unclear else ""))
    return parts


def overview_caption(report: dict, model: ModelInfo) -> str:
    parts = [report["case"], *findings(report, describe_group=True)]
    return "  |  ".join(parts) + f"\nPVL red, ventricles blue. {model.name} {model.version}: {caption_disclaimer(model)}"
