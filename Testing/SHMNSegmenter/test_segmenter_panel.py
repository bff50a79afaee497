"""SHMN Segmenter's panel under real Qt: the .ui file loaded by QUiLoader, real combo boxes and buttons,
the real MRML scene and parameter node, the real engine behind Apply.

Slicer's MRML-aware widgets (qMRMLWidget, qMRMLNodeComboBox, ctkCollapsibleButton) are the only
stand-ins (Testing/slicer_qt_harness.py). Each defect of issue 14 that concerns this panel has a
test here that failed before its fix: the chosen model forgotten on entering the module again, and
widgets still writing into a parameter node they were disconnected from.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk

pytest_plugins = ["slicer_fixtures"]
pytestmark = pytest.mark.xdist_group("slicer-segmenter")  # one worker: one harness, one QApplication

from slicer_fixtures import CLINIC_MODEL  # noqa: E402 - the model the `registry` fixture registers



@pytest.fixture
def widget(slicer_qt, scene, registry):
    import qt

    qt.QSettings().clear()  # each test starts as a new user
    import SHMNSegmenter

    moduleWidget = SHMNSegmenter.SHMNSegmenterWidget()  # no parent: the base class calls setup(), as in Slicer
    moduleWidget.enter()
    yield moduleWidget
    moduleWidget.cleanup()


def node(widget):
    return widget.panel._parameterNode


def chooseByData(combo, value) -> None:
    index = combo.findData(value)
    assert index >= 0, f"{value!r} is not offered: {[combo.itemData(i) for i in range(combo.count)]}"
    combo.currentIndex = index  # emits currentIndexChanged, as a click on the entry does


def test_the_ui_loads_with_its_widgets_and_the_scene_reaches_the_selector(widget):
    import qt
    import slicer

    ui = widget.panel.ui
    assert widget.panel.widget.parent() is widget.parent  # the panel sits in the module's own widget
    assert type(ui.modelComboBox) is qt.QComboBox and type(ui.applyButton) is qt.QPushButton
    assert ui.inputVolumeSelector.mrmlScene() is slicer.mrmlScene  # through the .ui's mrmlSceneChanged connection
    from SHMNSegmenterLib.parameters import Device

    assert [ui.deviceComboBox.itemText(i) for i in range(ui.deviceComboBox.count)] == [d.label() for d in Device]
    labels = [ui.modelComboBox.itemText(i) for i in range(ui.modelComboBox.count)]
    assert labels[0] == "Default model" and "clinic-model 2.0.0" in labels
    assert not ui.applyButton.enabled and "Select an input volume" in ui.applyButton.toolTip


def test_device_and_register_widgets_and_the_parameter_node_follow_each_other(widget):
    from SHMNSegmenterLib.parameters import Device

    ui = widget.panel.ui
    ui.deviceComboBox.currentIndex = list(Device).index(Device.CPU)
    assert node(widget).device is Device.CPU
    node(widget).register = False
    assert ui.registerCheckBox.checked is False
    ui.registerCheckBox.click()
    assert node(widget).register is True


def test_flip_test_and_boundary_widgets_and_the_parameter_node_follow_each_other(widget):
    ui = widget.panel.ui
    # Shown as the engine's defaults: the mirrored pass averaged in, boundaries refined on the input's grid.
    assert (ui.flipTestCheckBox.checked, ui.nativeBoundaryCheckBox.checked) == (True, True)
    assert (node(widget).flipTest, node(widget).nativeBoundary) == (True, True)
    ui.flipTestCheckBox.click()
    ui.nativeBoundaryCheckBox.click()
    assert (node(widget).flipTest, node(widget).nativeBoundary) == (False, False)
    node(widget).flipTest = True
    node(widget).nativeBoundary = True  # as a loaded scene brings it
    assert (ui.flipTestCheckBox.checked, ui.nativeBoundaryCheckBox.checked) == (True, True)


def test_a_chosen_model_survives_entering_the_module_again(widget, tmp_path):
    """Issue 14, defect 2: enter() refilled the list and wrote "" (the default model) into the node."""
    combo = widget.panel.ui.modelComboBox
    chooseByData(combo, CLINIC_MODEL)
    assert node(widget).modelName == CLINIC_MODEL
    widget.enter()
    assert node(widget).modelName == CLINIC_MODEL
    assert combo.currentData == CLINIC_MODEL

    typed = str(tmp_path / "our-model.safetensors")
    combo.setEditText(typed)  # a radiologist types a model file's path
    assert node(widget).modelName == typed
    widget.enter()
    assert node(widget).modelName == typed and combo.currentText == typed


def test_a_model_saved_with_the_scene_is_shown_and_kept(widget):
    node(widget).modelName = CLINIC_MODEL  # as a loaded scene brings it
    widget.enter()
    assert widget.panel.ui.modelComboBox.currentData == CLINIC_MODEL
    assert node(widget).modelName == CLINIC_MODEL


def test_widgets_let_go_of_a_parameter_node_they_were_disconnected_from(widget):
    """Issue 14, defect 4: connectGui returns no tag (Slicer issue #7547), so disconnectGui(tag) disconnected nothing."""
    from SHMNSegmenterLib.parameters import Device

    for _ in range(3):
        widget.enter()
    previous = node(widget)
    widget.panel.setParameterNode(None)
    widget.panel.ui.deviceComboBox.currentIndex = list(Device).index(Device.GPU)
    assert previous.device is Device.AUTO
    widget.panel.initializeParameterNode()
    widget.panel.ui.deviceComboBox.currentIndex = list(Device).index(Device.CPU)
    assert node(widget).device is Device.CPU


def test_last_model_device_and_ticks_are_remembered_for_a_new_scene(widget, slicer_app):
    import qt
    from SHMNSegmenterLib.parameters import Device

    ui = widget.panel.ui
    chooseByData(ui.modelComboBox, CLINIC_MODEL)
    ui.deviceComboBox.currentIndex = list(Device).index(Device.CPU)
    ui.flipTestCheckBox.click()  # off (default on)
    ui.nativeBoundaryCheckBox.click()  # off (default on)
    assert qt.QSettings().value("SHMN/SHMNSegmenter/modelName") == CLINIC_MODEL
    slicer_app.clear_scene()  # File > Close Scene: a new, empty parameter node
    assert (node(widget).modelName, node(widget).device) == (CLINIC_MODEL, Device.CPU)
    assert (node(widget).flipTest, node(widget).nativeBoundary) == (False, False)
    assert (ui.flipTestCheckBox.checked, ui.nativeBoundaryCheckBox.checked) == (False, False)
    assert ui.modelComboBox.currentData == CLINIC_MODEL

    ui.nativeBoundaryCheckBox.click()  # back on: the next new scene starts with it on again
    slicer_app.clear_scene()
    assert node(widget).nativeBoundary is True

    node(widget).modelName = ""  # a scene's own choice wins over the remembered one
    widget.enter()
    assert node(widget).modelName == ""


def test_a_remembered_tick_that_is_not_true_or_false_is_ignored(widget, slicer_app):
    import qt

    qt.QSettings().setValue("SHMN/SHMNSegmenter/flipTest", "maybe")  # e.g. written by hand or another tool
    qt.QSettings().setValue("SHMN/SHMNSegmenter/nativeBoundary", "False")
    slicer_app.clear_scene()
    assert (node(widget).flipTest, node(widget).nativeBoundary) == (True, False)  # "maybe": the default stays


def test_apply_starts_the_engine_with_the_panel_choices_and_cancel_stops_it(widget, tmp_path):
    import slicer
    from SHMNSegmenterLib.parameters import Device

    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(100, 10, (12, 14, 10)).astype(np.float32))
    image.SetSpacing((2.0, 2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "flair.nii.gz"))
    volume = slicer.util.loadVolume(str(tmp_path / "flair.nii.gz"))
    ui = widget.panel.ui
    ui.inputVolumeSelector.setCurrentNode(volume)
    chooseByData(ui.modelComboBox, CLINIC_MODEL)
    ui.deviceComboBox.currentIndex = list(Device).index(Device.CPU)
    ui.flipTestCheckBox.click()
    ui.nativeBoundaryCheckBox.click()
    assert node(widget).inputVolume is volume and ui.applyButton.enabled

    ui.applyButton.click()
    job = widget.panel.job
    assert job is not None and ui.applyButton.text == "Cancel"
    command = next(line for line in job.lines if "shmn predict" in line)
    assert f"--model {CLINIC_MODEL}" in command and "--device cpu" in command
    assert command.endswith("--no-tta --boundary model")  # the two ticks reach the engine
    ui.applyButton.click()  # Cancel
    assert widget.panel.job is None and ui.resultLabel.text == "Cancelled." and ui.applyButton.text == "Apply"


def test_reload_takes_edited_library_files(widget):
    """onReload re-imports SHMNCoreLib and SHMNSegmenterLib, so Reload picks up edits to any library file."""
    libraries = ("SHMNCoreLib", "SHMNSegmenterLib", "SHMNTrainingLib")
    # Put the libraries back afterwards: tests later in this process hold classes (JobState) of the
    # originals, and an enum from a reloaded module is another class.
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] in libraries}
    try:
        _check_reload(widget)
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] in libraries]:
            del sys.modules[name]
        sys.modules.update(saved)


def _check_reload(widget):
    before = {name: sys.modules[name] for name in ("SHMNCoreLib.engine", "SHMNSegmenterLib.widget", "SHMNSegmenterLib")}
    widget.onReload()
    for name, module in before.items():
        assert sys.modules[name] is not module, name
    from SHMNSegmenterLib import logic

    import SHMNCoreLib.jobs

    assert logic.JobState is SHMNCoreLib.jobs.JobState  # the fresh library uses the fresh core
