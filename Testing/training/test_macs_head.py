"""Head-only MACS training (shmn.training.macs_head): the rest of the model is untouched, the head learns
from cached pooled features, and the cache resumes and refuses another model's features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shmn.errors import ShmnError
from shmn.network.model import SHMN, NetworkConfig
from shmn.training.macs_head import MacsHeadConfig, collect_features, fit_macs_head, head_probability, with_macs_pooling

TINY = NetworkConfig(base_filters=2, levels=3, macs_hidden=8)


def _subjects(n: int, seed: int = 0) -> list[dict]:
    """Images with a bright blob whose size sets the label (severe when large)."""
    rng = np.random.default_rng(seed)
    subjects = []
    for i in range(n):
        image = rng.normal(0.0, 0.1, (1, 8, 8, 8)).astype(np.float32)
        radius = 1 + (i % 2) * 2
        image[0, 4 - radius:4 + radius, 4 - radius:4 + radius, 2:2 + radius] += 3.0
        subjects.append({"image": torch.from_numpy(image), "macs": float(i % 2), "motor_ml": float(radius)})
    return subjects


def test_lesion_pooling_copy_keeps_every_other_weight_and_output():
    torch.manual_seed(0)
    model = SHMN(TINY).eval()
    copy = with_macs_pooling(model, "lesion")
    assert copy.config.macs_pooling == "lesion" and copy.macs.fc1.in_features == 2 * TINY.filters[-1] + 1
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        before, after = model(x), copy(x)
    for task in ("pvl", "ventricles", "localization"):
        assert torch.equal(before[task], after[task])
    with pytest.raises(ShmnError, match="no MACS classifier"):
        with_macs_pooling(SHMN(NetworkConfig(base_filters=2, levels=3, tasks=("pvl",))), "lesion")


def test_head_training_learns_and_moves_only_the_classifier():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = (np.arange(200) % 2).astype(np.float32)
    features = rng.normal(0.0, 1.0, (200, 2, 9)).astype(np.float32)
    features[:, :, -1] += labels[:, None] * 4.0  # only the last column (the burden) carries the label
    model = with_macs_pooling(SHMN(NetworkConfig(base_filters=2, levels=3, macs_hidden=8)), "lesion")
    model.macs.fc1 = torch.nn.Linear(9, 8)  # the synthetic features' width
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("macs.")}
    history = fit_macs_head(model.macs, features, labels, MacsHeadConfig(epochs=30, validation_fraction=0.2))
    assert history["loss"][-1] < history["loss"][0] - 0.1
    assert history["validation"]["auc"] > 0.85 and history["n_validation"] == 40
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in frozen.items())
    p = head_probability(model.macs, features[-40:])
    assert p[labels[-40:] == 1].mean() > p[labels[-40:] == 0].mean() + 0.3
    with pytest.raises(ShmnError, match="both groups"):
        fit_macs_head(model.macs, features[:10], np.zeros(10, np.float32), MacsHeadConfig(epochs=1))


class _Refusing:
    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int) -> dict:
        raise AssertionError("a cached subject was synthesised again")


def test_feature_cache_resumes_and_refuses_another_models_features(tmp_path):
    torch.manual_seed(0)
    model = with_macs_pooling(SHMN(TINY), "lesion")
    features, labels, records = collect_features(model, _subjects(6), tmp_path / "cache")
    assert features.shape == (6, 2, 2 * TINY.filters[-1] + 1) and labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert not np.allclose(features[:, 0], features[:, 1])  # the mirrored view is another view
    again, _, again_records = collect_features(model, _Refusing(), tmp_path / "cache")
    np.testing.assert_array_equal(features, again)
    assert again_records == records
    wider = with_macs_pooling(SHMN(NetworkConfig(base_filters=3, levels=3, macs_hidden=8)), "lesion")
    with pytest.raises(ShmnError, match="belongs to another model"):
        collect_features(wider, _Refusing(), tmp_path / "cache")


def test_a_run_started_from_a_lesion_pooling_model_builds_that_pooling(tmp_path):
    from dataclasses import replace

    from shmn.network.model_file import save_model
    from shmn.training.config import preset_config
    from shmn.training.initial_weights import load_initial_weights, with_init_model_pooling

    config = preset_config("shmn4", "tiny")
    model = with_macs_pooling(SHMN(config.network), "lesion")
    path = tmp_path / "lesion-pooling.safetensors"
    save_model(path, model, {"name": "tiny-lesion", "version": "0.0.1"})
    adopted = with_init_model_pooling(replace(config, init_model=str(path)))
    assert adopted.network.macs_pooling == "lesion" and config.network.macs_pooling == "mean"
    weights = load_initial_weights(str(path), adopted.network)
    assert torch.equal(weights.state["macs.fc1.weight"], model.state_dict()["macs.fc1.weight"])
    with pytest.raises(ShmnError, match="macs_pooling 'lesion'"):
        load_initial_weights(str(path), config.network)
    assert with_init_model_pooling(config) is config  # no init model: nothing to adopt
