"""SHMN losses: each term against hand-computed values, label masking, empty terms, alpha, pseudo-labels."""

import math

import pytest
import torch

from shmn.network.losses import LossConfig, alpha, shmn_loss
from shmn.network.model import SHMN, NetworkConfig


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def only(task: str, outputs: dict) -> dict:
    return {task: outputs[task]}


def test_macs_weighted_bce_matches_hand_computation():
    logits = torch.tensor([2.0, -1.0, 0.5])
    batch = {"macs": torch.tensor([1.0, 0.0, 0.0]), "has_macs": torch.tensor([True, True, True])}
    eps = 0.3
    expected = -(math.log(sig(2.0)) + eps * math.log(1 - sig(-1.0)) + eps * math.log(1 - sig(0.5))) / 3
    total, values = shmn_loss({"macs": logits}, batch, LossConfig(macs_epsilon=eps), epoch=0)
    assert values["macs"] == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    # eps scales only the mild (y = 0) part: with eps = 1 the value is the plain BCE.
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["macs"])
    assert shmn_loss({"macs": logits}, batch, LossConfig(), 0)[1]["macs"] == pytest.approx(float(plain), rel=1e-6)


def test_macs_bce_is_stable_for_extreme_logits():
    logits = torch.tensor([100.0, -100.0], requires_grad=True)
    batch = {"macs": torch.tensor([0.0, 1.0]), "has_macs": torch.tensor([True, True])}
    total, values = shmn_loss({"macs": logits}, batch, LossConfig(macs_epsilon=0.5), 0)
    assert values["macs"] == pytest.approx((0.5 * 100 + 100) / 2, rel=1e-4)
    total.backward()
    assert torch.isfinite(logits.grad).all()


def test_pvl_cross_entropy_plus_dice_matches_hand_computation():
    # Two samples of two voxels each; logits (background, lesion) per voxel.
    logits = torch.tensor([[[1.0, -0.5], [0.0, 1.5]], [[0.2, 0.3], [2.0, -1.0]]]).reshape(2, 2, 1, 1, 2)
    target = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).reshape(2, 1, 1, 1, 2)
    batch = {"pvl": target, "has_pvl": torch.tensor([True, True])}
    ce, dice = 0.0, 0.0
    for b in range(2):
        p_lesion = [sig(float(logits[b, 1, 0, 0, v] - logits[b, 0, 0, 0, v])) for v in range(2)]
        y = [float(target[b, 0, 0, 0, v]) for v in range(2)]
        ce += sum(-math.log(p if t else 1 - p) for p, t in zip(p_lesion, y)) / 4  # mean over 4 voxels
        inter = sum(p * t for p, t in zip(p_lesion, y))
        dice += (1 - (2 * inter + 1e-5) / (sum(p_lesion) + sum(y) + 1e-5)) / 2  # MONAI smoothing 1e-5
    _, values = shmn_loss({"pvl": logits}, batch, LossConfig(), 0)
    assert values["pvl"] == pytest.approx(ce + dice, rel=1e-5)


def test_localization_mse_and_ventricle_bce_match_hand_computation():
    density = torch.tensor([0.5, 0.0, 1.0, 0.25]).reshape(1, 1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 0.0, 0.25]).reshape(1, 1, 1, 2, 2)
    logits = torch.tensor([0.0, 3.0, -2.0, 1.0]).reshape(1, 1, 1, 2, 2)
    ventricles = torch.tensor([1.0, 0.0, 0.0, 1.0]).reshape(1, 1, 1, 2, 2)
    batch = {"density": target, "has_pvl": torch.tensor([True]), "ventricles": ventricles,
             "has_ventricles": torch.tensor([True])}
    _, values = shmn_loss({"localization": density, "ventricles": logits}, batch, LossConfig(), 0)
    assert values["localization"] == pytest.approx((0.25 + 0 + 1 + 0) / 4)
    expected = -(math.log(0.5) + math.log(1 - sig(3)) + math.log(1 - sig(-2)) + math.log(sig(1))) / 4
    assert values["ventricles"] == pytest.approx(expected, rel=1e-6)


