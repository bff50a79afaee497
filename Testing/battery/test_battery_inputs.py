"""Battery, hostile inputs: damaged DICOM series, size-lying headers, case names that leave OUT,
ITK's own warnings. Real files (DICOM written by SimpleITK), the real reader and command line."""

from __future__ import annotations

import gzip
import shutil
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.errors import ShmnError
from shmn.io.volume_io import case_name, read_volume
from battery_helpers import mni_brain, one_error_line, run_cli, write_dicom_series
from engine_fixtures import make_tiny_model

pytestmark = pytest.mark.xdist_group("battery_inputs")

SLICE_MM = 3.6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path, _ = make_tiny_model(tmp_path_factory.mktemp("models"))
    return path


@pytest.fixture(scope="module")
def thick_brain(anatomy):
    # 3.6 mm slices, as in the example.
    return mni_brain(anatomy, spacing=(3.0, 3.0, SLICE_MM), size=(56, 68, 16))


def test_intact_dicom_series_reads_with_its_true_slice_spacing(thick_brain, tmp_path):
    write_dicom_series(thick_brain, tmp_path / "series")
    image = read_volume(tmp_path / "series")
    assert image.GetSize()[2] == 16
    assert image.GetSpacing()[2] == pytest.approx(SLICE_MM, abs=1e-3)


def _damage_middle(files):
    files[8].write_bytes(files[8].read_bytes()[:200])  # cut inside its header: GDCM skips the file


def _remove_middle(files):
    files[8].unlink()


def _duplicate_middle(files):
    shutil.copy(files[8], files[8].with_name("IM0008_copy.dcm"))


DAMAGE = {"damaged slice": (_damage_middle, "gap"), "missing slice": (_remove_middle, "gap"),
          "duplicate slice": (_duplicate_middle, "duplicate")}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_dicom_series_with_a_damaged_missing_or_duplicate_slice_is_refused(kind, thick_brain, tmp_path):
    damage, expected = DAMAGE[kind]
    files = write_dicom_series(thick_brain, tmp_path / "series")
    damage(files)
    with pytest.raises(ShmnError) as error:
        read_volume(tmp_path / "series")
    message = str(error.value)
    assert str(tmp_path / "series") in message and expected in message
    if expected == "gap":
        assert f"{2 * SLICE_MM:.2f} mm" in message  # names the gap: two slice steps where one was expected


def test_unevenly_spaced_dicom_series_is_refused(thick_brain, tmp_path):
    moved = list(thick_brain.TransformIndexToPhysicalPoint((0, 0, 5)))
    moved[2] += 1.5  # slice 5 sits 1.5 mm off its place
    write_dicom_series(thick_brain, tmp_path / "series", positions={5: moved})
    with pytest.raises(ShmnError, match="gap"):
        read_volume(tmp_path / "series")


def test_predict_on_a_damaged_dicom_series_gives_one_line_and_no_volumes(thick_brain, model, tmp_path, capfd):
    files = write_dicom_series(thick_brain, tmp_path / "series")
    _damage_middle(files)
    out = tmp_path / "out"
    one_error_line(["predict", tmp_path / "series", "-o", out, "--model", model, "-q"], capfd, "series", "gap")
    assert not out.exists()


def _nifti_header_claiming(shape, datatype=16, bitpix=32) -> bytes:
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    header[344:348] = b"n+1\0"
    return bytes(header) + b"\0" * 4 + b"\1" * 48


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_tiny_file_whose_header_claims_a_billion_voxels_is_refused_before_allocating(suffix, tmp_path):
    data = _nifti_header_claiming((1000, 1000, 1000))
    assert len(data) == 400
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    with pytest.raises(ShmnError, match="1000x1000x1000"):
        read_volume(path)


def test_header_claiming_more_voxels_than_the_file_holds_is_refused(tmp_path):
    data = _nifti_header_claiming((64, 64, 64))  # 1 MB claimed, 48 bytes stored
    path = tmp_path / "short.nii"
    path.write_bytes(data)
    with pytest.raises(ShmnError, match="file holds"):
        read_volume(path)


def test_ordinary_nifti_still_reads(anatomy, tmp_path):
    path = tmp_path / "brain.nii"
    sitk.WriteImage(mni_brain(anatomy), str(path))
    assert read_volume(path).GetSize() == (60, 72, 44)


@pytest.mark.parametrize("given", ["series/sub/..", "..", "."])
def test_case_names_are_plain_names(given, tmp_path, monkeypatch):
    (tmp_path / "series" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "series" / "sub")
    name = case_name(tmp_path / given) if given.startswith("series") else case_name(given)
    assert name not in ("", ".", "..") and "/" not in name


def test_case_name_dotdot_with_overwrite_never_touches_the_output_folder_parent(thick_brain, model, tmp_path, capfd):
    write_dicom_series(thick_brain, tmp_path / "series")
    (tmp_path / "series" / "sub").mkdir()
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    keep = tmp_path / "work" / "keep.txt"
    keep.write_text("precious")
    status, lines, _ = run_cli(["predict", tmp_path / "series" / "sub" / "..", "-o", out, "--model", model, "--overwrite", "-q"], capfd)
    # "series/sub/.." is the folder "series": its case is "series", written inside OUT.
    assert keep.read_text() == "precious"
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["keep.txt", "out"]
    assert status == 0, lines
    assert (out / "series" / "report.json").is_file()


def test_itk_warnings_do_not_precede_the_one_error_line(model, tmp_path, capfd):
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "notes.dcm").write_bytes(b"\0" * 300)
    line = one_error_line(["predict", folder, "-o", tmp_path / "out", "--model", model, "-q"], capfd, "not_dicom")
    assert "No Series" not in line


def test_dicom_slices_with_a_gap_report_the_positions(thick_brain, tmp_path):
    files = write_dicom_series(thick_brain, tmp_path / "series")
    files[3].unlink()
    with pytest.raises(ShmnError) as error:
        read_volume(tmp_path / "series")
    positions = sorted(thick_brain.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in (2, 4))
    assert f"{positions[0]:.2f}" in str(error.value) and f"{positions[1]:.2f}" in str(error.value)
    assert np.isfinite(positions).all()


def test_damaged_end_slice_cannot_leave_a_gap_so_it_is_warned_about_in_stderr_and_the_report(thick_brain, model, tmp_path, capfd):
    files = write_dicom_series(thick_brain, tmp_path / "series")
    files[-1].write_bytes(files[-1].read_bytes()[:200])
    out = tmp_path / "out"
    status, lines, _ = run_cli(["predict", tmp_path / "series", "-o", out, "--model", model, "-q"], capfd)
    assert status == 0, lines
    assert any(line.startswith("shmn: warning: series: ") and files[-1].name in line for line in lines), lines
    report = __import__("json").loads((out / "series" / "report.json").read_text())
    assert any(files[-1].name in w and "no readable DICOM series" in w for w in report["warnings"])
    assert report["input"]["geometry"]["size"][2] == 15


def test_folder_with_two_series_says_which_one_was_read(thick_brain, tmp_path):
    write_dicom_series(thick_brain, tmp_path / "series")
    small = write_dicom_series(thick_brain[:, :, :4], tmp_path / "localiser")
    for path in small:  # a second series (another UID) in the same folder
        image = sitk.ReadImage(str(path))
        image.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.999")
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(tmp_path / "series" / f"LOC{path.name}"))
        writer.Execute(image)
    from shmn.io.volume_io import InputWarning

    with pytest.warns(InputWarning, match="holds 2 DICOM series; read the largest \\(16 slices"):
        image = read_volume(tmp_path / "series")
    assert image.GetSize()[2] == 16
