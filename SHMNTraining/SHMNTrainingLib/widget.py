"""The module panel (Qt, Slicer application only): dataset, annotation, training, registration.

Widgets come from ``Resources/UI/SHMNTraining.ui``; those with a ``SlicerParameterName`` property are
kept in sync with the parameter node by parameterNodeWrapper, the rest by hand. The Segment Editor
(qMRMLSegmentEditorWidget, with its own parameter node) edits the logic's segmentation node; the
logic learns of edits from the node's events. Engine runs (prediction, training, evaluation) are
polled by one QTimer on the GUI thread, so the GUI stays responsive and MRML is touched from one thread.
"""

from __future__ import annotations

from pathlib import Path

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from SHMNCoreLib.dependencies import ensureDependenciesInteractive
from SHMNCoreLib.engine import EngineNotFound, availableModels
from SHMNCoreLib.jobs import JobState
from SHMNCoreLib.parameternode import connectWidgets
from SHMNCoreLib.process import Progress
from SHMNCoreLib.settings import fillFromSettings, remember

from .curves import CHARTS
from .dataset import COLUMNS, CaseFilter
from .logic import SHMNTrainingLogic
from .modelregistry import ModelRegistration
from .parameters import trainingParametersFrom
from .startmodel import isModelFile, startChoices, startedFromText
from .training import holdsRun, trainedModel

POLL_INTERVAL_MS = 200
SINGLETON_TAG = "SHMNTraining"
MACS_CHOICES = (("Not labelled", None), ("Mild (MACS I-II)", "mild"), ("Severe (MACS III-V)", "severe"))
DEFAULT_MODEL_LABEL = "Default model"
SETTINGS_MODULE = "SHMNTraining"
# The user's last choices, for a scene that has none yet (QSettings); the run folder for Resume and Register.
REMEMBERED = ("predictionModel", "predictionDevice", "device", "runFolder")


