"""Model file: safetensors + JSON card round trip, sha256 check, header-only card, no pickle."""

import hashlib
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from shmn.errors import ShmnError
from shmn.network.model import SHMN, NetworkConfig
from shmn.network.model_file import load_model, read_card, save_model

CONFIG = NetworkConfig(base_filters=2, levels=3, tasks=("pvl", "localization", "macs"), macs_hidden=8)


def trained_looking_model() -> SHMN:
    torch.manual_seed(0)
    model = SHMN(CONFIG)
    with torch.no_grad():  # move away from the default initialisation so a fresh net would differ
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_round_trip_gives_identical_outputs_and_card(tmp_path):
    model = trained_looking_model()
    path = tmp_path / "demo.safetensors"
    card = {"name": "demo", "version": "0.1.0", "grid": {"spacing_mm": 4.0, "size": [8, 8, 8]}, "metrics": {"dice": 0.5}}
    digest = save_model(path, model, card)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [p.name for p in tmp_path.iterdir()] == ["demo.safetensors"]  # no temporary file left behind

    stored = read_card(path)
    assert stored["name"] == "demo" and stored["metrics"] == {"dice": 0.5}
    assert stored["network"] == {"base_filters": 2, "levels": 3, "tasks": ["pvl", "localization", "macs"],
                                 "in_channels": 1, "macs_hidden": 8, "dropout": 0.0, "macs_pooling": "mean"}

    loaded, loaded_card = load_model(path, expected_sha256=digest)
    assert loaded_card == stored
    assert loaded.config == CONFIG and not loaded.training
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert set(a) == set(b) == {"pvl", "localization", "macs"}
    for task in a:
        assert torch.equal(a[task], b[task]), task


def test_sha256_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "m.safetensors"
    digest = save_model(path, trained_looking_model(), {"name": "m"})
    wrong = "0" * 64
    with pytest.raises(ShmnError, match=f"sha256 {digest} does not match the registry's {wrong}; the file is corrupt"):
        load_model(path, expected_sha256=wrong)


def test_file_is_safetensors_not_pickle(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(path, trained_looking_model(), {})
    raw = path.read_bytes()
    assert raw[:1] != b"\x80"  # a pickle (torch.save) file starts with the PROTO opcode 0x80
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    assert json.loads(header["__metadata__"]["shmn"])["network"]["levels"] == 3
    assert all(entry["dtype"] == "F32" for name, entry in header.items() if name != "__metadata__")


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ShmnError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(ShmnError, match="not a safetensors model file"):
        read_card(junk)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ShmnError, match="without an SHMN model card"):
        load_model(foreign)


def test_weights_that_do_not_fit_the_card_are_refused(tmp_path):
    model = trained_looking_model()
    lying = tmp_path / "lying.safetensors"
    card = {"network": {"base_filters": 4, "levels": 3, "tasks": ["pvl", "localization", "macs"]}}
    save_file(dict(model.state_dict()), str(lying), metadata={"shmn": json.dumps(card)})
    with pytest.raises(ShmnError, match="weights do not fit the network in its card"):
        load_model(lying)
    with pytest.raises(ShmnError, match="does not describe the model"):
        save_model(tmp_path / "x.safetensors", model, card)


def test_a_card_without_macs_pooling_loads_the_papers_average_and_lesion_pooling_round_trips(tmp_path):
    from dataclasses import asdict, replace

    from shmn.network.model_file import _network_config

    older = {k: v for k, v in asdict(CONFIG).items() if k != "macs_pooling"}  # cards written before the field
    assert _network_config(older, "old.safetensors").macs_pooling == "mean"
    lesion = replace(CONFIG, macs_pooling="lesion")
    torch.manual_seed(0)
    model = SHMN(lesion).eval()
    save_model(tmp_path / "lesion.safetensors", model, {"name": "t", "version": "1.0.0"})
    loaded, card = load_model(tmp_path / "lesion.safetensors")
    assert card["network"]["macs_pooling"] == "lesion" and loaded.config == lesion
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x)["macs"], loaded(x)["macs"])
