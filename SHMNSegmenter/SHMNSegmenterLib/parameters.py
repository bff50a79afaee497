"""What the radiologist chooses, as plain typed Python; the Slicer parameter node is built from it.

``SegmenterParameters`` is an ordinary dataclass, so the logic and its tests need neither Qt nor
Slicer's ``parameterNodeWrapper``. In the Slicer application, ``parameterNodeClass()`` turns the same
fields into a ``parameterNodeWrapper`` class: the choices live in the scene (saved with it) and the
widgets whose ``SlicerParameterName`` property names a field stay in sync with it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from functools import lru_cache


class Device(enum.Enum):
    """Where the engine runs the network (the values are ``shmn predict --device`` choices)."""

    AUTO = "auto"
    CPU = "cpu"
    GPU = "cuda"

    def label(self) -> str:
        # parameterNodeWrapper shows an enum in a combo box through its ``label``.
        return {"auto": "Auto (GPU if available)", "cpu": "CPU", "cuda": "GPU (CUDA)"}[self.value]


DEFAULT_MODEL = ""  # empty: the engine's default model (the registry's "default": true entry)


@dataclass
class SegmenterParameters:
    """One run of the segmenter. ``inputVolume`` is a vtkMRMLScalarVolumeNode in Slicer."""

    inputVolume: object = None
    modelName: str = DEFAULT_MODEL  # a registered name, name@version, or a .safetensors path
    device: Device = Device.AUTO
    register: bool = True  # False: the volume is already in MNI152 space
    flipTest: bool = True  # True (the engine's default): a left-right mirrored second pass, averaged in; lesions the passes disagree on are flagged (`--tta`)
    nativeBoundary: bool = True  # False: the model's 2 mm boundaries resampled as they are (`--boundary model`)

    def problems(self) -> list[str]:
        """Why Apply cannot run yet (empty when it can): shown to the user as they are."""
        found = []
        if self.inputVolume is None:
            found.append("Select an input volume (T2 FLAIR).")
        elif self.inputVolume.GetImageData() is None:
            found.append(f"Input volume '{self.inputVolume.GetName()}' has no image data.")
        if not isinstance(self.device, Device):
            found.append(f"Unknown device {self.device!r}; choose one of {[d.value for d in Device]}.")
        return found


# The scene node class of each field that holds a node (the wrapper needs real types).
NODE_FIELDS = {"inputVolume": "vtkMRMLScalarVolumeNode"}


@lru_cache(maxsize=1)
def parameterNodeClass():
    """``parameterNodeWrapper`` class with SegmenterParameters' fields (Slicer application only)."""
    from SHMNCoreLib.parameternode import wrapperClass

    return wrapperClass(SegmenterParameters, "SHMNSegmenterParameterNode", NODE_FIELDS)


def parametersFromNode(wrappedNode) -> SegmenterParameters:
    """A snapshot of the wrapped parameter node: what one run uses, whatever the GUI does meanwhile."""
    return SegmenterParameters(**{item.name: getattr(wrappedNode, item.name) for item in fields(SegmenterParameters)})