def test_total_is_the_lambda_weighted_sum():
    torch.manual_seed(0)
    outputs = {"macs": torch.randn(2), "pvl": torch.randn(2, 2, 2, 2, 2), "localization": torch.randn(2, 1, 2, 2, 2),
               "ventricles": torch.randn(2, 1, 2, 2, 2)}
    batch = full_batch(2)
    cfg = LossConfig(lambda_macs=0.5, lambda_pvl=2.0, lambda_localization=3.0, lambda_ventricles=0.25)
    total, v = shmn_loss(outputs, batch, cfg, 0)
    expected = 0.5 * v["macs"] + 2.0 * v["pvl"] + 3.0 * v["localization"] + 0.25 * v["ventricles"]
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert v["alpha"] == 0.0


def full_batch(n: int, shape=(2, 2, 2)) -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "pvl": (torch.rand(n, 1, *shape, generator=g) > 0.5).float(),
        "density": torch.rand(n, 1, *shape, generator=g),
        "ventricles": (torch.rand(n, 1, *shape, generator=g) > 0.5).float(),
        "macs": (torch.rand(n, generator=g) > 0.5).float(),
        "has_pvl": torch.ones(n, dtype=torch.bool),
        "has_ventricles": torch.ones(n, dtype=torch.bool),
        "has_macs": torch.ones(n, dtype=torch.bool),
    }


def test_a_sample_without_the_label_does_not_change_the_term():
    torch.manual_seed(2)
    outputs = {"macs": torch.randn(3), "pvl": torch.randn(3, 2, 2, 2, 2), "localization": torch.randn(3, 1, 2, 2, 2),
               "ventricles": torch.randn(3, 1, 2, 2, 2)}
    batch = full_batch(3)
    for flag in ("has_pvl", "has_ventricles", "has_macs"):
        batch[flag] = torch.tensor([True, False, True])  # sample 1 is unlabelled for every task
    # Its "labels" are garbage that must be ignored.
    batch["pvl"][1] = 1.0
    batch["density"][1] = 100.0
    batch["macs"][1] = 1.0
    keep = [0, 2]
    reduced = {k: v[keep] for k, v in outputs.items()}
    reduced_batch = {k: v[keep] for k, v in batch.items()}
    _, with_unlabelled = shmn_loss(outputs, batch, LossConfig(), 0)
    _, without = shmn_loss(reduced, reduced_batch, LossConfig(), 0)
    for name in ("macs", "pvl", "localization", "ventricles"):
        assert with_unlabelled[name] == pytest.approx(without[name], rel=1e-6), name


def test_no_labelled_sample_gives_exactly_zero_and_finite_gradients():
    torch.manual_seed(3)
    model = SHMN(NetworkConfig(base_filters=2, levels=2))
    outputs = model(torch.randn(2, 1, 4, 4, 4))
    batch = full_batch(2, shape=(4, 4, 4))
    for flag in ("has_pvl", "has_ventricles", "has_macs"):
        batch[flag] = torch.zeros(2, dtype=torch.bool)
    total, values = shmn_loss(outputs, batch, LossConfig(), 0)
    assert total.item() == 0.0
    assert all(values[k] == 0.0 for k in ("macs", "pvl", "localization", "ventricles"))
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and not g.any() for g in grads)


def test_terms_of_disabled_tasks_are_skipped_and_missing_label_keys_are_an_error():
    batch = {"macs": torch.tensor([1.0]), "has_macs": torch.tensor([True])}
    _, values = shmn_loss({"macs": torch.tensor([0.3])}, batch, LossConfig(), 0)
    assert set(values) == {"macs", "alpha"}
    with pytest.raises(ValueError, match="'pvl'"):
        shmn_loss({"pvl": torch.zeros(1, 2, 2, 2, 2)}, {"has_pvl": torch.tensor([True])}, LossConfig(), 0)


def test_alpha_schedule():
    cfg = LossConfig(t1=10, t2=40, alpha_final=2.0)
    assert [alpha(e, cfg) for e in (0, 9.99, 10, 25, 39, 40, 100)] == pytest.approx(
        [0, 0, 0, 1.0, 2.0 * 29 / 30, 2.0, 2.0]
    )
    with pytest.raises(ValueError):
        LossConfig(t1=5, t2=5)


