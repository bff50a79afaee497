"""report.html and report.pdf of one case: the page for the chart, built from report.json.

One context (``case_context``) feeds both: the Jinja2 template ``templates/report.html.j2`` (one
self-contained page, images as data URIs, no script, no external reference: it opens from a USB
stick) and the A4 PDF (shmn.reporting.pdf, matplotlib only, so the engine needs no browser).
Sections a later model adds to report.json (``brain.volume_ml``, ``macs.calibrated``,
``macs.regional_burden``, per-lesion ``review``/``mean_probability``/``uncertainty``/``region``) are shown when present
and marked "not computed by this model" when not; the motor-pathway burden table and the burden MACS
estimate come from ``motor_burden`` / ``macs_from_burden`` / ``macs_primary`` (shmn.reporting.motor) and take
the place of a ``macs.regional_burden``. Nothing here invents a number: every figure on the page is read
from report.json.
"""

from __future__ import annotations

import base64
import datetime
import os
from pathlib import Path
from typing import Optional

import SimpleITK as sitk

from shmn import __version__
from shmn.io.atomic import write_text
from shmn.measures.ventricle_visibility import NEXT_TO_BRIGHT_CSF, reported_visibility
from shmn.reporting.motor import burden_estimate, burden_table
from shmn.reporting.patient import PatientHeader, read_patient_header
from shmn.reporting.regions import lesion_regions

REPORT_HTML = "report.html"
REPORT_PDF = "report.pdf"
SYNTHETIC_LINE = "Synthetic-data model, not for clinical use."
RESEARCH_LINE = "Research model trained on user data, not validated for clinical use."
MISSING = "—"


