"""The model file: safetensors weights + a JSON "card" in the safetensors metadata. No pickle.

The card (metadata key "shmn") describes the model: "network" (``asdict(NetworkConfig)``, always
present) and whatever the trainer adds (grid, preprocessing, tasks, name, version, training data,
metrics). ``read_card`` (shmn.io.model_card) reads only the header, so a registry can list models without loading weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shmn.contract import CARD_KEY, MODEL_FORMAT as FORMAT
from shmn.io.atomic import atomic_path
from shmn.io.model_card import read_card  # noqa: F401 - the one card reader, part of this module's API
from shmn.io.digest import sha256_of
from shmn.errors import ShmnError
from shmn.network.model import SHMN, NetworkConfig


def save_model(path: str | os.PathLike, model: SHMN, card: dict) -> str:
    """Write ``model``'s weights and ``card`` to ``path`` atomically; return the file's sha256 (hex).

    "network" is filled from the model when the card lacks it; a card whose "network" disagrees
    with the model is refused (the file could not be loaded back).
    """
    card = dict(card)
    network = asdict(model.config)
    network["tasks"] = list(network["tasks"])
    if "network" in card and _network_config(card["network"], path) != model.config:
        raise ShmnError(f"{path}: card network {card['network']} does not describe the model being saved ({network})")
    card["network"] = network
    card.setdefault("format", FORMAT)
    try:
        metadata = {CARD_KEY: json.dumps(card, allow_nan=True)}
    except (TypeError, ValueError) as exc:
        raise ShmnError(f"{path}: model card is not JSON-serialisable ({exc})") from None
    # safetensors wants contiguous tensors that share no memory; a state dict copy on CPU is both.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
        digest = sha256_of(tmp)
    return digest


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise ShmnError(f"{path}: model file not found; check the path or the model registry")


# What a model card may ask for before a network is built from it: a hostile or damaged card
# ("macs_hidden": 1e9) must be refused here, not by an allocation of gigabytes or a traceback.
NETWORK_LIMITS = {"base_filters": (1, 512), "levels": (1, 8), "in_channels": (1, 16), "macs_hidden": (1, 8192)}


def _network_config(network: object, path: str | os.PathLike) -> NetworkConfig:
    if not isinstance(network, dict):
        raise ShmnError(f"{path}: model card 'network' is {type(network).__name__}; expected an object")
    for key, (low, high) in NETWORK_LIMITS.items():
        if key not in network:
            continue
        value = network[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ShmnError(f"{path}: model card 'network.{key}' is {value!r}; expected an integer from {low} to {high}")
    dropout = network.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise ShmnError(f"{path}: model card 'network.dropout' is {dropout!r}; expected a number in [0, 1)")
    tasks = network.get("tasks", ())
    if not isinstance(tasks, (list, tuple)) or not all(isinstance(t, str) for t in tasks):
        raise ShmnError(f"{path}: model card 'network.tasks' is {tasks!r}; expected a list of task names")
    try:
        return NetworkConfig(**network)
    except (TypeError, ValueError) as exc:
        raise ShmnError(f"{path}: model card 'network' is not a valid network configuration ({exc})") from None


def load_model(
    path: str | os.PathLike, expected_sha256: str | None = None, device: str | torch.device = "cpu"
) -> tuple[SHMN, dict]:
    """(SHMN in eval mode on ``device``, card). Checks the sha256 first when one is expected."""
    path = Path(path)
    _check_exists(path)
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual.lower() != expected_sha256.lower():
            raise ShmnError(
                f"{path}: sha256 {actual} does not match the registry's {expected_sha256}; "
                "the file is corrupt or was replaced"
            )
    card = read_card(path)
    model = SHMN(_network_config(card["network"], path))
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ShmnError(f"{path}: cannot read the weights ({exc}); the file is corrupt") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ShmnError(f"{path}: weights do not fit the network in its card ({first})") from None
    return model.to(device).eval(), card
