"""Engine test helpers shared by several test files: a real tiny SHMN saved as a model file."""

from __future__ import annotations

from pathlib import Path

import torch

from shmn.network.model import SHMN, NetworkConfig
from shmn.network.model_file import save_model

TINY_NAME = "tiny-test"
TINY_CARD = {
    "name": TINY_NAME,
    "version": "0.0.1",
    "grid": {"spacing_mm": 4.0, "size": [40, 48, 40]},
    # Plumbing tests feed tiny brain-only volumes: no brain extraction (Testing/preprocessing tests it).
    "preprocessing": {"n4": True, "n4_shrink": 4, "brain_extraction": "none"},
    "training_data": "none: random weights for plumbing tests (synthetic)",
    "intended_use": "tests only",
}

def make_tiny_model(folder, version="0.0.1", seed=0):
    """A real SHMN (base 4, 4 levels) with random weights on the tiny grid; returns (path, sha256)."""
    torch.manual_seed(seed)
    model = SHMN(NetworkConfig(base_filters=4, levels=4, macs_hidden=16))
    path = folder / f"tiny-{version}.safetensors"
    sha = save_model(path, model, {**TINY_CARD, "version": version})
    return path, sha


def link_inside(source_root: Path, relative: str | None, target: Path) -> str | None:
    """A symbolic link at ``target/relative`` to the cohort's file: manifest paths must stay inside
    their dataset folder, and links let a subset share the cohort's files without copying them."""
    if relative is None:
        return None
    link = target / relative
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to((source_root / relative).resolve())
    return relative
