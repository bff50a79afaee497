"""The weights a training run starts from instead of a random initialisation (``init_model``, `shmn train --init-model`).

Fine-tuning on one's own small cohort, or a second stage with other losses, starts from a model's weights:
a registry name, ``name@version`` or a ``.safetensors`` file, whose network must be the run's. They are
loaded (and the registry's sha256 checked) before the run writes anything, so a wrong model leaves no
half-started run folder behind; the run's model card records what it started from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch

from shmn.errors import ShmnError
from shmn.io.digest import sha256_of
from shmn.network.model import NetworkConfig


@dataclass(frozen=True)
class InitialWeights:
    state: dict[str, torch.Tensor]  # the model's state dict, loaded into the run's network before epoch 1
    source: dict  # {"model", "version", "sha256"}: the card's training_data.initialised_from


def with_init_model_pooling(config):
    """``config`` (a TrainConfig) with the MACS pooling of its init model's network, so that a run of a preset
    can start from (and resume after starting from) a model whose classifier pools by lesion
    (benchmarks/train_macs_head.py). Read from the card alone; an unusable init model is left to
    load_initial_weights to report."""
    from shmn.io.model_card import read_card
    from shmn.io.registry import resolve_model

    if not config.init_model or "macs" not in config.network.tasks:
        return config
    try:
        path, _ = resolve_model(config.init_model)
        network = read_card(path).get("network")
    except ShmnError:
        return config
    pooling = network.get("macs_pooling", "mean") if isinstance(network, dict) else "mean"
    if pooling == config.network.macs_pooling or not isinstance(pooling, str):
        return config
    return replace(config, network=replace(config.network, macs_pooling=pooling))


def load_initial_weights(init_model: str, network: NetworkConfig, option: str = "config: init_model") -> InitialWeights:
    """Weights of ``init_model`` for a network configured as ``network``; ShmnError naming ``option`` otherwise."""
    from shmn.io.registry import resolve_model
    from shmn.network.model_file import load_model

    try:
        path, entry = resolve_model(init_model)
        source, card = load_model(path, expected_sha256=entry["sha256"] if entry else None)
    except ShmnError as exc:
        raise ShmnError(f"{option} {init_model!r}: {exc}") from None
    if source.config != network:
        theirs, ours = asdict(source.config), asdict(network)
        differing = ", ".join(f"{key} {theirs[key]!r} (this run: {ours[key]!r})" for key in ours if theirs[key] != ours[key])
        made_as = "/".join(str(card[key]) for key in ("preset", "resolution") if card.get(key))
        raise ShmnError(f"{option} {init_model!r} has another network ({made_as + ': ' if made_as else ''}{differing}); "
                        "give a model of the same preset and resolution")
    return InitialWeights(state=source.state_dict(),
                          source={"model": card.get("name", path.name), "version": card.get("version"), "sha256": sha256_of(path)})
