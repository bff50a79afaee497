"""The current model's prediction for a dataset case: `shmn predict` in its own process, then its files.

Used twice: "pre-fill from model" (the predicted masks replace segments of the loaded case, for the
annotator to correct) and the pseudo-label preview (the predicted ventricle mask of a case that has
no ventricle label, with a confidence figure). The image FILE is the input (no copy is written), so
the masks come back on exactly the grid the labels are saved on. The run reuses SHMNSegmenter's job
(process, progress parsing, Cancel that kills the process tree).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from SHMNCoreLib.dependencies import anatomyMissing
from SHMNCoreLib.engine import Engine, engineEnvironment, fetchAnatomyCommand, predictCommand
from SHMNCoreLib.jobs import EngineJob as SegmentationJob
from SHMNCoreLib.process import SubprocessRunner

from .engineaccess import shmn



@dataclass(frozen=True)
class PredictionOutput:
    """One case's `shmn predict` folder."""

    caseDir: Path
    report: dict

    def mask(self, kind: str) -> Path:
        return self.caseDir / shmn("contract").MASK_FILES[kind]

    def probability(self, kind: str) -> Path | None:
        path = self.caseDir / shmn("contract").PROBABILITY_FILES[kind]
        return path if path.is_file() else None

    def hasTask(self, kind: str) -> bool:
        """Whether the model has the task (a model without it reports null, and its mask is empty)."""
        return (self.report.get(kind) or {}).get("volume_ml") is not None

    @property
    def modelLabel(self) -> str:
        model = self.report.get("model") or {}
        return f"{model.get('name')} {model.get('version')}"


def readPredictionOutput(caseDir: Path) -> PredictionOutput:
    caseDir = Path(caseDir)
    contract = shmn("contract")
    missing = [name for name in (*contract.MASK_FILES.values(), contract.REPORT_FILE) if not (caseDir / name).is_file()]
    if missing:
        raise RuntimeError(f"{caseDir}: the engine's output lacks {', '.join(missing)}")
    report = json.loads((caseDir / contract.REPORT_FILE).read_text(encoding="utf-8"))
    return PredictionOutput(caseDir, report)


def startPrediction(
    engine: Engine,
    imagePath: Path,
    workRoot: Path,
    model: str = "",
    device: str = "auto",
    onDone: Callable[[PredictionOutput], object] = lambda output: output,
    runnerFactory=SubprocessRunner,
    onLog=None,
    onProgress=None,
) -> SegmentationJob:
    """Start `shmn predict` on ``imagePath``; when it succeeds the job's result is ``onDone(output)``."""
    workRoot.mkdir(parents=True, exist_ok=True)
    runDir = Path(tempfile.mkdtemp(prefix="predict-", dir=workRoot))
    outputDir = runDir / "output"
    caseDir = outputDir / shmn("io.volume_io", engine).case_name(imagePath)
    steps = []
    if anatomyMissing(engine):
        steps.append(("fetch template", fetchAnatomyCommand(engine)))
    # Absolute: the engine's working directory is the run folder.
    steps.append(("shmn predict", predictCommand(engine, Path(imagePath).absolute(), outputDir, model, device, probabilities=True)))
    return SegmentationJob(steps, engineEnvironment(engine), runDir, lambda: onDone(readPredictionOutput(caseDir)),
                           runnerFactory, onLog, onProgress)
