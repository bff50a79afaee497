"""Preprocessing: registration, model grid, masks both ways, on inputs with known geometry.

Inputs are built from the real MNI152 anatomy: a FLAIR-like image (CSF dark, GM brighter than WM,
a bright spherical 'lesion' at a known MNI position) moved by a known rigid transform and written
on a native grid with an LAS, RAS, LPS or oblique direction. Registration must recover the
transform; masks must go to the model grid and back onto the native grid in the right place.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.io.anatomy import CAUDATE, CEREBRAL_WM, LATERAL_VENTRICLES, PALLIDUM, PUTAMEN, THALAMUS, WM_HYPOINTENSITIES
from shmn.errors import ShmnError
from shmn.preprocessing.preprocess import (
    GRIDS,
    GridSpec,
    PreprocessConfig,
    model_grid_reference,
    preprocess,
    to_model_grid,
    to_native,
)
from shmn.preprocessing.registration import RegistrationConfig

LESION_RAS = (-27.0, -32.0, 22.0)   # left posterior periventricular white matter
LESION_RADIUS_MM = 7.0
# Brain-only inputs: these tests are about registration and grids; brain extraction has test_brain_extraction.py.
TINY = PreprocessConfig(grid=GRIDS["tiny"], brain_extraction="none")

# Direction matrices (LPS world, columns = where i, j, k point), named by the axis codes of nibabel.
DIRECTIONS = {
    "LPS": np.eye(3),
    "RAS": np.diag([-1.0, -1.0, 1.0]),
    "LAS": np.diag([1.0, -1.0, 1.0]),  # negative determinant, as dcm2niix often writes
    "oblique": np.array(sitk.VersorTransform((1.0, 0.3, 0.2), math.radians(25)).GetMatrix()).reshape(3, 3)
    @ np.diag([-1.0, -1.0, 1.0]),
}


def ras_to_lps(p):
    return np.array([-p[0], -p[1], p[2]], dtype=float)


def known_rigid(degrees=(8.0, -6.0, 10.0), translation_mm=(5.0, -4.0, 3.0)) -> sitk.Euler3DTransform:
    """MNI physical point -> native physical point, rotating about the MNI brain's centre."""
    t = sitk.Euler3DTransform()
    t.SetCenter((0.0, 18.0, 10.0))
    t.SetRotation(*[math.radians(d) for d in degrees])
    t.SetTranslation(translation_mm)
    return t


def flair_like_mni(anatomy, lesion=True) -> tuple[sitk.Image, sitk.Image]:
    """FLAIR-like contrast from the aparc+aseg labels (1 mm MNI), plus the lesion mask."""
    labels = sitk.GetArrayFromImage(anatomy.labels)
    brain = sitk.GetArrayFromImage(anatomy.template) > 0
    image = np.where(brain, 0.45, 0.0).astype(np.float32)   # unlabelled brain: sulcal CSF-ish
    image[(labels >= 1000) | np.isin(labels, (3, 42, 8, 47))] = 1.35  # cortex (brighter than WM in FLAIR)
    image[np.isin(labels, (10, 11, 12, 13, 49, 50, 51, 52, 16, 28, 60, 17, 53))] = 1.2
    image[np.isin(labels, CEREBRAL_WM + (7, 46, 85, 251, 252, 253, 254, 255))] = 1.0
    image[np.isin(labels, (WM_HYPOINTENSITIES,))] = 1.5
    image[np.isin(labels, LATERAL_VENTRICLES + (5, 44, 14, 15, 24))] = 0.2
    zz, yy, xx = np.indices(labels.shape)
    ref = anatomy.template
    centre_index = ref.TransformPhysicalPointToContinuousIndex(ras_to_lps(LESION_RAS).tolist())
    sphere = (xx - centre_index[0]) ** 2 + (yy - centre_index[1]) ** 2 + (zz - centre_index[2]) ** 2 <= LESION_RADIUS_MM**2
    if lesion:
        image[sphere] = 2.2
    out = sitk.GetImageFromArray(image * 400.0)
    out.CopyInformation(ref)
    mask = sitk.GetImageFromArray(sphere.astype(np.uint8))
    mask.CopyInformation(ref)
    return out, mask


