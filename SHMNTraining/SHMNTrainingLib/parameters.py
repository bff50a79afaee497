"""What the annotator chooses, as plain typed Python; the Slicer parameter node is built from it.

``TrainingParameters`` is an ordinary dataclass, so the logic and its tests need neither Qt nor
Slicer's ``parameterNodeWrapper``; in the application ``parameterNodeClass()`` turns the same fields
into a wrapper class, so the choices are saved with the scene and the widgets whose
``SlicerParameterName`` names a field stay in sync with it (same pattern as SHMNSegmenter).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields
from functools import lru_cache


class Preset(enum.Enum):
    """``shmn train`` task presets (paper Table 1; shmn.training.config.TASK_PRESETS)."""

    SHMN4 = "shmn4"
    SHMN4_STAR = "shmn4-star"
    SHMN3 = "shmn3"
    SHMN2 = "shmn2"
    SINGLE_PVL = "single-pvl"
    SINGLE_MACS = "single-macs"

    def label(self) -> str:
        return {
            "shmn4": "SHMN-4 (PVL, ventricles, centres, MACS)",
            "shmn4-star": "SHMN-4* (pseudo-labels for unlabelled ventricles)",
            "shmn3": "SHMN-3 (PVL, centres, MACS)",
            "shmn2": "SHMN-2 (PVL, MACS)",
            "single-pvl": "Single task: PVL",
            "single-macs": "Single task: MACS",
        }[self.value]


class Resolution(enum.Enum):
    """``shmn train --resolution``: model grid and network width."""

    FAST = "fast"
    PAPER = "paper"
    TINY = "tiny"

    def label(self) -> str:
        return {"fast": "Fast (2 mm, CPU)", "paper": "Paper (1 mm, GPU)", "tiny": "Tiny (4 mm, tests only)"}[self.value]


class TrainDevice(enum.Enum):
    """``shmn train --device`` / ``shmn predict --device``."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "cuda"

    def label(self) -> str:
        return {"auto": "Auto (GPU if available)", "cpu": "CPU", "cuda": "GPU (CUDA)"}[self.value]


MIN_EPOCHS, MAX_EPOCHS = 1, 10000
# ``startFrom`` values besides a model (registered name@version or .safetensors): the registry's default model
# when it fits the preset and resolution (else random weights), or random weights.
START_FROM_DEFAULT, START_FROM_NONE = "default", ""


@dataclass
class TrainingParameters:
    """One training run; paths are plain strings (empty = not chosen)."""

    datasets: str = ""  # dataset folders or manifest.json files, separated by ';'
    runFolder: str = ""  # RUN_DIR; empty: a new folder under the first dataset's runs/
    preset: Preset = Preset.SHMN4
    resolution: Resolution = Resolution.FAST
    # The bounds reach the spin box through the parameter node (parameterNodeWrapper resets an unbounded one).
    epochs: int = field(default=30, metadata={"minimum": MIN_EPOCHS, "maximum": MAX_EPOCHS})
    device: TrainDevice = TrainDevice.AUTO
    startFrom: str = START_FROM_DEFAULT  # `shmn train --init-model`: fine-tune from a model (SHMNTrainingLib.startmodel)
    resume: bool = False
    cacheFolder: str = ""  # preprocessing cache shared between runs; empty: the engine's user cache

    def datasetList(self) -> list[str]:
        return [part.strip() for part in self.datasets.split(";") if part.strip()]

    def problems(self) -> list[str]:
        """Why Train cannot start yet (empty when it can), worded for the user."""
        found = []
        if not self.datasetList():
            found.append("Choose at least one dataset folder.")
        if not isinstance(self.epochs, int) or not MIN_EPOCHS <= self.epochs <= MAX_EPOCHS:
            found.append(f"Epochs must be between {MIN_EPOCHS} and {MAX_EPOCHS}.")
        if self.resume and not self.runFolder:
            found.append("Resume needs the run folder of the run to continue.")
        return found


@dataclass
class AnnotationParameters:
    """The annotation side: which dataset is open and which model pre-fills and previews."""

    datasetFolder: str = ""
    predictionModel: str = ""  # registered name, name@version or .safetensors; empty: the default model
    predictionDevice: TrainDevice = TrainDevice.AUTO


@dataclass
class SHMNTrainingState(TrainingParameters, AnnotationParameters):
    """Everything the module keeps in its parameter node."""


def trainingParametersFrom(state) -> TrainingParameters:
    """A snapshot of the training fields of a state (dataclass or wrapped parameter node)."""
    return TrainingParameters(**{item.name: getattr(state, item.name) for item in fields(TrainingParameters)})


@lru_cache(maxsize=1)
def parameterNodeClass():
    """``parameterNodeWrapper`` class with SHMNTrainingState's fields (Slicer application only)."""
    from SHMNCoreLib.parameternode import wrapperClass

    return wrapperClass(SHMNTrainingState, "SHMNTrainingParameterNode")
