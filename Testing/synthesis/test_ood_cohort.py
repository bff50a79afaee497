"""The out-of-distribution cohort (benchmarks/ood_cohort): a second generator that shares no code with
the training synthesis, writes a manifest `shmn evaluate` reads, and labels on each image's own grid."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from shmn.io.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[2]
OOD = ROOT / "benchmarks" / "ood_cohort"

PROBE = """
import json, sys
sys.path.insert(0, {folder!r})
import ood_phantom
ood_phantom.generate({out!r}, n=1, seed=3, log=lambda *_: None)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("shmn"))))
"""


def test_the_ood_generator_imports_nothing_from_the_training_synthesis(tmp_path):
    for source in OOD.glob("*.py"):
        imports = re.findall(r"^\s*(?:from|import)\s+(shmn[\w.]*)(?:\s+import\s+([\w, ]+))?", source.read_text(), re.MULTILINE)
        assert all(module.startswith(("shmn.io", "shmn.errors")) for module, _names in imports), (source, imports)
    out = tmp_path / "ood"
    result = subprocess.run([sys.executable, "-c", PROBE.format(folder=str(OOD), out=str(out))], capture_output=True, text=True,
                            cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded and all(m == "shmn" or m.startswith(("shmn.io", "shmn.errors", "shmn.contract")) for m in loaded), loaded  # file I/O and its names
    assert not any(m.startswith("shmn.synthesis") for m in loaded)

    # what it wrote is a dataset `shmn evaluate` can read: test split, labels on the image's grid
    manifest = load_manifest(out)
    (case,) = manifest.cases
    assert case.split == "test" and case.macs in ("mild", "severe") and manifest.synthetic
    image = sitk.ReadImage(str(manifest.resolve(case.image)))
    for label in (case.pvl, case.ventricles):
        mask = sitk.ReadImage(str(manifest.resolve(label)))
        assert mask.GetSize() == image.GetSize() and np.allclose(mask.GetDirection(), image.GetDirection())
        assert np.allclose(mask.GetOrigin(), image.GetOrigin())
    spacing = sorted(image.GetSpacing())
    assert spacing[-1] >= 3.0 and spacing[0] <= 1.0  # a clinical 2D grid: thick slices, fine in plane
    ventricles = sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.resolve(case.ventricles))))
    ml = ventricles.sum() * np.prod(image.GetSpacing()) / 1000
    assert 5 < ml < 80, ml
    record = json.loads((out / "cases.json").read_text())[case.id]
    assert record["severity"] in ("none", "mild", "moderate", "severe")


def _ood_phantom():
    sys.path.insert(0, str(OOD))
    try:
        import ood_phantom
    finally:
        sys.path.remove(str(OOD))
    return ood_phantom


def test_other_acquisitions_image_the_same_subject_with_their_own_grids_blur_and_centre_labels():
    ood_phantom = _ood_phantom()
    template = ood_phantom.load_template()
    seed = int(np.random.SeedSequence([0, 1]).generate_state(1)[0])  # a severe case (cohort seed 0, case 1)
    box = ood_phantom.make_case(template, seed, "box")
    assert "acquisition" not in box["record"]
    thick_axis = int(np.argmax(box["image"].GetSpacing()))
    for acquisition in ("clinical", "3d"):
        case = ood_phantom.make_case(template, seed, acquisition)
        record = case["record"]
        same = ("severity", "plane", "orientation", "motor_ml", "ventricle_growth_mm", "macs_flipped")
        assert {k: box["record"][k] for k in same} == {k: record[k] for k in same}, acquisition
        assert box["macs"] == case["macs"] and record["acquisition"] == acquisition and 0.3 <= record["psf_sigma_voxels"] <= 0.6
        spacing = np.array(case["image"].GetSpacing())
        if acquisition == "clinical":  # the box cohort's slices, now with a gap between them
            assert record["slice_mm"] == box["record"]["slice_mm"] and record["in_plane_mm"] == box["record"]["in_plane_mm"]
            assert abs(spacing[thick_axis] - (box["image"].GetSpacing()[thick_axis] + record["gap_mm"])) < 0.02
        else:  # a 3D FLAIR: isotropic voxels of about 1 mm
            assert np.allclose(spacing, spacing[0]) and 0.9 <= spacing[0] <= 1.2 and record["gap_mm"] == 0.0
        image = sitk.GetArrayFromImage(case["image"])
        for key in ("pvl", "ventricles"):  # labels on the image's own grid
            assert case[key].GetSize() == case["image"].GetSize() and np.allclose(case[key].GetOrigin(), case["image"].GetOrigin())
        # the same lesions, labelled at voxel centres instead of by covered share: close in volume, not identical
        assert 0.8 < record["pvl_ml"] / box["record"]["pvl_ml"] < 1.25 and record["pvl_ml"] > 1.0, acquisition
        # labels stay aligned with the image through the new profile and blur: lesion voxels are bright on this FLAIR,
        # ventricle voxels dark, against the tissue just around each
        lesions = sitk.GetArrayFromImage(case["pvl"]) > 0
        for key, brighter in (("pvl", True), ("ventricles", False)):
            mask = sitk.GetArrayFromImage(case[key]) > 0
            ring = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(mask) & ~lesions
            assert (np.median(image[mask]) > np.median(image[ring])) == brighter, (acquisition, key)
    with pytest.raises(ValueError, match="acquisition"):
        ood_phantom.make_case(template, seed, "thin")


def test_normal_findings_brighten_the_same_subject_and_never_enter_a_label():
    ood_phantom = _ood_phantom()
    template = ood_phantom.load_template()
    seed = int(np.random.SeedSequence([0, 0]).generate_state(1)[0])  # a lesion-free child (cohort seed 0, case 0)
    plain = ood_phantom.make_case(template, seed)
    with_findings = ood_phantom.make_case(template, seed, normal_findings=True)
    assert plain["record"]["severity"] == "none" and with_findings["macs"] == plain["macs"]
    record = with_findings["record"]
    assert record["normal_findings"] and record["normal_findings_ml"] > 0.1 and "normal_findings" not in plain["record"]
    for key in ("pvl", "ventricles"):  # the labels are the plain subject's: findings are not lesions
        assert np.array_equal(sitk.GetArrayFromImage(with_findings[key]), sitk.GetArrayFromImage(plain[key])), key
    assert sitk.GetArrayFromImage(with_findings["pvl"]).sum() == 0
    before, after = (sitk.GetArrayFromImage(c["image"]) for c in (plain, with_findings))
    changed = np.abs(after - before) > 0.01 * np.percentile(before, 99)
    assert changed.sum() > 100 and (after[changed] > before[changed]).mean() > 0.95  # brighter than the white matter they replace


def _tiny_cohort(folder: Path, spacing: tuple[float, float, float]) -> None:
    image = np.full((12, 24, 20), 100.0, np.float32)
    lesion = np.zeros(image.shape, np.uint8)
    lesion[5:8, 10:14, 8:12] = 1
    image[lesion > 0] = 300.0
    for sub, array in (("images", image), ("labels/pvl", lesion), ("labels/ventricles", np.zeros_like(lesion))):
        out = sitk.GetImageFromArray(array)
        out.SetSpacing(spacing)
        (folder / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(out, str(folder / sub / "ood000.nii.gz"))


def test_the_acquisition_montage_shows_each_cohort_and_names_a_missing_file(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import acquisition_montage
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    _tiny_cohort(tmp_path / "box", (1.0, 1.0, 3.0))
    _tiny_cohort(tmp_path / "thin", (1.0, 1.0, 1.0))
    out = tmp_path / "montage.png"
    assert acquisition_montage.main(["--case", "ood000", "--cohort", f"box={tmp_path / 'box'}", "--cohort", f"thin={tmp_path / 'thin'}",
                                     "-o", str(out)]) == 0
    assert out.stat().st_size > 5000
    with pytest.raises(SystemExit, match="ood001.nii.gz not found"):
        acquisition_montage.main(["--case", "ood001", "--cohort", f"box={tmp_path / 'box'}", "-o", str(out)])
    with pytest.raises(SystemExit, match="expected NAME=FOLDER"):
        acquisition_montage.main(["--case", "ood000", "--cohort", str(tmp_path / "box"), "-o", str(out)])
