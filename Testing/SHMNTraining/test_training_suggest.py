"""SHMN Training's "which case next?": `shmn suggest` in its own process, the Suggested column, the
"Next suggested case" choice and Cancel, against the real MRML (slicer-core) and the real engine.

The model is a real tiny SHMN with random weights (engine_fixtures.make_tiny_model): the ranking's
order is arbitrary here; what is checked is that the table, the file and the choice agree. Whether the
ranking is sensible is checked in Testing/inference/test_suggest.py with the shipped model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
for folder in (REPO / "Testing", REPO / "SHMNSegmenter", REPO / "SHMNTraining"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from slicer_harness import install_harness  # noqa: E402

pytestmark = pytest.mark.xdist_group("slicer-training-suggest")
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return install_harness(tmp_path_factory.mktemp("slicer-temp"))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from engine_fixtures import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("model"))[0]


@pytest.fixture()
def opened(harness, tmp_path):
    from SHMNTrainingLib import SHMNTrainingLogic
    from SHMNTrainingLib.selftest import makeTinyDataset

    harness.clear_scene()
    dataset = makeTinyDataset(tmp_path / "dataset")
    logic = SHMNTrainingLogic()
    logic.openDataset(dataset)
    return logic, dataset


def test_ranking_fills_the_column_and_chooses_the_next_case(opened, tiny_model):
    logic, dataset = opened
    assert logic.suggestions is None and {row.suggested for row in logic.caseRows()} == {"-"}
    assert logic.nextSuggestedCase() is None
    progress = []
    job = logic.startSuggestion(str(tiny_model), "cpu", count=2, register=False, onProgress=progress.append)
    suggestions = job.wait(TIMEOUT_S)
    assert suggestions is logic.suggestions
    written = json.loads((dataset / "suggestions.json").read_text())
    ranked = [row["id"] for row in written["ranking"]]
    assert sorted(ranked) == ["case_neg", "case_obl", "case_rh"]  # every case misses its MACS group
    assert written["suggested"] == ranked[:2]
    assert any(p.stage == "shmn suggest" and p.percent for p in progress)
    # The column shows each case's rank and score as the file has them.
    cells = {row.id: row.cells[-1] for row in logic.caseRows()}
    for row in written["ranking"]:
        assert cells[row["id"]] == f"#{row['rank']} ({row['score']:.2f})"
    # "Next suggested case": the best-ranked one; once it is loaded, the next one.
    assert logic.nextSuggestedCase() == ranked[0]
    logic.loadCase(ranked[0])
    assert logic.nextSuggestedCase() == ranked[1]
    # A case labelled since the ranking is skipped.
    logic.setMacs("mild")
    logic.saveCase()
    logic.closeCase()
    assert logic.nextSuggestedCase() == ranked[1]
    # Re-opening the dataset reads the ranking back from the file.
    logic.openDataset(dataset)
    assert logic.suggestions.cell(ranked[0]) == cells[ranked[0]]


def test_cancel_stops_the_ranking_and_writes_nothing(opened, tiny_model):
    from SHMNSegmenterLib.logic import JobState

    logic, dataset = opened
    (dataset / "suggestions.json").write_text("{}")  # a stale file must survive a cancelled run untouched
    job = logic.startSuggestion(str(tiny_model), "cpu", register=False)
    job.cancel()
    assert job.state is JobState.CANCELLED
    assert job.runner.exitCode() is not None  # the process is gone
    assert (dataset / "suggestions.json").read_text() == "{}"
    assert logic.suggestions is None


def test_a_damaged_ranking_does_not_stop_the_dataset_from_opening(opened):
    logic, dataset = opened
    (dataset / "suggestions.json").write_text("not json")
    logic.openDataset(dataset)
    assert logic.suggestions is None and logic.caseRows()


def test_suggest_command_is_the_documented_one(tmp_path):
    from SHMNCoreLib.engine import Engine
    from SHMNTrainingLib.suggestions import suggestCommand

    engine = Engine(root=REPO, python=Path(sys.executable), origin="test")
    assert suggestCommand(engine, tmp_path, "m@1.0.0", "cpu", 5, register=False) == [
        sys.executable, "-m", "shmn", "suggest", str(tmp_path), "-n", "5", "--device", "cpu", "--model", "m@1.0.0", "--no-register"]