def template_environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("shmn.reporting", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the test, not the patient's page
        trim_blocks=True,
        lstrip_blocks=True,
    )


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _fmt(value, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return MISSING
    return f"{float(value):.{digits}f}{unit}"


def is_synthetic_model(model: dict) -> bool:
    """The same rule as ModelInfo.synthetic: unknown provenance counts as synthetic (the stronger warning)."""
    data = model.get("training_data")
    if isinstance(data, dict):
        return bool(data.get("synthetic") or data.get("any_synthetic") or "synthetic" not in data)
    return data is None or "synthetic" in str(data).lower()


def calibrated_macs(macs: dict) -> Optional[dict]:
    """The calibrated MACS estimate as {probability, group, method}; None when there is none.

    report.json says ``macs.calibrated: true`` with ``macs.calibration.method`` when ``probability_severe``
    is calibrated (shmn.inference.calibration); a number or a dict under ``calibrated`` is read too."""
    calibrated = macs.get("calibrated")
    if calibrated is None or calibrated is False:
        return None
    if calibrated is True:
        method = (macs.get("calibration") or {}).get("method")
        calibrated = {"probability_severe": macs.get("probability_severe"), "group": macs.get("group"), "method": method}
    if isinstance(calibrated, (int, float)):
        calibrated = {"probability_severe": float(calibrated)}
    probability = calibrated.get("probability_severe", calibrated.get("probability"))
    group = calibrated.get("group") or (None if probability is None else ("severe" if float(probability) > macs.get("threshold", 0.5) else "mild"))
    return {"probability": _fmt(probability, 2), "group": group or MISSING, "method": calibrated.get("method") or ""}


def regional_burden(macs: dict) -> list[dict]:
    """``macs.regional_burden`` as rows {region, left, right, unit}.

    Accepted shapes: {region: {left, right}}, {region: value}, or [{region|name, left, right|value, unit}].
    """
    burden = macs.get("regional_burden")
    if not burden:
        return []
    unit = "mL"
    items = burden.items() if isinstance(burden, dict) else [(row.get("region") or row.get("name"), row) for row in burden]
    rows = []
    for region, value in items:
        if region == "unit":
            unit = str(value)
            continue
        if isinstance(value, dict):
            left, right = value.get("left"), value.get("right")
            both = value.get("value", value.get("volume_ml"))
            unit = value.get("unit", unit)
        else:
            left, right, both = None, None, value
        rows.append({"region": str(region).replace("_", " "), "left": _fmt(left, 3), "right": _fmt(right, 3),
                     "total": _fmt(both, 3) if both is not None else MISSING})
    for row in rows:
        row["unit"] = unit
    return rows


def model_output_probability(macs: dict):
    """The network's own p(severe): kept beside the calibrated one when report.json's is calibrated."""
    if macs.get("calibrated") is True:
        return (macs.get("calibration") or {}).get("uncalibrated_probability_severe")
    return macs.get("probability_severe")


def _review_label(lesion: dict) -> str:
    """'review' (the model is unsure: look twice) or 'confident', with the lesion's entropy and, when the mirrored
    pass ran, how far the two passes differ on it (either can flag it).
    shmn predict writes ``review``, ``uncertainty`` and ``tta_disagreement`` (shmn.measures.lesion_uncertainty);
    ``uncertain`` is read too."""
    flagged = lesion.get("review", lesion.get("uncertain"))
    if flagged is None:
        return MISSING
    label = ("review" if "review" in lesion else "uncertain") if flagged else "confident"
    if flagged and NEXT_TO_BRIGHT_CSF in (lesion.get("review_reason") or ""):  # "review: next to bright CSF"
        label = f"{label}: {lesion['review_reason']}"
    figures = [f"{float(lesion['uncertainty']):.2f} bits"] if lesion.get("uncertainty") is not None else []
    if lesion.get("tta_disagreement") is not None:
        figures.append(f"mirror diff {float(lesion['tta_disagreement']):.2f}")
    return f"{label} ({', '.join(figures)})" if figures else label


def method_rows(report: dict) -> list[tuple[str, str]]:
    """How this result was made (report.json's ``inference``), for a reader who weighs or repeats it; rows a
    report from an earlier version lacks are left out."""
    inference = report.get("inference") or {}
    rows = []
    if inference.get("device"):
        rows.append(("Run on", f"{inference['device']} ({inference.get('precision', MISSING)})"))
    mirroring = inference.get("test_time_mirroring")
    if mirroring is not None:
        rows.append(("Test-time mirroring", "on: the image and its left-right mirror, averaged" if mirroring.startswith("--tta")
                     else "off: one pass (--no-tta)"))
    boundary = inference.get("boundary")
    if boundary:
        refined = [task for task in ("pvl", "ventricles") if (boundary.get(task) or {}).get("applied")]
        rows.append(("Outlines", "the model's 2 mm outlines, resampled (--boundary model)" if "method" in boundary else
                     "refined on the input's own grid" + (f" ({', '.join('lesions' if t == 'pvl' else t for t in refined)})"
                                                          if refined else " (too little contrast: the model's kept)")))
    if inference.get("lesion_grid"):
        rows.append(("Lesion grid", str(inference["lesion_grid"])))
    return rows


def lesion_rows(report: dict, regions: list[Optional[str]]) -> list[dict]:
    rows = []
    for number, (lesion, region) in enumerate(zip(report["pvl"]["lesions"], regions), start=1):
        rows.append({
            "number": number,
            "volume_ml": _fmt(lesion.get("volume_ml"), 3),
            "centre": ", ".join(f"{v:.1f}" for v in lesion["centre_ras_mm"]) if lesion.get("centre_ras_mm") else MISSING,
            "region": region or MISSING,
            "probability": _fmt(lesion.get("mean_probability", lesion.get("probability")), 2),
            "uncertain": _review_label(lesion),
        })
    return rows


def registration_rows(report: dict) -> tuple[str, list[tuple[str, str]]]:
    quality = (report.get("preprocessing") or {}).get("registration_quality") or {}
    if not quality:
        return MISSING, []
    if not quality.get("registered", True):
        verdict = "registration switched off (input taken as already in MNI152 space)"
    else:
        verdict = "passed" if quality.get("ok") else "FAILED — results are not trustworthy"
    rows = [
        ("Normalised mutual information with the template", _fmt(quality.get("nmi"), 3)),
        ("Template brain inside the input's head", _fmt(None if quality.get("brain_coverage") is None else 100 * quality["brain_coverage"], 0, " %")),
        ("Template brain inside the field of view", _fmt(None if quality.get("template_brain_in_view") is None else 100 * quality["template_brain_in_view"], 0, " %")),
        ("Brain scale to template", _fmt(quality.get("scale"), 2)),
    ]
    return verdict, rows


def not_shown_rows(pvl: dict) -> list[tuple[str, str]]:
    """The candidates left out of the lesion mask because the image does not show them (none: no row)."""
    section = pvl.get("not_shown") or {}
    if not section.get("count"):
        return []
    return [("Candidates not shown by the image (not in the mask; check)",
             f"{section['count']} ({_fmt(section.get('volume_ml'), 2, ' mL')}; centres in report.json)")]


def case_context(report: dict, header: PatientHeader, planes_png: Optional[bytes], anonymise: bool,
                 regions: Optional[list[Optional[str]]] = None, generated: Optional[str] = None) -> dict:
    """Everything the page shows, as strings (one source for the HTML and the PDF)."""
    macs, pvl, model = report["macs"], report["pvl"], report["model"]
    brain = report.get("brain") or {}
    synthetic = is_synthetic_model(model)
    verdict, registration = registration_rows(report)
    regions = regions if regions is not None else [None] * len(pvl["lesions"])
    group = macs.get("group")
    return {
        "title": f"SHMN report — {'anonymised case' if anonymise else report['case']}",
        "case": report["case"],
        "patient": header.rows(anonymise),
        "generated": generated or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "engine_version": (report.get("engine") or {}).get("shmn_version", __version__),
        "synthetic": synthetic,
        "use_line": SYNTHETIC_LINE if synthetic else RESEARCH_LINE,
        "disclaimer": report.get("disclaimer", ""),
        "warnings": list(report.get("warnings") or []),
        "planes": data_uri(planes_png) if planes_png else None,
        "macs": {
            "group": f"{group} ({macs['groups'][group]})" if group else "not predicted by this model",
            "probability": _fmt(model_output_probability(macs), 2),
            "calibrated": calibrated_macs(macs),
            "burden": burden_table(report) or regional_burden(macs),  # report.json's motor_burden (shmn.reporting.motor)
            "from_burden": burden_estimate(report),
        },
        "volumes": [
            ("PVL lesions, total", _fmt(pvl.get("volume_ml"), 2, " mL")),
            ("Number of lesions", MISSING if pvl.get("lesion_count") is None else str(pvl["lesion_count"])),
            *not_shown_rows(pvl),
            ("Lateral ventricles", _fmt(report["ventricles"].get("volume_ml"), 1, " mL")
             + (" (boundary not visible on this image: check)" if reported_visibility(report) is False else "")),
            ("Brain", _fmt(brain.get("volume_ml"), 0, " mL") if brain.get("volume_ml") is not None else MISSING + " (not computed by this version)"),
        ],
        "lesions": lesion_rows(report, regions),
        "has_lesion_uncertainty": any(key in lesion for lesion in pvl["lesions"] for key in ("uncertain", "probability", "review")),
        "registration_verdict": verdict,
        "registration_ok": verdict == "passed",
        "registration": registration,
        "model": [
            ("Name", str(model.get("name"))),
            ("Version", str(model.get("version"))),
            ("sha256", str(model.get("sha256"))),
            ("Registered", "yes" if model.get("registered") else "no (a file given by path)"),
            *method_rows(report),
        ],
    }


def render_case_html(context: dict) -> str:
    return template_environment().get_template("report.html.j2").render(**context)


def _load_images(folder: Path, report: dict):
    """Input, PVL and ventricle masks of a finished case folder (None when the input is gone)."""
    from shmn.io.volume_io import read_volume

    source = Path(report["input"]["path"])
    masks = [folder / report.get("outputs", {}).get(key, f"{key}.nii.gz") for key in ("pvl", "ventricles")]
    if not source.exists() or not all(mask.is_file() for mask in masks):
        return None
    return read_volume(source), sitk.ReadImage(str(masks[0])), sitk.ReadImage(str(masks[1]))


def write_case_report(
    folder: str | os.PathLike,
    report: dict,
    image: Optional[sitk.Image] = None,
    pvl: Optional[sitk.Image] = None,
    ventricles: Optional[sitk.Image] = None,
    anonymise: bool = False,
    header: Optional[PatientHeader] = None,
    anatomy=None,
) -> tuple[Path, Path]:
    """Write folder/report.html and folder/report.pdf (each atomically); returns their paths.

    Without the images they are read back (input from report.json's input path, masks from the
    folder). ``anatomy`` (shmn.io.anatomy.Anatomy) names the lesions' regions; None: loaded from the
    cache when it is filled, else the regions are left blank.
    """
    from shmn.reporting.figures import case_planes
    from shmn.reporting.pdf import write_case_pdf

    folder = Path(folder)
    if image is None or pvl is None or ventricles is None:
        loaded = _load_images(folder, report)
        image, pvl, ventricles = loaded if loaded else (None, None, None)
    if header is None:
        header = read_patient_header(report["input"]["path"])
    if anatomy is None:
        anatomy = _cached_anatomy()
    lesions = report["pvl"]["lesions"]
    planes = None
    if image is not None:
        planes = case_planes(image, pvl, ventricles, lesions[0]["centre_ras_mm"] if lesions else None)
    context = case_context(report, header, planes, anonymise, lesion_regions(report, anatomy))
    html_path = write_text(folder / REPORT_HTML, render_case_html(context))
    pdf_path = write_case_pdf(folder / REPORT_PDF, context, planes)
    return html_path, pdf_path


def _cached_anatomy():
    from shmn.errors import ShmnError
    from shmn.io.anatomy import load_anatomy

    try:
        return load_anatomy()
    except ShmnError:
        return None


__all__ = ["REPORT_HTML", "REPORT_PDF", "case_context", "render_case_html", "write_case_report"]
