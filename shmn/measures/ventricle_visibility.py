"""Whether the ventricles stand out from the tissue around them on this image.

On a FLAIR the CSF is nulled, so the ventricles are darker than the white matter around them. Where the CSF
is poorly nulled (an inversion time that does not null it, a short repetition time, CSF with a long T1 in
young children) it comes close to the tissue or turns brighter, and the image has no ventricle boundary
to read: the mask is then the network's estimate of the shape, not something the image shows. On five
out-of-distribution cohorts (seeds 0, 7, 13, 31, 37) every case whose ventricle Dice fell below 0.70 was such an
image (README, "How well the ventricles stand out").

The figure is the native boundary step's first read (``shmn.inference.native_boundary``): the median of
tissue level minus CSF level over the predicted ventricles, in units of the tissue voxels' spread (noise and
texture). The cut, 2.0, was chosen on two looked-at cohorts (seeds 0 and 7) and kept under a rule fixed
before two cohorts nobody had looked at were scored.
"""

from __future__ import annotations

VISIBLE_MIN_CONTRAST_TO_SPREAD = 2.0
NEXT_TO_BRIGHT_CSF = "next to bright CSF"  # report.json's review_reason for a lesion flagged by the CSF's brightness


def ventricle_visibility(boundary: dict | None) -> dict:
    """report.json's ``ventricles.visibility`` from ``inference.boundary``: the figure, the cut and ``visible``
    (None where the boundary step did not read the ventricles: --boundary model, or no ventricle found)."""
    figure = ((boundary or {}).get("ventricles") or {}).get("contrast_to_spread")
    return {
        "contrast_to_spread": figure,
        "visible_min": VISIBLE_MIN_CONTRAST_TO_SPREAD,
        "visible": None if figure is None else bool(figure >= VISIBLE_MIN_CONTRAST_TO_SPREAD),
        "measure": "median (tissue level - CSF level) over the predicted ventricles / the tissue voxels' spread; "
                   "positive where the CSF is darker, as FLAIR nulls it",
    }


def visibility_warning(visibility: dict) -> str | None:
    """One line for report.json's warnings when the ventricles barely stand out (None otherwise)."""
    if visibility.get("visible") is not False:
        return None
    figure = visibility["contrast_to_spread"]
    how = "brighter than" if figure < 0 else "barely darker than"
    return (f"the CSF in the ventricles is {how} the tissue around them on this image (contrast {figure:.1f} x the "
            f"tissue's voxel spread, below {visibility['visible_min']:.1f}): the image shows no clear ventricle "
            "boundary, so the ventricle mask and volume are the model's shape estimate; check them against the image "
            "(was the CSF nulled?)")


def csf_brighter_than_tissue(boundary: dict | None) -> bool:
    """Whether the CSF in the ventricles is brighter than the tissue around them (the figure below 0, from
    ``inference.boundary``): not nulled at all, so that the ventricle wall's partial volume looks like a
    periventricular lesion (shmn.measures.lesion_uncertainty flags the lesions there for review)."""
    figure = ((boundary or {}).get("ventricles") or {}).get("contrast_to_spread")
    return figure is not None and figure < 0


def bright_csf_lesion_warning(lesions: list[dict]) -> str | None:
    """One line for report.json's warnings when lesions were flagged for lying next to bright CSF (None otherwise)."""
    flagged = sum(NEXT_TO_BRIGHT_CSF in (lesion.get("review_reason") or "") for lesion in lesions)
    if not flagged:
        return None
    return (f"{flagged} lesion(s) touch the ventricles on an image whose CSF is brighter than the tissue: there the "
            "ventricle wall's partial volume looks like a periventricular lesion, so they are flagged for review "
            f"({NEXT_TO_BRIGHT_CSF}); check each against the image")


def reported_visibility(report: dict) -> bool | None:
    """report.json's ``ventricles.visibility.visible`` (None: not measured, or an older report without it)."""
    return ((report.get("ventricles") or {}).get("visibility") or {}).get("visible")
