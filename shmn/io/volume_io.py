"""Reading and writing 3D volumes with their geometry (origin, spacing, direction) intact.

Everything goes through SimpleITK, which keeps the full physical geometry (LPS internally) for
NIfTI, NRRD, MHA/MHD and DICOM series. Inputs are validated here so that every caller gets the
same one-line errors for the same bad files.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from shmn.io.atomic import atomic_path, ensure_writable_dir
from shmn.errors import ShmnError

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd")
MIN_SPACING_MM = 0.05
MAX_SPACING_MM = 20.0
MIN_VOXELS_PER_AXIS = 2
# No MRI needs more: 512 x 512 x 1024 voxels. A header claiming more is damaged or hostile, and
# reading it would allocate gigabytes before anything could check it.
MAX_VOXELS = 512 * 512 * 1024
# Slice positions of a DICOM series may differ from even spacing by this share of the median step
# (scanners round positions to 0.01 mm or so); a bigger spread means a missing, extra or moved slice.
SLICE_SPACING_TOLERANCE = 0.05
# Characters that cannot be part of a case name: it becomes a folder name under OUT.
_UNSAFE_CASE = re.compile(r"[\\/\x00-\x1f]")


class InputWarning(UserWarning):
    """An input that can be read safely but deserves a look (shmn predict copies it into report.json)."""


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's C++ warnings (e.g. "No Series were found") around a read: our own checks say
    what is wrong in one line, and those warnings would print before it."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def case_name(path: str | os.PathLike) -> str:
    """The input's file name without its image extensions (a DICOM folder keeps its name)."""
    p = Path(path)
    # Resolve "." and ".." first ("series/sub/.." is the folder "series"): a case name is a plain
    # folder name under OUT, never a way out of it.
    if p.name in ("", ".", "..") or ".." in p.parts:
        p = Path(os.path.abspath(p))
    name = p.name.rstrip("/")
    for suffix in sorted(IMAGE_SUFFIXES + (".dcm",), key=len, reverse=True):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name in ("", ".", "..") or _UNSAFE_CASE.search(name) or name.startswith("."):
        raise ShmnError(f"{path}: gives the case name {name!r}; expected a plain file or folder name (rename the input)")
    return name


