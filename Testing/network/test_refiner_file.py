"""The lesion refiner's model file: card round trip, and loud failures on a damaged or replaced file."""

from __future__ import annotations

import json

import pytest
import torch

from shmn.errors import ShmnError
from shmn.network.refiner import KIND, RefinerNetwork, linked_refiner, load_refiner, save_refiner
from shmn.preprocessing.preprocess import GRIDS
from shmn.preprocessing.roi import RoiBox

TINY = RefinerNetwork(features=(2, 2, 2, 2, 2, 2), in_channels=2)
BOX = RoiBox(GRIDS["paper"], (20, 30, 40), (32, 48, 16))


def saved(tmp_path, name="refiner.safetensors"):
    torch.manual_seed(0)
    network = TINY.build()
    path = tmp_path / name
    sha = save_refiner(path, network, TINY, BOX, {"name": "tiny-refiner", "stage1_sha256": "ab" * 32})
    return path, sha, network


def test_round_trip_keeps_weights_box_and_card(tmp_path):
    path, sha, network = saved(tmp_path)
    refiner = load_refiner(path, sha)
    assert refiner.box == BOX and refiner.uses_prior and refiner.sha256 == sha
    assert refiner.card["kind"] == KIND and "synthetic" in refiner.card["disclaimer"]
    assert refiner.card["channels"][1].startswith("stage1_pvl_probability")
    for key, value in network.state_dict().items():
        assert torch.equal(refiner.network.state_dict()[key], value)


def test_a_damaged_byte_fails_the_sha256_check(tmp_path):
    path, sha, _ = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one weight byte: the card still reads, only the digest can tell
    path.write_bytes(bytes(data))
    with pytest.raises(ShmnError, match="sha256 .* does not match the registry's"):
        load_refiner(path, sha)


def test_a_file_that_is_not_a_refiner_is_refused(tmp_path):
    from shmn.network.model import SHMN, NetworkConfig
    from shmn.network.model_file import save_model

    other = tmp_path / "shmn.safetensors"
    save_model(other, SHMN(NetworkConfig(base_filters=4, levels=4, macs_hidden=16)), {"name": "x"})
    with pytest.raises(ShmnError, match="expected 'lesion-refiner'"):
        load_refiner(other)


def test_a_roi_outside_the_grid_is_refused(tmp_path):
    bad = RoiBox(GRIDS["paper"], (150, 0, 0), (32, 32, 32))
    path = tmp_path / "bad.safetensors"
    save_refiner(path, TINY.build(), TINY, bad, {})
    with pytest.raises(ShmnError, match="does not fit the grid"):
        load_refiner(path)


def test_registry_link_is_resolved_beside_the_model_and_checked(tmp_path):
    path, sha, _ = saved(tmp_path)
    model_file = tmp_path / "main.safetensors"
    entry = {"name": "m", "lesion_refiner": {"file": path.name, "sha256": sha}}
    assert linked_refiner(entry, model_file).sha256 == sha
    assert linked_refiner({"name": "m"}, model_file) is None
    with pytest.raises(ShmnError, match="does not match"):
        linked_refiner({"name": "m", "lesion_refiner": {"file": path.name, "sha256": "0" * 64}}, model_file)
    with pytest.raises(ShmnError, match="'lesion_refiner' is"):
        linked_refiner({"name": "m", "lesion_refiner": path.name}, model_file)


# The shipped refiner's prior is the v1 randomised model's; v2 (the default) runs the 2 mm path (README, "SHMN v2").
REFINED_MODEL = "shmn4-fast-randomised@1.0.0+calibrated"


def test_shipped_refiner_is_linked_to_the_model_whose_prior_it_learned():
    from shmn.io.registry import resolve_model, shipped_registry_path

    path, entry = resolve_model(REFINED_MODEL, [shipped_registry_path()])
    refiner = linked_refiner(entry, path)
    assert refiner is not None, f"{REFINED_MODEL} links no lesion refiner (Resources/models.json 'lesion_refiner')"
    assert refiner.card["stage1_sha256"] == entry["sha256"], "the refiner's prior was made by another 2 mm model"
    assert refiner.path.stat().st_size <= 5 * 1024 * 1024
    assert json.dumps(refiner.card)  # the card is plain JSON


def test_a_copy_of_the_default_given_by_path_runs_without_the_refiner(tmp_path):
    """The refiner lies beside the registered file: a byte-identical copy elsewhere keeps its name, not the link."""
    import shutil

    from shmn.inference.predict import load_predictor
    from shmn.io.registry import resolve_model, shipped_registry_path

    path, entry = resolve_model(REFINED_MODEL, [shipped_registry_path()])
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    predictor = load_predictor(copy, registries=[shipped_registry_path()])
    assert predictor.info.name == entry["name"] and predictor.refiner is None
    assert load_predictor(REFINED_MODEL, registries=[shipped_registry_path()]).refiner is not None
