"""The 1 mm lesion path (shmn.inference.refine) on a tiny grid, and with the shipped models on a 0.1 mL lesion.

Tiny: a real tiny SHMN (4 mm grid) and a real tiny refiner with random weights on a 32 mm box of the 1 mm
grid; the input is the MNI152 template at 2 mm (no registration). Checked: where the box lies, that the 2 mm
probability is kept outside it, that inside it the input's probability is the refiner's, resampled linearly
(compared with scipy's trilinear interpolation, not the code's own resampler), and the mask thresholded from it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from Testing.engine_fixtures import make_tiny_model
from shmn.inference.predict import PredictOptions, load_predictor, predict_native
from shmn.inference.refine import COARSE_ONLY, native_lesion_probability, roi_inputs
from shmn.network.refiner import RefinerNetwork, load_refiner, save_refiner
from shmn.preprocessing.preprocess import GRIDS, model_grid_reference
from shmn.preprocessing.roi import RoiBox, coarse_to_roi, pool_to_coarse

BOX = RoiBox(GRIDS["paper"], (60, 70, 56), (32, 32, 48))


def test_fast_and_paper_grids_align_for_a_2x_pool():
    fast, paper = model_grid_reference(GRIDS["fast"]), model_grid_reference(GRIDS["paper"])
    for index in ((0, 0, 0), (13, 40, 77), (79, 95, 79)):
        between = [2 * i + 0.5 for i in index]
        assert np.allclose(fast.TransformIndexToPhysicalPoint(index), paper.TransformContinuousIndexToPhysicalPoint(between))


def test_pool_and_upsample_place_a_voxel_where_it_was():
    rng = np.random.default_rng(0)
    coarse_brain = np.ones(GRIDS["fast"].shape_zyx, bool)
    blocks = rng.normal(size=GRIDS["fast"].shape_zyx).astype(np.float32)
    fine = np.repeat(np.repeat(np.repeat(blocks, 2, 0), 2, 1), 2, 2)
    pooled = pool_to_coarse(fine, np.ones(fine.shape, bool), coarse_brain)
    assert np.corrcoef(pooled.ravel(), blocks.ravel())[0, 1] > 0.9999  # the blocks, z-scored
    hot = np.zeros(GRIDS["fast"].shape_zyx, np.float32)
    hot[40, 50, 38] = 1.0  # fast voxel (z 40, y 50, x 38) = paper voxels 80-81, 100-101, 76-77
    up = coarse_to_roi(hot, model_grid_reference(GRIDS["fast"]), BOX)
    peak = np.argwhere(up == up.max()) + BOX.start_zyx
    assert sorted(map(tuple, peak)) == [(z, y, x) for z in (80, 81) for y in (100, 101) for x in (76, 77)]
    assert up.max() == pytest.approx(0.75**3, abs=1e-5)  # each 0.5 mm off the 2 mm centre


@pytest.fixture(scope="module")
def tiny_case(tmp_path_factory, anatomy):
    folder = tmp_path_factory.mktemp("tiny1mm")
    predictor = load_predictor(make_tiny_model(folder)[0])
    torch.manual_seed(1)
    spec = RefinerNetwork(features=(4, 4, 4, 4, 4, 4), in_channels=2)
    path = folder / "refiner.safetensors"
    sha = save_refiner(path, spec.build(), spec, BOX, {"name": "tiny-refiner", "window": 32})
    predictor.refiner = load_refiner(path, sha)
    template = sitk.Cast(anatomy.template, sitk.sitkFloat32)
    reference = sitk.Image([91, 109, 91], sitk.sitkFloat32)
    reference.SetSpacing((2.0, 2.0, 2.0))
    reference.SetOrigin(template.GetOrigin())
    reference.SetDirection(template.GetDirection())
    native = sitk.Resample(template, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    # The lesion paths themselves: without the native-grid boundary step that follows them (test_native_boundary.py).
    options = PredictOptions(device="cpu", register=False, native_boundary=False)
    fine = predict_native(native, predictor, options)
    coarse = predict_native(native, predictor, PredictOptions(device="cpu", register=False, lesion_1mm=False, native_boundary=False))
    return native, predictor, fine, coarse


def _physical_points(image: sitk.Image) -> np.ndarray:
    """(z, y, x, 3) LPS points of every voxel centre."""
    size = image.GetSize()
    index = np.stack(np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij"), axis=-1)[..., ::-1]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + (index * np.array(image.GetSpacing())) @ direction.T


def test_tiny_1mm_path_keeps_2mm_outside_the_box_and_resamples_the_refiner_inside(tiny_case):
    native, predictor, fine, coarse = tiny_case
    assert fine.lesion_grid.startswith("1 mm refiner tiny-refiner") and coarse.lesion_grid == COARSE_ONLY
    path = native_lesion_probability(native, fine.prep, fine.result.pvl_probability, predictor.refiner, coarse.probabilities["pvl"])
    assert path.roi_probability.shape == BOX.size_zyx
    combined = sitk.GetArrayFromImage(fine.probabilities["pvl"])
    assert np.array_equal(combined, sitk.GetArrayFromImage(path.probability))
    two_mm = sitk.GetArrayFromImage(coarse.probabilities["pvl"])

    box_ref = BOX.reference()
    points = _physical_points(native)
    # Continuous (x, y, z) index of each native voxel centre in the box (register=False: identity transform).
    direction = np.array(box_ref.GetDirection()).reshape(3, 3)
    continuous = ((points - np.array(box_ref.GetOrigin())) @ direction) / np.array(box_ref.GetSpacing())
    size_xyz = np.array(box_ref.GetSize())
    outside = np.any((continuous < -0.5) | (continuous > size_xyz - 0.5), axis=-1)
    inside = np.all((continuous > 0.5) & (continuous < size_xyz - 1.5), axis=-1)
    assert outside.sum() > 0.9 * outside.size and inside.sum() > 100
    assert np.array_equal(combined[outside], two_mm[outside])  # the 2 mm probability, untouched, outside the box
    expected = ndimage.map_coordinates(path.roi_probability, continuous[inside][:, ::-1].T, order=1)
    assert np.allclose(combined[inside], expected, atol=1e-4)  # the refiner's, linearly, inside
    assert not np.allclose(combined[inside], two_mm[inside], atol=1e-3)
    mask = sitk.GetArrayFromImage(fine.masks["pvl"])
    assert np.array_equal(mask, (combined >= PredictOptions().pvl_threshold).astype(np.uint8))


def test_tiny_1mm_input_is_normalised_like_the_2mm_case(tiny_case):
    native, predictor, fine, _ = tiny_case
    image, brain = roi_inputs(native, fine.prep, BOX)
    assert image.shape == BOX.size_zyx and brain.sum() > 0.5 * brain.size
    coarse = coarse_to_roi(fine.prep.image, fine.prep.reference, BOX)
    both = brain & (coarse != 0)
    assert abs(float(image[both].mean() - coarse[both].mean())) < 0.25  # same statistics, same bias field
    assert np.corrcoef(image[both], coarse[both])[0, 1] > 0.8


def test_a_cached_case_runs_the_same_1mm_path(tiny_case, tmp_path):
    """`shmn evaluate --cache`: the cache keeps N4's field and the z-score, so a cached case refines as a fresh one."""
    from types import SimpleNamespace

    from shmn.training.case_cache import CaseCache

    native, predictor, fine, _ = tiny_case
    path = tmp_path / "case.nii.gz"
    sitk.WriteImage(native, str(path))
    sample = SimpleNamespace(id="case", image=path, pvl=None, ventricles=None)
    config = dataclasses.replace(predictor.preprocess, register=False)  # as the fixture's predictions
    cached = CaseCache(tmp_path / "cache", config, 4.0).preprocessed(sample)
    assert cached.normalisation == pytest.approx(fine.prep.normalisation, rel=1e-6)
    assert np.allclose(cached.log_bias_field, fine.prep.log_bias_field)
    again = predict_native(native, predictor, PredictOptions(device="cpu", register=False, native_boundary=False), prep=cached)
    assert again.lesion_grid == fine.lesion_grid
    assert np.allclose(sitk.GetArrayViewFromImage(again.probabilities["pvl"]), sitk.GetArrayViewFromImage(fine.probabilities["pvl"]), atol=1e-4)


