"""summary.html of a batch: the per-case table linking each case's report, and the first plots.

Everything comes from OUT/summary.csv (the one table of a batch) so the page can be rebuilt from it
at any time: lesion and ventricle volume distributions, MACS p(severe) by predicted group, and the
registration check per case. Case links are relative (``<case>/report.html``), so the folder can be
moved or copied to a USB stick as a whole. Images are embedded; the page fetches nothing.
"""

from __future__ import annotations

import csv
import datetime
import os
from pathlib import Path

from shmn import DISCLAIMER, __version__
from shmn.errors import ShmnError
from shmn.io.atomic import write_text
from shmn.reporting.case_report import REPORT_HTML, data_uri, template_environment

SUMMARY_CSV = "summary.csv"
SUMMARY_HTML = "summary.html"
PLOT_TITLES = {
    "pvl_volume": "PVL lesion volume",
    "ventricle_volume": "Ventricle volume",
    "macs": "MACS probability by group",
    "registration": "Registration quality",
}


def read_summary(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "case" not in reader.fieldnames or "status" not in reader.fieldnames:
                raise ShmnError(f"{path}: not a summary.csv of `shmn predict` (needs the columns case and status)")
            return list(reader)
    except FileNotFoundError:
        raise ShmnError(f"{path}: no such file; run `shmn predict` first") from None


def summary_context(rows: list[dict], folder: Path) -> dict:
    from shmn.reporting.figures import summary_plots

    table = []
    for row in rows:
        report = folder / row["case"] / REPORT_HTML
        table.append({**row, "link": f"{row['case']}/{REPORT_HTML}" if row.get("status") == "ok" and report.exists() else None})
    plots = summary_plots(rows)
    ok = [row for row in rows if row.get("status") == "ok"]
    columns = [c for c in ("macs_group", "macs_probability_severe", "pvl_volume_ml", "lesion_count", "lesion_candidates_not_shown",
                           "ventricle_volume_ml", "ventricle_boundary_visible", "brain_volume_ml", "registration_ok", "registration_nmi", "seconds") if rows and c in rows[0]]
    return {
        "title": f"SHMN batch summary — {folder.name}",
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "engine_version": __version__,
        "counts": {"total": len(rows), "ok": len(ok), "failed": len(rows) - len(ok)},
        "columns": columns,
        "rows": table,
        "plots": [{"key": key, "title": PLOT_TITLES[key], "src": data_uri(png)} for key, png in plots.items()],
        "disclaimer": DISCLAIMER,
    }


def write_summary_html(folder: str | os.PathLike) -> Path:
    """Write folder/summary.html from folder/summary.csv (atomically)."""
    folder = Path(folder)
    rows = read_summary(folder / SUMMARY_CSV)
    html = template_environment().get_template("summary.html.j2").render(**summary_context(rows, folder))
    return write_text(folder / SUMMARY_HTML, html)
