"""Battery, model files: a changed copy of a registered model given by path, hostile model cards,
a missing run folder, and model files' permissions. Real safetensors files, real registry, real CLI."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
import torch
from safetensors.torch import save_file

from shmn.errors import ShmnError
from shmn.inference.predict import load_predictor
from shmn.io.registry import USER_REGISTRY_ENV, register_model
from shmn.network.model import SHMN, NetworkConfig
from shmn.network.model_file import load_model, save_model
from battery_helpers import one_error_line, run_cli, write_brain, write_dataset, lesion_mask
from engine_fixtures import TINY_CARD, make_tiny_model

pytestmark = pytest.mark.xdist_group("battery_model")


@pytest.fixture()
def registered(tmp_path, monkeypatch):
    """The tiny model registered in a user registry of its own; (path, sha256)."""
    registry = tmp_path / "registry" / "models.json"
    monkeypatch.setenv(USER_REGISTRY_ENV, str(registry))
    path, sha = make_tiny_model(tmp_path / "registry")
    register_model(path, registry, name=TINY_CARD["name"], version="0.0.1")
    return path, sha


def _flip_a_weight_byte(path, copy):
    shutil.copy(path, copy)
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF  # inside the last tensor: the header (and so the card) stays readable
    copy.write_bytes(bytes(data))
    return copy


def test_changed_copy_of_a_registered_model_given_by_path_reports_as_unregistered_and_warns(registered, anatomy, tmp_path, capfd):
    path, sha = registered
    copy = _flip_a_weight_byte(path, tmp_path / "elsewhere" / "tiny.safetensors") if (tmp_path / "elsewhere").mkdir() is None else None
    scan = write_brain(anatomy, tmp_path / "scan.nii.gz")
    status, lines, _ = run_cli(["predict", scan, "-o", tmp_path / "out", "--model", copy, "--no-register", "--device", "cpu", "-q"], capfd)
    assert status == 0, lines
    assert any(line.startswith("shmn: warning: scan: model ") and sha in line and "unregistered" in line for line in lines), lines
    report = json.loads((tmp_path / "out" / "scan" / "report.json").read_text())
    assert report["model"]["name"].startswith("unregistered model, sha256 ")
    assert report["model"]["sha256"] != sha and report["model"]["sha256"] in report["model"]["name"]
    assert report["model"]["registered"] is False
    assert any("unregistered model" in w for w in report["warnings"])


def test_unchanged_copy_given_by_path_is_recognised_as_the_registered_model(registered, tmp_path):
    path, sha = registered
    copy = tmp_path / "copy.safetensors"
    shutil.copy(path, copy)
    predictor = load_predictor(copy)
    assert (predictor.info.name, predictor.info.version, predictor.info.sha256) == (TINY_CARD["name"], "0.0.1", sha)
    assert predictor.info.registered and predictor.warnings == []


def _hostile_copy(tmp_path, name, **card_changes):
    """A model file whose weights are real but whose card was edited after saving."""
    torch.manual_seed(0)
    model = SHMN(NetworkConfig(base_filters=4, levels=4, macs_hidden=16))
    path = tmp_path / f"{name}.safetensors"
    save_model(path, model, TINY_CARD)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        card = json.loads(handle.metadata()["shmn"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    for key, value in card_changes.items():
        section, _, field = key.partition(".")
        if field:
            card[section][field] = value
        else:
            card[section] = value
    save_file(tensors, str(path), metadata={"shmn": json.dumps(card)})
    return path


HOSTILE_CARDS = {
    "macs_hidden 1e9": ({"network.macs_hidden": 1e9}, "macs_hidden"),
    "base_filters 10**6": ({"network.base_filters": 10**6}, "base_filters"),
    "levels as text": ({"network.levels": "5"}, "levels"),
    "grid of a billion voxels": ({"grid": {"spacing_mm": 1.0, "size": [1000, 1000, 1000]}}, "grid"),
    "preprocessing of the wrong type": ({"preprocessing": {"n4_shrink": "lots"}}, "preprocessing"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_CARDS))
def test_hostile_model_card_gives_one_line_before_any_network_is_built(kind, anatomy, tmp_path, capfd):
    changes, expected = HOSTILE_CARDS[kind]
    path = _hostile_copy(tmp_path, "hostile", **changes)
    scan = write_brain(anatomy, tmp_path / "scan.nii.gz")
    one_error_line(["predict", scan, "-o", tmp_path / "out", "--model", path, "-q"], capfd, "hostile.safetensors", expected)
    assert not (tmp_path / "out").exists()


def test_evaluate_of_a_run_folder_that_does_not_exist_names_the_folder(anatomy, tmp_path, capfd):
    data = write_dataset(tmp_path / "data", anatomy, {"t1": lesion_mask()}, splits={"t1": "test"})
    missing = tmp_path / "runs" / "no_such_run"
    line = one_error_line(["evaluate", missing, "--data", data.parent, "-q"], capfd, str(missing), "no such")
    assert "must be a" not in line


def test_model_files_follow_the_umask_like_every_other_output(tmp_path):
    previous = os.umask(0o022)
    try:
        path, _ = make_tiny_model(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_card_checks_keep_ordinary_models_loading(tmp_path):
    path, sha = make_tiny_model(tmp_path)
    network, card = load_model(path, expected_sha256=sha)
    assert network.config.macs_hidden == 16 and card["name"] == TINY_CARD["name"]
    with pytest.raises(ShmnError, match="sha256"):
        load_model(_flip_a_weight_byte(path, tmp_path / "flipped.safetensors"), expected_sha256=sha)