# --- the shipped models on one 0.1 mL lesion ----------------------------------------------------------------

RADIUS_MM = 2.88  # 4/3 pi r^3 = 0.100 mL
PHANTOM_SEEDS = (1000,)
PHANTOM_CONTRAST = 2.0


def _sphere_share(radius_mm: float, half: int = 5) -> np.ndarray:
    """The share of each 1 mm voxel of a (2 half + 1)^3 block inside a centred sphere (4^3 sub-samples): partial volume."""
    sub = (np.arange(4) + 0.5) / 4 - 0.5
    z, y, x = np.ogrid[-half:half + 1, -half:half + 1, -half:half + 1]
    share = np.zeros((2 * half + 1,) * 3, np.float32)
    for dz in sub:
        for dy in sub:
            for dx in sub:
                share += ((z + dz) ** 2 + (y + dy) ** 2 + (x + dx) ** 2 <= radius_mm**2) / 64.0
    return share


def one_lesion_phantom(seed: int, contrast: float) -> tuple[sitk.Image, np.ndarray]:
    """A lesion-free domain-randomised brain at 1 mm (MNI152 anatomy, FLAIR contrast, a 1 mm acquisition), with
    one 0.1 mL sphere painted into periventricular white matter (5-9 mm from the ventricles), ``contrast`` times
    the grey-white difference above grey matter. Returns (brain-only image in MNI space, lesion mask z y x)."""
    from shmn.synthesis.randomised import labels as L
    from shmn.synthesis.randomised.artefacts import ArtefactConfig
    from shmn.synthesis.randomised.intensities import IntensityConfig
    from shmn.synthesis.randomised.pathology import PathologyConfig
    from shmn.synthesis.randomised.sampler import SynthesisConfig, synthesise

    one_mm = ArtefactConfig(thick_slice_probability=0.0, gap_probability=0.0, in_plane_mm=(1.0, 1.0), ghost_probability=0.0,
                            gibbs_probability=0.0, histogram_shift_probability=0.0, gamma_probability=0.0)
    config = SynthesisConfig(anatomies=("mni152",), head_probability=1.0, intensity=IntensityConfig(flair_probability=1.0, csf_unsuppressed_probability=0.0),
                             pathology=PathologyConfig(severity_weights=(1.0, 0.0, 0.0, 0.0)), artefacts=one_mm)
    sample = synthesise(seed, GRIDS["paper"], config)
    labels, image = sample.labels, sample.image.copy()
    distance = ndimage.distance_transform_edt(labels != L.VENTRICLE)
    inside = ndimage.binary_erosion(labels == L.WHITE_MATTER, iterations=4) & (distance >= 5) & (distance <= 9)
    candidates = np.argwhere(inside)
    cz, cy, cx = candidates[np.random.default_rng(seed).integers(len(candidates))]
    share = _sphere_share(RADIUS_MM)
    block = (slice(cz - 5, cz + 6), slice(cy - 5, cy + 6), slice(cx - 5, cx + 6))
    wm, gm = image[labels == L.WHITE_MATTER].mean(), image[labels == L.CORTEX].mean()
    image[block] = image[block] * (1 - share) + (gm + contrast * (gm - wm)) * share
    truth = np.zeros(image.shape, bool)
    truth[block] = share >= 0.5
    image = np.where(sample.brain, image - image[sample.brain].min() + 0.5, 0.0).astype(np.float32)  # positive, brain only
    native = sitk.GetImageFromArray(image)
    native.CopyInformation(model_grid_reference(GRIDS["paper"]))
    return native, truth


