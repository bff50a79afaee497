"""The annotator's dataset in the engine: `shmn dataset init|status`, label files with history, one split rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.cli import main
from shmn.errors import ShmnError
from shmn.io.dataset import init_dataset, open_dataset, split_cases, status_table
from shmn.io.labels import KEEP, label_path, save_labels
from shmn.io.manifest import load_manifest

SIZE = (12, 10, 8)


def _image(value: int = 0) -> sitk.Image:
    image = sitk.Image(SIZE, sitk.sitkUInt8)
    image.SetSpacing((1.5, 1.2, 2.0))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # a negative-determinant NIfTI affine
    return image + value


def _mask(box) -> sitk.Image:
    array = np.zeros(SIZE[::-1], dtype=np.uint8)
    array[box] = 1
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(_image())
    return mask


@pytest.fixture()
def folder(tmp_path) -> Path:
    """A plain folder of images: images/ with 5 cases (one odd name), masks for two of them, a stray file."""
    root = tmp_path / "my scans"
    (root / "images").mkdir(parents=True)
    for name in ("a01.nii.gz", "a02.nrrd", "a03.mha", "a04.nii.gz", "bad name!.nii.gz"):
        sitk.WriteImage(_image(), str(root / "images" / name))
    (root / "images" / "notes.txt").write_text("not an image")
    for kind, case in (("pvl", "a01"), ("ventricles", "a01"), ("ventricles", "a03")):
        (root / "labels" / kind).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(_mask((slice(2, 4), slice(3, 6), slice(4, 9))), str(root / label_path(kind, case)))
    return root


def test_dataset_init_on_a_folder_of_images(folder, capsys):
    assert main(["dataset", "init", str(folder)]) == 0
    assert "wrote" in capsys.readouterr().out
    manifest = load_manifest(folder)
    cases = {c.id: c for c in manifest.cases}
    assert set(cases) == {"a01", "a02", "a03", "a04", "bad_name_"}
    assert cases["a02"].image == "images/a02.nrrd" and cases["bad_name_"].image == "images/bad name!.nii.gz"
    assert (cases["a01"].pvl, cases["a01"].ventricles) == ("labels/pvl/a01.nii.gz", "labels/ventricles/a01.nii.gz")
    assert cases["a03"].ventricles == "labels/ventricles/a03.nii.gz" and cases["a03"].pvl is None
    assert all(c.macs is None for c in cases.values()) and manifest.synthetic is False
    assert sorted(c.split for c in cases.values()) == ["test", "train", "train", "train", "val"]

    before = manifest.path.read_bytes()
    assert main(["dataset", "init", str(folder)]) == 2  # never replaced
    assert "already a dataset" in capsys.readouterr().err and manifest.path.read_bytes() == before
    assert open_dataset(folder).created is False


def test_dataset_init_refuses_a_folder_without_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["dataset", "init", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no images found" in err[0] and str(tmp_path / "empty") in err[0]
    assert not (tmp_path / "empty" / "manifest.json").exists()
    assert main(["dataset", "status", str(tmp_path / "nowhere")]) == 2
    assert "no such manifest" in capsys.readouterr().err


def test_dataset_status_says_which_case_has_which_label(folder, capsys):
    init_dataset(folder)
    (folder / label_path("ventricles", "a03")).unlink()  # named in the manifest, gone from the folder
    assert main(["dataset", "status", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["case", "split", "PVL", "ventricles", "MACS"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert rows["a01"][2:] == ["yes", "yes", "-"] and rows["a02"][2:] == ["-", "-", "-"]
    assert "MISSING FILE" in lines[[line.split()[0] for line in lines].index("a03")]
    assert lines[-1] == "5 cases: PVL 1, ventricles 2, MACS 0"
    assert main(["dataset", "status", str(folder), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["counts"] == {"pvl": 1, "ventricles": 2, "macs": 0, "cases": 5}
    by_id = {c["id"]: c for c in record["cases"]}
    assert by_id["a03"]["missing"] == ["ventricles"] and by_id["a01"]["pvl"] is True


def test_splits_are_seeded_stratified_70_10_20():
    labels = {f"c{i:02d}": (("pvl",) if i % 2 else ()) for i in range(20)}
    splits = split_cases(labels)
    assert [list(splits.values()).count(s) for s in ("train", "val", "test")] == [14, 2, 4]
    assert split_cases(dict(reversed(list(labels.items())))) == splits  # order does not matter
    labelled_test = [c for c, s in splits.items() if s == "test" and labels[c]]
    assert len(labelled_test) == 2  # stratified: half the test cases carry the PVL mask, as in the whole set


def test_saving_labels_keeps_every_previous_version(folder):
    init_dataset(folder)
    first = save_labels(folder, "a02", {"pvl": _mask((slice(1, 3), slice(1, 3), slice(1, 3)))}, macs="severe", now=0.0)
    assert first.written["pvl"] == folder / "labels/pvl/a02.nii.gz" and first.kept == [] and first.macs == "severe"
    case = load_manifest(folder).case("a02")
    assert (case.pvl, case.macs) == ("labels/pvl/a02.nii.gz", "severe")
    second = save_labels(folder, "a02", {"pvl": _mask((slice(0, 1), slice(0, 1), slice(0, 1)))}, macs=KEEP, now=0.0)
    third = save_labels(folder, "a02", {"pvl": _mask((slice(0, 2), slice(0, 1), slice(0, 1)))}, macs=None, now=0.0)
    assert [p.name for p in second.kept + third.kept] == ["a02.19700101T000000.000000Z.nii.gz", "a02.19700101T000000.000000Z-2.nii.gz"]
    kept = sitk.GetArrayFromImage(sitk.ReadImage(str(second.kept[0])))
    assert kept.sum() == 8  # the first version, voxel for voxel
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(third.written["pvl"]))).sum() == 2
    assert load_manifest(folder).case("a02").macs is None and second.macs == "severe"
    with pytest.raises(ShmnError, match="MACS group 'moderate'"):
        save_labels(folder, "a02", {}, macs="moderate")
    with pytest.raises(ShmnError, match="unknown label kinds"):
        save_labels(folder, "a02", {"lesions": _mask(slice(None))})
    with pytest.raises(ShmnError, match="label kind 'macs'"):
        label_path("macs", "a02")


def test_status_table_of_an_opened_plain_folder(folder):
    opened = open_dataset(folder)
    assert opened.created and (folder / "manifest.json").is_file()
    assert status_table(opened.manifest).splitlines()[-1] == "5 cases: PVL 1, ventricles 2, MACS 0"
