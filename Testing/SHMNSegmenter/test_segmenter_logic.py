"""SHMNSegmenter's logic against the real MRML (slicer-core) and the real engine (`shmn predict` subprocess).

Phantom cases are loaded the way Slicer loads files (through ``slicer.util.loadVolume``), once stored
with a positive and once with a negative affine determinant (Slicer reverses K for the latter). The
engine runs with a tiny random-weight model (``slicer_fixtures.tiny_model``): geometry and plumbing
are checked exactly; whether the lesion segment finds the phantom's lesion needs the trained default
model (``test_default_model_segment_lands_on_the_phantom_lesion``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest_plugins = ["slicer_fixtures"]
pytestmark = pytest.mark.xdist_group("slicer-segmenter")  # one worker: the engine runs once per storage order

ENGINE_TIMEOUT_S = 300


# ---------------------------------------------------------------- helpers


def load_under_study(path: Path, name: str):
    """Load a FLAIR as Slicer does and file it under Patient/Study in the subject hierarchy."""
    import slicer

    volume = slicer.util.loadVolume(str(path), {"name": name})
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Phantom patient")
    study = hierarchy.CreateStudyItem(patient, "FLAIR study")
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(volume), study)
    return volume, study


def ijk_to_ras(node) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def as_sitk(array_kji: np.ndarray, ijk_to_ras_matrix: np.ndarray) -> sitk.Image:
    """A Slicer voxel array (K, J, I) with its IJK-to-RAS matrix as a SimpleITK image (LPS)."""
    lps = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras_matrix[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image = sitk.GetImageFromArray(array_kji.astype(np.uint8))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    return image


def segment_on_volume_grid(segmentation, segment_id: str, volume) -> np.ndarray:
    import slicer

    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, volume)


def snapshot(result, volume, study) -> dict:
    """Everything the tests check, copied out of the scene (the scene is cleared afterwards)."""
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    segments = result.segmentation.GetSegmentation()
    surface = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    segment_facts = {}
    for index in range(segments.GetNumberOfSegments()):
        segment_id = segments.GetNthSegmentID(index)
        segment = segments.GetSegment(segment_id)
        segment_facts[segment_id] = {
            "name": segment.GetName(),
            "color": tuple(segment.GetColor()),
            "terminology": _terminology_tag(segment),
            "mask_kji": segment_on_volume_grid(result.segmentation, segment_id, volume).copy(),
        }
    table = result.table
    saved = Path(slicer.app.temporaryPath) / f"{volume.GetName()}-roundtrip.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(saved))
    assert storage.WriteData(result.segmentation)
    return {
        "volume_ijk_to_ras": ijk_to_ras(volume),
        "volume_shape_kji": slicer.util.arrayFromVolume(volume).shape,
        "segments": segment_facts,
        "has_surface": segments.ContainsRepresentation(surface),
        "surface_points": {
            sid: (result.segmentation.GetClosedSurfaceInternalRepresentation(sid).GetNumberOfPoints()
                  if result.segmentation.GetClosedSurfaceInternalRepresentation(sid) else 0)
            for sid in segment_facts
        },
        "parents": {
            kind: hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))
            for kind, node in (("segmentation", result.segmentation), ("centres", result.centres), ("table", result.table))
        },
        "study": study,
        "columns": [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())],
        "rows": [[table.GetCellText(r, c) for c in range(table.GetNumberOfColumns())] for r in range(table.GetNumberOfRows())],
        "points": [
            (result.centres.GetNthControlPointLabel(i), list(result.centres.GetNthControlPointPosition(i)))
            for i in range(result.centres.GetNumberOfControlPoints())
        ],
        "report": result.report,
        "summary": result.summary,
        "case_dir": result.caseDir,
        "case_report": result.caseReport,
        "table_report_attribute": table.GetAttribute("SHMN.report"),
        "roundtrip_file": saved,
    }


def _terminology_tag(segment) -> str:
    import vtk

    value = vtk.reference("")
    segment.GetTag(segment.GetTerminologyEntryTagName(), value)
    return str(value)


# ---------------------------------------------------------------- the engine run, once per storage order


@pytest.fixture(scope="module")
def runs(slicer_app, phantom_case, tiny_model):
    """The logic run on the phantom stored both ways; facts snapshotted, then the scene cleared."""
    from SHMNSegmenterLib import Device, SegmenterParameters, SHMNSegmenterLogic

    facts = {}
    for storage in ("positive", "negative"):
        volume, study = load_under_study(phantom_case[storage], f"phantom_{storage}")
        progress = []
        result = SHMNSegmenterLogic().segment(
            SegmenterParameters(inputVolume=volume, modelName=str(tiny_model), device=Device.CPU),
            timeout_s=ENGINE_TIMEOUT_S,
            onProgress=progress.append,
        )
        facts[storage] = snapshot(result, volume, study)
        facts[storage]["progress"] = progress
        slicer_app.clear_scene()
    return facts


# ---------------------------------------------------------------- harness fidelity (Slicer's own behaviour)


def test_slicer_reverses_k_for_a_negative_determinant_nifti_but_keeps_the_physical_image(scene, phantom_case):
    import nibabel as nib
    import slicer

    positive = slicer.util.loadVolume(str(phantom_case["positive"]))
    negative = slicer.util.loadVolume(str(phantom_case["negative"]))
    assert np.linalg.det(nib.load(str(phantom_case["negative"])).affine[:3, :3]) < 0
    a, b = ijk_to_ras(positive), ijk_to_ras(negative)
    assert np.linalg.det(a[:3, :3]) > 0 and np.linalg.det(b[:3, :3]) > 0  # Slicer's IJK is right-handed
    # Same voxels in physical space: resampling one onto the other reproduces it exactly.
    pa, pb = (as_sitk(slicer.util.arrayFromVolume(v) > np.median(slicer.util.arrayFromVolume(v)), ijk_to_ras(v)) for v in (positive, negative))
    resampled = sitk.Resample(pb, pa, sitk.Transform(), sitk.sitkNearestNeighbor)
    assert (sitk.GetArrayViewFromImage(resampled) == sitk.GetArrayViewFromImage(pa)).mean() > 0.999
    # ...yet the arrays differ: code that assumed an axis order would be wrong for one of them.
    assert not np.array_equal(slicer.util.arrayFromVolume(positive), slicer.util.arrayFromVolume(negative))


def test_slicer_util_reads_and_writes_files_through_the_stand_in_io_manager(scene, phantom_case, tmp_path):
    import slicer
    import vtk

    volume = slicer.util.loadVolume(str(phantom_case["positive"]), {"name": "flair"})
    assert volume.GetName() == "flair" and slicer.util.getNode("flair") is volume
    assert slicer.util.saveNode(volume, str(tmp_path / "flair.nrrd"))
    again = slicer.util.loadVolume(str(tmp_path / "flair.nrrd"))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(again), slicer.util.arrayFromVolume(volume))
    np.testing.assert_allclose(ijk_to_ras(again), ijk_to_ras(volume), atol=1e-4)
    label = slicer.util.loadLabelVolume(str(phantom_case["pvl"]))
    assert label.IsA("vtkMRMLLabelMapVolumeNode") and slicer.util.arrayFromVolume(label).any()
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "results")
    column = vtk.vtkStringArray()
    column.SetName("Measurement")
    table.AddColumn(column)
    table.SetCellText(table.AddEmptyRow(), 0, "PVL total")
    assert slicer.util.saveNode(table, str(tmp_path / "results.tsv"))
    assert slicer.util.loadNodeFromFile(str(tmp_path / "results.tsv")).GetCellText(0, 0) == "PVL total"
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "centres")
    points.AddControlPoint(vtk.vtkVector3d(1.0, 2.0, 3.0), "L1")
    assert slicer.util.saveNode(points, str(tmp_path / "centres.mrk.json"))
    assert slicer.util.loadMarkups(str(tmp_path / "centres.mrk.json")).GetNthControlPointPosition(0) == (1.0, 2.0, 3.0)
    with pytest.raises(RuntimeError, match="Failed to load"):
        slicer.util.loadVolume(str(tmp_path / "missing.nii.gz"))


def test_data_nodes_get_and_lose_their_subject_hierarchy_item_as_in_slicer(scene):
    import slicer

    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "t")
    item = hierarchy.GetItemByDataNode(table)
    assert item and hierarchy.GetItemParent(item) == hierarchy.GetSceneItemID()
    hidden = scene.CreateNodeByClass("vtkMRMLTableNode")
    hidden.UnRegister(None)
    hidden.SetHideFromEditors(True)
    scene.AddNode(hidden)
    assert not hierarchy.GetItemByDataNode(hidden)
    scene.RemoveNode(table)
    assert not hierarchy.GetItemDataNode(item)


# ---------------------------------------------------------------- end to end: the engine's outputs in MRML


@pytest.mark.parametrize("storage", ["positive", "negative"])
def test_segmentation_has_both_segments_with_engine_names_colours_and_terminology(runs, storage):
    from shmn.terminology import SEGMENTS

    segments = runs[storage]["segments"]
    assert list(segments) == [term.segment_id for term in SEGMENTS]
    for term in SEGMENTS:
        facts = segments[term.segment_id]
        assert facts["name"] == term.name
        np.testing.assert_allclose(facts["color"], term.color, atol=1e-3)
        assert facts["terminology"] == term.terminology_entry()


@pytest.mark.parametrize("storage", ["positive", "negative"])
def test_segments_lie_on_the_input_volume_exactly_where_the_engine_put_the_masks(runs, storage):
    """Slicer's segment voxels vs the engine's pvl/ventricles.nii.gz, compared through physical space."""
    facts = runs[storage]
    grid = as_sitk(np.zeros(facts["volume_shape_kji"], np.uint8), facts["volume_ijk_to_ras"])
    for segment_id, mask_file in (("pvl_lesion", "pvl.nii.gz"), ("lateral_ventricles", "ventricles.nii.gz")):
        engine_mask = sitk.ReadImage(str(facts["case_dir"] / mask_file))
        on_slicer_grid = sitk.GetArrayFromImage(sitk.Resample(engine_mask, grid, sitk.Transform(), sitk.sitkNearestNeighbor))
        slicer_mask = facts["segments"][segment_id]["mask_kji"] > 0
        if segment_id == "lateral_ventricles":  # the seg.nrrd gives overlapping voxels to the lesion
            on_slicer_grid = on_slicer_grid & ~(facts["segments"]["pvl_lesion"]["mask_kji"] > 0)
        assert slicer_mask.shape == facts["volume_shape_kji"]
        np.testing.assert_array_equal(slicer_mask, on_slicer_grid > 0, err_msg=segment_id)


def test_same_physical_phantom_stored_either_way_gives_the_same_physical_segmentation(runs):
    positive, negative = runs["positive"], runs["negative"]
    grid = as_sitk(np.zeros(positive["volume_shape_kji"], np.uint8), positive["volume_ijk_to_ras"])
    for segment_id in ("pvl_lesion", "lateral_ventricles"):
        a = positive["segments"][segment_id]["mask_kji"] > 0
        b_image = as_sitk(negative["segments"][segment_id]["mask_kji"], negative["volume_ijk_to_ras"])
        b = sitk.GetArrayFromImage(sitk.Resample(b_image, grid, sitk.Transform(), sitk.sitkNearestNeighbor)) > 0
        assert (a == b).mean() > 0.99, segment_id


@pytest.mark.parametrize("storage", ["positive", "negative"])
def test_closed_surfaces_are_built_for_3d_display(runs, storage):
    facts = runs[storage]
    assert facts["has_surface"]
    for segment_id, points in facts["surface_points"].items():
        assert (points > 0) == bool(facts["segments"][segment_id]["mask_kji"].any()), segment_id


@pytest.mark.parametrize("storage", ["positive", "negative"])
def test_results_are_filed_under_the_input_study(runs, storage):
    facts = runs[storage]
    assert set(facts["parents"].values()) == {facts["study"]}


@pytest.mark.parametrize("storage", ["positive", "negative"])
def test_lesion_centres_match_the_report(runs, storage):
    facts = runs[storage]
    lesions = facts["report"]["pvl"]["lesions"]
    candidates = (facts["report"]["pvl"].get("not_shown") or {}).get("candidates") or []
    assert len(facts["points"]) == len(lesions) + len(candidates)
    expected = [(f"L{n}", lesion) for n, lesion in enumerate(lesions, start=1)] + [(f"C{n}", c) for n, c in enumerate(candidates, start=1)]
    for (label, position), (expected_label, finding) in zip(facts["points"], expected):
        assert label == expected_label
        np.testing.assert_allclose(position, finding["centre_ras_mm"], atol=1e-3)


@pytest.mark.parametrize("storage", ["positive", "negative"])
def test_table_values_match_the_report(runs, storage):
    facts = runs[storage]
    report = facts["report"]
    rows = {row[0]: row for row in facts["rows"]}
    assert facts["columns"][:3] == ["Measurement", "Value", "Unit"]
    lesions = report["pvl"]["lesions"]
    for number, lesion in enumerate(lesions, start=1):
        row = rows[f"PVL lesion {number}"]
        assert float(row[1]) == pytest.approx(lesion["volume_ml"], abs=1e-4) and row[2] == "mL"
        np.testing.assert_allclose([float(v) for v in row[3:6]], lesion["centre_ras_mm"], atol=0.05)
    assert float(rows["PVL total"][1]) == pytest.approx(report["pvl"]["volume_ml"], abs=1e-3)
    assert int(rows["PVL lesion count"][1]) == len(lesions)
    assert float(rows["Lateral ventricles total"][1]) == pytest.approx(report["ventricles"]["volume_ml"], abs=1e-3)
    assert float(rows["MACS probability (severe)"][1]) == pytest.approx(report["macs"]["probability_severe"], abs=1e-4)
    assert rows["MACS group"][1].startswith(report["macs"]["group"])
    assert rows["Model"][1] == f"{report['model']['name']} {report['model']['version']}"
    assert rows["Model sha256"][1] == report["model"]["sha256"]
    assert rows["Case report"][1] == str(facts["case_dir"] / "report.html")
    # The motor-pathway burden: the second MACS estimate, which one is primary, each region and side, all regions.
    burden = report["motor_burden"]
    assert rows["Primary MACS estimate"][1] and rows["MACS group, from motor burden"][1] == report["macs_from_burden"]["group"]
    assert float(rows["Motor burden: all regions"][1]) == pytest.approx(burden["totals"]["both"]["lesion_ml"], abs=1e-3)
    assert float(rows["Lesion volume, template space (all lesions)"][1]) == pytest.approx(burden["all_lesions_ml"], abs=1e-3)
    assert len(facts["rows"]) == len(lesions) + 8 + 3 + len(burden["regions"]) + 2


@pytest.mark.parametrize("storage", ["positive"])
def test_summary_for_the_user(runs, storage):
    facts = runs[storage]
    summary, report = facts["summary"], facts["report"]
    assert summary.macsProbabilitySevere == report["macs"]["probability_severe"]
    assert summary.lesionCount == len(report["pvl"]["lesions"])
    assert summary.pvlVolumeMl == report["pvl"]["volume_ml"]
    text = summary.text()
    assert report["disclaimer"] in text and "MACS" in text and "PVL" in text


def test_seg_nrrd_written_by_slicer_reads_back_in_slicerio_unchanged(runs):
    import slicerio

    from shmn.terminology import SEGMENTS

    facts = runs["negative"]
    engine = slicerio.read_segmentation(str(facts["case_dir"] / "segmentation.seg.nrrd"))
    saved = slicerio.read_segmentation(str(facts["roundtrip_file"]))
    for term in SEGMENTS:
        segment = next(s for s in saved["segments"] if s["id"] == term.segment_id)
        assert segment["name"] == term.name
        np.testing.assert_allclose(segment["color"], term.color, atol=1e-3)
        assert segment["terminology"]["type"] == term.type.as_list()
        assert segment["terminology"]["category"] == term.category.as_list()
        # Same voxels in physical space, whatever extent or voxel order each writer chose.
        a = slicerio.extract_segments(engine, [(term.name, 1)])
        b = slicerio.extract_segments(saved, [(term.name, 1)])
        assert _physical_voxels(a) == _physical_voxels(b), term.name


def _physical_voxels(segmentation: dict) -> set:
    ijk = np.argwhere(segmentation["voxels"] > 0)
    lps = segmentation["ijkToLPS"] @ np.c_[ijk, np.ones(len(ijk))].T
    return set(map(tuple, np.round(lps[:3].T, 2)))


def test_run_folder_keeps_the_outputs_and_drops_the_input_copy(runs):
    case_dir = runs["positive"]["case_dir"]
    assert (case_dir / "report.json").is_file() and (case_dir / "overview.png").is_file()
    assert not (case_dir.parent.parent / "input").exists()


# ---------------------------------------------------------------- results import on its own (no engine run)


def test_results_follow_the_input_volume_transform(scene, runs, phantom_case):
    import slicer

    from SHMNSegmenterLib.results import importResults

    volume = slicer.util.loadVolume(str(phantom_case["positive"]))
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    imported = importResults(runs["positive"]["case_dir"], volume, slicer.modules.segmentations.logic())
    assert imported.segmentation.GetTransformNodeID() == transform.GetID()
    assert imported.centres.GetTransformNodeID() == transform.GetID()


def test_incomplete_engine_output_is_refused_without_touching_the_scene(scene, runs, phantom_case, tmp_path):
    import shutil

    import slicer

    from SHMNSegmenterLib.results import ResultsError, importResults

    volume = slicer.util.loadVolume(str(phantom_case["positive"]))
    broken = tmp_path / "case"
    shutil.copytree(runs["positive"]["case_dir"], broken)
    report = json.loads((broken / "report.json").read_text())
    del report["macs"]
    (broken / "report.json").write_text(json.dumps(report))
    before = scene.GetNumberOfNodes()
    with pytest.raises(ResultsError, match="lacks macs"):
        importResults(broken, volume, slicer.modules.segmentations.logic())
    assert scene.GetNumberOfNodes() == before


def test_report_without_a_task_shows_not_available(runs):
    from SHMNSegmenterLib.results import ResultSummary, tableRows

    report = json.loads(json.dumps(runs["positive"]["report"]))
    report["macs"].update(probability_severe=None, group=None)
    report["ventricles"]["volume_ml"] = None
    rows = {row[0]: row for row in tableRows(report)}
    assert rows["MACS group"][1] == "n/a" and rows["Lateral ventricles total"][1] == "n/a"
    text = ResultSummary.fromReport(report).text()
    assert "MACS: n/a" in text and "Ventricles: n/a" in text


# ---------------------------------------------------------------- failures and Cancel


def test_engine_error_fails_the_job_with_the_engine_message_and_adds_nothing(scene, phantom_case, tmp_path):
    import slicer

    from SHMNSegmenterLib import JobState, SegmenterParameters, SHMNSegmenterLogic

    volume = slicer.util.loadVolume(str(phantom_case["positive"]))
    before = scene.GetNumberOfNodes()
    job = SHMNSegmenterLogic().startSegmentation(
        SegmenterParameters(inputVolume=volume, modelName=str(tmp_path / "missing.safetensors"))
    )
    with pytest.raises(RuntimeError, match="no such model file"):
        job.wait(ENGINE_TIMEOUT_S)
    assert job.state is JobState.FAILED
    assert scene.GetNumberOfNodes() == before
    assert not job.runDir.exists()


def test_a_run_that_cannot_start_leaves_no_folder_behind(scene, phantom_case, slicer_app):
    import slicer

    from SHMNSegmenterLib import SegmenterParameters, SHMNSegmenterLogic
    from SHMNCoreLib.engine import Engine, findEngine

    volume = slicer.util.loadVolume(str(phantom_case["positive"]))
    broken = Engine(root=findEngine().root, python=Path("/nonexistent/python"), origin="developer")
    runs_root = Path(slicer_app.temporary_path) / "SHMN"
    before = set(runs_root.iterdir()) if runs_root.exists() else set()
    with pytest.raises(FileNotFoundError):
        SHMNSegmenterLogic(engine=broken).startSegmentation(SegmenterParameters(inputVolume=volume))
    assert set(runs_root.iterdir()) == before


def test_parameters_are_checked_before_anything_runs(scene):
    from SHMNSegmenterLib import SegmenterParameters, SHMNSegmenterLogic

    with pytest.raises(ValueError, match="Select an input volume"):
        SHMNSegmenterLogic().startSegmentation(SegmenterParameters())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purpose.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


@pytest.mark.skipif(os.name == "nt", reason="process groups are POSIX; Windows uses taskkill /T")
def test_cancel_kills_the_whole_engine_process_tree_and_imports_nothing(scene, phantom_case, tiny_model):
    import slicer

    from SHMNSegmenterLib import JobState, SegmenterParameters, SHMNSegmenterLogic

    volume = slicer.util.loadVolume(str(phantom_case["positive"]))
    before = scene.GetNumberOfNodes()
    job = SHMNSegmenterLogic().startSegmentation(SegmenterParameters(inputVolume=volume, modelName=str(tiny_model)))
    pid = job.runner.pid
    time.sleep(1.0)
    assert not job.poll(), "the engine finished before it could be cancelled"
    job.cancel()
    assert job.state is JobState.CANCELLED
    assert not _alive(pid)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing of the engine's process group is left
    assert not job.runDir.exists()
    assert scene.GetNumberOfNodes() == before


@pytest.mark.skipif(os.name == "nt", reason="process groups are POSIX; Windows uses taskkill /T")
def test_runner_kill_reaches_grandchildren(tmp_path):
    from SHMNCoreLib.process import SubprocessRunner

    pid_file = tmp_path / "grandchild.pid"
    script = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    runner = SubprocessRunner()
    runner.start([sys.executable, "-c", script])
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(pid_file.read_text())
    runner.kill()
    assert runner.exitCode() is not None
    time.sleep(0.2)
    assert not _alive(grandchild)


def test_runner_delivers_output_lines_split_on_carriage_returns():
    from SHMNCoreLib.process import SubprocessRunner

    runner = SubprocessRunner()
    runner.start([sys.executable, "-c", "import sys; sys.stderr.write('a\\rb\\r\\nc\\n'); print('d', end='')"])
    assert runner.wait(30) == 0
    assert runner.readLines() == ["a", "b", "c", "d"]


# ---------------------------------------------------------------- progress, parameters, engine location


def test_progress_is_read_from_structured_lines_not_from_bars():
    from SHMNCoreLib.enginecontract import parseProgress
    from SHMNCoreLib.process import Progress, splitOutput
    from shmn.contract import progress_record, structured_line

    line = structured_line("SHMN-PROGRESS", progress_record("case_1", 1, 2, step="preprocess"))
    assert parseProgress(line) == Progress("case_1", 50.0)
    assert parseProgress('SHMN-PROGRESS {"stage": "epoch 2/4", "done": 0, "total": 3, "percent": 25.0}') == Progress("epoch 2/4", 25.0)
    assert parseProgress('SHMN-PROGRESS {"stage": "x", "done": 0, "total": null, "percent": null}') == Progress("x", None)
    # A progress bar's text is an ordinary log line now, and so is a damaged structured line.
    assert parseProgress("shmn predict:  50%|#####     | 1/2 [00:01<00:01,  1.2s/case]") is None
    assert parseProgress("SHMN-PROGRESS {not json") is None
    assert parseProgress('SHMN-PROGRESS {"stage": "x", "percent": "half"}') is None
    assert parseProgress("brain: MACS severe, PVL 1.2 mL in 2 lesion(s)") is None
    assert splitOutput("x:  0%| | 0/2\rx: 50%| | 1/2\rpartial") == (["x:  0%| | 0/2", "x: 50%| | 1/2"], "partial")


def test_progress_reports_reach_the_caller_during_a_run(runs):
    stages = [p.stage for p in runs["positive"]["progress"]]
    assert stages and stages[0] in ("shmn predict", "fetch template")
    # The engine's SHMN-PROGRESS lines over the case's stages: percents that only go up, to 100.
    percents = [p.percent for p in runs["positive"]["progress"] if p.stage == "phantom_positive" and p.percent is not None]
    assert len(percents) >= 3 and percents == sorted(percents) and percents[-1] == 100.0, runs["positive"]["progress"]


def test_parameters_are_plain_typed_python():
    from SHMNSegmenterLib.parameters import DEFAULT_MODEL, Device, SegmenterParameters, parametersFromNode

    parameters = SegmenterParameters()
    assert (parameters.modelName, parameters.device, parameters.register) == (DEFAULT_MODEL, Device.AUTO, True)
    assert (parameters.flipTest, parameters.nativeBoundary) == (True, True)  # the engine's own defaults:
    from shmn.inference.predict import PredictOptions

    assert (parameters.flipTest, parameters.nativeBoundary) == (PredictOptions().tta, PredictOptions().native_boundary)
    assert [d.value for d in Device] == ["auto", "cpu", "cuda"]
    assert Device.GPU.label() == "GPU (CUDA)"
    node = type("Wrapped", (), {"inputVolume": None, "modelName": "m@1.0.0", "device": Device.CPU, "register": False,
                                "flipTest": True, "nativeBoundary": False})()
    assert parametersFromNode(node) == SegmenterParameters(None, "m@1.0.0", Device.CPU, False, True, False)


def test_engine_is_found_in_the_repository_and_commanded_as_documented(tmp_path):
    from SHMNCoreLib.engine import engineEnvironment, findEngine, predictCommand

    engine = findEngine()
    assert engine.origin == "developer" and engine.package == Path(__file__).resolve().parents[2] / "shmn"
    command = predictCommand(engine, tmp_path / "in.nrrd", tmp_path / "out", "m@1.0.0", "cuda", register=False)
    assert command[1:4] == ["-m", "shmn", "predict"]
    assert command[4:] == [str(tmp_path / "in.nrrd"), "-o", str(tmp_path / "out"), "--device", "cuda", "--model", "m@1.0.0", "--no-register"]
    plain = predictCommand(engine, tmp_path / "in.nrrd", tmp_path / "out")
    assert not {"--model", "--tta", "--no-tta", "--boundary"} & set(plain)  # defaults add nothing
    asked = predictCommand(engine, tmp_path / "in.nrrd", tmp_path / "out", tta=False, nativeBoundary=False)
    assert asked[len(plain):] == ["--no-tta", "--boundary", "model"]
    assert predictCommand(engine, tmp_path / "in.nrrd", tmp_path / "out", tta=True) == plain  # the engine's default
    assert predictCommand(engine, tmp_path / "in.nrrd", tmp_path / "out", tta=False)[len(plain):] == ["--no-tta"]
    env = engineEnvironment(engine, {"PYTHONPATH": "/elsewhere"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(engine.root), "/elsewhere"]
    # The command really is the engine's: its help names the documented options.
    help_text = subprocess.run(predictCommand(engine, Path("x"), Path("y"))[:4] + ["--help"], env=env,
                               capture_output=True, text=True, timeout=180).stdout
    assert all(option in help_text for option in ("--model", "--device", "--no-register", "-o", "--no-tta", "--boundary"))
    assert "{native,model}" in help_text  # `--boundary model` is one of the engine's choices


def test_engine_found_beside_an_installed_module(tmp_path):
    import shutil

    from SHMNCoreLib.engine import findEngineRoot

    installed = tmp_path / "qt-scripted-modules"
    shutil.copytree(Path(__file__).resolve().parents[2] / "shmn", installed / "shmn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    assert findEngineRoot(installed) == (installed, "extension")


def test_model_choices_come_from_the_engine_registry(tmp_path, tiny_model, monkeypatch):
    from shmn.io.registry import register_model

    from SHMNCoreLib.engine import availableModels, findEngine

    registry = tmp_path / "models.json"
    register_model(tiny_model, registry, name="user-model", version="1.2.0", default=True)
    monkeypatch.setenv("SHMN_MODEL_REGISTRY", str(registry))
    choices = availableModels(findEngine())
    assert choices[0].value == "user-model@1.2.0" and choices[0].isDefault and "(default)" in choices[0].label


# ---------------------------------------------------------------- dependencies and terminology


def test_dependencies_are_satisfied_in_the_development_environment():
    from SHMNCoreLib.dependencies import checkDependencies
    from SHMNCoreLib.engine import findEngine

    status = checkDependencies(findEngine())
    assert status.ready, status.question()


def test_missing_packages_are_detected_and_described(tmp_path):
    from SHMNCoreLib.dependencies import DependencyStatus, isSatisfied, readRequirements

    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=1.0\nshmn-no-such-package>=1\nnumpy<1.0\n--index-url x\n")
    assert readRequirements(requirements) == ["numpy>=1.0", "shmn-no-such-package>=1", "numpy<1.0"]
    assert [isSatisfied(r) for r in readRequirements(requirements)] == [True, False, False]
    assert isSatisfied("shmn-no-such-package; sys_platform == 'nonexistent'")
    question = DependencyStatus(("shmn-no-such-package>=1",), True, True).question()
    assert "shmn-no-such-package>=1" in question and "PyTorch" in question and "template" in question


def test_requirements_file_matches_the_engine_dependencies():
    import tomllib

    from packaging.requirements import Requirement

    from SHMNCoreLib.dependencies import TORCH_REQUIREMENT, readRequirements

    repo = Path(__file__).resolve().parents[2]
    engine = {Requirement(r).name.lower(): Requirement(r) for r in tomllib.loads((repo / "pyproject.toml").read_text())["project"]["dependencies"]}
    module = {Requirement(r).name.lower(): Requirement(r) for r in readRequirements()}
    # torch comes through the PyTorch extension; SimpleITK ships with Slicer and must not be replaced.
    assert set(engine) - set(module) == {"torch", "simpleitk"}
    assert set(module) <= set(engine)
    for name, requirement in module.items():
        assert requirement.specifier == engine[name].specifier, name
    assert Requirement(TORCH_REQUIREMENT).specifier == engine["torch"].specifier


def test_terminology_file_agrees_with_the_engine_terminology(slicer_app):
    from shmn.terminology import SEGMENTS, SHMN_CONTEXT

    from SHMNSegmenterLib.terminology import findTerminologyFile

    context = json.loads(findTerminologyFile().read_text())
    assert context["SegmentationCategoryTypeContextName"] == SHMN_CONTEXT
    categories = context["SegmentationCodes"]["Category"]
    for term in SEGMENTS:
        category = next(c for c in categories if c["CodeValue"] == term.category.value)
        assert [category["CodingSchemeDesignator"], category["CodeValue"], category["CodeMeaning"]] == term.category.as_list()
        entry = next(t for t in category["Type"] if t["CodeValue"] == term.type.value)
        assert [entry["CodingSchemeDesignator"], entry["CodeValue"], entry["CodeMeaning"]] == term.type.as_list()
        assert tuple(entry["recommendedDisplayRGBValue"]) == term.color_rgb255
        assert entry["3dSlicerLabel"] == term.name
    pvl = next(t for t in SEGMENTS if t.segment_id == "pvl_lesion")
    assert pvl.type.scheme.startswith("99") and pvl.type.value.startswith("99")  # DICOM private code
    ventricles = next(t for t in SEGMENTS if t.segment_id == "lateral_ventricles")
    assert ventricles.type.as_list() == ["SCT", "66720007", "Lateral ventricle"]


def test_slicer_terminology_module_loads_the_context_and_resolves_the_pvl_entry(slicer_app):
    import slicer

    from shmn.terminology import PVL_LESION, SHMN_CONTEXT

    from SHMNSegmenterLib.terminology import loadTerminology

    logic = slicer.modules.terminologies.logic()
    assert loadTerminology(logic) == SHMN_CONTEXT
    assert loadTerminology(logic) == SHMN_CONTEXT  # loading again is harmless
    entry = slicer.vtkSlicerTerminologyEntry()
    assert logic.DeserializeTerminologyEntry(PVL_LESION.terminology_entry(), entry)
    category, found = entry.GetCategoryObject(), slicer.vtkSlicerTerminologyType()
    assert logic.GetNumberOfTypesInTerminologyCategory(SHMN_CONTEXT, category) == 1
    logic.GetNthTypeInTerminologyCategory(SHMN_CONTEXT, category, 0, found)
    assert (found.GetCodingSchemeDesignator(), found.GetCodeValue()) == (PVL_LESION.type.scheme, PVL_LESION.type.value)
    assert tuple(found.GetRecommendedDisplayRGBValue()) == PVL_LESION.color_rgb255


# ---------------------------------------------------------------- with the trained model (the lead's shipped model)


def test_default_model_segment_lands_on_the_phantom_lesion(scene, paper_phantom_case):
    """The shipped model (Resources/models.json's default) finds the phantom's lesion through the whole
    Slicer chain, on the negative-determinant copy of a clinical-resolution phantom case."""
    import slicer

    from shmn.errors import ShmnError
    from shmn.io.registry import default_model, shipped_registry_path

    from SHMNSegmenterLib import SegmenterParameters, SHMNSegmenterLogic

    try:
        shipped = default_model([shipped_registry_path()])
    except ShmnError as exc:
        pytest.fail(f"the shipped default model is missing from Resources/models.json: {exc}")
    volume = slicer.util.loadVolume(str(paper_phantom_case["negative"]))
    truth = slicer.util.loadLabelVolume(str(paper_phantom_case["negative_pvl"]))
    parameters = SegmenterParameters(inputVolume=volume, modelName=f"{shipped.name}@{shipped.version}")
    result = SHMNSegmenterLogic().segment(parameters, timeout_s=ENGINE_TIMEOUT_S)
    predicted = segment_on_volume_grid(result.segmentation, "pvl_lesion", volume) > 0
    expected = slicer.util.arrayFromVolume(truth) > 0
    dice = 2 * (predicted & expected).sum() / max(predicted.sum() + expected.sum(), 1)
    assert result.centres.GetNumberOfControlPoints() >= 1
    assert dice > 0.3, dice


# ---------------------------------------------------------------- the case report ("Open report")


def test_open_report_opens_the_case_report_through_the_logic(runs, tmp_path):
    """The engine wrote report.html; the table names it; the logic hands exactly that file to the opener."""
    from SHMNSegmenterLib import SHMNSegmenterLogic
    from SHMNSegmenterLib.casereport import ReportMissing

    facts = runs["positive"]
    report_html = facts["case_dir"] / "report.html"
    assert facts["case_report"] == report_html and report_html.is_file()
    assert (facts["case_dir"] / "report.pdf").is_file()
    assert facts["table_report_attribute"] == str(report_html)
    html = report_html.read_text(encoding="utf-8")
    assert f"{facts['report']['pvl']['volume_ml']:.2f} mL" in html
    opened = []
    assert SHMNSegmenterLogic.openReport(facts["case_dir"], opener=lambda path: opened.append(path) or True) == report_html
    assert opened == [report_html]
    with pytest.raises(ReportMissing, match="no case report"):
        SHMNSegmenterLogic.openReport(tmp_path, opener=opened.append)
    with pytest.raises(ReportMissing, match="could not open"):
        SHMNSegmenterLogic.openReport(facts["case_dir"], opener=lambda path: False)
    assert opened == [report_html]
