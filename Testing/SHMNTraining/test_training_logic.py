"""SHMNTraining's logic against the real MRML (slicer-core) and the real engine (`shmn train`,
`shmn evaluate`, `shmn predict` in their own processes), on tiny volumes.

The fast tests use a dataset made on the spot (SHMNTrainingLib.selftest: one right-handed case,
one whose NIfTI affine has a negative determinant, one oblique). The engine tests share one tiny training run
on four phantom cases: started, cancelled after its first epoch, resumed, evaluated, registered.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
for folder in (REPO / "Testing", REPO / "SHMNCore", REPO / "SHMNSegmenter", REPO / "SHMNTraining"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from slicer_harness import install_harness  # noqa: E402

TIMEOUT_S = 240


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return install_harness(tmp_path_factory.mktemp("slicer-temp"))


@pytest.fixture()
def scene(harness):
    harness.clear_scene()
    return harness.scene


@pytest.fixture()
def tiny(tmp_path, scene):
    from SHMNTrainingLib.selftest import makeTinyDataset

    return makeTinyDataset(tmp_path / "dataset")


@pytest.fixture()
def logic(scene):
    from SHMNTrainingLib import SHMNTrainingLogic

    return SHMNTrainingLogic()


def nifti(path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


# --- dataset panel ---------------------------------------------------------------------------------
def test_plain_image_folder_becomes_a_dataset(tiny, logic):
    from shmn.errors import ShmnError
    from shmn.io.manifest import load_manifest

    opened = logic.openDataset(tiny)
    assert opened.created and (tiny / "manifest.json").is_file()
    cases = {c.id: c for c in load_manifest(tiny).cases}
    assert set(cases) == {"case_rh", "case_neg", "case_obl"}
    assert cases["case_rh"].image == "images/case_rh.nii.gz"
    assert cases["case_rh"].pvl == "labels/pvl/case_rh.nii.gz" and cases["case_neg"].pvl is None
    assert cases["case_neg"].ventricles == "labels/ventricles/case_neg.nii.gz"
    assert all(c.macs is None for c in cases.values())
    assert sorted(c.split for c in cases.values()) == ["test", "train", "val"]  # shmn.io.splits: each split gets a case from 3 on
    assert logic.openDataset(tiny).created is False  # the second time the manifest is read, not rewritten

    empty = tiny.parent / "empty"
    empty.mkdir()
    with pytest.raises(ShmnError, match="no images found"):
        logic.openDataset(empty)


def test_case_table_and_missing_label_filter(tiny, logic):
    from SHMNTrainingLib import CaseFilter
    from SHMNTrainingLib.dataset import statusText

    logic.openDataset(tiny)
    assert [r.id for r in logic.caseRows()] == ["case_neg", "case_obl", "case_rh"]
    assert [r.id for r in logic.caseRows(CaseFilter.MISSING_PVL)] == ["case_neg", "case_obl"]
    assert logic.caseRows(CaseFilter.MISSING_VENTRICLES) == []
    assert len(logic.caseRows(CaseFilter.MISSING_MACS)) == len(logic.caseRows(CaseFilter.MISSING_ANY)) == 3
    row = logic.caseRows(CaseFilter.ALL)[2]
    assert row.cells == ("case_rh", row.split, "yes", "yes", "-", "-")
    assert statusText(logic.manifest) == "3 cases: PVL 1, ventricles 3, MACS 0"


# --- annotation: load, edit, save ------------------------------------------------------------------
def test_loaded_case_shows_its_labels(tiny, logic):
    import slicer

    logic.openDataset(tiny)
    case = logic.loadCase("case_rh")
    assert case.volume.GetName() == "case_rh" and case.labelled == {"pvl": True, "ventricles": True}
    segments = case.segmentation.GetSegmentation()
    assert {segments.GetNthSegment(i).GetName() for i in range(segments.GetNumberOfSegments())} == {"PVL lesion", "Lateral ventricles"}
    for kind in ("pvl", "ventricles"):
        label = slicer.util.loadLabelVolume(str(tiny / f"labels/{kind}/case_rh.nii.gz"), {"singleFile": True, "show": False})
        inSegment = slicer.util.arrayFromSegmentBinaryLabelmap(case.segmentation, case.segmentIds[kind], case.volume)
        assert np.array_equal(inSegment > 0, slicer.util.arrayFromVolume(label) > 0)
    assert not logic.hasUnsavedChanges  # loading is not an edit


@pytest.mark.parametrize("caseId", ["case_rh", "case_neg", "case_obl"])
def test_saving_unedited_labels_reproduces_the_files_voxel_for_voxel(tiny, logic, caseId):
    logic.openDataset(tiny)
    before = {kind: nifti(tiny / f"labels/{kind}/{caseId}.nii.gz") for kind in ("pvl", "ventricles")
              if (tiny / f"labels/{kind}/{caseId}.nii.gz").is_file()}
    logic.loadCase(caseId)
    saved = logic.saveCase()
    assert sorted(saved.written) == sorted(before)  # a case without a PVL mask does not get one invented
    for kind, (voxels, affine) in before.items():
        afterVoxels, afterAffine = nifti(saved.written[kind])
        assert np.array_equal(afterVoxels, voxels) and np.allclose(afterAffine, affine)
        assert afterVoxels.dtype == np.uint8
    image_affine = nib.load(str(tiny / f"images/{caseId}.nii.gz")).affine
    assert (np.linalg.det(image_affine) < 0) == (caseId == "case_neg")
    oblique = not np.allclose(np.abs(image_affine[:3, :3]) > 1e-6, np.eye(3, dtype=bool))
    assert oblique == (caseId == "case_obl")


def test_painted_label_is_saved_on_the_image_grid_negative_determinant(tiny, logic):
    """A box painted in Slicer's voxel order lands, in the file, flipped along K: the same physical voxels."""
    import slicer
    import vtk

    logic.openDataset(tiny)
    case = logic.loadCase("case_neg")
    painted = np.zeros(slicer.util.arrayFromVolume(case.volume).shape, dtype=np.uint8)
    painted[2:5, 3:9, 4:7] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, case.segmentation, case.segmentIds["pvl"], case.volume)
    saved = logic.saveCase()

    written = sitk.ReadImage(str(saved.written["pvl"]))
    image = sitk.ReadImage(str(tiny / "images/case_neg.nii.gz"))
    assert written.GetSize() == image.GetSize() and np.allclose(written.GetDirection(), image.GetDirection())
    assert np.allclose(written.GetOrigin(), image.GetOrigin()) and np.allclose(written.GetSpacing(), image.GetSpacing())
    fileVoxels = sitk.GetArrayFromImage(written)
    assert np.array_equal(fileVoxels, painted[::-1])  # Slicer's right-handed IJK flipped K for this file
    # And independently of any axis bookkeeping: every saved voxel's centre is a painted voxel's centre.
    rasToIJK = vtk.vtkMatrix4x4()
    case.volume.GetRASToIJKMatrix(rasToIJK)
    rasToIJK = slicer.util.arrayFromVTKMatrix(rasToIJK)
    for k, j, i in zip(*np.nonzero(fileVoxels)):
        x, y, z = written.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
        ijk = np.rint(rasToIJK @ [-x, -y, z, 1.0])[:3].astype(int)
        assert painted[ijk[2], ijk[1], ijk[0]] == 1
    assert fileVoxels.sum() == painted.sum()