def pseudo_setup():
    torch.manual_seed(4)
    logits = torch.randn(3, 1, 2, 2, 2, requires_grad=True)
    batch = {"ventricles": (torch.rand(3, 1, 2, 2, 2) > 0.5).float(), "has_ventricles": torch.tensor([True, False, False])}
    return logits, batch


def test_pseudo_label_term_is_zero_before_t1():
    logits, batch = pseudo_setup()
    cfg = LossConfig(pseudo_labels=True, t1=10, t2=40)
    total, values = shmn_loss({"ventricles": logits}, batch, cfg, epoch=5)
    assert values["ventricles_pseudo"] == 0.0 and values["alpha"] == 0.0
    labelled_only = torch.nn.functional.binary_cross_entropy_with_logits(logits[:1], batch["ventricles"][:1])
    assert total.item() == pytest.approx(labelled_only.item(), rel=1e-6)


def test_pseudo_labels_are_the_thresholded_detached_prediction_on_unlabelled_samples_only():
    logits, batch = pseudo_setup()
    cfg = LossConfig(pseudo_labels=True, t1=10, t2=40, alpha_final=1.0)
    total, values = shmn_loss({"ventricles": logits}, batch, cfg, epoch=25)
    assert values["alpha"] == pytest.approx(0.5)
    unlabelled = logits[1:].detach()
    target = (unlabelled > 0).float()
    expected_pseudo = torch.nn.functional.binary_cross_entropy_with_logits(unlabelled, target)
    assert values["ventricles_pseudo"] == pytest.approx(float(expected_pseudo), rel=1e-6)
    assert total.item() == pytest.approx(values["ventricles"] + 0.5 * values["ventricles_pseudo"], rel=1e-6)
    total.backward()
    # Detached target: the pseudo part's gradient is alpha * (sigmoid(z) - target) / n_voxels, nothing more.
    expected_grad = 0.5 * (torch.sigmoid(unlabelled) - target) / unlabelled.numel()
    assert torch.allclose(logits.grad[1:], expected_grad, atol=1e-7)
    # The labelled sample's own mask never enters the pseudo term.
    batch2 = dict(batch, ventricles=batch["ventricles"].clone())
    batch2["ventricles"][1:] = 1 - batch2["ventricles"][1:]
    _, values2 = shmn_loss({"ventricles": logits.detach()}, batch2, cfg, epoch=25)
    assert values2["ventricles_pseudo"] == pytest.approx(values["ventricles_pseudo"])


def test_pseudo_labels_off_ignores_unlabelled_samples():
    logits, batch = pseudo_setup()
    _, values = shmn_loss({"ventricles": logits}, batch, LossConfig(pseudo_labels=False), epoch=100)
    assert "ventricles_pseudo" not in values and values["alpha"] == 0.0


def test_ventricle_dice_term_adds_soft_dice_to_the_bce():
    # One sample, a 2x2x2 mask inside a 4x4x4 volume, logits of +-2 with one voxel wrong.
    target = torch.zeros(1, 1, 4, 4, 4)
    target[..., :2, :2, :2] = 1.0
    logits = torch.where(target > 0, 2.0, -2.0)
    logits[0, 0, 3, 3, 3] = 2.0
    batch = {"ventricles": target, "has_ventricles": torch.tensor([True])}
    plain, _ = shmn_loss({"ventricles": logits}, batch, LossConfig(), 0)
    with_dice, _ = shmn_loss({"ventricles": logits}, batch, LossConfig(ventricle_dice=True), 0)
    p = torch.sigmoid(logits)
    soft_dice = 1 - (2 * (p * target).sum() + 1e-5) / (p.sum() + target.sum() + 1e-5)  # MONAI's smoothing
    assert float(with_dice) == pytest.approx(float(plain) + float(soft_dice), rel=1e-5)
    # the Dice term rewards confidence: a mask at p 0.45 everywhere it should be 1 loses more with it
    timid = torch.where(target > 0, -0.2, -4.0)
    assert float(shmn_loss({"ventricles": timid}, batch, LossConfig(ventricle_dice=True), 0)[0]) > float(with_dice)
