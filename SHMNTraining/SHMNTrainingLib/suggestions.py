""""Which case next?": `shmn suggest` run in the background, and its ranking shown in the case table.

The engine scores every case missing a label (uncertainty of the PVL and ventricle maps inside the
brain, instability of their pseudo-labels under a left-right mirror, MACS probability near 0.5: see
``shmn.inference.suggest``) and writes ``DATASET/suggestions.json``. Here: the command, the run
(SHMNSegmenter's job: a child process with progress, Cancel kills its process tree and nothing is
written), reading the file back (torch-free engine code) and choosing the next case to label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from SHMNCoreLib.engine import Engine, engineEnvironment, fetchAnatomyCommand
from SHMNCoreLib.dependencies import anatomyMissing
from SHMNCoreLib.jobs import EngineJob as SegmentationJob
from SHMNCoreLib.process import SubprocessRunner

from .engineaccess import shmn

DEFAULT_COUNT = 10
NOT_RANKED = "-"


def suggestCommand(engine: Engine, dataset: Path, model: str = "", device: str = "auto", count: int = DEFAULT_COUNT,
                   register: bool = True) -> list[str]:
    """``shmn suggest DATASET`` as SHMN Training runs it; an empty ``model`` takes the engine's default."""
    command = [str(engine.python), "-m", "shmn", "suggest", str(dataset), "-n", str(count), "--device", device]
    if model:
        command += ["--model", model]
    if not register:
        command.append("--no-register")
    return command


@dataclass(frozen=True)
class Suggestions:
    """The ranking of DATASET/suggestions.json: case id -> (rank, score, why), best first."""

    ranking: tuple  # of (caseId, rank, score, reasons)
    model: str
    created: str

    @classmethod
    def fromDict(cls, data: dict) -> "Suggestions":
        rows = tuple((row["id"], int(row["rank"]), float(row["score"]), tuple(row.get("reasons") or ())) for row in data["ranking"])
        model = data.get("model") or {}
        return cls(rows, f"{model.get('name')} {model.get('version')}", str(data.get("created", "")))

    def cell(self, caseId: str) -> str:
        """The case table's 'Suggested' cell: rank and score, or '-' for a case not ranked."""
        for rowId, rank, score, _ in self.ranking:
            if rowId == caseId:
                return f"#{rank} ({score:.2f})"
        return NOT_RANKED

    def why(self, caseId: str) -> str:
        return next(("; ".join(reasons) for rowId, _, _, reasons in self.ranking if rowId == caseId), "")

    def nextCase(self, manifest, after: Optional[str] = None) -> Optional[str]:
        """The best-ranked case that still misses a label, other than ``after`` (the loaded case).

        The ranking can be older than the labels: a case labelled since it was ranked is skipped.
        """
        cases = {case.id: case for case in manifest.cases}
        for caseId, _, _, _ in self.ranking:
            case = cases.get(caseId)
            if case is None or caseId == after:
                continue
            if not all(case.has(kind) for kind in ("pvl", "ventricles", "macs")):
                return caseId
        return None


def readSuggestions(dataset: Path, engine: Optional[Engine] = None) -> Optional[Suggestions]:
    """DATASET/suggestions.json as Suggestions; None when there is none yet."""
    data = shmn("inference.suggest", engine).read_suggestions(dataset)
    return None if data is None else Suggestions.fromDict(data)


def startSuggestion(
    engine: Engine,
    dataset: Path,
    workRoot: Path,
    model: str = "",
    device: str = "auto",
    count: int = DEFAULT_COUNT,
    register: bool = True,
    onDone: Callable[[Suggestions], object] = lambda suggestions: suggestions,
    runnerFactory=SubprocessRunner,
    onLog=None,
    onProgress=None,
) -> SegmentationJob:
    """Start `shmn suggest` on the dataset; when it succeeds the job's result is ``onDone(suggestions)``."""
    import tempfile

    workRoot.mkdir(parents=True, exist_ok=True)
    runDir = Path(tempfile.mkdtemp(prefix="suggest-", dir=workRoot))
    steps = [("fetch template", fetchAnatomyCommand(engine))] if anatomyMissing(engine) else []
    steps.append(("shmn suggest", suggestCommand(engine, Path(dataset).absolute(), model, device, count, register)))

    def importer():
        suggestions = readSuggestions(Path(dataset), engine)
        if suggestions is None:
            raise RuntimeError(f"{dataset}: the engine wrote no suggestions.json")
        return onDone(suggestions)

    return SegmentationJob(steps, engineEnvironment(engine), runDir, importer, runnerFactory, onLog, onProgress)
