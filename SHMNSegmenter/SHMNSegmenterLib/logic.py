"""The segmenter's logic: input volume -> engine run in its own process -> results in the scene.

One Apply is one ``SegmentationJob`` (SHMNCoreLib.jobs.EngineJob): the input volume is written to a fresh run folder under
Slicer's temporary path, the engine's commands run one after another (``shmn fetch-anatomy`` first
if the template is missing, then ``shmn predict``), and when the last one succeeds its output is
imported into MRML. The job is polled (``poll()``) by whoever started it: the widget's QTimer in
Slicer, ``wait()`` in tests and scripts. MRML is only touched inside ``poll()``, i.e. on the caller's
thread.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from SHMNCoreLib.dependencies import anatomyMissing
from SHMNCoreLib.engine import Engine, engineEnvironment, fetchAnatomyCommand, findEngine, predictCommand
from SHMNCoreLib.jobs import EngineJob, JobState
from SHMNCoreLib.process import Progress, ProcessRunner, SubprocessRunner

from .casereport import openCaseReport, reportPath
from .parameters import SegmenterParameters, parameterNodeClass
from .results import ImportedResults, importResults
from .terminology import loadTerminology

SegmentationJob = EngineJob  # the name this module's callers know; the job itself is shared with SHMN Training
__all__ = ["JobState", "SegmentationJob", "SHMNSegmenterLogic"]


def safeCaseName(volumeName: str) -> str:
    """A file name for the input copy; the engine names the case (and its output folder) after it."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", volumeName).strip("._") or "volume"


def writeVolume(volumeNode, path: Path) -> Path:
    """The volume's voxels with their IJK-to-RAS geometry (its own, not hardened), as Slicer writes them."""
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)  # a temporary copy: speed over size
    if not storage.WriteData(volumeNode):
        raise RuntimeError(f"could not write volume '{volumeNode.GetName()}' to {path}")
    return path


class SHMNSegmenterLogic(ScriptedLoadableModuleLogic):
    """Runs SHMN on a volume node. The runner factory and the engine are injectable (tests, scripts)."""

    def __init__(self, runnerFactory: Callable[[], ProcessRunner] = SubprocessRunner, engine: Engine | None = None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.runnerFactory = runnerFactory
        self._engine = engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = findEngine()
        return self._engine

    def getParameterNode(self):
        return parameterNodeClass()(super().getParameterNode())

    def startSegmentation(
        self,
        parameters: SegmenterParameters,
        onLog: Callable[[str], None] | None = None,
        onProgress: Callable[[Progress], None] | None = None,
    ) -> SegmentationJob:
        """Write the input, start the engine and return the running job (poll it until finished)."""
        problems = parameters.problems()
        if problems:
            raise ValueError(" ".join(problems))
        volume = parameters.inputVolume
        engine = self.engine
        self._loadTerminology(onLog)
        root = Path(slicer.app.temporaryPath) / "SHMN"
        root.mkdir(parents=True, exist_ok=True)
        runDir = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        try:
            case = safeCaseName(volume.GetName())
            (runDir / "input").mkdir()
            inputFile = writeVolume(volume, runDir / "input" / f"{case}.nrrd")
            outputDir = runDir / "output"
            steps = [("fetch template", fetchAnatomyCommand(engine))] if anatomyMissing(engine) else []
            command = predictCommand(
                engine, inputFile, outputDir, parameters.modelName, parameters.device.value, parameters.register,
                tta=parameters.flipTest, nativeBoundary=parameters.nativeBoundary,
            )
            steps.append(("shmn predict", command))

            def importer() -> ImportedResults:
                if volume.GetScene() is None:
                    raise RuntimeError(f"input volume '{volume.GetName()}' was removed from the scene during the run")
                return importResults(outputDir / case, volume, slicer.modules.segmentations.logic())

            return SegmentationJob(steps, engineEnvironment(engine), runDir, importer, self.runnerFactory, onLog, onProgress)
        except BaseException:
            shutil.rmtree(runDir, ignore_errors=True)  # a run that never started leaves nothing behind
            raise

    def segment(self, parameters: SegmenterParameters, timeout_s: float | None = None, **callbacks) -> ImportedResults:
        """Synchronous run (scripts, tests, the module's self-test)."""
        return self.startSegmentation(parameters, **callbacks).wait(timeout_s)

    @staticmethod
    def openReport(result, opener: Callable[[Path], bool | None]) -> Path:
        """Open the case report (report.html) of a result (ImportedResults or its case folder).

        ``opener`` opens a local file: in Slicer the system's browser (widget.openWithSystem).
        """
        caseDir = getattr(result, "caseDir", result)
        return openCaseReport(reportPath(caseDir), opener)

    @staticmethod
    def _loadTerminology(onLog) -> None:
        # Only for nicer display in the Segment Editor: the segments carry their codes regardless.
        try:
            loadTerminology(slicer.modules.terminologies.logic())
        except (AttributeError, OSError, RuntimeError, ValueError) as exc:
            if onLog:
                onLog(f"Warning: SHMN terminology not loaded ({exc})")
