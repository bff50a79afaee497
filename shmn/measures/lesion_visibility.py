"""Whether each lesion the model marks stands out from the tissue around it on this image.

A PVL lesion on FLAIR (or T2) is a signal change: its voxels differ from the white matter around them. A
component of the thresholded lesion mask whose voxels are no brighter (or darker) than the tissue just
outside it is not something the image shows; it is the network's guess from the shape of the brain or from
contrast it learned elsewhere. On four looked-at cohorts (in distribution and out-of-distribution seeds 0, 7
and 13; 228 components) every false-positive component (12, most of them on children without lesions) stood
within 1.31 tissue spreads of its surroundings, and every true one but a 12-voxel fragment at 1.18 stood at
least 2.27 spreads out (in distribution at least 3.18). Such components leave the lesion mask and are listed
in report.json as candidates the image does not show, so that nothing the network found is hidden. The cut,
1.5, was fixed on those cohorts before four others were scored (README, "Lesions the image does not show").

The figure of one component: its mean intensity minus the median of a shell 1.5-4.5 mm outside it (the
ventricles, the other lesions and the background left out), over the shell's spread (the normal-consistent
median absolute deviation). The sign is not used: a cavitated lesion is dark on FLAIR, and on T1 every lesion is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import median_abs_deviation

from shmn.measures.lesions import lesion_components

VISIBLE_MIN_CONTRAST_TO_SPREAD = 1.5
SHELL_MM = (1.5, 4.5)
MIN_SHELL_VOXELS = 10  # fewer: the tissue level cannot be read, and the component stays (judged visible)


@dataclass(frozen=True)
class LesionContrast:
    label: int  # the component's label in lesion_components' map
    contrast_to_spread: Optional[float]  # None: too little tissue around it to read a level
    voxels: int

    @property
    def visible(self) -> bool:
        return self.contrast_to_spread is None or abs(self.contrast_to_spread) >= VISIBLE_MIN_CONTRAST_TO_SPREAD


def lesion_contrasts(image: np.ndarray, labels: np.ndarray, n: int, spacing_zyx: Sequence[float],
                     outside: Optional[np.ndarray] = None) -> list[LesionContrast]:
    """One entry per component 1..n of ``labels``; ``outside``: voxels never read as tissue (the ventricles)."""
    spacing = np.asarray([float(s) for s in spacing_zyx])
    margin = np.ceil(SHELL_MM[1] / spacing).astype(int) + 1
    excluded = labels > 0 if outside is None else (labels > 0) | (np.asarray(outside) > 0)
    slices = ndimage.find_objects(labels, max_label=n)
    rows = []
    for label, found in enumerate(slices, start=1):
        if found is None:
            continue
        low = [max(s.start - int(m), 0) for s, m in zip(found, margin)]
        high = [min(s.stop + int(m), size) for s, m, size in zip(found, margin, labels.shape)]
        box = tuple(slice(a, b) for a, b in zip(low, high))
        component = labels[box] == label
        distance = ndimage.distance_transform_edt(~component, sampling=spacing)
        values = np.asarray(image[box], dtype=np.float64)
        readable = np.isfinite(values)  # NaN/inf voxels (outside a converter's field of view) say nothing
        # Exact zeros are the background (outside the field of view, or a skull-stripped input's surround).
        shell = (distance >= SHELL_MM[0]) & (distance <= SHELL_MM[1]) & ~excluded[box] & (values != 0) & readable
        inside = component & readable
        figure = None
        if np.count_nonzero(shell) >= MIN_SHELL_VOXELS and inside.any():
            tissue = values[shell]
            spread = float(median_abs_deviation(tissue, scale="normal"))
            if spread > 0:
                figure = (float(values[inside].mean()) - float(np.median(tissue))) / spread
        rows.append(LesionContrast(label, figure, int(np.count_nonzero(component))))
    return rows


def split_by_visibility(mask: np.ndarray, image: np.ndarray, spacing_zyx: Sequence[float],
                        outside: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, list[LesionContrast]]:
    """(the mask's visible components, its components the image does not show, every component's figure)."""
    labels, n = lesion_components(mask)
    contrasts = lesion_contrasts(image, labels, n, spacing_zyx, outside)
    hidden = np.zeros(n + 1, dtype=bool)
    for row in contrasts:
        hidden[row.label] = not row.visible
    not_shown = hidden[labels]
    return (labels > 0) & ~not_shown, not_shown, contrasts


def not_shown_section(candidates: Optional[list[dict]]) -> Optional[dict]:
    """report.json's ``pvl.not_shown``: the candidates left out of the lesion mask (None: the check was not run)."""
    if candidates is None:
        return None
    return {
        "count": len(candidates),
        "volume_ml": round(sum(row["volume_ml"] for row in candidates), 4),
        "candidates": candidates,
        "visible_min": VISIBLE_MIN_CONTRAST_TO_SPREAD,
        "measure": f"|mean intensity - the median of a {SHELL_MM[0]}-{SHELL_MM[1]} mm shell around it| / the shell's spread; below "
                   "visible_min the component stands out no more than the tissue's own voxel-to-voxel variation and is not in the mask",
    }


def not_shown_warning(section: Optional[dict]) -> Optional[str]:
    """One line for report.json's warnings when the network marked lesions the image does not show."""
    if not section or not section["count"]:
        return None
    return (f"{section['count']} lesion candidate(s) the network marked ({section['volume_ml']:.2f} mL) do not stand out from "
            f"the tissue around them on this image (below {section['visible_min']:.1f} x the tissue's voxel spread): they "
            "are left out of the lesion mask, the lesion volume and the motor burden; their centres are in report.json "
            "pvl.not_shown and they are outlined in magenta on the overview; check them on the image")
