"""Registering a trained model so that SHMNSegmenter (and `shmn predict --model`) can select it.

The run's best model is copied next to the user's model registry (``<registry folder>/models/
<name>-<version>.safetensors``: deleting the run folder later does not break the entry), and an
entry is added with ``shmn.io.registry.register_model`` (sha256, model card fields). SHMNSegmenter's
model list is the engine's registry, so the model shows up there without anything else.
"""

from __future__ import annotations

import json
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from .engineaccess import shmn
from .training import evaluationFile, trainedModel

CARD_KEY = "shmn"  # shmn.network.model_file.CARD_KEY
CARD_FIELDS = ("preset", "grid", "tasks", "training_data", "metrics", "intended_use")  # shmn.io.registry.CARD_FIELDS
MODELS_FOLDER = "models"


def readModelCard(path: Path) -> dict:
    """The SHMN card in a safetensors header (8-byte little-endian length, then JSON): no torch needed here."""
    with open(path, "rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        header = json.loads(stream.read(length))
    card = (header.get("__metadata__") or {}).get(CARD_KEY)
    if card is None:
        raise ValueError(f"{path}: safetensors file without an SHMN model card")
    return json.loads(card)


@dataclass(frozen=True)
class ModelRegistration:
    name: str
    version: str = "0.1.0"
    makeDefault: bool = False
    intendedUse: str = ""  # empty: the card's statement


def registerRunModel(runFolder: Path, registration: ModelRegistration, registryPath: Path | None = None) -> dict:
    """Copy the run's best model beside the user registry and register it; returns the registry entry."""
    registry = shmn("io.registry")
    weights = trainedModel(Path(runFolder))
    if weights is None:
        raise shmn("errors").ShmnError(f"{runFolder}: the run has no trained model yet (model-best.safetensors); train first")
    card = readModelCard(weights)
    registryPath = Path(registryPath) if registryPath else registry.user_registry_path()
    registry.semver_key(registration.version)  # a bad version fails before anything is copied
    stored = registryPath.parent / MODELS_FOLDER / f"{registration.name}-{registration.version}{registry.WEIGHTS_SUFFIX}"
    with shmn("io.atomic").atomic_path(stored) as tmp:
        shutil.copyfile(weights, tmp)
    fields = {key: card[key] for key in CARD_FIELDS if key in card}
    if registration.intendedUse:
        fields["intended_use"] = registration.intendedUse
    fields["run"] = str(Path(runFolder).resolve())
    evaluation = evaluationFile(runFolder)
    if evaluation.is_file():
        fields["evaluation"] = json.loads(evaluation.read_text(encoding="utf-8")).get("summary")
    return registry.register_model(stored, registryPath, name=registration.name, version=registration.version,
                                   default=registration.makeDefault, **fields)
