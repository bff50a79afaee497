"""Helpers of the hostile-input and fault battery (Testing/battery): small real inputs and a model."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from shmn.cli import main

# A brain on a coarse MNI-aligned grid: predictable with --no-register in a second or two.
SPACING = (3.0, 3.0, 4.0)
SIZE = (60, 72, 44)


def mni_brain(anatomy, spacing=SPACING, size=SIZE) -> sitk.Image:
    template = anatomy.template
    centre = template.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in template.GetSize()])
    reference = sitk.Image([int(n) for n in size], sitk.sitkFloat32)
    reference.SetSpacing(spacing)
    reference.SetOrigin([c - (n - 1) * s / 2 for c, n, s in zip(centre, size, spacing)])
    return sitk.Resample(template, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def write_dicom_series(image: sitk.Image, folder, positions=None) -> list:
    """One DICOM file per slice with the position/orientation tags a scanner writes; ``positions``
    overrides slice k's ImagePositionPatient (to build unevenly spaced series)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 1000), sitk.sitkInt16)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k in range(image.GetSize()[2]):
        piece = image[:, :, k]
        position = (positions or {}).get(k, image.TransformIndexToPhysicalPoint((0, 0, k)))
        for tag, value in (
            ("0008|0060", "MR"),
            ("0020|000e", "1.2.826.0.1.3680043.2.1125.4243"),
            ("0020|0013", str(k + 1)),
            ("0020|0032", "\\".join(map(str, position))),
            ("0020|0037", "\\".join(map(str, direction[0:9:3] + direction[1:9:3]))),
            ("0018|0050", str(image.GetSpacing()[2])),
        ):
            piece.SetMetaData(tag, value)
        path = folder / f"IM{k:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(piece)
        files.append(path)
    return files


def run_cli(args, capfd) -> tuple[int, list[str], str]:
    """(exit status, stderr lines, stdout) of the real command line, C++ output included (capfd)."""
    capfd.readouterr()
    status = main([str(a) for a in args])
    captured = capfd.readouterr()
    return status, [line for line in captured.err.splitlines() if line.strip()], captured.out


def one_error_line(args, capfd, *expected) -> str:
    status, lines, _out = run_cli(args, capfd)
    assert status == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith("shmn: error: "), lines
    for text in expected:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def volume_array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def write_brain(anatomy, path, scale=1.0, spacing=SPACING, size=SIZE):
    """A real MNI brain on a coarse grid as a NIfTI file (``scale`` changes its intensities)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(mni_brain(anatomy, spacing, size) * scale, str(path), True)
    return path


def write_dataset(folder, anatomy, masks: dict, splits=None) -> object:
    """A dataset folder with manifest.json: one case per entry of ``masks`` (case id -> (mask array
    on the image's grid or a ready sitk.Image, or None)). Returns the manifest path."""
    import json

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(exist_ok=True)
    brain = mni_brain(anatomy, spacing=(4.0, 4.0, 4.0), size=(45, 54, 45))
    cases = []
    for i, (case_id, mask) in enumerate(masks.items()):
        image_rel = f"images/{case_id}.nii.gz"
        sitk.WriteImage(brain, str(folder / image_rel), True)
        entry = {"id": case_id, "image": image_rel, "pvl": None, "ventricles": None, "macs": None,
                 "split": (splits or {}).get(case_id, "train")}
        if mask is not None:
            if isinstance(mask, np.ndarray):
                label = sitk.GetImageFromArray(mask)
                label.CopyInformation(brain)
            else:
                label = mask
            entry["pvl"] = f"labels/{case_id}_pvl.nii.gz"
            sitk.WriteImage(label, str(folder / entry["pvl"]), True)
        cases.append(entry)
    manifest = {"format": "shmn-manifest/1", "name": folder.name, "synthetic": True, "cases": cases}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder / "manifest.json"


def lesion_mask(value=1, shape=(45, 54, 45)) -> np.ndarray:
    """A small periventricular-sized block of ``value`` (z, y, x) on the dataset grid of write_dataset."""
    mask = np.zeros(shape, dtype=np.uint8)
    mask[20:23, 25:28, 18:21] = value
    return mask