def test_save_keeps_previous_versions_and_updates_manifest(tiny, logic):
    import slicer
    from shmn.io.manifest import load_manifest

    logic.openDataset(tiny)
    original, _ = nifti(tiny / "labels/ventricles/case_rh.nii.gz")
    case = logic.loadCase("case_rh")
    ventricles = slicer.util.arrayFromSegmentBinaryLabelmap(case.segmentation, case.segmentIds["ventricles"], case.volume)
    ventricles[:, :, :13] = 0  # erase part of the mask (the left body)
    slicer.util.updateSegmentBinaryLabelmapFromArray(ventricles, case.segmentation, case.segmentIds["ventricles"], case.volume)
    logic.setMacs("mild")
    first = logic.saveCase()
    logic.setMacs("severe")
    second = logic.saveCase()

    history = sorted((tiny / "labels/.history/ventricles").glob("case_rh.*.nii.gz"))
    assert len(history) == 2 and set(second.kept) | set(first.kept) >= set(history)
    assert np.array_equal(nifti(history[0])[0], original)  # the version before any edit is kept
    assert nifti(tiny / "labels/ventricles/case_rh.nii.gz")[0].sum() < original.sum()
    entry = load_manifest(tiny).case("case_rh")
    assert (entry.macs, entry.ventricles) == ("severe", "labels/ventricles/case_rh.nii.gz")
    assert not list(tiny.glob("**/*.part*"))  # no temporary file is left behind


