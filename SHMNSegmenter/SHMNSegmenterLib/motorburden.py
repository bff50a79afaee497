"""The motor-pathway lesion burden and the second MACS estimate of report.json as results-table rows.

report.json (engine: shmn.measures.motor_regions, shmn.measures.burden_macs) holds ``motor_burden``
(per region and side: lesion mL, region mL, share; totals), ``macs_from_burden`` and ``macs_primary``.
An older engine, or a model without lesion output, has none of them: no rows then.
"""

from __future__ import annotations

PRIMARY_NAMES = {"network": "network classifier", "burden": "motor-burden score"}


def _cells(entry: dict) -> tuple[str, str]:
    return f"{float(entry['lesion_ml']):.3f}", f"mL ({100 * float(entry['share']):.1f} % of region)"


def motorBurdenRows(report: dict) -> list[tuple[str, str, str, str, str, str]]:
    """Rows (Measurement, Value, Unit, R, A, S): the burden MACS estimate, which estimate is primary, each region and side."""
    burden = report.get("motor_burden")
    estimate = report.get("macs_from_burden")
    if not burden or not estimate:
        return []
    primary = report.get("macs_primary") or "network"
    rows = [
        ("MACS probability (severe), from motor burden", f"{float(estimate['probability_severe']):.4f}",
         _recalibration(estimate), "", "", ""),
        ("MACS group, from motor burden", str(estimate["group"]), "", "", "", ""),
        ("Primary MACS estimate", PRIMARY_NAMES.get(primary, primary), "", "", "", ""),
    ]
    for row in burden.get("regions") or []:
        rows.append((f"Motor burden: {row['name']}, {row['side']}", *_cells(row), "", "", ""))
    rows.append(("Motor burden: all regions", *_cells(burden["totals"]["both"]), "", "", ""))
    if burden.get("all_lesions_ml") is not None:  # the burden score's all-lesions term (an older report has none)
        rows.append(("Lesion volume, template space (all lesions)", f"{float(burden['all_lesions_ml']):.3f}", "mL", "", "", ""))
    return rows


def _recalibration(estimate: dict) -> str:
    """Says when the probability was recalibrated on a site's own cases (`shmn calibrate --macs-burden`)."""
    if not estimate.get("recalibrated"):
        return ""
    cases = ((estimate.get("recalibration") or {}).get("fitted_on") or {}).get("n_cases")
    return f"recalibrated on {cases} cases" if cases else "recalibrated"
