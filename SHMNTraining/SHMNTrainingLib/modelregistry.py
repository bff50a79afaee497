"""Registering a trained model so that SHMNSegmenter (and `shmn predict --model`) can select it.

The work is the engine's ``shmn.io.register_run.register_run`` (`shmn register`): the run's best
model copied beside the user's model registry, its sha256, card and evaluation in a new entry.
SHMNSegmenter's model list is that registry, so the model shows up there without anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .engineaccess import shmn


@dataclass(frozen=True)
class ModelRegistration:
    name: str
    version: str = "0.1.0"
    makeDefault: bool = False
    intendedUse: str = ""  # empty: the card's statement


def registerRunModel(runFolder: Path, registration: ModelRegistration, registryPath: Path | None = None) -> dict:
    """Register the run's model; returns the registry entry (ShmnError with one line when it cannot)."""
    return shmn("io.register_run").register_run(
        runFolder, registration.name, registration.version, default=registration.makeDefault,
        intended_use=registration.intendedUse, registry_path=registryPath)