def test_unsaved_edits_are_guarded(tiny, logic, harness):
    import slicer
    from SHMNTrainingLib import UnsavedEditsError

    changes = []
    logic.onModifiedChanged = changes.append
    logic.openDataset(tiny)
    case = logic.loadCase("case_rh")
    assert not logic.hasUnsavedChanges
    segments = case.segmentation.GetSegmentation()
    segments.GetSegment(case.segmentIds["pvl"]).SetName("PVL lesion (edited)")  # any content event counts
    assert logic.hasUnsavedChanges and changes[-1] is True
    with pytest.raises(UnsavedEditsError):
        logic.loadCase("case_neg")
    with pytest.raises(UnsavedEditsError):
        logic.openDataset(tiny)
    logic.saveCase()
    assert not logic.hasUnsavedChanges and changes[-1] is False
    logic.setMacs("mild")  # the MACS group is an edit too
    assert logic.hasUnsavedChanges
    logic.loadCase("case_neg", discardChanges=True)
    assert logic.current.caseId == "case_neg" and not logic.hasUnsavedChanges
    assert slicer.mrmlScene.GetFirstNodeByName("case_rh") is None  # the previous case's nodes are gone
    harness.clear_scene()
    logic.forgetScene()
    assert logic.current is None and not logic.hasUnsavedChanges


def test_confidence_from_mask_shape_and_from_probabilities(tmp_path):
    from SHMNTrainingLib.confidence import pseudoLabelConfidence
    from SHMNTrainingLib.selftest import _blob

    shape = (20, 24, 24)
    bodies = _blob(shape, (10, 12, 7), (4, 6, 3)) | _blob(shape, (10, 12, 17), (4, 6, 3))
    specks = bodies.copy()
    specks[2, 2, 2] = specks[18, 20, 20] = specks[2, 20, 2] = True
    paths = {}
    for name, array in {"bodies": bodies, "specks": specks}.items():
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.SetSpacing((2.0, 2.0, 2.0))
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(image, str(paths[name]))
    clean = pseudoLabelConfidence(paths["bodies"], report={"preprocessing": {"registration_quality": {"ok": True}}})
    noisy = pseudoLabelConfidence(paths["specks"])
    assert clean.basis == "mask shape" and clean.score == 1.0 and clean.components == 2 and clean.registrationOk
    assert noisy.components == 5 and 0.9 < noisy.score < 1.0
    assert clean.volumeMl == pytest.approx(bodies.sum() * 8 / 1000)

    probability = np.where(bodies, 0.95, 0.02).astype(np.float32)
    probability[bodies & (np.arange(shape[2]) < 6)] = 0.6  # an unsure edge
    image = sitk.GetImageFromArray(probability)
    image.SetSpacing((2.0, 2.0, 2.0))
    sitk.WriteImage(image, str(tmp_path / "p.nii.gz"))
    sure = pseudoLabelConfidence(paths["bodies"], tmp_path / "p.nii.gz")
    assert sure.basis == "probability" and 0.6 < sure.meanMaxProbability < 0.95 and 0.5 < sure.confidentFraction < 1
    assert "Confidence" in sure.text() and "probability" in sure.text()


# --- engine runs: train (cancel, resume), evaluate, register, predict --------------------------------
MINI_CASES = {  # phantom case -> split in the mini dataset
    ("pvl", "pvl_001"): "train",
    ("macs", "macs_006"): "train",  # ventricles + MACS
    ("macs", "macs_000"): "val",  # MACS only: no ventricle label (the pseudo-label case)
    ("pvl", "pvl_002"): "test",
}


def make_mini_dataset(cohort: Path, folder: Path) -> Path:
    """Four phantom cases copied into one dataset (images and masks keep their relative paths)."""
    from slicer_fixtures import mini_dataset

    return mini_dataset(cohort, folder, MINI_CASES)


