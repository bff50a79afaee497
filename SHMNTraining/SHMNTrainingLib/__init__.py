"""SHMNTraining's implementation, one job per file.

dataset (open / create a manifest, the case table), casescene (a case in MRML: image, segments,
export onto the image grid), labelfiles (save masks with history, update the manifest), edits (the
unsaved-edits flag), prediction and confidence (the model's pre-fill and pseudo-labels), training
(`shmn train` / `shmn evaluate` runs), curves and evaluation (plot and table nodes), modelregistry
(register a trained model), suggestions (`shmn suggest`: which case to label next), parameters,
engineaccess, logic (ties them together), selftest, and
widget (the Qt panel; imported by the module's widget only, so the rest runs without Qt).
"""

from .dataset import CaseFilter, CaseRow, OpenedDataset
from .logic import SHMNTrainingLogic, UnsavedEditsError
from .modelregistry import ModelRegistration
from .parameters import Preset, Resolution, TrainDevice, TrainingParameters

__all__ = [
    "CaseFilter",
    "CaseRow",
    "ModelRegistration",
    "OpenedDataset",
    "Preset",
    "Resolution",
    "SHMNTrainingLogic",
    "TrainDevice",
    "TrainingParameters",
    "UnsavedEditsError",
]
