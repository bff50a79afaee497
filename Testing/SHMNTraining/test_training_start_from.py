"""SHMN Training's "Start from": fine-tuning a registered model instead of training from random weights.

Real registry files, a real shmn4/tiny model, the real MRML scene, real `shmn train` processes and, for the
panel, real Qt (offscreen) with the module's .ui file (Testing/slicer_qt_harness.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "SHMNTraining") not in sys.path:
    sys.path.insert(0, str(REPO / "SHMNTraining"))

pytest_plugins = ["slicer_fixtures"]
pytestmark = pytest.mark.xdist_group("slicer-training-start-from")

TIMEOUT_S = 600
START_MODEL = "annotator-start@1.0.0"
SHIPPED_DEFAULT = "shmn4-fast-v2@2.7.0+calibrated"


@pytest.fixture(scope="session")
def startWeights(tmp_path_factory) -> Path:
    """A real shmn4 network at the tiny resolution, saved with the card a training run writes."""
    import torch

    from shmn.network.model import SHMN
    from shmn.network.model_file import save_model
    from shmn.training.config import preset_config

    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("start") / "annotator-start.safetensors"
    card = {"name": "annotator-start", "version": "1.0.0", "preset": "shmn4", "resolution": "tiny",
            "grid": {"name": "tiny", "spacing_mm": 4.0, "size": [40, 48, 40]}, "training_data": "synthetic (test)"}
    save_model(path, SHMN(preset_config("shmn4", "tiny").network), card)
    return path


def registerStartModel(weights: Path, registry: Path, default: bool = False) -> None:
    """What `shmn register` / the module's Register writes (the card's preset, grid and tasks copied)."""
    from shmn.io.model_card import read_card
    from shmn.io.registry import register_model

    card = read_card(weights)
    register_model(weights, registry, name="annotator-start", version="1.0.0", default=default,
                   preset=card["preset"], grid=card["grid"], tasks=card["network"]["tasks"])


@pytest.fixture
def userRegistry(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "user" / "models.json"
    monkeypatch.setenv("SHMN_MODEL_REGISTRY", str(path))
    return path


def test_the_choices_are_the_registered_models_that_fit_the_preset_and_resolution(slicer_app, startWeights, userRegistry):
    from SHMNTrainingLib.parameters import START_FROM_DEFAULT, START_FROM_NONE, Preset, Resolution
    from SHMNTrainingLib.startmodel import RANDOM_LABEL, initModelArgument, startChoices

    registerStartModel(startWeights, userRegistry)

    def choices(preset, resolution) -> dict:
        return {c.value: c.label for c in startChoices(preset, resolution)}

    fast = choices(Preset.SHMN4, Resolution.FAST)
    assert list(fast)[:2] == [START_FROM_DEFAULT, START_FROM_NONE] and fast[START_FROM_NONE] == RANDOM_LABEL
    assert fast[START_FROM_DEFAULT] == "Default model (shmn4-fast-v2 2.7.0+calibrated)"
    assert set(fast) == {START_FROM_DEFAULT, START_FROM_NONE, SHIPPED_DEFAULT, "shmn4-fast-randomised@1.0.0+calibrated", "shmn4-fast-phantom@1.0.0"}
    assert choices(Preset.SHMN4_STAR, Resolution.FAST) == fast  # SHMN-4* builds the same network
    assert choices(Preset.SHMN4, Resolution.TINY) == {
        START_FROM_DEFAULT: "Default model: none for shmn4/tiny (random initialisation)", START_FROM_NONE: RANDOM_LABEL,
        START_MODEL: "annotator-start 1.0.0"}
    assert set(choices(Preset.SHMN2, Resolution.TINY)) == {START_FROM_DEFAULT, START_FROM_NONE}  # other tasks

    assert initModelArgument(START_FROM_DEFAULT, Preset.SHMN4, Resolution.FAST) == SHIPPED_DEFAULT
    assert initModelArgument(START_FROM_DEFAULT, Preset.SHMN4, Resolution.TINY) == ""  # the default does not fit
    assert initModelArgument(START_FROM_NONE, Preset.SHMN4, Resolution.FAST) == ""
    assert initModelArgument(START_MODEL, Preset.SHMN4, Resolution.TINY) == START_MODEL
    relative = "runs/x/model-best.safetensors"
    assert initModelArgument(relative, Preset.SHMN4, Resolution.TINY) == str(Path(relative).absolute())

    registerStartModel(startWeights, userRegistry, default=True)  # the user's default wins where it fits
    assert initModelArgument(START_FROM_DEFAULT, Preset.SHMN4, Resolution.TINY) == START_MODEL
    assert initModelArgument(START_FROM_DEFAULT, Preset.SHMN4, Resolution.FAST) == ""


@pytest.fixture
def threeCaseDataset(small_cohort, tmp_path) -> Path:
    """Two training cases and one validation case (no test split: no evaluation after training)."""
    from slicer_fixtures import mini_dataset

    cases = {("pvl", "pvl_001"): "train", ("macs", "macs_006"): "train", ("macs", "macs_000"): "val"}
    return mini_dataset(Path(small_cohort), tmp_path / "mini", cases)


def trainCommandLine(run) -> str:
    return next(line for line in run.lines if line.startswith("[shmn train]"))


def test_a_run_starts_from_the_chosen_model_and_resume_repeats_it(slicer_app, scene, startWeights, userRegistry,
                                                                  threeCaseDataset, tmp_path):
    from shmn.io.digest import sha256_of
    from shmn.io.model_card import read_card
    from SHMNCoreLib.jobs import JobState
    from SHMNTrainingLib import Preset, Resolution, SHMNTrainingLogic, TrainDevice, TrainingParameters
    from SHMNTrainingLib.parameters import START_FROM_NONE
    from SHMNTrainingLib.startmodel import startedFromText

    registerStartModel(startWeights, userRegistry)
    params = TrainingParameters(datasets=str(threeCaseDataset), runFolder=str(tmp_path / "run"), preset=Preset.SHMN4,
                                resolution=Resolution.TINY, epochs=1, device=TrainDevice.CPU,
                                cacheFolder=str(tmp_path / "cache"), startFrom=START_MODEL)
    logic = SHMNTrainingLogic()
    run = logic.startTraining(params).wait(TIMEOUT_S)
    assert run.state is JobState.SUCCEEDED, "\n".join(run.lines[-30:])
    assert trainCommandLine(run).endswith(f"--init-model {START_MODEL} --cache {tmp_path / 'cache'}")
    started = {"model": "annotator-start", "version": "1.0.0", "sha256": sha256_of(startWeights)}
    assert read_card(run.model)["training_data"]["initialised_from"] == started
    assert startedFromText(run.model) == f"Started from annotator-start 1.0.0 (sha256 {started['sha256'][:12]}...)."

    # Resume continues from the checkpoint and repeats the run's own start, whatever is chosen now
    # (the engine refuses --resume with another configuration).
    resumed = logic.startTraining(replace(params, resume=True, epochs=2, startFrom=START_FROM_NONE)).wait(TIMEOUT_S)
    assert resumed.state is JobState.SUCCEEDED, "\n".join(resumed.lines[-30:])
    assert "--resume" in trainCommandLine(resumed) and f"--init-model {START_MODEL}" in trainCommandLine(resumed)
    assert [r["epoch"] for r in resumed.records] == [1, 2]
    assert read_card(resumed.model)["training_data"]["initialised_from"] == started

    # Random weights: no --init-model (the real process, stopped once its command is known).
    fresh = logic.startTraining(replace(params, runFolder=str(tmp_path / "fresh"), startFrom=START_FROM_NONE))
    try:
        command = trainCommandLine(fresh)
        assert f" -o {tmp_path / 'fresh'} " in command and "--init-model" not in command
    finally:
        fresh.cancel()
    assert fresh.state is JobState.CANCELLED


@pytest.fixture
def widget(slicer_qt, scene, registry, startWeights):
    import qt

    registerStartModel(startWeights, registry)  # beside the `registry` fixture's clinic-model (a card without preset)
    qt.QSettings().clear()
    import SHMNTraining

    moduleWidget = SHMNTraining.SHMNTrainingWidget()
    moduleWidget.enter()
    yield moduleWidget
    moduleWidget.exit()
    moduleWidget.cleanup()


def test_the_panel_offers_fitting_models_and_its_run_says_what_it_started_from(widget, threeCaseDataset, tmp_path):
    from SHMNTrainingLib.parameters import START_FROM_DEFAULT, Resolution, TrainDevice

    panel, ui = widget.panel, widget.panel.ui
    node = panel._parameterNode
    combo = ui.startFromComboBox
    assert node.startFrom == START_FROM_DEFAULT and combo.currentData == START_FROM_DEFAULT
    assert combo.currentText == "Default model (shmn4-fast-v2 2.7.0+calibrated)"
    assert combo.findData(START_MODEL) < 0  # a tiny model does not fit the fast resolution
    ui.resolutionComboBox.currentIndex = list(Resolution).index(Resolution.TINY)
    assert combo.findData(START_MODEL) >= 0 and combo.currentData == START_FROM_DEFAULT
    assert combo.currentText.startswith("Default model: none for shmn4/tiny")
    combo.currentIndex = combo.findData(START_MODEL)
    assert node.startFrom == START_MODEL and panel.trainingParameters().startFrom == START_MODEL
    widget.enter()  # the choice survives leaving and entering the module
    assert combo.currentData == START_MODEL

    ui.datasetPathLineEdit.currentPath = str(threeCaseDataset)
    ui.openDatasetButton.click()
    ui.deviceComboBox.currentIndex = list(TrainDevice).index(TrainDevice.CPU)
    ui.epochsSpinBox.setValue(1)
    node.cacheFolder = str(tmp_path / "cache")
    ui.trainButton.click()
    assert not combo.enabled  # fixed while the run trains
    assert f"--init-model {START_MODEL}" in trainCommandLine(panel.run)
    deadline = time.monotonic() + TIMEOUT_S
    while panel.run is not None:
        assert time.monotonic() < deadline, ui.logTextEdit.plainText[-3000:]
        panel.onPoll()
        time.sleep(0.2)
    assert "Started from annotator-start 1.0.0 (sha256 " in ui.logTextEdit.plainText, ui.logTextEdit.plainText[-3000:]
    assert combo.enabled

    ui.resolutionComboBox.currentIndex = list(Resolution).index(Resolution.FAST)  # the chosen model does not fit: default
    assert node.startFrom == START_FROM_DEFAULT and combo.currentData == START_FROM_DEFAULT
    ui.resumeCheckBox.click()
    assert not combo.enabled  # resume repeats the run's own start