class TrainingPanel(VTKObservationMixin):
    def __init__(self, uiPath: str, logic: SHMNTrainingLogic):
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.logic.onModifiedChanged = lambda modified: self.updateAnnotationState()
        self.widget = slicer.util.loadUI(uiPath)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)
        self.predictionJob = None
        self.suggestJob = None  # `shmn suggest` running in the background
        self.run = None
        self.lastRunFolder = ""
        self._lastCurves = None
        self._startChoicesFor = None  # (preset, resolution) the "Start from" list was filled for
        self._parameterNode = None
        self._guiTag = None
        self.editor = self._createSegmentEditor()
        self.plotWidget, self.tableView = self._createPlotAndTableViews()
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.onPoll)
        self._fillChoices()
        self._connect()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.updateAnnotationState()

    # --- set-up ---------------------------------------------------------------------------------
    def _createSegmentEditor(self):
        editor = slicer.qMRMLSegmentEditorWidget()
        editor.setMaximumNumberOfUndoStates(10)
        # Parameter node before the scene, so the selections made when the scene is set are kept in it.
        editor.setMRMLSegmentEditorNode(self._segmentEditorNode())
        editor.setMRMLScene(slicer.mrmlScene)
        # The module chooses the case: the annotator edits its segments, not which nodes they are.
        editor.setSegmentationNodeSelectorVisible(False)
        editor.setSourceVolumeNodeSelectorVisible(False)
        self.ui.segmentEditorFrame.layout().addWidget(editor)
        return editor

    @staticmethod
    def _segmentEditorNode():
        node = slicer.mrmlScene.GetSingletonNode(SINGLETON_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(SINGLETON_TAG)
            node = slicer.mrmlScene.AddNode(node)
        return node

    def _plotViewNode(self):
        node = slicer.mrmlScene.GetSingletonNode(SINGLETON_TAG, "vtkMRMLPlotViewNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLPlotViewNode")
            node.UnRegister(None)
            node.SetSingletonTag(SINGLETON_TAG)
            node = slicer.mrmlScene.AddNode(node)
        return node

    def _createPlotAndTableViews(self):
        plotWidget = slicer.qMRMLPlotWidget()
        plotWidget.setMRMLScene(slicer.mrmlScene)
        plotWidget.setMRMLPlotViewNode(self._plotViewNode())
        self.ui.plotFrame.layout().addWidget(plotWidget)
        tableView = slicer.qMRMLTableView()
        tableView.setMRMLScene(slicer.mrmlScene)
        self.ui.evaluationFrame.layout().addWidget(tableView)
        return plotWidget, tableView

    def _fillChoices(self) -> None:
        for caseFilter in CaseFilter:
            self.ui.caseFilterComboBox.addItem(caseFilter.label(), caseFilter.value)
        for label, value in MACS_CHOICES:
            self.ui.macsComboBox.addItem(label, value or "")
        for key, (title, _axis) in CHARTS.items():
            self.ui.chartComboBox.addItem(title, key)
        table = self.ui.caseTableWidget
        table.setColumnCount(len(COLUMNS))
        table.setHorizontalHeaderLabels(list(COLUMNS))
        table.horizontalHeader().setStretchLastSection(True)
        self.populateModels()

    def _connect(self) -> None:
        ui = self.ui
        ui.openDatasetButton.clicked.connect(self.onOpenDataset)
        ui.caseFilterComboBox.currentIndexChanged.connect(lambda *_: self.refreshCaseTable())
        ui.caseTableWidget.itemSelectionChanged.connect(self.updateAnnotationState)
        ui.caseTableWidget.cellDoubleClicked.connect(lambda *_: self.onLoadCase())
        ui.loadCaseButton.clicked.connect(self.onLoadCase)
        ui.rankCasesButton.clicked.connect(self.onRankOrCancel)
        ui.nextSuggestedButton.clicked.connect(self.onNextSuggested)
        ui.macsComboBox.currentIndexChanged.connect(self.onMacsChanged)
        ui.prefillButton.clicked.connect(self.onPrefill)
        ui.pseudoLabelButton.clicked.connect(self.onPseudoLabel)
        ui.cancelPredictionButton.clicked.connect(self.cancelPrediction)
        ui.acceptPseudoLabelButton.clicked.connect(self.onAcceptPseudoLabel)
        ui.saveButton.clicked.connect(self.onSave)
        ui.revertButton.clicked.connect(self.onRevert)
        ui.addDatasetButton.clicked.connect(self.onAddDataset)
        ui.trainButton.clicked.connect(self.onTrainOrCancel)
        ui.chartComboBox.currentIndexChanged.connect(lambda *_: self.showChart())
        ui.runFolderLineEdit.currentPathChanged.connect(self.onRunFolderChanged)
        ui.predictionModelComboBox.currentIndexChanged.connect(self.onPredictionModelChanged)
        ui.predictionModelComboBox.editTextChanged.connect(self.onPredictionModelChanged)
        ui.registerButton.clicked.connect(self.onRegister)
        ui.modelNameLineEdit.textChanged.connect(lambda *_: self.updateTrainingState())
        ui.startFromComboBox.currentIndexChanged.connect(self.onStartFromChanged)

    # --- parameter node -------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        node = self.logic.getParameterNode()
        fillFromSettings(node, SETTINGS_MODULE, REMEMBERED)
        self.setParameterNode(node)

    def setParameterNode(self, node) -> None:
        if self._parameterNode:
            if self._guiTag is not None:
                self._parameterNode.disconnectGui(self._guiTag)
            self._guiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = node
        if node:
            self._guiTag = connectWidgets(node, self.ui)  # connectGui returns no tag (Slicer issue #7547)
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.ui.datasetPathLineEdit.currentPath = node.datasetFolder
            self.ui.runFolderLineEdit.currentPath = node.runFolder
            self.showPredictionModel(node.predictionModel)
            self.populateStartChoices(force=True)
        self.updateTrainingState()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        for name in ("device", "predictionDevice"):
            remember(SETTINGS_MODULE, name, getattr(self._parameterNode, name))
        self.populateStartChoices()  # the models a run can start from follow the preset and resolution
        self.updateTrainingState()

    def onRunFolderChanged(self, *_) -> None:
        if self._parameterNode and self._parameterNode.runFolder != self.ui.runFolderLineEdit.currentPath:
            self._parameterNode.runFolder = self.ui.runFolderLineEdit.currentPath
        self.updateTrainingState()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.populateModels()
        self.populateStartChoices(force=True)  # models registered elsewhere meanwhile
        self.editor.installKeyboardShortcuts()
        self.editor.setupViewObservations()

    def exit(self) -> None:
        self.editor.setActiveEffect(None)
        self.editor.uninstallKeyboardShortcuts()
        self.editor.removeViewObservations()

    def onSceneStartClose(self, caller=None, event=None) -> None:
        # A scene close cannot be refused; what can be done is to save the edits while the nodes still exist.
        if self.logic.hasUnsavedChanges and slicer.util.confirmYesNoDisplay(
            f"Save the label edits of case {self.logic.current.caseId} before the scene closes?", windowTitle="SHMN Training"
        ):
            self.onSave()
        self.cancelPrediction()
        self.editor.setSegmentationNode(None)
        self.editor.setMRMLSegmentEditorNode(None)
        self.plotWidget.setMRMLPlotViewNode(None)
        self.logic.forgetScene()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller=None, event=None) -> None:
        self.editor.setMRMLSegmentEditorNode(self._segmentEditorNode())
        self.plotWidget.setMRMLPlotViewNode(self._plotViewNode())
        if self.run is not None:
            self.logic.reattachCurves(self.run)
            self.showChart()
        self.initializeParameterNode()
        self.updateAnnotationState()

    # --- dataset --------------------------------------------------------------------------------
    def confirmLeavingCase(self) -> bool:
        """True when the loaded case may be replaced: no edits, or the annotator saved or discarded them."""
        if not self.logic.hasUnsavedChanges:
            return True
        answer = slicer.util.messageBox(
            f"Case {self.logic.current.caseId} has label edits that are not saved.",
            windowTitle="SHMN Training", informativeText="Save them before continuing?",
            standardButtons=qt.QMessageBox.Save | qt.QMessageBox.Discard | qt.QMessageBox.Cancel,
        )
        if answer == qt.QMessageBox.Save:
            return self.onSave()
        return answer == qt.QMessageBox.Discard  # anything else (Cancel, closing the box) keeps the edits

    def onOpenDataset(self) -> None:
        path = self.ui.datasetPathLineEdit.currentPath
        if not path or not self.confirmLeavingCase():
            return
        with slicer.util.tryWithErrorDisplay("Could not open the dataset.", waitCursor=True):
            self.logic.closeCase(discardChanges=True)
            opened = self.logic.openDataset(path)
            self._parameterNode.datasetFolder = path
            if not self._parameterNode.datasets:
                self._parameterNode.datasets = path
            if opened.created:
                self.appendLog(f"Wrote {opened.manifest.path} for {len(opened.manifest.cases)} images (splits 70/10/20).")
        self.refreshCaseTable()
        self.updateAnnotationState()

    def selectedFilter(self) -> CaseFilter:
        return CaseFilter(self.ui.caseFilterComboBox.currentData or CaseFilter.ALL.value)

    def refreshCaseTable(self) -> None:
        from .dataset import statusText

        table = self.ui.caseTableWidget
        rows = self.logic.caseRows(self.selectedFilter())
        table.setRowCount(len(rows))
        for rowIndex, row in enumerate(rows):
            for columnIndex, text in enumerate(row.cells):
                item = qt.QTableWidgetItem(text)
                if COLUMNS[columnIndex] == "Suggested" and self.logic.suggestions is not None:
                    item.setToolTip(self.logic.suggestions.why(row.id))
                table.setItem(rowIndex, columnIndex, item)
        table.resizeColumnsToContents()
        if self.logic.manifest is not None:
            self.ui.datasetStatusLabel.text = f"{self.logic.manifest.name or self.logic.manifest.root.name}: {statusText(self.logic.manifest)}"

    def selectedCaseId(self) -> str | None:
        items = self.ui.caseTableWidget.selectedItems()
        return self.ui.caseTableWidget.item(items[0].row(), 0).text() if items else None

    # --- annotation -----------------------------------------------------------------------------
    def onLoadCase(self) -> None:
        caseId = self.selectedCaseId()
        if caseId is None or not self.confirmLeavingCase():
            return
        with slicer.util.tryWithErrorDisplay(f"Could not load case {caseId}.", waitCursor=True):
            self.showCase(self.logic.loadCase(caseId, discardChanges=True))

    def showCase(self, case) -> None:
        self.editor.setSegmentationNode(case.segmentation)
        self.editor.setSourceVolumeNode(case.volume)
        combo = self.ui.macsComboBox
        wasBlocked = combo.blockSignals(True)
        combo.currentIndex = max(combo.findData(case.macs or ""), 0)
        combo.blockSignals(wasBlocked)
        self.ui.pseudoLabelLabel.text = ""
        slicer.util.setSliceViewerLayers(background=case.volume, fit=True)
        self.updateAnnotationState()

    def onMacsChanged(self, *_) -> None:
        if self.logic.current is not None:
            self.logic.setMacs(self.ui.macsComboBox.currentData or None)

    def onSave(self) -> bool:
        with slicer.util.tryWithErrorDisplay("Could not save the labels.", waitCursor=True):
            saved = self.logic.saveCase()
            files = ", ".join(str(path.name) for path in saved.written.values()) or "no masks"
            self.appendLog(f"Saved {saved.case_id}: {files}, MACS {saved.macs or 'not labelled'}; "
                           f"{len(saved.kept)} previous version(s) kept in labels/.history")
            self.refreshCaseTable()
            return True
        return False

    def onRevert(self) -> None:
        if self.logic.current is not None:
            with slicer.util.tryWithErrorDisplay("Could not reload the case.", waitCursor=True):
                self.showCase(self.logic.loadCase(self.logic.current.caseId, discardChanges=True))

    def updateAnnotationState(self, *_) -> None:
        ui, current = self.ui, self.logic.current
        loaded = current is not None
        ui.loadCaseButton.enabled = self.logic.manifest is not None and self.selectedCaseId() is not None
        for control in (ui.macsComboBox, ui.saveButton, ui.revertButton):
            control.enabled = loaded
        running = self.predictionJob is not None
        ui.prefillButton.enabled = ui.pseudoLabelButton.enabled = loaded and not running
        ui.cancelPredictionButton.enabled = running
        ui.acceptPseudoLabelButton.enabled = loaded and self.logic.pseudoLabel is not None
        ranking = self.suggestJob is not None
        ui.rankCasesButton.text = "Cancel ranking" if ranking else "Rank cases to label"
        ui.rankCasesButton.enabled = ranking or self.logic.manifest is not None
        ui.nextSuggestedButton.enabled = not ranking and self.logic.suggestions is not None
        if loaded:
            ui.caseLabel.text = f"Case {current.caseId}" + (" (unsaved edits)" if self.logic.hasUnsavedChanges else "")
        else:
            ui.caseLabel.text = "No case loaded."

    # --- the model's prediction -----------------------------------------------------------------
    def populateModels(self) -> None:
        """Refill the model list; the chosen model (the parameter node's) stays chosen, the node untouched."""
        combo = self.ui.predictionModelComboBox
        chosen = self._parameterNode.predictionModel if self._parameterNode else (self.selectedModel() if combo.count else "")
        wasBlocked = combo.blockSignals(True)
        try:
            combo.clear()
            combo.addItem(DEFAULT_MODEL_LABEL, "")
            try:
                for choice in availableModels(self.logic.engine):
                    combo.addItem(choice.label, choice.value)
            except (EngineNotFound, ImportError) as exc:
                self.appendLog(f"Warning: model list unavailable ({exc})")
            lastModel = trainedModel(Path(self.lastRunFolder)) if self.lastRunFolder else None
            if lastModel is not None:
                combo.addItem(f"Last trained: {Path(self.lastRunFolder).name}", str(lastModel))
        finally:
            combo.blockSignals(wasBlocked)
        self.showPredictionModel(chosen)

    def showPredictionModel(self, model: str) -> None:
        combo = self.ui.predictionModelComboBox
        index = combo.findData(model)
        wasBlocked = combo.blockSignals(True)
        if index >= 0:
            combo.currentIndex = index
        elif combo.editable:
            combo.setEditText(model)
        else:
            combo.addItem(model, model)  # a model path saved with the scene, not (or no longer) registered
            combo.currentIndex = combo.count - 1
        combo.blockSignals(wasBlocked)

    def onPredictionModelChanged(self, *_) -> None:
        if self._parameterNode:
            self._parameterNode.predictionModel = self.selectedModel()
            remember(SETTINGS_MODULE, "predictionModel", self._parameterNode.predictionModel)

    def selectedModel(self) -> str:
        combo = self.ui.predictionModelComboBox
        index = combo.findText(combo.currentText)
        return combo.itemData(index) if index >= 0 else combo.currentText.strip()

    def startPrediction(self, onDone) -> None:
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Could not run the model.", waitCursor=True):
            self.ui.predictionProgressBar.value = 0
            job = self.logic.startCasePrediction(onDone, self.selectedModel(), self._parameterNode.predictionDevice.value,
                                                 onLog=self.appendLog, onProgress=self.showPredictionProgress)
            if job is not None:
                self.predictionJob = job
                self.timer.start()
        self.updateAnnotationState()

    def onPrefill(self) -> None:
        self.startPrediction(self.prefillFromPrediction)

    def prefillFromPrediction(self, output) -> None:
        current = self.logic.current
        empty = [kind for kind in current.segmentIds
                 if not slicer.util.arrayFromSegmentBinaryLabelmap(current.segmentation, current.segmentIds[kind], current.volume).any()]
        kinds = empty
        if not empty and slicer.util.confirmYesNoDisplay(
                "Both segments already have content. Replace them with the model's masks?", windowTitle="SHMN Training"):
            kinds = list(current.segmentIds)
        applied = self.logic.applyPrediction(output, kinds)
        self.appendLog(f"Pre-filled {', '.join(applied) or 'nothing'} from {output.modelLabel}; correct and save.")

    def onPseudoLabel(self) -> None:
        self.startPrediction(self.showPseudoLabel)

    def showPseudoLabel(self, output) -> None:
        confidence = self.logic.showPseudoLabel(output)
        self.ui.pseudoLabelLabel.text = confidence.text()
        self.updateAnnotationState()

    def onAcceptPseudoLabel(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not copy the pseudo-label.", waitCursor=True):
            self.logic.acceptPseudoLabel()

    # --- which case next (`shmn suggest`) --------------------------------------------------------
    def onRankOrCancel(self) -> None:
        if self.suggestJob is not None:
            self.suggestJob.cancel()  # kills the engine's process tree; suggestions.json stays as it was
            self.onPoll()
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Could not rank the cases.", waitCursor=True):
            self.ui.suggestProgressBar.value = 0
            self.suggestJob = self.logic.startSuggestion(
                self.selectedModel(), self._parameterNode.predictionDevice.value,
                onLog=self.appendLog, onProgress=lambda progress: self._showProgress(self.ui.suggestProgressBar, progress))
            self.timer.start()
        self.updateAnnotationState()

    def onNextSuggested(self) -> None:
        caseId = self.logic.nextSuggestedCase()
        if caseId is None:
            slicer.util.infoDisplay("Every ranked case has all its labels now. Rank the cases again.", windowTitle="SHMN Training")
            return
        if not self.confirmLeavingCase():
            return
        with slicer.util.tryWithErrorDisplay(f"Could not load case {caseId}.", waitCursor=True):
            self.showCase(self.logic.loadCase(caseId, discardChanges=True))
            matches = self.ui.caseTableWidget.findItems(caseId, qt.Qt.MatchExactly)
            if matches:
                self.ui.caseTableWidget.selectRow(matches[0].row())
            self.appendLog(f"Suggested case {caseId}: {self.logic.suggestions.why(caseId)}")

    def cancelPrediction(self) -> None:
        if self.predictionJob is not None:
            self.predictionJob.cancel()
            self.onPoll()

    def showPredictionProgress(self, progress: Progress) -> None:
        self._showProgress(self.ui.predictionProgressBar, progress)

    # --- training -------------------------------------------------------------------------------
    def onAddDataset(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(self.widget, "Add a dataset folder")
        if folder:
            parts = [p for p in self._parameterNode.datasets.split(";") if p.strip()]
            self._parameterNode.datasets = ";".join(parts + [folder])

    def populateStartChoices(self, force: bool = False) -> None:
        """Fill "Start from" for the node's preset and resolution; the node's choice stays chosen if it still fits."""
        node, combo = self._parameterNode, self.ui.startFromComboBox
        if node is None or (not force and self._startChoicesFor == (node.preset, node.resolution)):
            return
        self._startChoicesFor = (node.preset, node.resolution)
        wasBlocked = combo.blockSignals(True)
        try:
            combo.clear()
            try:
                for choice in startChoices(node.preset, node.resolution, self.logic.engine):
                    combo.addItem(choice.label, choice.value)
            except (EngineNotFound, ImportError) as exc:
                self.appendLog(f"Warning: models to start from unavailable ({exc})")
            index = combo.findData(node.startFrom)
            if index < 0 and isModelFile(node.startFrom):  # a file set by a script or scene: shown, the engine judges it
                combo.addItem(node.startFrom, node.startFrom)
                index = combo.count - 1
            combo.currentIndex = max(index, 0)
        finally:
            combo.blockSignals(wasBlocked)
        if index < 0 and combo.count:  # a registered model of another preset or resolution: back to the default
            node.startFrom = combo.currentData

    def onStartFromChanged(self, *_) -> None:
        if self._parameterNode and self.ui.startFromComboBox.currentIndex >= 0:
            self._parameterNode.startFrom = self.ui.startFromComboBox.currentData

    def trainingParameters(self):
        """What Train starts. Without Resume, a run folder that already holds a run (the last one, shown
        after it ended) is not reused, which the engine would refuse: a new folder is made instead."""
        params = trainingParametersFrom(self._parameterNode)
        params.runFolder = self.ui.runFolderLineEdit.currentPath
        if not params.resume and params.runFolder and holdsRun(Path(params.runFolder)):
            params.runFolder = ""
        return params

    def updateTrainingState(self, *_) -> None:
        ui = self.ui
        if self.run is not None:
            ui.trainButton.text, ui.trainButton.enabled = "Cancel", True
        else:
            problems = self.trainingParameters().problems() if self._parameterNode else ["No parameter node."]
            ui.trainButton.text, ui.trainButton.enabled = "Train", not problems
            ui.trainButton.toolTip = " ".join(problems) or "Train in a background process; evaluation on the test split follows"
        # Resume continues from the run's own checkpoint (and repeats its starting model): nothing to choose.
        ui.startFromComboBox.enabled = self.run is None and not (self._parameterNode and self._parameterNode.resume)
        ui.registerButton.enabled = self.run is None and bool(ui.modelNameLineEdit.text.strip()) and bool(
            ui.runFolderLineEdit.currentPath or self.lastRunFolder)

    def ensureDependencies(self) -> bool:
        return ensureDependenciesInteractive(self.logic.engine, self.appendLog)

    def onTrainOrCancel(self) -> None:
        if self.run is not None:
            self.run.cancel()
            self.onPoll()
            return
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            self.ui.trainProgressBar.value = 0
            self.ui.evaluationLabel.text = ""
            self.run = self.logic.startTraining(self.trainingParameters(), onLog=self.appendLog, onProgress=self.showTrainingProgress)
            self.ui.runFolderLineEdit.currentPath = str(self.run.runFolder)
            self._parameterNode.runFolder = str(self.run.runFolder)
            remember(SETTINGS_MODULE, "runFolder", str(self.run.runFolder))
            self.showChart()
            self.timer.start()
        self.updateTrainingState()

    def showChart(self) -> None:
        curves = self.run.curves if self.run is not None else self._lastCurves
        if curves is None or curves.table.GetScene() is None:
            return
        key = self.ui.chartComboBox.currentData or "loss"
        self._plotViewNode().SetPlotChartNodeID(curves.charts[key].GetID())

    def showTrainingProgress(self, progress: Progress) -> None:
        self._showProgress(self.ui.trainProgressBar, progress)

    def trainingFinished(self, run) -> None:
        self._lastCurves = run.curves
        self.lastRunFolder = str(run.runFolder)
        self.ui.trainProgressBar.setRange(0, 100)
        self.ui.trainProgressBar.value = 100 if run.state is JobState.SUCCEEDED else 0
        if run.state is JobState.FAILED:
            slicer.util.errorDisplay(f"Training failed: {run.error}", detailedText="\n".join(run.lines))
        elif run.state is JobState.CANCELLED:
            self.appendLog(f"Cancelled. Tick 'Resume' to continue {run.runFolder} after its last completed epoch.")
        if run.model is not None:
            self.appendLog(startedFromText(run.model, self.logic.engine))  # what the run's model card records
        if run.evaluationResult is not None:
            self.tableView.setMRMLTableNode(run.evaluationResult)
            self.ui.evaluationLabel.text = f"Held-out test split ({run.evaluationResult.GetAttribute('SHMN.cases')} cases):"
        elif run.evaluationError:
            self.ui.evaluationLabel.text = f"Evaluation: {run.evaluationError}"
        self.populateModels()

    # --- registration ---------------------------------------------------------------------------
    def onRegister(self) -> None:
        runFolder = self.ui.runFolderLineEdit.currentPath or self.lastRunFolder
        registration = ModelRegistration(self.ui.modelNameLineEdit.text.strip(), self.ui.modelVersionLineEdit.text.strip(),
                                         bool(self.ui.makeDefaultCheckBox.checked))
        with slicer.util.tryWithErrorDisplay("Could not register the model.", waitCursor=True):
            entry = self.logic.registerModel(runFolder, registration)
            self.appendLog(f"Registered {entry['name']} {entry['version']} (sha256 {entry['sha256'][:12]}...); "
                           "SHMN Segmenter lists it from now on.")
            self.populateModels()
            self.populateStartChoices(force=True)  # the next run can fine-tune it

    # --- polling and display --------------------------------------------------------------------
    def onPoll(self) -> None:
        if self.predictionJob is not None and self.predictionJob.poll():
            job, self.predictionJob = self.predictionJob, None
            self.ui.predictionProgressBar.setRange(0, 100)
            self.ui.predictionProgressBar.value = 100 if job.state is JobState.SUCCEEDED else 0
            if job.state is JobState.FAILED:
                slicer.util.errorDisplay(f"The model run failed: {job.error}", detailedText="\n".join(job.lines))
            self.updateAnnotationState()
        if self.suggestJob is not None and self.suggestJob.poll():
            job, self.suggestJob = self.suggestJob, None
            self.ui.suggestProgressBar.setRange(0, 100)
            self.ui.suggestProgressBar.value = 100 if job.state is JobState.SUCCEEDED else 0
            if job.state is JobState.FAILED:
                slicer.util.errorDisplay(f"Ranking the cases failed: {job.error}", detailedText="\n".join(job.lines))
            elif job.state is JobState.SUCCEEDED:
                self.appendLog(f"Ranked {len(job.result.ranking)} case(s) with {job.result.model}; see the Suggested column.")
            self.refreshCaseTable()
            self.updateAnnotationState()
        if self.run is not None and self.run.poll():
            run, self.run = self.run, None
            self.trainingFinished(run)
            self.updateTrainingState()
        if self.predictionJob is None and self.suggestJob is None and self.run is None:
            self.timer.stop()

    @staticmethod
    def _showProgress(bar, progress: Progress) -> None:
        if not progress.percent:
            bar.setRange(0, 0)  # busy: this stage reports no fraction
        else:
            bar.setRange(0, 100)
            bar.value = int(progress.percent)
        bar.format = f"{progress.stage} %p%" if progress.stage else "%p%"

    def appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def cleanup(self) -> None:
        """The module is unloaded or Slicer closes: no engine process may outlive the panel."""
        self.cancelPrediction()
        if self.suggestJob is not None:
            self.suggestJob.cancel()
        if self.run is not None:
            self.run.cancel()
        self.timer.stop()
        self.removeObservers()
        self.setParameterNode(None)
