"""The annotator's logic: dataset, the loaded case and its labels, model predictions, training runs.

Independent of the widget (the Segment Editor edits the segmentation node this logic owns; the
logic only sees the node's events), so everything here runs in scripts and tests. Long work runs in
the engine's own process through SHMNSegmenter's job runner and is polled by the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from SHMNCoreLib.engine import Engine, findEngine
from SHMNCoreLib.process import ProcessRunner, SubprocessRunner

from . import casescene
from .confidence import PseudoLabelConfidence, pseudoLabelConfidence
from .curves import TrainingCurves
from .dataset import CaseFilter, caseRows, openDataset
from .edits import EditTracker
from .engineaccess import shmn
from .evaluation import evaluationTable
from .modelregistry import ModelRegistration, registerRunModel
from .parameters import TrainingParameters, parameterNodeClass
from .prediction import PredictionOutput, startPrediction
from .startmodel import initModelArgument, runInitModel
from .suggestions import DEFAULT_COUNT, Suggestions, readSuggestions, startSuggestion
from .training import TrainingRun, defaultRunFolder, evaluationSplit

PREVIEW_OPACITY = 0.5
CACHE_SUBFOLDER = "preprocessed"  # under the engine's user cache: shared by every run of this user


class UnsavedEditsError(RuntimeError):
    """The loaded case has unsaved edits and the caller did not say to discard them."""


class SHMNTrainingLogic(ScriptedLoadableModuleLogic):
    def __init__(self, runnerFactory: Callable[[], ProcessRunner] = SubprocessRunner, engine: Engine | None = None):
        ScriptedLoadableModuleLogic.__init__(self)
        self.runnerFactory = runnerFactory
        self._engine = engine
        self.manifest = None
        self.current: casescene.LoadedCase | None = None
        self.tracker: EditTracker | None = None
        self.pseudoLabel = None  # segmentation node of the shown pseudo-label
        self.predictions: dict[tuple[str, str], PredictionOutput] = {}
        self.suggestions: Suggestions | None = None  # the dataset's `shmn suggest` ranking
        self.onModifiedChanged: Callable[[bool], None] = lambda modified: None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = findEngine()
        return self._engine

    def getParameterNode(self):
        return parameterNodeClass()(super().getParameterNode())

    def workRoot(self) -> Path:
        return Path(slicer.app.temporaryPath) / "SHMN"

    # --- dataset ----------------------------------------------------------------------------------
    def openDataset(self, path):
        """shmn.io.dataset.OpenedDataset: the manifest, and whether it was just made for a folder of images."""
        self._requireNoUnsavedEdits(discardChanges=False)
        opened = openDataset(path)
        self.closeCase(discardChanges=True)
        self.manifest = opened.manifest
        self.predictions.clear()
        self.suggestions = self._readSuggestions()
        return opened

    def caseRows(self, caseFilter: CaseFilter = CaseFilter.ALL):
        return caseRows(self.manifest, caseFilter, self.suggestions) if self.manifest else []

    # --- which case next (`shmn suggest`) ----------------------------------------------------------
    def _readSuggestions(self) -> Suggestions | None:
        # A damaged or foreign suggestions.json must not stop the dataset from opening: no ranking.
        try:
            return readSuggestions(self.manifest.root, self.engine)
        except Exception:  # noqa: BLE001 - shmn.errors.ShmnError or a malformed file
            return None

    def startSuggestion(self, model: str = "", device: str = "auto", count: int = DEFAULT_COUNT, register: bool = True,
                        onLog=None, onProgress=None):
        """`shmn suggest` on the open dataset in the background; when done, ``self.suggestions`` is its ranking."""
        if self.manifest is None:
            raise RuntimeError("open a dataset first")

        def done(suggestions: Suggestions) -> Suggestions:
            self.suggestions = suggestions
            return suggestions

        modelArgument = str(Path(model).expanduser().absolute()) if model.endswith(".safetensors") else model
        return startSuggestion(self.engine, self.manifest.root, self.workRoot(), modelArgument, device, count, register,
                               done, self.runnerFactory, onLog, onProgress)

    def suggestCases(self, model: str = "", device: str = "auto", count: int = DEFAULT_COUNT, register: bool = True,
                     timeout_s: float | None = None) -> Suggestions:
        """Synchronous ranking (scripts, tests)."""
        return self.startSuggestion(model, device, count, register).wait(timeout_s)

    def nextSuggestedCase(self) -> str | None:
        """The best-ranked case still missing a label, other than the loaded one; None without a ranking."""
        if self.manifest is None or self.suggestions is None:
            return None
        return self.suggestions.nextCase(self.manifest, self.current.caseId if self.current else None)

    # --- the loaded case --------------------------------------------------------------------------
    @property
    def hasUnsavedChanges(self) -> bool:
        return bool(self.tracker and self.tracker.modified)

    def _requireNoUnsavedEdits(self, discardChanges: bool) -> None:
        if self.hasUnsavedChanges and not discardChanges:
            raise UnsavedEditsError(f"case {self.current.caseId} has unsaved label edits; save them or discard them first")

    def loadCase(self, caseId: str, discardChanges: bool = False) -> casescene.LoadedCase:
        """Show ``caseId`` with its labels; refuses to drop unsaved edits unless told to."""
        if self.manifest is None:
            raise RuntimeError("open a dataset first")
        self._requireNoUnsavedEdits(discardChanges)
        self.closeCase(discardChanges=True)
        self.current = casescene.loadCase(self.manifest, caseId)
        self.tracker = EditTracker(self.current.segmentation, self.onModifiedChanged)
        return self.current

    def closeCase(self, discardChanges: bool = False) -> None:
        self._requireNoUnsavedEdits(discardChanges)
        if self.tracker:
            self.tracker.stop()
        if self.current:
            casescene.removeNodes(*self.current.nodes())
        self.current, self.tracker, self.pseudoLabel = None, None, None
        self.onModifiedChanged(False)

    def forgetScene(self) -> None:
        """The scene was closed: its nodes are gone, so are the case and its edits."""
        if self.tracker:
            self.tracker.stop()
        self.current, self.tracker, self.pseudoLabel = None, None, None

    def setMacs(self, group: str | None) -> None:
        if self.current is None:
            raise RuntimeError("load a case first")
        if group not in (None, *shmn("contract").MACS_GROUPS):
            raise ValueError(f"MACS group {group!r}: expected mild, severe or None")
        if group != self.current.macs:
            self.current.macs = group
            self.tracker.markModified()

    def kindsToSave(self) -> list[str]:
        """Masks that a save writes: those the case had, and any segment that now has content.

        An empty segment of a case that never had that label stays "not labelled" (e.g. no PVL mask
        is invented for a MACS-only case); clearing an existing label saves an empty mask.
        """
        current = self.current
        return [kind for kind in casescene.KINDS
                if current.labelled[kind] or not casescene.segmentIsEmpty(current.segmentation, current.segmentIds[kind], current.volume)]

    def saveCase(self, kinds: list[str] | None = None):
        """Write the loaded case's masks (on the image file's grid) and MACS group into the dataset (shmn.io.labels)."""
        current = self.current
        if current is None:
            raise RuntimeError("load a case first")
        kinds = self.kindsToSave() if kinds is None else list(kinds)
        grid = casescene.fileGrid(current.imagePath)
        masks = {kind: casescene.exportSegmentToGrid(current.segmentation, current.segmentIds[kind], current.volume, grid)
                 for kind in kinds}
        saved = shmn("io.labels").save_labels(current.datasetRoot, current.caseId, masks, macs=current.macs)
        for kind in kinds:
            current.labelled[kind] = True
        self.manifest = saved.manifest
        self.tracker.markSaved()
        return saved

    # --- the current model's prediction -----------------------------------------------------------
    def startCasePrediction(self, onDone: Callable[[PredictionOutput], object], model: str = "", device: str = "auto",
                            onLog=None, onProgress=None):
        """`shmn predict` on the loaded case's image; None (and ``onDone`` already called) when cached."""
        if self.current is None:
            raise RuntimeError("load a case first")
        key = (self.current.caseId, model)
        if key in self.predictions:
            onDone(self.predictions[key])
            return None

        def done(output: PredictionOutput):
            self.predictions[key] = output
            return onDone(output)

        modelArgument = str(Path(model).expanduser().absolute()) if model.endswith(".safetensors") else model
        return startPrediction(self.engine, self.current.imagePath, self.workRoot(), modelArgument, device, done,
                               self.runnerFactory, onLog, onProgress)

    def predictCase(self, model: str = "", device: str = "auto", timeout_s: float | None = None) -> PredictionOutput:
        """Synchronous prediction (scripts, tests, the self-test)."""
        outputs = []
        job = self.startCasePrediction(outputs.append, model, device)
        if job is not None:
            job.wait(timeout_s)
        return outputs[-1]

    def applyPrediction(self, output: PredictionOutput, kinds=casescene.KINDS) -> list[str]:
        """Pre-fill: the predicted masks replace these segments (an edit: the case becomes modified)."""
        applied = []
        for kind in kinds:
            if output.hasTask(kind):
                casescene.setSegmentFromMaskFile(self.current.segmentation, self.current.segmentIds[kind], output.mask(kind))
                applied.append(kind)
        return applied

    def showPseudoLabel(self, output: PredictionOutput) -> PseudoLabelConfidence:
        """The predicted ventricle mask as a separate, see-through segmentation, with its confidence."""
        current = self.current
        casescene.removeNodes(self.pseudoLabel)
        if self.pseudoLabel in current.extraNodes:
            current.extraNodes.remove(self.pseudoLabel)
        node = casescene.createSegmentation(current.volume, f"{current.caseId} pseudo-label ({output.modelLabel})", ["ventricles"])
        casescene.setSegmentFromMaskFile(node, current.segmentIds["ventricles"], output.mask("ventricles"))
        display = node.GetDisplayNode()
        display.SetOpacity2DFill(PREVIEW_OPACITY * display.GetOpacity2DFill())
        display.SetVisibility3D(False)
        current.extraNodes.append(node)
        self.pseudoLabel = node
        return pseudoLabelConfidence(output.mask("ventricles"), output.probability("ventricles"), output.report)

    def acceptPseudoLabel(self) -> None:
        """Copy the previewed pseudo-label into the case's ventricle segment (to correct and save)."""
        if self.pseudoLabel is None:
            raise RuntimeError("show a pseudo-label first")
        segmentId = self.current.segmentIds["ventricles"]
        voxels = slicer.util.arrayFromSegmentBinaryLabelmap(self.pseudoLabel, segmentId, self.current.volume)
        slicer.util.updateSegmentBinaryLabelmapFromArray(voxels, self.current.segmentation, segmentId, self.current.volume)

    # --- training ---------------------------------------------------------------------------------
    def defaultCacheFolder(self) -> Path:
        return shmn("io.anatomy", self.engine).cache_dir() / CACHE_SUBFOLDER

    def hasSplit(self, datasets: list[str], split: str | None = None) -> bool:
        split = split or evaluationSplit()
        manifest = shmn("io.manifest", self.engine)
        return any(manifest.load_manifest(path, check_files=False).split(split) for path in datasets)

    def startTraining(self, params: TrainingParameters, onLog=None, onProgress=None) -> TrainingRun:
        """Start `shmn train` (then `shmn evaluate` on the test split); the run's curves go to plot nodes."""
        problems = params.problems()
        if problems:
            raise ValueError(" ".join(problems))
        runFolder = Path(params.runFolder) if params.runFolder else defaultRunFolder(params)
        if params.resume and not (runFolder / "config.json").is_file():
            raise ValueError(f"{runFolder}: no training run to resume there")
        cacheFolder = Path(params.cacheFolder) if params.cacheFolder else self.defaultCacheFolder()
        # Resume repeats the run's own starting model (the engine refuses another); a new run takes the choice.
        initModel = runInitModel(runFolder, self.engine) if params.resume else initModelArgument(
            params.startFrom, params.preset, params.resolution, self.engine)
        scene = slicer.mrmlScene
        curves = TrainingCurves(scene, runFolder.name)
        run = TrainingRun(
            self.engine, params, runFolder, self.workRoot(), cacheFolder,
            evaluate=self.hasSplit(params.datasetList()),
            onEpoch=curves.addRecord,
            onEvaluation=lambda results: evaluationTable(results, scene, f"{runFolder.name} evaluation ({evaluationSplit()})"),
            runnerFactory=self.runnerFactory, onLog=onLog, onProgress=onProgress, initModel=initModel,
        )
        run.curves = curves
        return run

    def reattachCurves(self, run: TrainingRun) -> TrainingCurves:
        """New curve nodes for a run that outlived its scene (File > Close Scene during training)."""
        run.curves = TrainingCurves(slicer.mrmlScene, run.runFolder.name)
        run.curves.setRecords(run.records)
        run.onEpoch = run.curves.addRecord
        return run.curves

    def registerModel(self, runFolder, registration: ModelRegistration, registryPath=None) -> dict:
        return registerRunModel(Path(runFolder), registration, registryPath)

