"""The module panel (Qt, Slicer application only): parameters, Apply/Cancel, progress, log, results.

Widgets come from ``Resources/UI/SHMNSegmenter.ui``; those with a ``SlicerParameterName`` property
are kept in sync with the parameter node by parameterNodeWrapper. The model combo box is filled
from the engine's registry at run time, so it is synchronised by hand. While the engine runs, a
QTimer polls the job on the GUI thread: the GUI stays responsive and MRML is touched from one thread.
"""

from __future__ import annotations

import qt
import slicer
import vtk
from slicer.util import VTKObservationMixin

from SHMNCoreLib.dependencies import ensureDependenciesInteractive
from SHMNCoreLib.engine import EngineNotFound, availableModels
from SHMNCoreLib.parameternode import connectWidgets
from SHMNCoreLib.process import Progress
from SHMNCoreLib.settings import fillFromSettings, remember

from .logic import JobState, SHMNSegmenterLogic
from .parameters import DEFAULT_MODEL, parametersFromNode

POLL_INTERVAL_MS = 200
DEFAULT_MODEL_LABEL = "Default model"
SETTINGS_MODULE = "SHMNSegmenter"
REMEMBERED = ("modelName", "device", "flipTest", "nativeBoundary")  # the user's last choices, for a scene that has none yet (QSettings)


def openWithSystem(path) -> bool:
    """Open a local file with the system's default application (the web browser for report.html)."""
    return bool(qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path))))