@pytest.fixture(scope="module")
def trained(small_cohort, tmp_path_factory, harness):
    """One tiny `shmn train` run: cancelled during epoch 2, resumed to the end, then evaluated."""
    from SHMNCoreLib.jobs import JobState
    from SHMNTrainingLib import Preset, Resolution, SHMNTrainingLogic, TrainDevice, TrainingParameters

    harness.clear_scene()
    root = tmp_path_factory.mktemp("training")
    dataset = make_mini_dataset(Path(small_cohort), root / "mini")
    params = TrainingParameters(datasets=str(dataset), runFolder=str(root / "run"), preset=Preset.SHMN4,
                                resolution=Resolution.TINY, epochs=2, device=TrainDevice.CPU, cacheFolder=str(root / "cache"))
    logic = SHMNTrainingLogic()
    progress, logs = [], []
    first = logic.startTraining(params, onLog=logs.append, onProgress=progress.append)
    deadline = time.monotonic() + TIMEOUT_S
    while not first.records and not first.poll():
        assert time.monotonic() < deadline, "no epoch completed in time:\n" + "\n".join(logs[-20:])
        time.sleep(0.1)
    first.cancel()
    cancelled = {"state": first.state, "records": list(first.records), "exit_code": first.job.runner.exitCode(),
                 "metrics_log_epochs": [json.loads(l)["epoch"] for l in (root / "run/metrics.jsonl").read_text().splitlines()]}

    resumed_params = TrainingParameters(**{**params.__dict__, "resume": True})
    second = logic.startTraining(resumed_params, onLog=logs.append, onProgress=progress.append)
    second.wait(TIMEOUT_S)
    assert second.state is JobState.SUCCEEDED, "\n".join(logs[-30:])
    return {"logic": logic, "params": params, "dataset": dataset, "run": second, "cancelled": cancelled,
            "progress": progress, "logs": logs, "root": root, "first": first}


def test_training_starts_with_the_right_arguments(trained):
    command = trained["logs"][0]
    dataset, root = trained["dataset"], trained["root"]
    assert command.startswith("[shmn train] ")
    assert f"-m shmn train shmn4 --data {dataset} -o {root / 'run'} --epochs 2 --device cpu --resolution tiny --cache {root / 'cache'}" in command
    resumed = [line for line in trained["logs"] if line.startswith("[shmn train]")][1]
    assert "--resume" in resumed


def test_progress_and_epochs_are_parsed_live(trained):
    from SHMNCoreLib.jobs import JobState

    cancelled = trained["cancelled"]
    assert cancelled["state"] is JobState.CANCELLED and cancelled["exit_code"] is not None  # the process is gone
    assert [r["epoch"] for r in cancelled["records"]] == [1] and cancelled["metrics_log_epochs"] == [1]
    stages = {p.stage for p in trained["progress"]}
    assert "preprocessing" in stages and "epoch 1/2" in stages and "epoch 2/2" in stages
    epoch_two = [p.percent for p in trained["progress"] if p.stage == "epoch 2/2" and p.percent is not None]
    assert epoch_two and all(50.0 <= p <= 100.0 for p in epoch_two)  # the run's share, not the epoch's
    assert any(line.startswith("epoch 1: train loss") for line in trained["logs"])


def test_resume_continues_and_curves_fill_the_plot(trained):
    import slicer

    run = trained["run"]
    assert [r["epoch"] for r in run.records] == [1, 2]
    assert any(line.startswith("shmn: resuming") for line in trained["logs"])
    curves = run.curves
    assert list(curves.column("epoch")) == [1.0, 2.0]
    assert np.isfinite(curves.column("train_loss")).all() and np.isfinite(curves.column("val_loss")).all()
    chart = curves.charts["loss"]
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    series = chart.GetNthPlotSeriesNode(0)
    assert series.GetTableNode() is curves.table and series.GetYColumnName() == "train_loss"
    assert isinstance(chart, slicer.vtkMRMLPlotChartNode) and curves.charts["metrics"].GetNumberOfPlotSeriesNodes() == 3
    assert run.model.name == "model-best.safetensors"


