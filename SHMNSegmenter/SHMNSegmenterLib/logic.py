"""The segmenter's logic: input volume -> engine run in its own process -> results in the scene.

One Apply is one ``SegmentationJob``: the input volume is written to a fresh run folder under
Slicer's temporary path, the engine's commands run one after another (``shmn fetch-anatomy`` first
if the template is missing, then ``shmn predict``), and when the last one succeeds its output is
imported into MRML. The job is polled (``poll()``) by whoever started it: the widget's QTimer in
Slicer, ``wait()`` in tests and scripts. MRML is only touched inside ``poll()``, i.e. on the caller's
thread.
"""

from __future__ import annotations

import enum
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .casereport import openCaseReport, reportPath
from .dependencies import anatomyMissing
from .engine import Engine, engineEnvironment, fetchAnatomyCommand, findEngine, predictCommand
from .parameters import SegmenterParameters, parameterNodeClass
from .enginecontract import engineContract, parseProgress
from .process import Progress, ProcessRunner, SubprocessRunner
from .results import ImportedResults, importResults
from .terminology import loadTerminology

LOG_TAIL_LINES = 8


class JobState(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


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


def failureMessage(lines: list[str], exitCode: int) -> str:
    """The engine's own one-line error if it gave one, else the end of its output."""
    prefix = engineContract().ERROR_PREFIX  # how the engine's command line reports an error the user can fix
    errors = [line for line in lines if line.startswith(prefix)]
    if errors:
        return errors[-1][len(prefix):].strip()
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return f"the engine stopped with exit code {exitCode}" + (f":\n{tail}" if tail else "")


class SegmentationJob:
    """Engine commands run in sequence in a child process, then the results imported (see module docstring)."""

    def __init__(
        self,
        steps: list[tuple[str, list[str]]],
        env: dict,
        runDir: Path,
        importer: Callable[[], ImportedResults],
        runnerFactory: Callable[[], ProcessRunner] = SubprocessRunner,
        onLog: Callable[[str], None] | None = None,
        onProgress: Callable[[Progress], None] | None = None,
    ):
        self._steps = list(steps)
        self._env = env
        self._importer = importer
        self._runnerFactory = runnerFactory
        self._onLog = onLog or (lambda line: None)
        self._onProgress = onProgress or (lambda progress: None)
        self.runDir = runDir
        self.state = JobState.RUNNING
        self.result: ImportedResults | None = None
        self.error: str | None = None
        self.lines: list[str] = []  # everything the engine printed (progress lines excluded)
        self.runner: ProcessRunner | None = None
        self._stepIndex = -1
        self._startNextStep()

    @property
    def finished(self) -> bool:
        return self.state is not JobState.RUNNING

    def _startNextStep(self) -> None:
        self._stepIndex += 1
        label, command = self._steps[self._stepIndex]
        self._log(f"[{label}] {' '.join(command)}")
        self._onProgress(Progress(stage=label, percent=None))
        self.runner = self._runnerFactory()
        self.runner.start(command, env=self._env, cwd=str(self.runDir))

    def _log(self, line: str) -> None:
        self.lines.append(line)
        self._onLog(line)

    def poll(self) -> bool:
        """Forward new output, advance to the next step or import the results; True once finished."""
        if self.finished:
            return True
        for line in self.runner.readLines():
            progress = parseProgress(line)
            if progress is not None:
                self._onProgress(progress)
            else:
                self._log(line)
        exitCode = self.runner.exitCode()
        if exitCode is None:
            return False
        if exitCode != 0:
            self._finish(JobState.FAILED, failureMessage(self.lines, exitCode))
        elif self._stepIndex + 1 < len(self._steps):
            self._startNextStep()
        else:
            self._importResults()
        return self.finished

    def _importResults(self) -> None:
        try:
            self.result = self._importer()
        except Exception as exc:  # noqa: BLE001 - any import failure ends the job with its message
            self._finish(JobState.FAILED, f"importing the results failed: {exc}")
            return
        self._finish(JobState.SUCCEEDED)

    def _finish(self, state: JobState, error: str | None = None) -> None:
        self.state, self.error = state, error
        if error:
            self._log(f"Error: {error}")
        if state is JobState.SUCCEEDED:
            shutil.rmtree(self.runDir / "input", ignore_errors=True)  # the outputs stay for the user
        else:
            shutil.rmtree(self.runDir, ignore_errors=True)  # nothing half-written is left behind

    def cancel(self) -> None:
        """Kill the engine's whole process tree; nothing is imported."""
        if self.finished:
            return
        self.runner.kill()
        self._finish(JobState.CANCELLED)
        self._log("Cancelled.")

    def wait(self, timeout_s: float | None = None, pollInterval_s: float = 0.1) -> ImportedResults:
        """Synchronous mode: poll until finished; the results, or RuntimeError with the failure."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"SHMN engine still running after {timeout_s} s; cancelled")
            time.sleep(pollInterval_s)
        if self.state is not JobState.SUCCEEDED:
            raise RuntimeError(self.error or f"segmentation {self.state.value}")
        return self.result


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
            command = predictCommand(engine, inputFile, outputDir, parameters.modelName, parameters.device.value, parameters.register)
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
