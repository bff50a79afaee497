"""Registering a training run's model, so that `shmn predict --model` and SHMN Segmenter can select it.

The run's best model (else its last) is copied next to the user's model registry
(``<registry folder>/models/<name>-<version>.safetensors``: deleting the run folder later does not
break the entry), atomically and never over another file, and an entry is added with
``shmn.io.registry.register_model`` (sha256, the card's fields, the run and its evaluation). The
card is read from the file's header (shmn.io.model_card): no torch, so SHMN Training calls this in
Slicer's own process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from shmn.contract import CARD_FIELDS, EVALUATION_SPLIT, MODEL_FILES, WEIGHTS_SUFFIX, evaluation_file_name
from shmn.errors import ShmnError
from shmn.io.atomic import atomic_path
from shmn.io.model_card import read_card
from shmn.io.registry import read_registry, register_model, semver_key, user_registry_path

MODELS_FOLDER = "models"


def trained_model(run_dir) -> Path | None:
    """The model a run is judged by: model-best, else model-last; None before the first epoch ends."""
    for name in MODEL_FILES:
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def evaluation_file(run_dir, split: str = EVALUATION_SPLIT) -> Path:
    return Path(run_dir) / evaluation_file_name(split)


def register_run(run_dir, name: str, version: str, default: bool = False, intended_use: str = "",
                 registry_path=None) -> dict:
    """Copy the run's model beside the user registry and register it; returns the registry entry."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ShmnError(f"{run_dir}: no such run folder; give the folder `shmn train -o` wrote")
    weights = trained_model(run_dir)
    if weights is None:
        raise ShmnError(f"{run_dir}: the run has no trained model yet ({MODEL_FILES[0]}); train first")
    card = read_card(weights)
    semver_key(version)  # a bad version fails before anything is copied
    if not name or "@" in name or "/" in name or "\\" in name or name.startswith("."):
        raise ShmnError(f"--name {name!r}: expected a short model name without '@', '/' or '\\'")
    registry = Path(registry_path).expanduser() if registry_path else user_registry_path()
    if any((m["name"], m["version"]) == (name, version) for m in read_registry(registry)):
        raise ShmnError(f"{name}@{version} is already registered in {registry}; choose another --version")
    stored = registry.parent / MODELS_FOLDER / f"{name}-{version}{WEIGHTS_SUFFIX}"
    with atomic_path(stored, overwrite=False) as tmp:  # an existing file is never replaced
        shutil.copyfile(weights, tmp)
    fields = {key: card[key] for key in CARD_FIELDS if key in card}
    if intended_use:
        fields["intended_use"] = intended_use
    fields["run"] = str(run_dir.resolve())
    evaluation = evaluation_file(run_dir)
    if evaluation.is_file():
        try:
            fields["evaluation"] = json.loads(evaluation.read_text(encoding="utf-8")).get("summary")
        except (ValueError, AttributeError) as exc:
            raise ShmnError(f"{evaluation}: not a `shmn evaluate` result ({exc}); remove it or evaluate again") from None
    try:
        return register_model(stored, registry, name=name, version=version, default=default, **fields)
    except BaseException:
        stored.unlink(missing_ok=True)  # no orphan copy when the registry could not be written
        raise
