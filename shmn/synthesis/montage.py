"""A picture of a few cases: three slices through the lesions, in each image's own array orientation.

Slices are taken along the image's array axes (not resliced into RAS), so the picture shows what a
reader of the raw file sees: a LAS image is mirrored against a RAS one, an oblique one is tilted.
Each panel is named by the anatomical plane its normal is closest to. PVL outlined red, lateral
ventricles blue.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from shmn.io.atomic import atomic_path

TITLE = "SYNTHETIC PHANTOM \N{EM DASH} not patient data"
PLANES = ("sagittal", "coronal", "axial")  # plane whose normal is LPS x, y, z


@dataclass(frozen=True)
class MontageCase:
    caption: str
    image: sitk.Image
    pvl: sitk.Image
    ventricles: sitk.Image


def _plane_name(image: sitk.Image, array_axis: int) -> str:
    """Name of the plane of constant index along array axis 0/1/2 (= k, j, i)."""
    normal = np.reshape(image.GetDirection(), (3, 3))[:, 2 - array_axis]
    return PLANES[int(np.argmax(np.abs(normal)))] + "-ish"


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    """Centre of the largest lesion mass (the voxel nearest the lesions' centre of mass)."""
    if not mask.any():
        return tuple(n // 2 for n in mask.shape)
    voxels = np.argwhere(mask)
    nearest = voxels[np.argmin(((voxels - voxels.mean(0)) ** 2).sum(1))]
    return tuple(int(v) for v in nearest)


def _window_top(image: np.ndarray, pvl: np.ndarray) -> float:
    """Top of the grey window: lesions near white, white matter mid-grey, as a reader would window FLAIR."""
    top = float(np.percentile(image, 99.5)) if image.any() else 1.0
    if pvl.any():
        top = max(top, float(np.percentile(image[pvl], 90)))
    return top or 1.0


def _panel(ax, image: np.ndarray, pvl: np.ndarray, ventricles: np.ndarray, aspect: float, vmax: float, title: str):
    ax.imshow(image, cmap="gray", vmin=0, vmax=vmax, origin="lower", aspect=aspect, interpolation="nearest")
    if ventricles.any():
        ax.contour(ventricles.astype(np.float32), levels=[0.5], colors="#3399ff", linewidths=0.7)
    if pvl.any():
        ax.contour(pvl.astype(np.float32), levels=[0.5], colors="red", linewidths=0.7)
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def render_montage(path: str | os.PathLike, cases: list[MontageCase]) -> None:
    figure = Figure(figsize=(9.0, 2.8 * max(len(cases), 1) + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    figure.suptitle(TITLE, fontsize=12, fontweight="bold", color="darkred")
    for row, case in enumerate(cases):
        image = sitk.GetArrayFromImage(case.image).astype(np.float32)
        pvl = sitk.GetArrayViewFromImage(case.pvl) > 0
        ventricles = sitk.GetArrayViewFromImage(case.ventricles) > 0
        si, sj, sk = case.image.GetSpacing()
        k, j, i = _centre(pvl)
        vmax = _window_top(image, pvl)
        views = [
            (np.s_[k, :, :], sj / si, f"{_plane_name(case.image, 0)} k={k}"),
            (np.s_[:, j, :], sk / si, f"{_plane_name(case.image, 1)} j={j}"),
            (np.s_[:, :, i], sk / sj, f"{_plane_name(case.image, 2)} i={i}"),
        ]
        for col, (where, aspect, name) in enumerate(views):
            ax = figure.add_subplot(len(cases), 3, row * 3 + col + 1)
            _panel(ax, image[where], pvl[where], ventricles[where], aspect, vmax, f"{case.caption}\n{name}" if col == 0 else name)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})
