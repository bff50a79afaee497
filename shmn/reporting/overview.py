"""overview.png: three orthogonal planes through the largest lesion with the masks overlaid.

Each plane is resampled from the input through physical coordinates onto a patient-aligned 2D grid
(axial, coronal, sagittal), so the picture is upright and in radiological convention (patient's
right on the viewer's left) whatever the input's voxel order or obliquity. Only three slices are
resampled, never the whole volume. Uses matplotlib's object API (no pyplot global state).

Two outlines show at a glance whether preprocessing worked: the extracted brain (green) and the
MNI152 template brain where registration put it (dashed yellow). On a good case they agree; a
template outline in the scalp means the registration failed, whatever its check said.

With the motor regions (shmn.reporting.motor) the regions that carry lesion are outlined in
their colours and a line lists the largest motor-pathway burdens (the burden MACS estimate is in the caption).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from shmn.io.volume_io import ras_to_lps
from shmn.reporting.motor import burden_summary, draw_regions, lesioned_codes
from shmn.terminology import LATERAL_VENTRICLES, PVL_LESION

MAX_PIXELS = 320  # per side of a panel
BRAIN_OUTLINE = ("#39d353", "solid")  # the extracted brain
TEMPLATE_OUTLINE = ("#ffd60a", "dashed")  # the registered MNI152 brain
# magenta (apart from every other colour of the picture): lesions flagged for review (report.json pvl.lesions[].review:
# the model is unsure of them, or they touch ventricles whose CSF is bright)
# and candidates the image does not show, left out of the mask (pvl.not_shown): look twice
REVIEW_COLOUR = "#ff00ff"
REVIEW_LEGEND = "magenta: PVL lesions flagged for review (model unsure, or next to bright CSF) or not shown by the image (not in the mask)"


@dataclass(frozen=True)
class Plane:
    title: str
    normal_axis: int  # LPS axis held fixed (0 = x: sagittal, 1 = y: coronal, 2 = z: axial)
    left: str  # labels of the panel's left and right edges
    right: str


PLANES = (
    Plane("axial", 2, "R", "L"),
    Plane("coronal", 1, "R", "L"),
    Plane("sagittal", 0, "A", "P"),
)


def _physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    size = np.array(image.GetSize()) - 1
    corners = [image.TransformIndexToPhysicalPoint([int(c) for c in size * np.array(bits)]) for bits in np.ndindex(2, 2, 2)]
    corners = np.array(corners)
    return corners.min(axis=0), corners.max(axis=0)


def _slice_reference(low: np.ndarray, high: np.ndarray, spacing: float, axis: int, focus_lps: np.ndarray) -> sitk.Image:
    # An LPS-aligned grid one voxel thick along `axis`, through the focus point.
    size = [max(1, int(np.ceil((h - l) / spacing)) + 1) for l, h in zip(low, high)]
    origin = low.copy()
    size[axis] = 1
    origin[axis] = focus_lps[axis]
    reference = sitk.Image(size, sitk.sitkUInt8)
    reference.SetSpacing([spacing] * 3)
    reference.SetOrigin(origin.tolist())
    return reference


def _sample(image: sitk.Image, reference: sitk.Image, interpolator, axis: int) -> np.ndarray:
    resampled = sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(resampled)  # (z, y, x) in LPS order
    plane = np.take(array, 0, axis=2 - axis)
    # Rows: anterior at the top (axial), superior at the top (coronal, sagittal).
    return plane if axis == 2 else plane[::-1]


def render_overview(
    path: str | os.PathLike,
    image: sitk.Image,
    pvl: sitk.Image,
    ventricles: sitk.Image,
    focus_ras: list[float] | None,
    caption: str,
    brain: sitk.Image | None = None,
    template_brain: sitk.Image | None = None,
    review: sitk.Image | None = None,
    motor_regions: sitk.Image | None = None,
    motor_report: dict | None = None,
) -> Path:
    """Write the PNG; ``focus_ras`` (mm) is where the three planes cross (None: the volume's centre).

    ``brain`` and ``template_brain`` (masks on any grid) are drawn as outlines when given; ``review``
    (the flagged lesions' mask) is painted magenta over the red PVL and named in the legend;
    ``motor_regions`` (region codes on any grid) and ``motor_report`` (report.json) add the motor burden.
    """
    motor_colours = lesioned_codes(motor_report) if motor_regions is not None and motor_report else {}
    motor_text = burden_summary(motor_report) if motor_report else None
    low, high = _physical_bounds(image)
    if focus_ras is None:
        focus_lps = (low + high) / 2.0
    else:
        focus_lps = np.array(ras_to_lps(focus_ras))
    spacing = max(min(image.GetSpacing()), float(np.max(high - low)) / MAX_PIXELS)
    grey = sitk.Cast(image, sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(grey)
    nonzero = values[values != 0]
    vmin, vmax = np.percentile(nonzero, (1, 99.5)) if nonzero.size else (0.0, 1.0)

    flagged = review is not None and bool(sitk.GetArrayViewFromImage(review).any())
    figure = Figure(figsize=(12, 4.9), dpi=100, facecolor="black")
    FigureCanvasAgg(figure)
    for column, plane in enumerate(PLANES):
        reference = _slice_reference(low, high, spacing, plane.normal_axis, focus_lps)
        base = _sample(grey, reference, sitk.sitkLinear, plane.normal_axis)
        ax = figure.add_subplot(1, 3, column + 1)
        ax.imshow(base, cmap="gray", vmin=vmin, vmax=vmax, interpolation="bilinear")
        layers = [(ventricles, LATERAL_VENTRICLES.color, 0.45), (pvl, PVL_LESION.color, 0.7)]
        layers += [(review, REVIEW_COLOUR, 0.95)] if flagged else []
        for mask, colour, alpha in layers:
            overlay = _sample(mask, reference, sitk.sitkNearestNeighbor, plane.normal_axis) > 0
            ax.imshow(np.ma.masked_where(~overlay, overlay), cmap=ListedColormap([colour]), alpha=alpha, interpolation="nearest")
        for mask, (color, style) in ((brain, BRAIN_OUTLINE), (template_brain, TEMPLATE_OUTLINE)):
            if mask is None:
                continue
            outline = _sample(sitk.Cast(mask, sitk.sitkFloat32), reference, sitk.sitkLinear, plane.normal_axis)
            if outline.min() < 0.5 < outline.max():
                ax.contour(outline, levels=[0.5], colors=[color], linestyles=style, linewidths=1.0)
        if motor_colours:
            draw_regions(ax, _sample(motor_regions, reference, sitk.sitkNearestNeighbor, plane.normal_axis), motor_colours)
        ax.set_title(plane.title, color="white", fontsize=11)
        ax.text(0.01, 0.5, plane.left, color="yellow", transform=ax.transAxes, va="center", fontsize=10)
        ax.text(0.99, 0.5, plane.right, color="yellow", transform=ax.transAxes, va="center", ha="right", fontsize=10)
        ax.set_axis_off()
    if brain is not None or template_brain is not None:
        figure.text(0.01, 0.005, "outlines: extracted brain (green), registered MNI152 brain (dashed yellow)",
                    color="white", ha="left", va="bottom", fontsize=8)
    if flagged:
        figure.text(0.99, 0.005, REVIEW_LEGEND, color=REVIEW_COLOUR, ha="right", va="bottom", fontsize=8)
    figure.text(0.5, 0.035, caption, color="white", ha="center", va="bottom", fontsize=10, wrap=True)
    if motor_text:
        # above the caption, which wraps to up to three lines (to about 0.13 of the figure's height)
        figure.text(0.5, 0.14, motor_text, color="white", ha="center", va="bottom", fontsize=8)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.92, bottom=0.2 if motor_text else 0.14, wspace=0.03)
    figure.savefig(str(path), facecolor=figure.get_facecolor())
    return Path(path)
