"""SHMNTraining's implementation, one job per file.

dataset (the case table; opening and creating a dataset is the engine's shmn.io.dataset), casescene
(a case in MRML: image, segments, export onto the image grid; saving is the engine's shmn.io.labels), edits (the
unsaved-edits flag), prediction and confidence (the model's pre-fill and pseudo-labels), training
(`shmn train` / `shmn evaluate` runs), curves and evaluation (plot and table nodes), modelregistry
(register a trained model), startmodel (what a run starts from: "Start from", --init-model), suggestions
(`shmn suggest`: which case to label next), parameters, engineaccess, logic (ties them together), selftest, and
widget (the Qt panel; imported by the module's widget only, so the rest runs without Qt).
"""

from .dataset import CaseFilter, CaseRow
from .logic import SHMNTrainingLogic, UnsavedEditsError
from .modelregistry import ModelRegistration
from .parameters import Preset, Resolution, TrainDevice, TrainingParameters

__all__ = [
    "CaseFilter",
    "CaseRow",
    "ModelRegistration",
    "Preset",
    "Resolution",
    "SHMNTrainingLogic",
    "TrainDevice",
    "TrainingParameters",
    "UnsavedEditsError",
]
