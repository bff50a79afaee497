"""The motor regions on overview.png: outlines of the regions that carry lesion, and a line of the largest burdens.

Reads only report.json's ``motor_burden`` / ``macs_from_burden`` / ``macs_primary`` and a region map on
the input's grid (shmn.inference.motor.regions_on_native), so the picture never shows a number the
report does not hold.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from shmn.measures.motor_regions import CODES

REGION_COLOURS = {
    "corticospinal_plic": "#ff9f1c",  # orange
    "central_corona_radiata": "#4cc9f0",  # cyan
    "thalamic_radiations": "#e056fd",  # violet
}
SHORT_NAMES = {
    "corticospinal_plic": "CST/PLIC",
    "central_corona_radiata": "corona radiata",
    "thalamic_radiations": "thalamic rad.",
}


def lesioned_codes(report: dict) -> dict[int, str]:
    """Region code -> colour of every region with lesion in report.json's motor_burden."""
    burden = report.get("motor_burden") or {}
    return {CODES[(row["region"], row["side"])]: REGION_COLOURS[row["region"]]
            for row in burden.get("regions") or [] if row.get("lesion_ml", 0) > 0}


def draw_regions(ax, plane_codes: np.ndarray, colours: dict[int, str]) -> None:
    """Outline each lesioned region where it crosses this plane (``plane_codes``: region codes of the plane)."""
    for code, colour in colours.items():
        inside = (plane_codes == code).astype(float)
        if inside.any():
            ax.contour(inside, levels=[0.5], colors=[colour], linewidths=1.0)


def burden_summary(report: dict, largest: int = 3) -> Optional[str]:
    """Two lines: the largest motor burdens (mL, share of the region), then what the outlines are.
    (The burden MACS estimate is in the overview's caption, with the network's: shmn.reporting.report.findings.)"""
    burden = report.get("motor_burden")
    if burden is None:
        return None
    rows = sorted((r for r in burden["regions"] if r["lesion_ml"] > 0), key=lambda r: -r["lesion_ml"])[:largest]
    parts = [f"{r['side'][0].upper()} {SHORT_NAMES[r['region']]} {r['lesion_ml']:.2f} mL ({100 * r['share']:.1f} % of it)" for r in rows]
    return ("Motor-pathway lesion burden: " + (", ".join(parts) if parts else "none") + "\n"
            "outlined where lesioned (approximate atlas regions): orange CST/PLIC, cyan central corona radiata, violet thalamic radiations")


PRIMARY_NAMES = {"network": "the network's MACS classifier", "burden": "the motor-burden score"}


def _cell(entry: dict) -> str:
    return f"{entry['lesion_ml']:.3f} ({100 * entry['share']:.1f} %)"


def burden_table(report: dict) -> list[dict]:
    """report.json's motor_burden as the case report's burden rows {region, left, right, total, unit}."""
    burden = report.get("motor_burden")
    if not burden:
        return []
    rows = []
    for region in dict.fromkeys(row["region"] for row in burden["regions"]):
        sides = {row["side"]: row for row in burden["regions"] if row["region"] == region}
        lesion = sum(row["lesion_ml"] for row in sides.values())
        volume = sum(row["region_ml"] for row in sides.values())
        rows.append({"region": sides["left"]["name"], "left": _cell(sides["left"]), "right": _cell(sides["right"]),
                     "total": _cell({"lesion_ml": lesion, "share": lesion / volume if volume else 0.0}), "unit": "mL (share of region)"})
    totals = burden["totals"]
    rows.append({"region": "All motor regions", "left": _cell(totals["left"]), "right": _cell(totals["right"]),
                 "total": _cell(totals["both"]), "unit": "mL (share of region)"})
    if burden.get("all_lesions_ml") is not None:  # the burden score's all-lesions term (an older report has none)
        rows.append({"region": "All lesions, in a motor region or not", "left": "", "right": "",
                     "total": f"{burden['all_lesions_ml']:.3f}", "unit": "mL (template space)"})
    return rows


def recalibration_label(estimate: dict) -> str:
    """' (recalibrated on N cases)' when the card's burden recalibration made the probability (`shmn calibrate --macs-burden`)."""
    if not estimate.get("recalibrated"):
        return ""
    cases = ((estimate.get("recalibration") or {}).get("fitted_on") or {}).get("n_cases")
    return f" (recalibrated on {cases} cases)" if cases else " (recalibrated)"


def burden_estimate(report: dict) -> Optional[dict]:
    """The burden MACS estimate and which estimate is primary, as the case report shows them (None: not computed)."""
    estimate = report.get("macs_from_burden")
    if not estimate:
        return None
    primary = report.get("macs_primary") or "network"
    return {"probability": f"{estimate['probability_severe']:.2f}" + recalibration_label(estimate), "group": estimate["group"],
            "primary": PRIMARY_NAMES.get(primary, primary), "note": (report.get("motor_burden") or {}).get("atlas", "")}