class SegmenterPanel(VTKObservationMixin):
    def __init__(self, uiPath: str, logic: SHMNSegmenterLogic):
        VTKObservationMixin.__init__(self)
        self.logic = logic
        self.widget = slicer.util.loadUI(uiPath)
        self.ui = slicer.util.childWidgetVariables(self.widget)
        self.widget.setMRMLScene(slicer.mrmlScene)
        self.job = None
        self._parameterNode = None
        self._guiTag = None
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.onPoll)
        self.ui.applyButton.clicked.connect(self.onApplyOrCancel)
        self.result = None  # the last imported result: what "Open report" opens
        self.ui.openReportButton.enabled = False
        self.ui.openReportButton.clicked.connect(self.onOpenReport)
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.ui.modelComboBox.editTextChanged.connect(self.onModelChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.populateModels()
        self.initializeParameterNode()

    # --- parameter node -------------------------------------------------------------------------
    def initializeParameterNode(self) -> None:
        node = self.logic.getParameterNode()
        fillFromSettings(node, SETTINGS_MODULE, REMEMBERED)
        self.setParameterNode(node)
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

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
            self.showModel(node.modelName)
        self.updateApplyButton()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        for name in ("device", "flipTest", "nativeBoundary"):
            remember(SETTINGS_MODULE, name, getattr(self._parameterNode, name))
        self.updateApplyButton()

    def onSceneStartClose(self, caller=None, event=None) -> None:
        self.cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller=None, event=None) -> None:
        self.initializeParameterNode()

    # --- model choice ---------------------------------------------------------------------------
    def populateModels(self) -> None:
        """Refill the model list (models registered meanwhile appear) and show the chosen model again.

        The refill must not reach the parameter node: clearing the combo box emits an empty choice,
        which would replace the user's model with the default one.
        """
        combo = self.ui.modelComboBox
        chosen = self._parameterNode.modelName if self._parameterNode else self.selectedModel()
        wasBlocked = combo.blockSignals(True)
        try:
            combo.clear()
            combo.addItem(DEFAULT_MODEL_LABEL, DEFAULT_MODEL)
            try:
                for choice in availableModels(self.logic.engine):
                    combo.addItem(choice.label, choice.value)
            except (EngineNotFound, ImportError) as exc:
                self.appendLog(f"Warning: model list unavailable ({exc})")
        finally:
            combo.blockSignals(wasBlocked)
        self.showModel(chosen)

    def selectedModel(self) -> str:
        combo = self.ui.modelComboBox
        index = combo.findText(combo.currentText)
        # Typed text that is not an entry is a model name, name@version or a .safetensors path.
        return combo.itemData(index) if index >= 0 else combo.currentText.strip()

    def showModel(self, model: str) -> None:
        combo = self.ui.modelComboBox
        index = combo.findData(model)
        wasBlocked = combo.blockSignals(True)
        if index >= 0:
            combo.currentIndex = index
        else:
            combo.setEditText(model)
        combo.blockSignals(wasBlocked)

    def onModelChanged(self, *_) -> None:
        if self._parameterNode:
            self._parameterNode.modelName = self.selectedModel()
            remember(SETTINGS_MODULE, "modelName", self._parameterNode.modelName)

    # --- running --------------------------------------------------------------------------------
    def updateApplyButton(self, caller=None, event=None) -> None:
        if self.job is not None:
            self.ui.applyButton.text, self.ui.applyButton.enabled = "Cancel", True
            self.ui.applyButton.toolTip = "Stop the engine (kills its processes)"
            return
        problems = parametersFromNode(self._parameterNode).problems() if self._parameterNode else ["No parameter node."]
        self.ui.applyButton.text = "Apply"
        self.ui.applyButton.enabled = not problems
        self.ui.applyButton.toolTip = " ".join(problems) or "Segment PVL lesions and ventricles and predict the MACS group"

    def onApplyOrCancel(self) -> None:
        if self.job is not None:
            self.cancelJob()
            return
        with slicer.util.tryWithErrorDisplay("SHMN could not start.", waitCursor=True):
            if not self.ensureDependencies():
                return
            self.ui.logTextEdit.clear()
            self.ui.resultLabel.text = ""
            self.result = None
            self.ui.openReportButton.enabled = False
            parameters = parametersFromNode(self._parameterNode)
            self.job = self.logic.startSegmentation(parameters, onLog=self.appendLog, onProgress=self.showProgress)
            self.timer.start()
        self.updateApplyButton()

    def ensureDependencies(self) -> bool:
        return ensureDependenciesInteractive(self.logic.engine, self.appendLog)

    def cancelJob(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.onPoll()

    def onPoll(self) -> None:
        if self.job is None or not self.job.poll():
            return
        self.timer.stop()
        job, self.job = self.job, None
        self.ui.progressBar.setRange(0, 100)
        self.ui.progressBar.value = 100 if job.state is JobState.SUCCEEDED else 0
        self.updateApplyButton()
        if job.state is JobState.SUCCEEDED:
            self.showResults(job.result)
        elif job.state is JobState.FAILED:
            self.ui.resultLabel.text = f"Failed: {job.error}"
            slicer.util.errorDisplay(f"SHMN failed: {job.error}", detailedText="\n".join(job.lines))
        else:
            self.ui.resultLabel.text = "Cancelled."

    def showProgress(self, progress: Progress) -> None:
        bar = self.ui.progressBar
        if not progress.percent:
            bar.setRange(0, 0)  # busy: the engine reports no fraction for this stage
        else:
            bar.setRange(0, 100)
            bar.value = int(progress.percent)
        bar.format = f"{progress.stage} %p%" if progress.stage else "%p%"

    def appendLog(self, line: str) -> None:
        self.ui.logTextEdit.appendPlainText(line)

    def showResults(self, result) -> None:
        self.result = result
        self.ui.openReportButton.enabled = result.caseReport is not None
        self.ui.openReportButton.toolTip = str(result.caseReport or "The engine wrote no report.html")
        self.ui.resultLabel.text = result.summary.text()
        slicer.util.setSliceViewerLayers(background=result.volume, fit=True)
        self.appendLog(f"Results: {result.caseDir} (overview: {result.overview})")

    def onOpenReport(self) -> None:
        if self.result is not None:
            with slicer.util.tryWithErrorDisplay("The case report could not be opened.", waitCursor=True):
                self.logic.openReport(self.result, openWithSystem)

    def cleanup(self) -> None:
        """The module is unloaded or Slicer closes: no engine may outlive the panel."""
        self.cancelJob()
        self.timer.stop()
        self.removeObservers()
        self.setParameterNode(None)
