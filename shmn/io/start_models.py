"""Which registered models a training run of a preset and resolution can start from (`shmn train --init-model`).

Read from the registry entries alone (their tasks or preset, and their grid), without torch, so SHMN
Training lists them in Slicer's own process. The network width is not in an entry: the engine checks the
weights themselves when the run starts (shmn.training.initial_weights) and says so in one line.
"""

from __future__ import annotations

from shmn.contract import PRESET_TASKS
from shmn.errors import ShmnError
from shmn.io.registry import RegisteredModel, default_model, load_models


def entry_tasks(entry: dict) -> tuple[str, ...] | None:
    tasks = entry.get("tasks")
    if isinstance(tasks, list) and tasks:
        return tuple(tasks)
    preset = entry.get("preset")
    return PRESET_TASKS.get(preset) if isinstance(preset, str) else None


def entry_resolution(entry: dict) -> str | None:
    """The entry's resolution, else its grid's name (each resolution preset names its grid after itself)."""
    resolution = entry.get("resolution")
    if isinstance(resolution, str):
        return resolution
    grid = entry.get("grid")
    return grid.get("name") if isinstance(grid, dict) and isinstance(grid.get("name"), str) else None


def fits(entry: dict, preset: str, resolution: str) -> bool:
    """Whether a run of ``preset`` at ``resolution`` builds the network of this registry entry's model."""
    return entry_tasks(entry) == PRESET_TASKS.get(preset) and entry_resolution(entry) == resolution


def models_to_start_from(preset: str, resolution: str, registries=None) -> list[RegisteredModel]:
    """Registered models (shipped and the user's) that a run of ``preset`` at ``resolution`` can start from."""
    return [model for model in load_models(registries) if fits(model.entry, preset, resolution)]


def default_start_model(preset: str, resolution: str, registries=None) -> RegisteredModel | None:
    """The registry's default model when it fits the run, else None (the run starts from random weights)."""
    try:
        model = default_model(registries)
    except ShmnError:  # no default registered
        return None
    return model if fits(model.entry, preset, resolution) else None
