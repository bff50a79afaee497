"""`shmn predict` on bad input: one clear error line, exit status 2, nothing written.

Every case goes through the real command line (shmn.cli.main) with a real tiny model file.
"""

from __future__ import annotations

import gzip
import json
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from shmn.cli import main
from shmn.io.registry import register_model
from engine_fixtures import make_tiny_model

# One worker runs this module (pytest -n 2 --dist loadgroup): its fixtures are built once.
pytestmark = pytest.mark.xdist_group("predict_bad_input")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path, _ = make_tiny_model(tmp_path_factory.mktemp("models"))
    return path


def _volume(path, array=None, spacing=(1.0, 1.0, 1.0)):
    array = np.random.default_rng(0).random((12, 14, 10)).astype(np.float32) if array is None else array
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def _non_image(folder):
    path = folder / "scan.nrrd"
    path.write_text("this is a radiology report, not an image\n")
    return path, "not a readable image"


def _two_d(folder):
    path = folder / "slice.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20), np.float32)), str(path))
    return path, "2D image"


def _four_d(folder):
    path = folder / "fmri.nii.gz"
    nib.Nifti1Image(np.ones((8, 8, 8, 3), np.float32), np.eye(4)).to_filename(str(path))
    return path, "4D image"


def _empty(folder):
    path = folder / "empty.nii.gz"
    path.write_bytes(b"")
    return path, "file is empty"


def _all_zero(folder):
    return _volume(folder / "zeros.nii.gz", np.zeros((12, 14, 10), np.float32)), "every voxel is zero"


def _nan(folder):
    array = np.ones((12, 14, 10), np.float32)
    array[3, 4, 5] = np.nan
    return _volume(folder / "nan.nii.gz", array), "NaN or Inf"


def _inf(folder):
    array = np.ones((12, 14, 10), np.float32)
    array[1, 2, 3] = np.inf
    return _volume(folder / "inf.nrrd", array), "NaN or Inf"


def _absurd_spacing(folder):
    return _volume(folder / "huge.nii.gz", spacing=(1.0, 1.0, 250.0)), "spacing"


def _bad_dicom(folder):
    dicom = folder / "dicom_series"
    dicom.mkdir()
    (dicom / "IM0001.dcm").write_bytes(b"DICM" + os.urandom(300))
    (dicom / "IM0002.dcm").write_bytes(b"\x00" * 132 + b"DICM" + b"garbage")
    return dicom, "no readable DICOM series"


def _truncated(folder):
    full = _volume(folder / "full.nii.gz", np.random.default_rng(1).random((40, 40, 40)).astype(np.float32))
    path = folder / "truncated.nii.gz"
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    return path, "truncated"


def _missing(folder):
    return folder / "no_such_scan.nii.gz", "no such file"


BAD_INPUTS = {
    "non-image": _non_image,
    "2D": _two_d,
    "4D": _four_d,
    "empty": _empty,
    "all-zero": _all_zero,
    "NaN": _nan,
    "Inf": _inf,
    "absurd-spacing": _absurd_spacing,
    "unreadable-DICOM-folder": _bad_dicom,
    "truncated-gz": _truncated,
    "missing": _missing,
}


def _run_and_expect_one_error(args, capsys, *expected):
    capsys.readouterr()
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("shmn: error: ")
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_gives_one_line_and_writes_nothing(kind, model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    path, expected = BAD_INPUTS[kind](folder)
    out = tmp_path / "out"
    line = _run_and_expect_one_error(["predict", str(path), "-o", str(out), "--model", str(model)], capsys, expected)
    assert path.name in line  # the message names the file
    assert not out.exists()


def test_output_folder_that_cannot_be_created(model, tmp_path, capsys):
    good = _volume(tmp_path / "good.nii.gz")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _run_and_expect_one_error(["predict", str(good), "-o", str(blocker / "out"), "--model", str(model)], capsys, "cannot create output folder")
    _run_and_expect_one_error(["predict", str(good), "-o", str(blocker), "--model", str(model)], capsys, "exists and is not a folder")
    assert blocker.read_text() == "not a folder"


def test_output_folder_without_write_permission(model, tmp_path, capsys):
    good = _volume(tmp_path / "good.nii.gz")
    if os.geteuid() == 0:
        # Root writes through folder permissions; /proc refuses new files even to root.
        _run_and_expect_one_error(["predict", str(good), "-o", "/proc", "--model", str(model)], capsys, "not writable")
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        _run_and_expect_one_error(["predict", str(good), "-o", str(locked), "--model", str(model)], capsys, "not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_unknown_model_name(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SHMN_MODEL_REGISTRY", str(tmp_path / "no_user_models.json"))
    good = _volume(tmp_path / "good.nii.gz")
    out = tmp_path / "out"
    line = _run_and_expect_one_error(["predict", str(good), "-o", str(out), "--model", "no-such-model"], capsys, "unknown model 'no-such-model'")
    assert "give a path to a .safetensors file" in line
    assert not out.exists()


def test_weights_whose_sha256_does_not_match(tmp_path, capsys, monkeypatch):
    path, _ = make_tiny_model(tmp_path)
    registry = tmp_path / "models.json"
    register_model(path, registry, name="tampered", version="1.0.0")
    data = json.loads(registry.read_text())
    data["models"][0]["sha256"] = "0" * 64
    registry.write_text(json.dumps(data))
    monkeypatch.setenv("SHMN_MODEL_REGISTRY", str(registry))
    good = _volume(tmp_path / "good.nii.gz")
    out = tmp_path / "out"
    _run_and_expect_one_error(["predict", str(good), "-o", str(out), "--model", "tampered"], capsys, "does not match")
    assert not out.exists()


def test_pickled_checkpoint_is_never_loaded(tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(gzip.compress(b"not loaded"))
    good = _volume(tmp_path / "good.nii.gz")
    _run_and_expect_one_error(["predict", str(good), "-o", str(tmp_path / "out"), "--model", str(checkpoint)], capsys, ".safetensors")
    assert not (tmp_path / "out").exists()


def test_cuda_requested_without_a_gpu(model, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        return  # with a GPU, --device cuda is valid: nothing to refuse (CI never has one)
    good = _volume(tmp_path / "good.nii.gz")
    _run_and_expect_one_error(["predict", str(good), "-o", str(tmp_path / "out"), "--model", str(model), "--device", "cuda"], capsys, "--device cuda")
    assert not (tmp_path / "out").exists()