def test_evaluation_on_the_test_split_lands_in_a_table(trained):
    run = trained["run"]
    assert run.evaluationError is None, run.evaluationError
    table = run.evaluationResult
    assert table.GetAttribute("SHMN.split") == "test" and table.GetAttribute("SHMN.cases") == "1"
    metrics = [table.GetCellText(row, 0) for row in range(table.GetNumberOfRows())]
    assert "PVL Dice" in metrics
    assert run.evaluation["summary"]["pvl_dice"]["n"] == 1
    assert not any(m.startswith(("macs", "ventricle_dice")) for m in metrics), metrics  # summary keys never shown raw


def test_evaluation_rows_name_both_macs_estimates_and_the_ventricle_visibility_split():
    from SHMNTrainingLib.evaluation import evaluationRows

    summary = {"pvl_dice": {"n": 2, "infinite": 0, "mean": 0.5, "sd": 0.1, "median": 0.5},
               "ventricle_dice_by_visibility": {"visible": {"n": 3, "infinite": 0, "mean": 0.9, "sd": 0.0, "median": 0.9}},
               "macs": {"accuracy": 0.5, "auc": 0.4, "n": 4}, "macs_burden": {"accuracy": 1.0, "auc": 1.0, "n": 4}}
    rows = {row[0]: row for row in evaluationRows({"summary": summary})}
    assert rows["Ventricle Dice, boundary visible"][1:] == ("0.900", "0.000", "0.900", "3")
    assert rows["MACS AUC, network head"][1] == "0.400" and rows["MACS AUC, motor burden, primary"][1] == "1.000"
    assert set(rows) == {"PVL Dice", "Ventricle Dice, boundary visible", "MACS accuracy, network head", "MACS AUC, network head",
                         "MACS accuracy, motor burden, primary", "MACS AUC, motor burden, primary"}
    del summary["macs_burden"]
    assert "MACS AUC" in {row[0] for row in evaluationRows({"summary": summary})}  # one estimate: no need to name it


def test_registered_model_is_selectable_in_the_segmenter(trained, monkeypatch, tmp_path):
    from shmn.io.registry import sha256_of
    from SHMNCoreLib.engine import availableModels, findEngine
    from SHMNTrainingLib import ModelRegistration

    registry = tmp_path / "user" / "models.json"
    monkeypatch.setenv("SHMN_MODEL_REGISTRY", str(registry))
    entry = trained["logic"].registerModel(trained["run"].runFolder, ModelRegistration("annotator-pvl", "1.2.0"))
    stored = registry.parent / entry["file"]
    assert stored.is_file() and entry["sha256"] == sha256_of(stored) == sha256_of(trained["run"].model)
    assert entry["tasks"] == ["pvl", "ventricles", "localization", "macs"] and entry["grid"]["name"] == "tiny"
    assert entry["evaluation"]["pvl_dice"]["n"] == 1
    choices = {c.value: c for c in availableModels(findEngine())}
    assert "annotator-pvl@1.2.0" in choices


def test_prefill_and_pseudo_label_from_the_trained_model(trained):
    import slicer

    logic = trained["logic"]
    logic.openDataset(trained["dataset"])
    case = logic.loadCase("macs_000")  # MACS only: no ventricle label
    assert case.labelled == {"pvl": False, "ventricles": False}
    output = logic.predictCase(model=str(trained["run"].model), device="cpu", timeout_s=TIMEOUT_S)
    assert output.hasTask("ventricles") and output.report["case"] == "macs_000"
    applied = logic.applyPrediction(output)
    assert applied == ["pvl", "ventricles"] and logic.hasUnsavedChanges
    predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(output.mask("ventricles"))))
    inSegment = slicer.util.arrayFromSegmentBinaryLabelmap(case.segmentation, case.segmentIds["ventricles"], case.volume)
    assert inSegment.sum() == predicted.sum()

    confidence = logic.showPseudoLabel(output)
    # The pre-fill asks the engine for probability maps, so the confidence comes from them.
    assert output.probability("ventricles") is not None
    assert confidence.basis == "probability" and 0.5 <= confidence.meanMaxProbability <= 1.0
    assert 0.0 <= confidence.confidentFraction <= 1.0
    assert confidence.volumeMl == pytest.approx(output.report["ventricles"]["volume_ml"], abs=0.01)
    assert logic.pseudoLabel is not None and "pseudo-label" in logic.pseudoLabel.GetName()
    assert logic.predictCase(model=str(trained["run"].model)) is output  # the second time comes from the cache
