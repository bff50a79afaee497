"""What the module's self-test runs: an annotation round trip, and one real training epoch.

The round trip: three small FLAIR-like volumes with masks made on the spot, one on a right-handed
grid, one whose NIfTI affine has a negative determinant (what dcm2niix often writes: Slicer flips
such a volume's voxel array along K) and one oblique; a label painted, saved and read back. No engine
process: seconds. The training epoch: the engine makes a small phantom cohort (``shmn phantom``),
trains SHMN-4 for one epoch on the tiny 4 mm grid on the CPU, evaluates it on the test split, and
the curves, charts and evaluation table land in the scene: about a minute or two on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SIZE_XYZ = (24, 28, 20)
SPACING = (1.5, 1.2, 2.0)
# Direction matrices (LPS, as SimpleITK stores them): identity gives a NIfTI affine of
# diag(-1, -1, 1) (positive determinant); flipping x gives a negative determinant.
def _oblique() -> tuple:
    """20 degrees about z, then 10 about x: an oblique acquisition."""
    a, b = np.radians(20.0), np.radians(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return tuple((rz @ rx).flatten().tolist())


DIRECTIONS = {
    "case_rh": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    "case_neg": (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    "case_obl": _oblique(),
}


def _blob(shape_zyx, centre_zyx, radii_zyx) -> np.ndarray:
    z, y, x = np.ogrid[: shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
    return ((z - centre_zyx[0]) / radii_zyx[0]) ** 2 + ((y - centre_zyx[1]) / radii_zyx[1]) ** 2 + ((x - centre_zyx[2]) / radii_zyx[2]) ** 2 <= 1


def _write(array: np.ndarray, reference: sitk.Image, path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), True)
    return path


def makeTinyDataset(folder: Path, seed: int = 3) -> Path:
    """``folder/images/<case>.nii.gz`` and ``folder/labels/{pvl,ventricles}/<case>.nii.gz`` (no manifest yet).

    The masks are asymmetric along every axis, so any axis flip in a round trip shows.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    shape = SIZE_XYZ[::-1]
    for index, (case, direction) in enumerate(DIRECTIONS.items()):
        grid = sitk.Image(SIZE_XYZ, sitk.sitkUInt8)
        grid.SetSpacing(SPACING)
        grid.SetDirection(direction)
        grid.SetOrigin((10.0 * index, -20.0, 5.0))
        ventricles = _blob(shape, (9, 14, 12), (3, 6, 3)) | _blob(shape, (9, 14, 17), (3, 6, 2))
        pvl = _blob(shape, (12, 9, 6), (2, 2, 3))
        image = 100.0 + 10.0 * rng.standard_normal(shape)
        image[ventricles] = 20.0
        image[pvl] = 180.0
        _write(image.astype(np.float32), grid, folder / "images" / f"{case}.nii.gz")
        _write(ventricles.astype(np.uint8), grid, folder / "labels" / "ventricles" / f"{case}.nii.gz")
        if index == 0:
            _write(pvl.astype(np.uint8), grid, folder / "labels" / "pvl" / f"{case}.nii.gz")
    return folder


@dataclass
class RoundTrip:
    """What the annotation round trip found (the self-test asserts on it)."""

    caseId: str
    createdManifest: bool
    modifiedAfterPaint: bool
    modifiedAfterSave: bool
    writtenKinds: list
    keptVersions: int
    savedMatchesSegment: bool
    savedOnImageGrid: bool
    manifestMacs: str | None
    manifestPvl: str | None

    def problems(self) -> list:
        """What differs from a correct round trip (empty when it is right)."""
        expected = {"createdManifest": True, "modifiedAfterPaint": True, "modifiedAfterSave": False,
                    "writtenKinds": ["pvl", "ventricles"], "keptVersions": 1,  # the ventricle mask it replaced
                    "savedMatchesSegment": True, "savedOnImageGrid": True, "manifestMacs": "severe",
                    "manifestPvl": f"labels/pvl/{self.caseId}.nii.gz"}
        return [f"{name}: {getattr(self, name)!r}, expected {value!r}" for name, value in expected.items() if getattr(self, name) != value]


