"""The report's pictures as PNG bytes (embedded in report.html as data URIs and drawn into report.pdf).

- ``case_planes``: axial, coronal and sagittal planes through the largest lesion with the PVL and
  ventricle OUTLINES (contours, so the tissue under them stays readable) and each lesion's number
  (its row in the lesion table) where it crosses the plane. The planes are resampled through
  physical coordinates exactly as overview.png is (shmn.reporting.overview), so they are upright and
  in radiological convention whatever the input's voxel order.
- ``summary_plots``: what a researcher looks at first in a batch, from summary.csv rows.
Matplotlib's object API only (no pyplot global state).
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

from shmn.measures.lesions import lesion_components
from shmn.reporting.overview import MAX_PIXELS, PLANES, _physical_bounds, _sample, _slice_reference
from shmn.terminology import LATERAL_VENTRICLES, PVL_LESION
from shmn.io.volume_io import ras_to_lps


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor=figure.get_facecolor())
    return buffer.getvalue()


def numbered_lesions(pvl: sitk.Image) -> sitk.Image:
    """Lesion label map numbered as report.json lists them: 26-connected, largest first, ties in label order."""
    labels, n = lesion_components(sitk.GetArrayViewFromImage(pvl))
    if n:
        sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        rank = np.zeros(n + 1, dtype=np.int32)
        rank[1 + np.argsort(-sizes, kind="stable")] = np.arange(1, n + 1)
        labels = rank[labels]
    image = sitk.GetImageFromArray(labels.astype(np.int32))
    image.CopyInformation(pvl)
    return image


def case_planes(image: sitk.Image, pvl: sitk.Image, ventricles: sitk.Image, focus_ras: Optional[Sequence[float]]) -> bytes:
    low, high = _physical_bounds(image)
    focus_lps = (low + high) / 2.0 if focus_ras is None else np.array(ras_to_lps(focus_ras))
    spacing = max(min(image.GetSpacing()), float(np.max(high - low)) / MAX_PIXELS)
    grey = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(grey)
    nonzero = values[values != 0]
    vmin, vmax = np.percentile(nonzero, (1, 99.5)) if nonzero.size else (0.0, 1.0)
    numbers = numbered_lesions(pvl)

    figure = Figure(figsize=(12, 4.4), dpi=100, facecolor="black")
    for column, plane in enumerate(PLANES):
        reference = _slice_reference(low, high, spacing, plane.normal_axis, focus_lps)
        ax = figure.add_subplot(1, 3, column + 1)
        ax.imshow(_sample(grey, reference, sitk.sitkLinear, plane.normal_axis), cmap="gray", vmin=vmin, vmax=vmax, interpolation="bilinear")
        for mask, term in ((ventricles, LATERAL_VENTRICLES), (pvl, PVL_LESION)):
            outline = _sample(mask, reference, sitk.sitkNearestNeighbor, plane.normal_axis) > 0
            if outline.any():
                ax.contour(outline.astype(float), levels=[0.5], colors=[term.color], linewidths=1.5)
        lesion_plane = np.rint(_sample(numbers, reference, sitk.sitkNearestNeighbor, plane.normal_axis)).astype(int)
        for number in np.unique(lesion_plane[lesion_plane > 0]):
            rows, cols = np.nonzero(lesion_plane == number)
            ax.text(cols.max() + 2, rows.min() - 1, str(number), color="yellow", fontsize=13, fontweight="bold", va="bottom",
                    path_effects=[patheffects.withStroke(linewidth=2.5, foreground="black")])
        ax.set_title(plane.title, color="white", fontsize=11)
        ax.text(0.01, 0.5, plane.left, color="yellow", transform=ax.transAxes, va="center", fontsize=10)
        ax.text(0.99, 0.5, plane.right, color="yellow", transform=ax.transAxes, va="center", ha="right", fontsize=10)
        ax.set_axis_off()
    figure.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.02, wspace=0.03)
    return png_bytes(figure)


def _floats(rows: list[dict], key: str) -> list[float]:
    out = []
    for row in rows:
        try:
            out.append(float(row.get(key, "")))
        except (TypeError, ValueError):
            continue
    return out


def summary_plots(rows: list[dict]) -> dict[str, bytes]:
    """Four small plots from the successful rows of summary.csv (an empty plot says 'no values')."""
    ok = [row for row in rows if row.get("status") == "ok"]
    plots: dict[str, bytes] = {}

    def new(title: str, xlabel: str, ylabel: str):
        figure = Figure(figsize=(4.6, 3.2), dpi=100)
        ax = figure.add_subplot(1, 1, 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        return figure, ax

    def finish(key: str, figure: Figure, ax, empty: bool) -> None:
        if empty:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", va="center", color="grey")
        figure.tight_layout()
        plots[key] = png_bytes(figure)

    for key, column, title, colour in (
        ("pvl_volume", "pvl_volume_ml", "PVL volume per case", PVL_LESION.color),
        ("ventricle_volume", "ventricle_volume_ml", "Ventricle volume per case", LATERAL_VENTRICLES.color),
    ):
        values = _floats(ok, column)
        figure, ax = new(title, "mL", "cases")
        if values:
            ax.hist(values, bins=min(20, max(3, len(values))), color=colour, edgecolor="black")
        finish(key, figure, ax, not values)

    figure, ax = new("MACS p(severe) by predicted group", "group", "p(severe)")
    groups = [g for g in ("mild", "severe") if any(r.get("macs_group") == g for r in ok)]
    for position, group in enumerate(groups):
        values = _floats([r for r in ok if r.get("macs_group") == group], "macs_probability_severe")
        jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else [0.0]
        ax.scatter(np.full(len(values), position) + jitter, values, s=18, color="tab:orange" if group == "severe" else "tab:green")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.6, max(1, len(groups)) - 0.4)
    ax.set_ylim(0, 1)
    finish("macs", figure, ax, not groups)

    figure, ax = new("Registration quality (NMI with template)", "case", "NMI")
    cases = [r for r in ok if _floats([r], "registration_nmi")]
    if cases:
        nmi = _floats(cases, "registration_nmi")
        colours = ["tab:red" if r.get("registration_ok") == "False" else "tab:blue" for r in cases]
        ax.bar(range(len(cases)), nmi, color=colours)
        ax.set_xticks(range(len(cases)), [r["case"] for r in cases], rotation=60, fontsize=7, ha="right")
    finish("registration", figure, ax, not cases)
    return plots