@pytest.mark.slow
@pytest.mark.parametrize("seed", PHANTOM_SEEDS)
def test_shipped_1mm_path_finds_a_01ml_lesion_the_2mm_path_misses(seed):
    """Found: the predicted mask covers at least half of the lesion's voxels; missed: less than half.

    Measured on six such phantoms (seeds 1000-1005, contrast 2, ``one_lesion_phantom``), the 1 mm
    path covered half or more of the lesion in 5 of 6 (0.40-0.99), the 2 mm path in 2 of 6 (0.00-1.00);
    both conditions of this test held for 3 of 6 (1000, 1002, 1003). Seed 1000 is the one the 2 mm path
    misses outright (0 % covered, its probability peaks at 0.26 in the lesion); the 1 mm path covers 77 %."""
    from shmn.io.registry import shipped_registry_path
    from shmn.preprocessing.preprocess import preprocess

    # the refiner is linked to the v1 randomised model (its prior); the v2 default runs the 2 mm path
    predictor = load_predictor("shmn4-fast-randomised@1.0.0+calibrated", registries=[shipped_registry_path()])
    assert predictor.refiner is not None, "shmn4-fast-randomised links no lesion refiner"
    native, truth = one_lesion_phantom(seed, PHANTOM_CONTRAST)
    assert truth.sum() * 1e-3 == pytest.approx(0.1, abs=0.01)
    prep = preprocess(native, predictor.preprocess)
    covered = {}
    for use_1mm in (True, False):
        # The two lesion grids compared as they are, without the native-grid boundary step after either.
        prediction = predict_native(native, predictor, PredictOptions(device="cpu", lesion_1mm=use_1mm, native_boundary=False), prep=prep)
        covered[use_1mm] = float(sitk.GetArrayViewFromImage(prediction.masks["pvl"])[truth].mean())
    assert covered[True] >= 0.5, f"1 mm path covers {covered[True]:.0%} of the 0.1 mL lesion"
    assert covered[False] < 0.5, f"2 mm path covers {covered[False]:.0%} of the 0.1 mL lesion"