def annotationRoundTrip(folder: Path, log=print) -> RoundTrip:
    """Open a plain image folder as a dataset, load the negative-determinant case, paint, save, check."""
    import slicer

    from .logic import SHMNTrainingLogic

    folder = makeTinyDataset(folder)
    logic = SHMNTrainingLogic()
    log("Opening a folder of images as a dataset")
    opened = logic.openDataset(folder)
    log("Loading the case whose NIfTI affine has a negative determinant")
    case = logic.loadCase("case_neg")
    segmentId = case.segmentIds["pvl"]
    painted = np.zeros(slicer.util.arrayFromVolume(case.volume).shape, dtype=np.uint8)
    painted[2:5, 3:9, 4:7] = 1  # an asymmetric box, in Slicer's (K, J, I) voxel order
    slicer.util.updateSegmentBinaryLabelmapFromArray(painted, case.segmentation, segmentId, case.volume)
    logic.setMacs("severe")
    modifiedAfterPaint = logic.hasUnsavedChanges
    log("Saving the labels")
    saved = logic.saveCase()
    savedPath = saved.written["pvl"]
    # Read the file back through Slicer's own reader: it must give exactly the painted voxels.
    reloaded = slicer.util.loadLabelVolume(str(savedPath), {"name": "saved PVL", "singleFile": True, "show": False})
    matches = bool(np.array_equal(slicer.util.arrayFromVolume(reloaded) > 0, painted > 0))
    slicer.mrmlScene.RemoveNode(reloaded)
    image = sitk.ReadImage(str(case.imagePath))
    mask = sitk.ReadImage(str(savedPath))
    onGrid = mask.GetSize() == image.GetSize() and np.allclose(mask.GetOrigin(), image.GetOrigin()) and np.allclose(
        mask.GetDirection(), image.GetDirection()) and np.allclose(mask.GetSpacing(), image.GetSpacing())
    entry = saved.manifest.case("case_neg")
    return RoundTrip("case_neg", opened.created, modifiedAfterPaint, logic.hasUnsavedChanges, sorted(saved.written),
                     len(saved.kept), matches, bool(onGrid), entry.macs, entry.pvl)


# --- one epoch of training on the tiny grid ---------------------------------------------------------
PHANTOM_COUNTS = {"n_pvl": 4, "n_macs": 4, "n_ventricle_labels": 2}  # every split of both datasets has a case


@dataclass
class TrainingCheck:
    """What one real training epoch left in the scene and the run folder (the self-test asserts on it)."""

    state: str
    epochs: list
    curveRows: int
    chartNodes: int
    modelFile: str | None
    evaluationRows: int
    evaluationCases: str | None
    log: list

    def problems(self) -> list:
        """What a correct one-epoch run would have that this one lacks (empty when it is right)."""
        found = []
        if self.state != "succeeded":
            found.append(f"the run {self.state}:\n" + "\n".join(self.log[-20:]))
        if (self.epochs, self.curveRows) != ([1], 1):
            found.append(f"epochs {self.epochs} with {self.curveRows} curve rows, expected epoch [1] and one row")
        if not self.chartNodes:
            found.append("no chart node in the scene")
        if not (self.modelFile or "").endswith(".safetensors"):
            found.append(f"no trained model file ({self.modelFile})")
        if not self.evaluationRows:
            found.append("no evaluation table rows")
        return found


def trainOneEpoch(folder: Path, datasets: list | None = None, log=print, timeout_s: float = 1800) -> TrainingCheck:
    """`shmn train` for one epoch on the tiny (4 mm) grid, on phantom datasets the engine makes, then evaluation.

    ``datasets``: dataset folders to use instead (tests pass a cohort they already have).
    """
    import slicer

    from SHMNCoreLib.phantom import makePhantomCohort

    from .logic import SHMNTrainingLogic
    from .parameters import Preset, Resolution, TrainDevice, TrainingParameters
    from .training import trainedModel

    folder = Path(folder)
    logic = SHMNTrainingLogic()
    if datasets is None:
        log("Making a small phantom cohort (shmn phantom)")
        cohort = makePhantomCohort(logic.engine, folder, PHANTOM_COUNTS)
        datasets = [cohort / "pvl", cohort / "macs"]
    params = TrainingParameters(datasets=";".join(str(d) for d in datasets), runFolder=str(folder / "run"),
                                preset=Preset.SHMN4, resolution=Resolution.TINY, epochs=1, device=TrainDevice.CPU,
                                cacheFolder=str(folder / "cache"))
    lines = []
    log("Training one epoch on the tiny grid, then evaluating on the test split")
    run = logic.startTraining(params, onLog=lines.append).wait(timeout_s)
    table = run.evaluationResult
    model = trainedModel(run.runFolder)
    charts = [node for node in run.curves.charts.values() if node.GetScene() is slicer.mrmlScene]
    return TrainingCheck(run.state.value, [r["epoch"] for r in run.records], run.curves.table.GetNumberOfRows(),
                         len(charts), str(model) if model else None, table.GetNumberOfRows() if table is not None else 0,
                         table.GetAttribute("SHMN.cases") if table is not None else None, lines)