def native_grid(direction: np.ndarray, spacing, truth: sitk.Transform, margin_mm=12.0) -> sitk.Image:
    """A grid with that direction and spacing covering the moved MNI brain (LPS bounding box of the template brain) plus a margin."""
    corners = np.array([[x, y, z] for x in (-72, 70) for y in (-73, 106) for z in (-71, 81)], dtype=float)  # LPS
    moved = np.array([truth.TransformPoint(c.tolist()) for c in corners])
    in_axes = moved @ direction  # coordinates along the grid's axes
    low, high = in_axes.min(0) - margin_mm, in_axes.max(0) + margin_mm
    spacing = np.array(spacing, dtype=float)
    size = np.ceil((high - low) / spacing).astype(int) + 1
    grid = sitk.Image(size.tolist(), sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin((direction @ low).tolist())
    return grid


def affine_parts(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    """(M, b) with transform(p) = M p + b, for Euler3D and affine transforms."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    centre, translation = np.array(transform.GetCenter()), np.array(transform.GetTranslation())
    return matrix, translation + centre - matrix @ centre


def child_sized(truth: sitk.Euler3DTransform, scale: float) -> sitk.AffineTransform:
    """The rigid truth with an isotropic scale: a smaller brain than the adult template."""
    affine = sitk.AffineTransform(3)
    affine.SetCenter(truth.GetCenter())
    affine.SetMatrix((np.array(truth.GetMatrix()).reshape(3, 3) * scale).ravel().tolist())
    affine.SetTranslation(truth.GetTranslation())
    return affine


def make_native(anatomy, direction_code="LAS", spacing=(3.0, 3.0, 3.0), truth=None, lesion=True):
    """(native image, native lesion mask, truth transform MNI -> native)."""
    truth = truth if truth is not None else known_rigid()
    mni_image, _ = flair_like_mni(anatomy, lesion)
    grid = native_grid(DIRECTIONS[direction_code], spacing, truth)
    image = sitk.Resample(mni_image, grid, truth.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    # The mask exactly: every native voxel centre mapped back into MNI and tested against the sphere.
    size = grid.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3).astype(float)
    to_physical = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())
    points = idx @ to_physical.T + np.array(grid.GetOrigin())
    matrix, offset = affine_parts(truth)
    mni_points = (points - offset) @ np.linalg.inv(matrix).T
    inside = np.linalg.norm(mni_points - ras_to_lps(LESION_RAS), axis=1) <= LESION_RADIUS_MM
    mask = sitk.GetImageFromArray(inside.reshape(size).transpose(2, 1, 0).astype(np.uint8))
    mask.CopyInformation(grid)
    return image, mask, truth


def landmark_errors(found: sitk.Transform, truth: sitk.Transform) -> list[float]:
    points = [ras_to_lps(ras).tolist() for ras in (LESION_RAS, (30.0, 20.0, 10.0), (0.0, -70.0, 40.0), (-40.0, 10.0, -10.0))]
    return [float(np.linalg.norm(np.subtract(found.TransformPoint(p), truth.TransformPoint(p)))) for p in points]


def centre_ras(mask: sitk.Image) -> np.ndarray:
    """Centre of mass of a mask in RAS mm."""
    arr = sitk.GetArrayViewFromImage(mask)
    zyx = np.argwhere(arr > 0).mean(0)
    p = mask.TransformContinuousIndexToPhysicalPoint(zyx[::-1].tolist())
    return np.array([-p[0], -p[1], p[2]])


def dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / max(1, a.sum() + b.sum())


def test_model_grid_reference_is_centred_on_the_brain(anatomy):
    for grid in GRIDS.values():
        ref = model_grid_reference(grid)
        assert ref.GetSize() == grid.size
        assert ref.GetDirection() == anatomy.template.GetDirection()
        centre = ref.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in grid.size])
        brain = np.argwhere(sitk.GetArrayViewFromImage(anatomy.template) > 0)
        bbox_centre = anatomy.template.TransformContinuousIndexToPhysicalPoint(((brain.min(0) + brain.max(0)) / 2)[::-1].tolist())
        assert np.allclose(centre, bbox_centre, atol=1e-6)
    assert GRIDS["fast"] == GridSpec(2.0, (80, 96, 80))


@pytest.mark.parametrize("code", ["LAS", "RAS", "LPS", "oblique"])
def test_registration_and_masks_both_ways(anatomy, code):
    # The oblique case is also anisotropic and child-sized (affine scale 0.88).
    spacing = (2.5, 3.0, 3.5) if code == "oblique" else (3.0, 3.0, 3.0)
    truth = child_sized(known_rigid(), 0.88) if code == "oblique" else known_rigid()
    native, lesion, truth = make_native(anatomy, code, spacing, truth)
    case = preprocess(native, TINY)
    assert case.quality["ok"] and case.quality["start"] == "header", case.quality
    # (a) the transform found maps MNI landmarks where the truth does
    assert max(landmark_errors(case.transform, truth)) < 3.0, (code, landmark_errors(case.transform, truth))
    # (b) the lesion reaches the model grid at its MNI position, and comes back where it was
    on_grid = to_model_grid(lesion, case)
    assert on_grid.dtype == np.uint8 and on_grid.shape == GRIDS["tiny"].shape_zyx
    assert np.linalg.norm(centre_ras(_on_reference(on_grid, case)) - LESION_RAS) < 3.0
    back = to_native(on_grid, case, native)
    assert back.GetPixelID() == sitk.sitkUInt8
    assert back.GetSize() == native.GetSize() and back.GetOrigin() == native.GetOrigin()
    assert back.GetDirection() == native.GetDirection() and back.GetSpacing() == native.GetSpacing()
    expected_ras = np.array(truth.TransformPoint(ras_to_lps(LESION_RAS).tolist())) * [-1, -1, 1]
    assert np.linalg.norm(centre_ras(back) - expected_ras) < 3.0
    assert np.linalg.norm(centre_ras(lesion) - expected_ras) < 1.5


def _on_reference(array: np.ndarray, case) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(case.reference)
    return image


def test_round_trip_keeps_a_blob(anatomy):
    """A native blob to the model grid and back: Dice > 0.8 (grid at the native resolution)."""
    native, _, _ = make_native(anatomy, "LAS", (4.0, 4.0, 4.0))
    case = preprocess(native, PreprocessConfig(grid=GRIDS["tiny"], brain_extraction="none", n4=False))
    centre = np.array(native.GetSize()) // 2
    zz, yy, xx = np.indices(native.GetSize()[::-1])
    blob = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (zz - centre[2]) ** 2 <= 5.5**2).astype(np.uint8)
    mask = sitk.GetImageFromArray(blob)
    mask.CopyInformation(native)
    back = sitk.GetArrayFromImage(to_native(to_model_grid(mask, case), case, native))
    assert dice(back, blob) > 0.8
    probabilities = to_native(to_model_grid(mask, case).astype(np.float32), case, native, interpolation="linear")
    assert probabilities.GetPixelID() == sitk.sitkFloat32
    assert dice(sitk.GetArrayFromImage(probabilities) >= 0.5, blob) > 0.8
    with pytest.raises(ShmnError, match="interpolation"):
        to_native(to_model_grid(mask, case), case, native, interpolation="cubic")
    with pytest.raises(ShmnError, match="shape"):
        to_native(blob, case, native)


def test_outputs_are_normalised_on_the_grid_and_deterministic(anatomy):
    native, _, _ = make_native(anatomy, "RAS")
    first, second = preprocess(native, TINY), preprocess(native, TINY)
    shape = GRIDS["tiny"].shape_zyx
    assert first.image.shape == shape and first.image.dtype == np.float32
    assert first.brain.shape == shape and first.brain.dtype == bool
    assert np.isfinite(first.image).all()
    assert not first.image[~first.brain].any()
    inside = first.image[first.brain]
    assert abs(float(np.median(inside))) < 1.0 and 0.5 < float(inside.std()) < 3.0
    assert first.brain.mean() > 0.25
    np.testing.assert_array_equal(first.image, second.image)
    np.testing.assert_array_equal(first.brain, second.brain)
    assert first.transform.GetParameters() == second.transform.GetParameters()
    assert set(first.timings_s) >= {"register", "n4", "resample"}
    import json

    json.dumps(first.params)
    json.dumps(first.quality)
    assert first.params["grid"] == {"spacing_mm": 4.0, "size": [40, 48, 40]}
    assert first.quality["warning"] is None


def test_register_false_is_identity_on_an_mni_input(anatomy):
    mni_image, mni_mask = flair_like_mni(anatomy)
    small = sitk.BinShrink(mni_image, [2, 2, 2])
    case = preprocess(small, PreprocessConfig(grid=GRIDS["tiny"], brain_extraction="none", register=False))
    matrix = np.array(case.quality["matrix_mni_to_native_lps"])
    np.testing.assert_allclose(matrix, np.eye(4))
    np.testing.assert_allclose(case.transform.TransformPoint((10.0, -20.0, 30.0)), (10.0, -20.0, 30.0))
    on_grid = to_model_grid(mni_mask, case)
    assert np.linalg.norm(centre_ras(_on_reference(on_grid, case)) - LESION_RAS) < 2.5
    assert case.quality["ok"] and case.quality["registered"] is False
    # An input that is NOT in MNI space, with registration off, is flagged rather than trusted.
    native, _, _ = make_native(anatomy, "LAS", truth=known_rigid(degrees=(0.0, 0.0, 180.0), translation_mm=(0, 0, 0)))
    off = preprocess(native, PreprocessConfig(grid=GRIDS["tiny"], brain_extraction="none", register=False))
    assert off.quality["ok"] is False and "MNI152 space" in off.quality["warning"]


def test_a_brain_upside_down_to_its_header_is_found_by_trying_rotations(anatomy):
    """The header's orientation is wrong by 180 degrees about the S axis: the retry must find it."""
    native, _, truth = make_native(anatomy, "RAS", truth=known_rigid(degrees=(0.0, 0.0, 180.0)))
    case = preprocess(native, TINY)
    assert case.quality["ok"], case.quality
    assert case.quality["start"] != "header"
    assert max(landmark_errors(case.transform, truth)) < 3.0


def test_noise_input_gives_a_warning_not_a_crash():
    rng = np.random.default_rng(0)
    noise = sitk.GetImageFromArray(rng.random((50, 60, 50)).astype(np.float32) * 100)
    noise.SetSpacing((3.0, 3.0, 3.0))
    noise.SetOrigin((-75.0, -90.0, -60.0))
    case = preprocess(noise, TINY)
    assert case.quality["ok"] is False
    assert "registration" in case.quality["warning"]
    assert case.image.shape == GRIDS["tiny"].shape_zyx and np.isfinite(case.image).all()


def test_a_partly_covered_brain_is_reported(anatomy):
    """A slab with the upper half of the brain: registered on what it covers, the grid's brain mask limited to the
    field of view, a warning about the field of view (not about registration)."""
    native, _, truth = make_native(anatomy, "RAS")
    slab = native[:, :, native.GetSize()[2] // 2:]
    case = preprocess(slab, TINY)
    assert case.quality["ok"] and max(landmark_errors(case.transform, truth)) < 3.0, case.quality
    assert 0.3 < case.quality["brain_in_field_of_view"] < 0.9
    assert "field of view" in case.quality["warning"] and "registration" not in case.quality["warning"]
    assert not case.image[~case.brain].any()


def test_registration_that_cannot_run_is_a_clear_error():
    # A volume far too small to hold any of the template brain's samples: ITK throws; the user gets one line.
    tiny = sitk.Image([4, 4, 4], sitk.sitkFloat32) + 1.0
    tiny.SetOrigin((5000.0, 5000.0, 5000.0))
    with pytest.raises(ShmnError, match="registration"):
        preprocess(tiny, PreprocessConfig(grid=GRIDS["tiny"], brain_extraction="none", registration=RegistrationConfig(retry_rotations=False)))


def test_phantom_pvl_lands_in_periventricular_white_matter(anatomy, request):
    """Phantom cases (real native geometry: LAS/RAS/LPS/oblique, child-sized, deformed) register, and their
    PVL masks reach the model grid inside the template's periventricular white matter."""
    from scipy import ndimage

    from shmn.io.manifest import load_manifest
    from shmn.io.volume_io import read_volume

    manifest = load_manifest(request.getfixturevalue("small_cohort") / "pvl")
    grid = GRIDS["fast"]
    reference = model_grid_reference(grid)
    labels = sitk.GetArrayFromImage(sitk.Resample(anatomy.labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    ventricles = np.isin(labels, LATERAL_VENTRICLES)
    # The phantom puts PVL in white matter within 45 mm of the ventricles, severe cases reaching the deep grey matter.
    near_ventricles = ndimage.distance_transform_edt(~ventricles, sampling=grid.spacing_mm) <= 45.0
    tissue = np.isin(labels, CEREBRAL_WM + (WM_HYPOINTENSITIES,) + THALAMUS + CAUDATE + PUTAMEN + PALLIDUM)
    # Two voxels of tolerance: the phantom deforms each subject, an affine registration cannot undo that.
    periventricular = ndimage.binary_dilation((tissue & near_ventricles) | ventricles, iterations=2)
    checked = 0
    for entry in [c for c in manifest.cases if c.pvl][:2]:
        native = read_volume(manifest.resolve(entry.image))
        native_pvl = read_volume(manifest.resolve(entry.pvl), check_values=False)
        if not sitk.GetArrayViewFromImage(native_pvl).any():
            continue
        case = preprocess(native, PreprocessConfig(grid=grid, brain_extraction="none"))
        assert case.quality["ok"], (entry.id, case.quality)
        pvl = to_model_grid(native_pvl, case) > 0
        assert pvl.any(), entry.id
        assert periventricular[pvl].mean() > 0.9, (entry.id, float(periventricular[pvl].mean()))
        assert np.isin(labels[pvl], CEREBRAL_WM + (WM_HYPOINTENSITIES,)).mean() > 0.7, entry.id
        back = sitk.GetArrayFromImage(to_native(pvl.astype(np.uint8), case, native))
        assert dice(back, sitk.GetArrayFromImage(native_pvl)) > 0.7, entry.id
        checked += 1
    assert checked >= 1
