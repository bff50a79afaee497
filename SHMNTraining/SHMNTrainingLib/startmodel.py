"""What a training run starts from: random weights or a registered model (`shmn train --init-model`).

An annotator who corrected the labels of a small cohort fine-tunes a model rather than training from
scratch (20 cases on a CPU learn nothing from random weights). The choices are the registered models
(shipped and the user's) whose network a run of the chosen preset and resolution builds (the engine's
shmn.io.start_models); the default is the registry's default model when it fits. The run's model card
records what it started from (``training_data.initialised_from``), which the panel shows when it ends.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from SHMNCoreLib.engine import Engine

from .engineaccess import shmn
from .parameters import START_FROM_DEFAULT, START_FROM_NONE, Preset, Resolution

RANDOM_LABEL = "None (random initialisation)"


@dataclass(frozen=True)
class StartChoice:
    """One entry of the "Start from" list."""

    value: str  # the parameter node's startFrom
    label: str


def startChoices(preset: Preset, resolution: Resolution, engine: Engine | None = None) -> list[StartChoice]:
    """The default (saying which model it is, or that none fits), random weights, then each fitting model."""
    models = shmn("io.start_models", engine)
    default = models.default_start_model(preset.value, resolution.value)
    defaultLabel = (f"Default model ({default.name} {default.version})" if default else
                    f"Default model: none for {preset.value}/{resolution.value} (random initialisation)")
    choices = [StartChoice(START_FROM_DEFAULT, defaultLabel), StartChoice(START_FROM_NONE, RANDOM_LABEL)]
    choices += [StartChoice(f"{m.name}@{m.version}", f"{m.name} {m.version}")
                for m in models.models_to_start_from(preset.value, resolution.value)]
    return choices


def isModelFile(startFrom: str) -> bool:
    return startFrom.endswith(shmn("contract").WEIGHTS_SUFFIX)


def initModelArgument(startFrom: str, preset: Preset, resolution: Resolution, engine: Engine | None = None) -> str:
    """What `shmn train --init-model` gets for a choice ("" = no option: random weights)."""
    if startFrom == START_FROM_DEFAULT:
        default = shmn("io.start_models", engine).default_start_model(preset.value, resolution.value)
        return f"{default.name}@{default.version}" if default else START_FROM_NONE
    if isModelFile(startFrom):
        return str(Path(startFrom).expanduser().absolute())  # the engine runs in a scratch working directory
    return startFrom


def runInitModel(runFolder: Path, engine: Engine | None = None) -> str:
    """The model a run was started from (its config.json), which `--resume` must repeat ("" = random weights)."""
    config = Path(runFolder) / shmn("contract", engine).CONFIG_FILE
    return str(json.loads(config.read_text(encoding="utf-8")).get("init_model") or "")


def startedFromText(model: Path | None, engine: Engine | None = None) -> str:
    """What a trained model's card says it started from, for the panel's status line."""
    if model is None:
        return ""
    data = shmn("io.model_card", engine).read_card(model).get("training_data")
    source = data.get("initialised_from") if isinstance(data, dict) else None
    if not source:
        return "Started from random weights."
    name = " ".join(str(part) for part in (source.get("model"), source.get("version")) if part)
    return f"Started from {name} (sha256 {str(source.get('sha256'))[:12]}...)."
