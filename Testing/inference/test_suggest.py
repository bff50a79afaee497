"""`shmn suggest`: the measures on constructed maps, and the ranking on real images with the shipped model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.cli import main
from shmn.errors import ShmnError
from shmn.inference.suggest import SUGGESTIONS_FILE, flip_disagreement, read_suggestions, score_maps, suggest

pytestmark = pytest.mark.xdist_group("suggest")


def _sphere(shape, centre, radius):
    z, y, x = np.indices(shape)
    return ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius ** 2


def test_measures_rank_an_ambiguous_map_above_a_clear_one():
    shape = (20, 24, 20)
    brain = _sphere(shape, (10, 12, 10), 9)
    lesion = _sphere(shape, (10, 12, 5), 2).astype(np.float32)
    clear = (lesion * 0.98 + 0.01, lesion * 0.98 + 0.01)  # confident, and the mirror agrees
    # Hesitant (p about 0.5) and unstable: the mirrored pass puts the lesion on the other side.
    ambiguous = (lesion * 0.55, _sphere(shape, (10, 12, 15), 2).astype(np.float32) * 0.55)
    missing = ["pvl", "ventricles", "macs"]
    clear_measures, clear_score = score_maps(brain, clear, clear, (0.02, 0.03), missing)
    ambiguous_measures, ambiguous_score = score_maps(brain, ambiguous, ambiguous, (0.48, 0.55), missing)
    assert clear_measures["flip_disagreement_pvl"] == 0.0
    assert ambiguous_measures["flip_disagreement_pvl"] == 1.0
    assert ambiguous_measures["pvl_entropy"] > 0.8 and clear_measures["pvl_entropy"] < 0.2
    assert ambiguous_measures["macs_ambiguity"] > 0.9 and clear_measures["macs_ambiguity"] < 0.1
    assert ambiguous_score > 0.8 and clear_score < 0.1
    # Only the missing labels count: with only MACS missing, the maps do not matter.
    assert score_maps(brain, ambiguous, ambiguous, (0.02, 0.03), ["macs"])[1] == clear_measures["macs_ambiguity"]
    # Two empty masks agree perfectly.
    assert flip_disagreement(np.zeros(shape), np.zeros(shape), brain, 0.5) == 0.0


@pytest.fixture(scope="module")
def ambiguous_dataset(tmp_path_factory):
    """A dataset of one phantom image as it is ('clear') and the same image drowned in noise ('ambiguous')."""
    from shmn.synthesis import CohortConfig, generate_cohort

    root = tmp_path_factory.mktemp("suggest")
    generate_cohort(root / "cohort", CohortConfig(seed=5, n_pvl=1, n_macs=1, n_ventricle_labels=0, size="small"), progress=False)
    image = sitk.ReadImage(str(root / "cohort" / "pvl" / "images" / "pvl_000.nii.gz"), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    tissue = array > np.percentile(array, 50)
    noisy = array + np.random.default_rng(0).normal(0.0, float(array[tissue].std()), array.shape)
    dataset = root / "dataset"
    (dataset / "images").mkdir(parents=True)
    sitk.WriteImage(image, str(dataset / "images" / "clear.nii.gz"))
    noisy_image = sitk.GetImageFromArray(noisy.astype(np.float32))
    noisy_image.CopyInformation(image)
    sitk.WriteImage(noisy_image, str(dataset / "images" / "ambiguous.nii.gz"))
    sitk.WriteImage(image, str(dataset / "images" / "done.nii.gz"))
    sitk.WriteImage(sitk.Cast(image > 1e9, sitk.sitkUInt8), str(dataset / "images" / "done_mask.nii.gz"))
    cases = [
        {"id": "clear", "image": "images/clear.nii.gz", "split": "train"},
        {"id": "ambiguous", "image": "images/ambiguous.nii.gz", "split": "train"},
        # Fully labelled: never suggested.
        {"id": "done", "image": "images/done.nii.gz", "pvl": "images/done_mask.nii.gz",
         "ventricles": "images/done_mask.nii.gz", "macs": "mild", "split": "train"},
    ]
    (dataset / "manifest.json").write_text(json.dumps({"format": "shmn-manifest/1", "name": "suggest-test", "cases": cases}))
    return dataset


def _shipped_model():
    from shmn.io.registry import shipped_registry_path

    entry = json.loads(shipped_registry_path().read_text())["models"][0]
    return str(shipped_registry_path().parent / entry["file"])


def test_suggest_puts_the_ambiguous_case_first(ambiguous_dataset, capsys):
    assert main(["suggest", str(ambiguous_dataset), "--model", _shipped_model(), "-n", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[1].split()[:2] == ["1", "ambiguous"]
    result = read_suggestions(ambiguous_dataset)
    assert result == json.loads((ambiguous_dataset / SUGGESTIONS_FILE).read_text())
    assert [row["id"] for row in result["ranking"]] == ["ambiguous", "clear"]
    assert result["suggested"] == ["ambiguous"]
    assert result["ranking"][0]["score"] > result["ranking"][1]["score"]
    assert result["ranking"][0]["missing"] == ["pvl", "ventricles", "macs"]
    assert result["model"]["name"] and len(result["model"]["sha256"]) == 64
    assert all(set(row["measures"]) == set(result["measures"]) - {"score"} for row in result["ranking"])


def test_suggest_bad_input(tmp_path, ambiguous_dataset, capsys):
    assert main(["suggest", str(tmp_path), "--model", _shipped_model()]) == 2
    assert "manifest" in capsys.readouterr().err
    with pytest.raises(ShmnError, match="-n 0"):
        suggest(ambiguous_dataset, _shipped_model(), n=0, progress=False)
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    shutil.copytree(ambiguous_dataset / "images", labelled / "images")
    manifest = json.loads((ambiguous_dataset / "manifest.json").read_text())
    manifest["cases"] = [c for c in manifest["cases"] if c["id"] == "done"]
    (labelled / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShmnError, match="nothing to suggest"):
        suggest(labelled, _shipped_model(), progress=False)
    assert not (labelled / SUGGESTIONS_FILE).exists()
    (labelled / SUGGESTIONS_FILE).write_text("{")
    with pytest.raises(ShmnError, match="unreadable suggestions"):
        read_suggestions(labelled)
