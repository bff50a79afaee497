"""Training and evaluation runs: `shmn train`, then `shmn evaluate` on the held-out split, each in its own process.

A ``TrainingRun`` is polled like SHMNSegmenter's job (it is made of those jobs): the widget's QTimer
in Slicer, ``wait()`` in tests. What the engine prints is sorted on the caller's thread:

- ``SHMN-EPOCH {json}`` (one per completed epoch, the metrics.jsonl record) -> ``onEpoch(record)``
  (the curves table and plot), plus a one-line summary in the log;
- ``SHMN-PROGRESS {json}`` ("preprocessing", "epoch 3/30": the engine gives an epoch's progress as
  the run's share) -> overall progress;
- anything else -> the log.

Cancel kills the training's process tree. The engine commits an epoch atomically (checkpoint, model
files, then the metrics log), so a cancelled run can be resumed: ``--resume`` continues after the
last completed epoch, and the curves are first refilled from RUN_DIR/metrics.jsonl.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Callable

from SHMNCoreLib.dependencies import anatomyMissing
from SHMNCoreLib.engine import Engine, engineEnvironment, fetchAnatomyCommand
from SHMNCoreLib.jobs import EngineJob as SegmentationJob, JobState
from SHMNCoreLib.process import Progress, SubprocessRunner

from .engineaccess import shmn
from .parameters import TrainingParameters



def _absolute(path) -> str:
    # The engine runs in a scratch working directory: relative paths would point into it.
    return str(Path(path).expanduser().absolute())


def trainCommand(engine: Engine, params: TrainingParameters, runFolder: Path, cacheFolder: Path | None = None,
                 initModel: str = "") -> list[str]:
    """``initModel``: what --init-model gets (SHMNTrainingLib.startmodel.initModelArgument); "" = random weights."""
    command = [str(engine.python), "-m", "shmn", "train", params.preset.value, "--data", *map(_absolute, params.datasetList()),
               "-o", _absolute(runFolder), "--epochs", str(params.epochs), "--device", params.device.value,
               "--resolution", params.resolution.value]
    if params.resume:
        command.append("--resume")
    if initModel:
        command += ["--init-model", initModel]
    if cacheFolder:
        command += ["--cache", _absolute(cacheFolder)]
    return command


def evaluationSplit() -> str:
    """The held-out split evaluated after training (the engine's default, shmn.contract.EVALUATION_SPLIT)."""
    return shmn("contract").EVALUATION_SPLIT


def evaluationFile(runFolder: Path, split: str | None = None) -> Path:
    return shmn("io.register_run").evaluation_file(runFolder, split or evaluationSplit())


def evaluateCommand(engine: Engine, runFolder: Path, datasets: list[str], device: str = "auto", split: str | None = None) -> list[str]:
    split = split or evaluationSplit()
    return [str(engine.python), "-m", "shmn", "evaluate", _absolute(runFolder), "--data", *map(_absolute, datasets),
            "--split", split, "--device", device, "-o", _absolute(evaluationFile(runFolder, split))]


def parseEpochLine(line: str) -> dict | None:
    """The epoch record of an ``SHMN-EPOCH {json}`` line, else None."""
    return shmn("contract").read_epoch_line(line)


def readMetricsLog(runFolder: Path) -> list[dict]:
    """Completed epochs of a run (metrics.jsonl; the engine rewrites it atomically, whole lines only)."""
    path = Path(runFolder) / shmn("contract").METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def trainedModel(runFolder: Path) -> Path | None:
    """model-best, else model-last; None before the first epoch ends."""
    return shmn("io.register_run").trained_model(runFolder)


def defaultRunFolder(params: TrainingParameters, now: float | None = None) -> Path:
    """``<first dataset folder>/runs/<preset>-<resolution>-<UTC time>``."""
    first = Path(params.datasetList()[0])
    root = first.parent if first.name.endswith(".json") else first
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    return root / "runs" / f"{params.preset.value}-{params.resolution.value}-{stamp}"


def holdsRun(folder: Path) -> bool:
    """Whether ``folder`` holds a training run (``shmn train`` without --resume refuses such a folder)."""
    return (Path(folder) / shmn("contract").CONFIG_FILE).is_file()  # its presence means a run is there


def epochSummary(record: dict) -> str:
    """``epoch 3: train loss 1.234, val loss 1.456, PVL Dice 0.41 (best)``."""
    parts = [f"epoch {record['epoch']}: train loss {_number(record.get('train_loss'))}",
             f"val loss {_number(record.get('val_loss'))}"]
    val = record.get("val") or {}
    for key, label in (("pvl_dice", "PVL Dice"), ("ventricle_dice", "ventricle Dice"), ("macs_accuracy", "MACS accuracy")):
        if val.get(key) is not None:
            parts.append(f"{label} {_number(val[key], 3)}")
    return ", ".join(parts) + (" (best so far)" if record.get("best") else "")


def _number(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


class TrainingRun:
    """`shmn train` then, if it succeeded and the data has test cases, `shmn evaluate` (see module docstring)."""

    def __init__(
        self,
        engine: Engine,
        params: TrainingParameters,
        runFolder: Path,
        workRoot: Path,
        cacheFolder: Path | None = None,
        evaluate: bool = True,
        onEpoch: Callable[[dict], None] | None = None,
        onEvaluation: Callable[[dict], object] | None = None,
        runnerFactory=SubprocessRunner,
        onLog: Callable[[str], None] | None = None,
        onProgress: Callable[[Progress], None] | None = None,
        initModel: str = "",
    ):
        self.engine, self.params, self.runFolder = engine, params, Path(_absolute(runFolder))
        self.initModel = initModel
        self.evaluateAfter = evaluate
        self.records: list[dict] = readMetricsLog(self.runFolder) if params.resume else []
        self.evaluation: dict | None = None
        self.evaluationResult = None  # what onEvaluation returned (the table node in Slicer)
        self.evaluationError: str | None = None
        self.phase = "train"
        self.state = JobState.RUNNING
        self.error: str | None = None
        self.lines: list[str] = []
        self._workRoot = Path(workRoot)
        self._runnerFactory = runnerFactory
        self.onEpoch = onEpoch or (lambda record: None)
        self._onEvaluation = onEvaluation or (lambda results: None)
        self._onLog = onLog or (lambda line: None)
        self._onProgress = onProgress or (lambda progress: None)
        for record in self.records:
            self.onEpoch(record)
        steps = [("fetch template", fetchAnatomyCommand(engine))] if anatomyMissing(engine) else []
        steps.append(("shmn train", trainCommand(engine, params, self.runFolder, cacheFolder, initModel)))
        self.job = self._start(steps, importer=lambda: trainedModel(self.runFolder))

    def _start(self, steps, importer) -> SegmentationJob:
        # The job's own folder is a scratch working directory (removed when it ends); RUN_DIR is
        # given on the command line and is never touched by the job's clean-up.
        self._workRoot.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{self.phase}-", dir=self._workRoot))
        return SegmentationJob(steps, engineEnvironment(self.engine), scratch, importer, self._runnerFactory,
                               self._log, self._progress)

    def _log(self, line: str) -> None:
        record = parseEpochLine(line)
        if record is not None:
            self.records = [r for r in self.records if r["epoch"] < record["epoch"]] + [record]
            self.onEpoch(record)
            line = epochSummary(record)
        self.lines.append(line)
        self._onLog(line)

    def _progress(self, progress: Progress) -> None:
        self._onProgress(progress)

    @property
    def finished(self) -> bool:
        return self.state is not JobState.RUNNING

    @property
    def model(self) -> Path | None:
        return trainedModel(self.runFolder)

    def poll(self) -> bool:
        """Forward output and move through the phases; True once the run has ended."""
        if self.finished:
            return True
        if not self.job.poll():
            return False
        if self.phase == "train":
            self._afterTraining()
        else:
            self._afterEvaluation()
        return self.finished

    def _afterTraining(self) -> None:
        if self.job.state is not JobState.SUCCEEDED:
            self.state, self.error, self.phase = self.job.state, self.job.error, "done"
            return
        self.records = readMetricsLog(self.runFolder) or self.records
        if not self.evaluateAfter or self.model is None:
            self.state, self.phase = JobState.SUCCEEDED, "done"
            return
        self.phase = "evaluate"
        self._log(f"Evaluating {self.model.name} on the {evaluationSplit()} split")
        command = evaluateCommand(self.engine, self.runFolder, self.params.datasetList(), self.params.device.value)

        def importer():
            self.evaluation = json.loads(evaluationFile(self.runFolder).read_text(encoding="utf-8"))
            self.evaluationResult = self._onEvaluation(self.evaluation)
            return self.evaluation

        self.job = self._start([("shmn evaluate", command)], importer)

    def _afterEvaluation(self) -> None:
        # The trained model stands whatever happens to its evaluation.
        if self.job.state is JobState.CANCELLED:
            self.state, self.evaluationError = JobState.CANCELLED, "cancelled"
        else:
            self.state = JobState.SUCCEEDED
            if self.job.state is JobState.FAILED:
                self.evaluationError = self.job.error
                self._log(f"Evaluation failed (the trained model is kept): {self.job.error}")
        self.phase = "done"

    def cancel(self) -> None:
        """Kill whatever runs now; the run folder keeps every completed epoch (resume continues it)."""
        if not self.finished:
            self.job.cancel()
            self.poll()

    def wait(self, timeout_s: float | None = None, pollInterval_s: float = 0.2) -> "TrainingRun":
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"training still running after {timeout_s} s; cancelled")
            time.sleep(pollInterval_s)
        return self
