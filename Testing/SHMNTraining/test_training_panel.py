"""SHMN Training's panel under real Qt: its .ui file loaded by QUiLoader, the real buttons, combo boxes and
spin box, the real MRML scene and parameter node, and the real engine behind Train.

The MRML-aware widgets (qMRMLWidget, qMRMLSegmentEditorWidget, the plot and table views, ctk widgets)
are the only stand-ins (Testing/slicer_qt_harness.py). Each defect of issue 14 that concerns this panel
has a test that failed before its fix: the panel lost when the widget sets itself up, the epochs range,
the pre-fill model not kept in the parameter node, widgets still writing into a node they were
disconnected from, and a second Train refused because the finished run's folder was reused.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "SHMNTraining") not in sys.path:
    sys.path.insert(0, str(REPO / "SHMNTraining"))

pytest_plugins = ["slicer_fixtures"]
pytestmark = pytest.mark.xdist_group("slicer-training-panel")

from slicer_fixtures import CLINIC_MODEL  # noqa: E402 - the model the `registry` fixture registers
TIMEOUT_S = 600



@pytest.fixture
def widget(slicer_qt, scene, registry):
    import qt

    qt.QSettings().clear()  # each test starts as a new user
    import SHMNTraining

    moduleWidget = SHMNTraining.SHMNTrainingWidget()  # no parent: the base class calls setup() itself
    moduleWidget.enter()
    yield moduleWidget
    moduleWidget.exit()
    moduleWidget.cleanup()


def node(widget):
    return widget.panel._parameterNode


def test_a_widget_that_sets_itself_up_keeps_its_panel(widget):
    """Issue 14, defect 4: `self.panel = None` after the base __init__ threw away what setup() had built."""
    assert widget.panel is not None
    assert widget.panel.widget.parent() is widget.parent
    assert widget.panel.editor.state["shortcuts"] is True  # enter() reached the Segment Editor


def test_epochs_keep_their_range_and_follow_the_parameter_node(widget):
    """Issue 14, defect 4: the wrapper reset an unbounded spin box to the whole int range."""
    spin = widget.panel.ui.epochsSpinBox
    assert (spin.minimum, spin.maximum) == (1, 10000)
    node(widget).epochs = 5
    assert spin.value == 5
    spin.setValue(12)
    assert node(widget).epochs == 12
    spin.setValue(0)  # below the range: Qt keeps it in range
    assert node(widget).epochs == 1


def test_the_prefill_model_is_kept_in_the_parameter_node(widget):
    """Issue 14, defect 4: predictionModel was never bound, so the choice was not saved with the scene."""
    combo = widget.panel.ui.predictionModelComboBox
    combo.currentIndex = combo.findData(CLINIC_MODEL)
    assert node(widget).predictionModel == CLINIC_MODEL
    widget.enter()
    assert node(widget).predictionModel == CLINIC_MODEL and combo.currentData == CLINIC_MODEL

    node(widget).predictionModel = ""  # a scene saved with the default model
    widget.enter()
    assert combo.currentData == ""


def test_widgets_let_go_of_a_parameter_node_they_were_disconnected_from(widget):
    from SHMNTrainingLib.parameters import Preset

    widget.exit()
    widget.enter()
    previous = node(widget)
    widget.panel.setParameterNode(None)
    widget.panel.ui.presetComboBox.currentIndex = list(Preset).index(Preset.SHMN2)
    assert previous.preset is Preset.SHMN4


def test_last_choices_are_remembered_for_a_new_scene(widget, slicer_app, tmp_path):
    from SHMNTrainingLib.parameters import TrainDevice

    ui = widget.panel.ui
    ui.predictionModelComboBox.currentIndex = ui.predictionModelComboBox.findData(CLINIC_MODEL)
    ui.deviceComboBox.currentIndex = list(TrainDevice).index(TrainDevice.CPU)
    slicer_app.clear_scene()  # File > Close Scene
    assert node(widget).predictionModel == CLINIC_MODEL and node(widget).device is TrainDevice.CPU
    assert ui.predictionModelComboBox.currentData == CLINIC_MODEL


@pytest.fixture
def threeCaseDataset(small_cohort, tmp_path):
    """Two training cases and one validation case (no test split: no evaluation run after training)."""
    from slicer_fixtures import mini_dataset

    cases = {("pvl", "pvl_001"): "train", ("macs", "macs_006"): "train", ("macs", "macs_000"): "val"}
    return mini_dataset(Path(small_cohort), tmp_path / "mini", cases)


def waitForTraining(panel) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while panel.run is not None:
        assert time.monotonic() < deadline, "training did not finish in time:\n" + panel.ui.logTextEdit.plainText[-3000:]
        panel.onPoll()  # what the panel's QTimer does in Slicer
        time.sleep(0.2)


def test_train_again_after_a_run_starts_a_new_run_and_resume_continues_the_old(widget, threeCaseDataset, tmp_path):
    """Issue 14, defect 3: the finished run's folder stayed in the field and a second Train was refused."""
    import qt
    from SHMNTrainingLib.parameters import Resolution, TrainDevice

    panel, ui = widget.panel, widget.panel.ui
    ui.datasetPathLineEdit.currentPath = str(threeCaseDataset)
    ui.openDatasetButton.click()
    assert ui.caseTableWidget.rowCount == 3 and node(widget).datasets == str(threeCaseDataset)
    ui.resolutionComboBox.currentIndex = list(Resolution).index(Resolution.TINY)
    ui.deviceComboBox.currentIndex = list(TrainDevice).index(TrainDevice.CPU)
    ui.epochsSpinBox.setValue(1)
    node(widget).cacheFolder = str(tmp_path / "cache")
    assert ui.trainButton.enabled, ui.trainButton.toolTip

    ui.trainButton.click()
    first = Path(panel.run.runFolder)
    assert ui.runFolderLineEdit.currentPath == str(first) and ui.trainButton.text == "Cancel"
    waitForTraining(panel)
    assert (first / "config.json").is_file() and "Training failed" not in ui.logTextEdit.plainText
    assert ui.runFolderLineEdit.currentPath == str(first) == node(widget).runFolder  # kept for Register and Resume
    assert qt.QSettings().value("SHMN/SHMNTraining/runFolder") == str(first)

    time.sleep(1.1)  # new run folders are named by the second
    ui.trainButton.click()  # Train again, Resume not ticked
    second = Path(panel.run.runFolder)
    assert second != first
    command = next(line for line in panel.run.lines if " train " in line)
    assert f"-o {second}" in command and "--resume" not in command
    ui.trainButton.click()  # Cancel
    waitForTraining(panel)

    ui.runFolderLineEdit.currentPath = str(first)
    ui.resumeCheckBox.click()
    assert node(widget).resume is True
    assert panel.trainingParameters().runFolder == str(first)  # Resume continues the run in that folder
