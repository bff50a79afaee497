"""The synthetic cohort (`shmn phantom`): layout, labels, statistics, appearance, geometry, reproducibility, CLI."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from shmn.cli import main
from shmn.io.manifest import SPLITS, label_status, load_manifest
from shmn.io.volume_io import read_volume, same_geometry
from shmn.synthesis import EXPECTED_RANGES, CohortConfig, generate_cohort
from shmn.io.splits import assign_splits
from shmn.synthesis.cohort import macs_groups

SMALL = CohortConfig(seed=7, n_pvl=6, n_macs=9, n_ventricle_labels=3, size="small")  # the conftest cohort


def _cohort(root: Path) -> dict:
    return json.loads((root / "cohort.json").read_text())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def larger_cohort(tmp_path_factory):
    """Thirty dataset-2 cases: enough for the severe fraction and the spread of acquisitions."""
    root = tmp_path_factory.mktemp("larger") / "cohort"
    generate_cohort(root, CohortConfig(seed=3, n_pvl=1, n_macs=30, n_ventricle_labels=10, size="small"), progress=False)
    return root


def test_manifests_validate_and_carry_the_configured_labels(small_cohort):
    pvl = load_manifest(small_cohort / "pvl")
    macs = load_manifest(small_cohort / "macs")
    assert pvl.synthetic and macs.synthetic
    assert "synthetic" in pvl.description.lower() and "synthetic" in macs.description.lower()
    assert label_status(pvl) == {"pvl": 6, "ventricles": 0, "macs": 0, "cases": 6}
    assert label_status(macs) == {"pvl": 0, "ventricles": 3, "macs": 9, "cases": 9}
    for manifest in (pvl, macs):
        assert {c.split for c in manifest.cases} == set(SPLITS)
        assert len(manifest.split("train")) >= len(manifest.cases) // 2
    # Hidden ground truth for dataset 2: every case, outside the manifest.
    for case in macs.cases:
        assert (small_cohort / "macs" / "groundtruth" / "pvl" / f"{case.id}.nii.gz").is_file()
        assert (small_cohort / "macs" / "groundtruth" / "ventricles" / f"{case.id}.nii.gz").is_file()
    cohort = _cohort(small_cohort)
    assert cohort["synthetic"] is True and cohort["config"]["seed"] == 7
    assert [c["split"] for c in cohort["cases"] if c["dataset"] == "macs"] == [c.split for c in macs.cases]
    assert sorted(cohort["ventricle_label_order"]) == sorted(c.id for c in macs.cases if c.ventricles)
    assert (small_cohort / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_images_and_masks_share_the_clinical_grid(small_cohort):
    for name in ("pvl", "macs"):
        manifest = load_manifest(small_cohort / name)
        for case in manifest.cases[:3]:
            image = read_volume(manifest.resolve(case.image))
            pvl_path = manifest.resolve(case.pvl) if case.pvl else small_cohort / name / "groundtruth" / "pvl" / f"{case.id}.nii.gz"
            pvl = read_volume(pvl_path)
            assert image.GetPixelID() == sitk.sitkInt16 and pvl.GetPixelID() == sitk.sitkUInt8
            assert same_geometry(image, pvl)
            assert 30 <= min(image.GetSize()) and max(image.GetSize()) <= 80  # "small": about 48 voxels a side
            assert set(np.unique(sitk.GetArrayViewFromImage(pvl))) == {0, 1}  # every case has PVL


def test_images_are_flair_like(small_cohort):
    """Median intensity: ventricles < periventricular white matter < lesions, in every dataset-1 case."""
    manifest = load_manifest(small_cohort / "pvl")
    for case in manifest.cases:
        image = sitk.GetArrayFromImage(read_volume(manifest.resolve(case.image))).astype(np.float32)
        pvl = sitk.GetArrayFromImage(read_volume(manifest.resolve(case.pvl))) > 0
        ventricles_image = read_volume(small_cohort / "pvl" / "groundtruth" / "ventricles" / f"{case.id}.nii.gz")
        ventricles = sitk.GetArrayViewFromImage(ventricles_image) > 0
        # Tissue 5-10 mm from the ventricle wall, away from lesions, is mostly white matter.
        distance = ndimage.distance_transform_edt(~ventricles, sampling=ventricles_image.GetSpacing()[::-1])
        lesion_margin = ndimage.binary_dilation(pvl, iterations=2)
        white_matter = (distance >= 5) & (distance <= 10) & ~lesion_margin
        assert np.median(image[ventricles]) < np.median(image[white_matter]) < np.median(image[pvl]), case.id


def test_lesions_lie_in_periventricular_white_matter(small_cohort, larger_cohort):
    cases = _cohort(small_cohort)["cases"] + _cohort(larger_cohort)["cases"]
    volumes = np.array([c["reference_lesion_volume_ml"] for c in cases])
    fractions = np.array([c["periventricular_wm_fraction"] for c in cases])
    assert (volumes * fractions).sum() / volumes.sum() > 0.8  # pooled over all lesion voxels
    assert np.median(fractions) > 0.8 and fractions.min() > 0.5
    assert np.median([c["posterior_fraction"] for c in cases]) > 0.5  # mostly trigonal / posterior


def test_volumes_lie_in_the_documented_ranges(small_cohort, larger_cohort):
    for root in (small_cohort, larger_cohort):
        for case in _cohort(root)["cases"]:
            for key, (low, high) in EXPECTED_RANGES.items():
                assert low <= case[key] <= high, (case["id"], key, case[key])
            assert case["lesion_count"] >= 1


def test_severe_fraction_and_label_noise(larger_cohort):
    cohort = _cohort(larger_cohort)
    macs = [c for c in cohort["cases"] if c["dataset"] == "macs"]
    severe = sum(c["macs_group"] == "severe" for c in macs) / len(macs)
    assert 0.2 <= severe <= 0.47
    burden = {g: np.median([c["motor_burden_ml"] for c in macs if c["macs_group_true"] == g]) for g in ("mild", "severe")}
    assert burden["severe"] > 2 * burden["mild"]
    assert sum(c["macs_label_flipped"] for c in macs) <= len(macs) // 4
    manifest = load_manifest(larger_cohort / "macs")
    for group in ("mild", "severe"):  # stratified: both groups in train and test
        assert {c.split for c in manifest.cases if c.macs == group} >= {"train", "test"}


def test_macs_rule_hits_the_target_fraction():
    rng = np.random.default_rng(0)
    config = CohortConfig()
    burdens = list(rng.lognormal(0, 1, 3000))
    threshold, true, observed = macs_groups(burdens, list(rng.random(3000)), config)
    assert true.count("severe") / 3000 == pytest.approx(config.true_severe_fraction(), abs=0.01)
    assert observed.count("severe") / 3000 == pytest.approx(1 / 3, abs=0.03)


def test_splits_are_70_10_20_and_stratified():
    strata = ["severe"] * 29 + ["mild"] * 58
    splits = assign_splits(strata, np.random.default_rng(1))
    assert [splits.count(s) for s in SPLITS] == [61, 9, 17]
    severe = [s for s, g in zip(splits, strata) if g == "severe"]
    assert 19 <= severe.count("train") <= 22 and 4 <= severe.count("test") <= 7


def test_acquisitions_vary_in_orientation_including_negative_determinant(small_cohort, larger_cohort):
    determinants, codes = [], set()
    for root in (small_cohort, larger_cohort):
        for name in ("pvl", "macs"):
            for image_path in sorted((root / name / "images").glob("*.nii.gz")):
                reader = sitk.ImageFileReader()
                reader.SetFileName(str(image_path))
                reader.ReadImageInformation()
                direction = np.reshape(reader.GetDirection(), (3, 3))
                determinants.append(np.linalg.det(direction))
                codes.add(sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(reader.GetDirection())
                          if np.allclose(np.abs(direction), np.round(np.abs(direction))) else "oblique")
    assert min(determinants) < 0 < max(determinants)
    assert len(codes) >= 3 and "oblique" in codes
    thickness = [c["spacing_mm"][2] for c in _cohort(larger_cohort)["cases"]]
    assert max(thickness) - min(thickness) > 0.5


def test_same_seed_same_bytes_and_cases_independent_of_count(tmp_path, small_cohort):
    config = CohortConfig(seed=7, n_pvl=1, n_macs=2, n_ventricle_labels=1, size="small", heads=False)
    generate_cohort(tmp_path / "a", config, progress=False)
    generate_cohort(tmp_path / "b", config, progress=False, workers=2)
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first.keys() == second.keys() and first == second
    image = tmp_path / "a" / "pvl" / "images" / "pvl_000.nii.gz"
    assert image.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header carries no time stamp
    # Case pvl_000 of seed 7 is the same in a 3-case and in the 15-case conftest cohort.
    assert image.read_bytes() == (small_cohort / "pvl" / "images" / "pvl_000.nii.gz").read_bytes()
    with gzip.open(image) as f:
        assert len(f.read()) > 348  # a real NIfTI behind the header

    generate_cohort(tmp_path / "c", CohortConfig(seed=8, n_pvl=1, n_macs=2, n_ventricle_labels=1, size="small"),
                    progress=False)
    assert (tmp_path / "c" / "pvl" / "images" / "pvl_000.nii.gz").read_bytes() != image.read_bytes()


@pytest.mark.parametrize("options, message", [
    (["--n-pvl", "0"], "--n-pvl"),
    (["--n-pvl", "-3"], "--n-pvl"),
    (["--n-macs", "many"], "--n-macs"),
    (["--n-ventricle-labels", "5", "--n-macs", "4"], "--n-ventricle-labels"),
    (["--size", "huge"], "--size"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_options_give_one_line_and_exit_2(tmp_path, capsys, options, message):
    assert main(["phantom", "-o", str(tmp_path / "out"), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"shmn: error: {message}")
    assert not (tmp_path / "out").exists()


def test_cli_builds_refuses_to_overwrite_then_overwrites(tmp_path, capsys):
    out = tmp_path / "cohort"
    args = ["-q", "phantom", "-o", str(out), "--size", "small", "--n-pvl", "1", "--n-macs", "2",
            "--n-ventricle-labels", "1", "--seed", "5"]
    assert main(args) == 0
    before = _files(out)
    assert load_manifest(out / "macs").cases[0].macs in ("mild", "severe")
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--overwrite" in err[0]
    assert main(args + ["--overwrite"]) == 0
    assert _files(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left behind


@pytest.fixture(scope="module")
def head_cohort(tmp_path_factory):
    """Heads (the default) at the small size: skull, scalp, eyes, neck around the brain."""
    root = tmp_path_factory.mktemp("heads") / "cohort"
    generate_cohort(root, CohortConfig(seed=12, n_pvl=4, n_macs=4, n_ventricle_labels=1, size="small"), progress=False)
    return root


def test_heads_have_tissue_outside_the_brain_and_a_reference_brain_mask(head_cohort, small_cohort):
    cohort = _cohort(head_cohort)
    assert cohort["config"]["heads"] is True and "Whole heads" in cohort["description"]
    for record in cohort["cases"]:
        folder = head_cohort / record["dataset"]
        image = read_volume(folder / "images" / f"{record['id']}.nii.gz")
        brain = read_volume(folder / "labels" / "brain" / f"{record['id']}.nii.gz")
        assert same_geometry(image, brain)
        values = sitk.GetArrayFromImage(image).astype(np.float32)
        inside = sitk.GetArrayFromImage(brain) > 0
        assert record["brain_volume_ml"] == pytest.approx(inside.sum() * np.prod(image.GetSpacing()) / 1000, abs=0.02)
        # Scalp fat and marrow are bright: the brightest tissue outside the brain rivals the brain's median.
        shell = ndimage.binary_dilation(inside, iterations=4) & ~inside
        assert np.percentile(values[shell], 95) > 0.6 * np.median(values[inside])
        head = record["head"]
        assert head["field_of_view"] in ("brain", "head", "partial")
        assert head["intracranial_volume_ml"] > record["reference_lesion_volume_ml"]
    # Brain-only cohorts keep nothing outside the brain (noise only) and still get their brain masks.
    record = _cohort(small_cohort)["cases"][0]
    folder = small_cohort / record["dataset"]
    image = sitk.GetArrayFromImage(read_volume(folder / "images" / f"{record['id']}.nii.gz")).astype(np.float32)
    inside = sitk.GetArrayFromImage(read_volume(folder / "labels" / "brain" / f"{record['id']}.nii.gz")) > 0
    far = ~ndimage.binary_dilation(inside, iterations=3)
    assert np.percentile(image[far], 95) < 0.25 * np.median(image[inside])
    assert record["head"] is None


def test_head_fields_of_view_are_whole_heads_tight_boxes_and_partial_stacks(larger_cohort):
    cases = _cohort(larger_cohort)["cases"]
    kinds = {c["head"]["field_of_view"] for c in cases}
    assert kinds == {"brain", "head", "partial"}
    partial = [c for c in cases if c["head"]["field_of_view"] == "partial"]
    assert all(c["spacing_mm"][2] >= 4.0 and 0.75 <= c["head"]["covered"] <= 0.95 for c in partial)
    whole = [c for c in cases if c["head"]["field_of_view"] == "head"]
    tight = [c for c in cases if c["head"]["field_of_view"] == "brain"]
    # A whole head's field of view holds far more than the brain; a tight box little more.
    def ratio(c):
        return np.prod(c["size"]) * np.prod(c["spacing_mm"]) / 1000 / c["brain_volume_ml"]

    assert min(map(ratio, whole)) > max(1.5, np.median(list(map(ratio, tight))))


def test_brain_only_option_on_the_command_line(tmp_path):
    out = tmp_path / "cohort"
    assert main(["-q", "phantom", "-o", str(out), "--size", "small", "--n-pvl", "1", "--n-macs", "1",
                 "--n-ventricle-labels", "0", "--seed", "5", "--brain-only"]) == 0
    cohort = _cohort(out)
    assert cohort["config"]["heads"] is False and cohort["cases"][0]["head"] is None
