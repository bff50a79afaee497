"""The 1 mm lesion refiner: a small MONAI BasicUNet, and its model file (safetensors + JSON card, no pickle).

The card (metadata key shmn.contract.CARD_KEY, as SHMN model files) has ``kind`` "lesion-refiner",
``network`` (features, in_channels), ``channels`` (what each input channel is), ``roi`` (the box of the
1 mm grid it runs in, shmn.preprocessing.roi.RoiBox), ``stage1_sha256`` (the 2 mm model whose lesion
probability is its prior channel; absent for a patch-only refiner), the training data and recipe.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from shmn.contract import CARD_KEY
from shmn.errors import ShmnError
from shmn.io.atomic import atomic_path
from shmn.io.digest import sha256_of
from shmn.io.model_card import read_card
from shmn.preprocessing.roi import RoiBox

KIND = "lesion-refiner"
REFINER_FORMAT = "shmn-lesion-refiner/1"
CHANNEL_IMAGE = "flair_1mm_zscore_in_brain"
CHANNEL_PRIOR = "stage1_pvl_probability_linear_to_1mm"
DEFAULT_FEATURES = (8, 8, 16, 32, 64, 8)  # BasicUNet: 4 down-samplings (windows: multiples of 16)
DISCLAIMER = "trained on synthetic data only; not validated on patients; not for clinical use"


@dataclass(frozen=True)
class RefinerNetwork:
    features: tuple[int, ...] = DEFAULT_FEATURES
    in_channels: int = 2  # 2: image + stage-1 prior (the cascade); 1: image only (patch-only)
    # Batch norm: at inference its statistics are the training ones, whatever the window, so the whole box
    # runs as one window (4 s against 15-43 s for 64- and 48-voxel windows on 2 busy cores); instance norm
    # would see other statistics in a whole box than in a training patch.
    norm: str = "batch"

    def build(self) -> torch.nn.Module:
        from monai.networks.nets import BasicUNet

        norm = ("batch", {"affine": True}) if self.norm == "batch" else ("instance", {"affine": True})
        return BasicUNet(spatial_dims=3, in_channels=self.in_channels, out_channels=1, features=self.features, norm=norm)

    def to_card(self) -> dict:
        return {"features": list(self.features), "in_channels": self.in_channels, "norm": self.norm}

    @classmethod
    def from_card(cls, data: object, source: str) -> "RefinerNetwork":
        try:
            features = tuple(int(v) for v in data["features"])
            in_channels = int(data["in_channels"])
            norm = str(data.get("norm", "instance"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ShmnError(f"{source}: refiner card 'network' is damaged ({type(exc).__name__}: {exc})") from None
        if len(features) != 6 or not all(1 <= v <= 256 for v in features) or in_channels not in (1, 2) or norm not in ("batch", "instance"):
            raise ShmnError(f"{source}: refiner card 'network' {data}: expected 6 features from 1 to 256, in_channels 1 or 2, "
                            "norm batch or instance")
        return cls(features, in_channels, norm)


@dataclass
class Refiner:
    network: torch.nn.Module
    card: dict
    box: RoiBox
    sha256: str
    path: Path

    @property
    def uses_prior(self) -> bool:
        return int(self.card["network"]["in_channels"]) == 2

    @property
    def name(self) -> str:
        return str(self.card.get("name") or self.path.name.removesuffix(".safetensors"))


def channels(in_channels: int) -> list[str]:
    return [CHANNEL_IMAGE, CHANNEL_PRIOR][:in_channels]


def save_refiner(path: str | os.PathLike, network: torch.nn.Module, spec: RefinerNetwork, box: RoiBox, card: dict) -> str:
    """Weights + card written atomically; returns the file's sha256."""
    card = {**card, "kind": KIND, "format": REFINER_FORMAT, "network": spec.to_card(), "roi": box.to_card(),
            "grid_spacing_mm": box.grid.spacing_mm, "channels": channels(spec.in_channels), "disclaimer": DISCLAIMER}
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in network.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={CARD_KEY: json.dumps(card)})
        digest = sha256_of(tmp)
    return digest


def load_refiner(path: str | os.PathLike, expected_sha256: str | None = None) -> Refiner:
    """The refiner in eval mode on the CPU; the sha256 is checked first when one is expected."""
    path = Path(path)
    if not path.is_file():
        raise ShmnError(f"{path}: lesion refiner file not found; check the registry's 'lesion_refiner' entry")
    digest = sha256_of(path)
    if expected_sha256 is not None and digest.lower() != str(expected_sha256).lower():
        raise ShmnError(f"{path}: sha256 {digest} does not match the registry's {expected_sha256}; "
                        "the lesion refiner is corrupt or was replaced")
    card = read_card(path)
    if card.get("kind") != KIND:
        raise ShmnError(f"{path}: card kind {card.get('kind')!r}; expected {KIND!r} (a lesion refiner file)")
    spec = RefinerNetwork.from_card(card["network"], str(path))
    box = RoiBox.from_card(card.get("roi"), str(path))
    network = spec.build()
    try:
        network.load_state_dict(load_file(str(path), device="cpu"), strict=True)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ShmnError(f"{path}: cannot read the lesion refiner's weights ({exc}); the file is corrupt") from None
    except RuntimeError as exc:
        raise ShmnError(f"{path}: weights do not fit the refiner in its card ({str(exc).splitlines()[0]})") from None
    return Refiner(network.eval(), card, box, digest, path)


def linked_refiner(entry: dict | None, model_path: str | os.PathLike) -> Refiner | None:
    """The refiner a registry entry links (``"lesion_refiner": {"file", "sha256"}``, ``file`` relative to the
    model file's folder), loaded with its sha256 checked; None when the entry links none."""
    link = (entry or {}).get("lesion_refiner")
    if link is None:
        return None
    if not isinstance(link, dict) or not isinstance(link.get("file"), str) or not isinstance(link.get("sha256"), str):
        raise ShmnError(f"model registry entry {entry.get('name')!r}: 'lesion_refiner' is {link!r}; expected {{\"file\": ..., \"sha256\": ...}}")
    file = Path(link["file"]).expanduser()
    return load_refiner(file if file.is_absolute() else Path(model_path).parent / file, link["sha256"])