def is_image_path(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() or any(p.name.lower().endswith(s) for s in IMAGE_SUFFIXES)


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    with quiet_itk():
        try:
            series = reader.GetGDCMSeriesIDs(str(folder))
        except RuntimeError:
            series = ()
        if not series:
            raise ShmnError(f"{folder}: folder holds no readable DICOM series; expected one DICOM series (or give an image file)")
        members = {s: reader.GetGDCMSeriesFileNames(str(folder), s) for s in series}
        if len(series) > 1:
            # Pick the series with most slices: the localiser and derived series are smaller.
            series = sorted(series, key=lambda s: len(members[s]), reverse=True)
            warnings.warn(
                f"{folder}: holds {len(series)} DICOM series; read the largest ({len(members[series[0]])} slices, "
                f"series UID {series[0]}); give a folder with the FLAIR series alone to be sure",
                InputWarning, stacklevel=3,
            )
        files = members[series[0]]
        check_slice_positions(folder, files)
        _warn_about_stray_files(folder, {Path(f).name for s in series for f in members[s]})
        reader.SetFileNames(files)
        try:
            return reader.Execute()
        except RuntimeError as exc:
            raise ShmnError(f"{folder}: DICOM series could not be read ({_first_line(exc)})") from None


def _warn_about_stray_files(folder: Path, in_series: set[str]) -> None:
    # A damaged first or last slice leaves no gap to detect: it only shows as a file GDCM skipped.
    stray = sorted(
        p.name for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in in_series and p.name.upper() != "DICOMDIR"
    )
    if stray:
        warnings.warn(
            f"{folder}: {len(stray)} file(s) are in no readable DICOM series ({', '.join(stray[:3])}{' ...' if len(stray) > 3 else ''}); "
            "if one is a damaged slice at either end of the series, the volume lacks it",
            InputWarning, stacklevel=4,
        )


def _slice_geometry(file: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(ImagePositionPatient, slice normal) of one DICOM file, from its header only."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
        position = [float(v) for v in reader.GetMetaData("0020|0032").split("\\")]
        cosines = [float(v) for v in reader.GetMetaData("0020|0037").split("\\")]
    except (RuntimeError, ValueError):
        return None
    if len(position) != 3 or len(cosines) != 6:
        return None
    return np.array(position), np.cross(cosines[:3], cosines[3:])


def check_slice_positions(folder: Path, files) -> None:
    """Refuse a series whose slices are missing, duplicated or unevenly spaced.

    ITK would read such a series with one averaged slice spacing: a dropped (damaged) slice
    stretches every slice after it and every volume measured on it, with no error at all.
    """
    if len(files) < 3:
        return  # two slices or fewer: validate_volume refuses it as "a single slice" or reads an even pair
    geometries = [_slice_geometry(f) for f in files]
    if any(g is None for g in geometries):
        unreadable = next(Path(f).name for f, g in zip(files, geometries) if g is None)
        raise ShmnError(f"{folder}: slice {unreadable} has no readable position/orientation; expected a complete DICOM series")
    normal = geometries[0][1]
    positions = np.array(sorted(float(np.dot(position, normal)) for position, _ in geometries))
    steps = np.diff(positions)
    step = float(np.median(steps))
    where = int(np.argmax(np.abs(steps - step)))
    if step <= 1e-3 or float(np.min(steps)) <= 1e-3:
        at = int(np.argmin(steps))
        raise ShmnError(
            f"{folder}: two slices share the position {positions[at]:.2f} mm along the slice axis (duplicate slice); "
            "expected one file per slice: remove the duplicates or export the series again"
        )
    if abs(steps[where] - step) > SLICE_SPACING_TOLERANCE * step:
        raise ShmnError(
            f"{folder}: gap of {steps[where]:.2f} mm between slices at {positions[where]:.2f} and {positions[where + 1]:.2f} mm "
            f"where the series steps {step:.2f} mm (a missing, damaged or extra slice); expected evenly spaced slices: "
            "export the complete series again"
        )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK messages start with file/line noise; the last line carries the description.
    return lines[-1] if lines else type(exc).__name__


def read_volume(path: str | os.PathLike, check_values: bool = True) -> sitk.Image:
    """Read a 3D scalar volume (file or DICOM series folder) and validate it.

    Raises ShmnError with one line naming the file for: a missing file, an empty file, a file that is
    not an image, a truncated file, a 2D or 4D image, absurd spacing, NaN/Inf values, an all-zero image.
    """
    p = Path(path)
    if not p.exists():
        raise ShmnError(f"{p}: no such file or folder")
    if p.is_dir():
        image = _read_dicom_series(p)
    else:
        if p.stat().st_size == 0:
            raise ShmnError(f"{p}: file is empty; expected a 3D image (NIfTI, NRRD, MHA/MHD or a DICOM folder)")
        stored_bytes = _check_gzip(p) if p.name.lower().endswith(".gz") else p.stat().st_size
        with quiet_itk():
            _check_claimed_size(p, stored_bytes)
            try:
                image = sitk.ReadImage(str(p))
            except RuntimeError as exc:
                raise ShmnError(
                    f"{p}: not a readable image ({_first_line(exc)}); expected a 3D NIfTI, NRRD, MHA/MHD file or a DICOM folder"
                ) from None
    if check_values and _is_nifti(p):
        _check_nifti_finite(p)
    return validate_volume(image, p, check_values=check_values)


def _is_nifti(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith((".nii", ".nii.gz"))


def _check_nifti_finite(p: Path) -> None:
    # ITK's NIfTI reader replaces NaN with 0 silently; look at the stored values with nibabel.
    import nibabel as nib

    data = np.asanyarray(nib.load(str(p)).dataobj)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise ShmnError(f"{p}: {bad} voxels are NaN or Inf; expected finite intensities")


def _check_gzip(p: Path) -> int:
    """The stream's uncompressed length. A truncated .nii.gz can make ITK read garbage silently;
    gzip checks the stream end to end."""
    total = 0
    try:
        with gzip.open(p, "rb") as f:
            while True:
                chunk = f.read(1 << 22)
                if not chunk:
                    return total
                total += len(chunk)
    except (OSError, EOFError) as exc:
        raise ShmnError(f"{p}: compressed file is damaged or truncated ({exc}); re-export or re-copy it") from None


def _check_claimed_size(p: Path, stored_bytes: int) -> None:
    """Compare the header's claimed size with a sane limit and, for NIfTI, with the bytes stored,
    before anything is allocated: a 400-byte file must not make us reserve gigabytes."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise ShmnError(
            f"{p}: not a readable image ({_first_line(exc)}); expected a 3D NIfTI, NRRD, MHA/MHD file or a DICOM folder"
        ) from None
    size = reader.GetSize()
    voxels = int(np.prod([int(n) for n in size], dtype=object))
    if voxels > MAX_VOXELS:
        raise ShmnError(
            f"{p}: header claims {'x'.join(str(n) for n in size)} = {voxels} voxels, more than the {MAX_VOXELS} any MRI needs; "
            "the header is damaged"
        )
    if _is_nifti(p):
        import nibabel as nib

        try:
            header = nib.load(str(p)).header
            stored_voxels = int(np.prod([int(n) for n in header.get_data_shape()], dtype=object))
            needed = int(header.get_data_offset()) + stored_voxels * int(header["bitpix"]) // 8
        except Exception as exc:  # noqa: BLE001 - nibabel raises several types for damaged headers
            raise ShmnError(f"{p}: NIfTI header is damaged ({type(exc).__name__}: {exc})".splitlines()[0]) from None
        if needed > stored_bytes:
            raise ShmnError(
                f"{p}: header claims {'x'.join(str(n) for n in size)} voxels ({needed} bytes) but the file holds {stored_bytes}; "
                "the file is truncated or its header is damaged"
            )


def validate_volume(image: sitk.Image, source: str | os.PathLike = "image", check_values: bool = True) -> sitk.Image:
    dim = image.GetDimension()
    size = image.GetSize()
    if dim == 4:
        if size[3] == 1:
            image = image[:, :, :, 0]
        else:
            raise ShmnError(f"{source}: 4D image with {size[3]} volumes; expected one 3D volume (extract the FLAIR volume first)")
    elif dim == 2:
        raise ShmnError(f"{source}: 2D image {size[0]}x{size[1]}; expected a 3D volume")
    elif dim != 3:
        raise ShmnError(f"{source}: {dim}D image; expected a 3D volume")
    size = image.GetSize()
    if min(size) < MIN_VOXELS_PER_AXIS:
        raise ShmnError(f"{source}: size {size[0]}x{size[1]}x{size[2]} is a single slice; expected a 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ShmnError(f"{source}: {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar (grey-level) image")
    spacing = image.GetSpacing()
    if not all(MIN_SPACING_MM <= s <= MAX_SPACING_MM for s in spacing):
        raise ShmnError(
            f"{source}: voxel spacing {tuple(round(s, 4) for s in spacing)} mm is outside {MIN_SPACING_MM}-{MAX_SPACING_MM} mm; "
            "check the header's units and spacing"
        )
    if check_values:
        values = sitk.GetArrayViewFromImage(image)
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise ShmnError(f"{source}: {bad} voxels are NaN or Inf; expected finite intensities")
        if not values.any():
            raise ShmnError(f"{source}: every voxel is zero; expected an MRI with signal")
    return image


def write_volume(image: sitk.Image, path: str | os.PathLike, compress: bool = True, overwrite: bool = True) -> Path:
    """Write atomically: into a temporary place beside the target, then renamed.

    Header metadata from the source file (NIfTI description fields and the like) is dropped: the
    geometry is carried by origin/spacing/direction, and other formats would only warn about it.
    """
    image = _without_metadata(image)
    target = Path(path)
    if target.name.lower().endswith(".mhd"):
        return _write_mhd(image, target, compress, overwrite)
    with atomic_path(target, overwrite=overwrite) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return target


def _without_metadata(image: sitk.Image) -> sitk.Image:
    if not image.GetMetaDataKeys():
        return image
    copy = sitk.Image(image)
    for key in copy.GetMetaDataKeys():
        copy.EraseMetaData(key)
    return copy


def _write_mhd(image: sitk.Image, target: Path, compress: bool, overwrite: bool) -> Path:
    # A .mhd header names its data file; write both under their final names in a private folder,
    # then move the data file first and the header last, so a reader never sees a header without data.
    if target.exists() and not overwrite:
        raise ShmnError(f"{target}: already exists; choose another output or remove it first")
    ensure_writable_dir(target.parent)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        sitk.WriteImage(image, str(Path(tmp) / target.name), compress)
        for part in sorted(Path(tmp).iterdir(), key=lambda p: p.name.lower().endswith(".mhd")):
            os.replace(part, target.parent / part.name)
    return target


def geometry(image: sitk.Image) -> dict:
    """The physical geometry as plain lists (for reports and comparisons)."""
    return {
        "size": list(image.GetSize()),
        "spacing": list(image.GetSpacing()),
        "origin": list(image.GetOrigin()),
        "direction": list(image.GetDirection()),
    }


def same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def ijk_to_ras_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 matrix from (i, j, k) voxel index to RAS millimetres (Slicer's and NIfTI's world)."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = np.array(image.GetSpacing())
    origin = np.array(image.GetOrigin())
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = origin
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    return lps_to_ras @ lps


def index_to_ras(image: sitk.Image, index_xyz) -> list[float]:
    """Continuous (x, y, z) voxel index to RAS mm."""
    point = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index_xyz])
    return [-point[0], -point[1], point[2]]


def ras_to_lps(point) -> list[float]:
    return [-float(point[0]), -float(point[1]), float(point[2])]
