"""`shmn evaluate` results (RUN_DIR/evaluation-test.json) as a table node: one row per metric.

Segmentation metrics are per case, compared on each case's native grid, and summarised as mean,
sd, median and n; the MACS metrics are over the whole split (sd and median do not apply).
"""

from __future__ import annotations

from SHMNCoreLib.tables import addStringTable

COLUMNS = ("Metric", "Mean", "SD", "Median", "n")
# Summary keys of shmn.training.evaluate (CASE_METRICS, MACS_METRICS) as shown; unknown keys are shown as they are.
LABELS = {
    "pvl_dice": "PVL Dice",
    "pvl_hd95_mm": "PVL HD95 (mm)",
    "pvl_lesion_f1": "PVL lesion-wise F1",
    "pvl_avd_percent": "PVL abs. volume difference (%)",
    "ventricle_dice": "Ventricle Dice",
    "accuracy": "MACS accuracy",
    "f1": "MACS F1 (severe)",
    "auc": "MACS AUC",
    "ece": "MACS ECE",
}
MACS_KEYS = ("accuracy", "f1", "auc", "ece")
# The two MACS estimates (summary keys) and their names: once both are there, each row says which it is.
MACS_ESTIMATES = (("macs", "network head"), ("macs_burden", "motor burden, primary"))
VISIBILITY = (("visible", "Ventricle Dice, boundary visible"), ("not_visible", "Ventricle Dice, boundary not visible"))


def _text(value, digits: int = 3) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


def evaluationRows(results: dict) -> list[tuple[str, str, str, str, str]]:
    summary = results.get("summary") or {}
    rows = []
    grouped = {key for key, _ in MACS_ESTIMATES} | {"ventricle_dice_by_visibility"}
    for key, stats in summary.items():
        if key in grouped or not isinstance(stats, dict):
            continue
        rows.append(_statisticsRow(LABELS.get(key, key), stats))
    byVisibility = summary.get("ventricle_dice_by_visibility") or {}
    rows.extend(_statisticsRow(label, byVisibility[name]) for name, label in VISIBILITY if byVisibility.get(name))
    both = all(summary.get(key) for key, _ in MACS_ESTIMATES)
    for estimateKey, estimate in MACS_ESTIMATES:
        macs = summary.get(estimateKey) or {}
        for key in MACS_KEYS:
            if key in macs:
                label = f"{LABELS[key]}, {estimate}" if both or estimateKey != "macs" else LABELS[key]
                rows.append((label, _text(macs[key]), "", "", str(macs.get("n", ""))))
    return rows


def _statisticsRow(label: str, stats: dict) -> tuple[str, str, str, str, str]:
    n = f"{stats.get('n', '')}" + (f" ({stats['infinite']} infinite)" if stats.get("infinite") else "")
    return (label, _text(stats.get("mean")), _text(stats.get("sd")), _text(stats.get("median")), n)


def evaluationTable(results: dict, scene, name: str):
    """A new table node with the summary rows; the model and split are in its attributes."""
    table = addStringTable(scene, name, COLUMNS, evaluationRows(results))
    model = results.get("model") or {}
    table.SetAttribute("SHMN.model", f"{model.get('name')} {model.get('version')}")
    table.SetAttribute("SHMN.model.sha256", str(model.get("sha256")))
    table.SetAttribute("SHMN.split", str(results.get("split")))
    table.SetAttribute("SHMN.cases", str(len(results.get("cases") or [])))
    return table
