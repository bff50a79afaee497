"""SHMN network: configuration checks, output shapes for every branch subset, learning on a tiny volume."""

import itertools

import numpy as np
import pytest
import torch

from shmn.measures.lesions import density_map
from shmn.network.losses import LossConfig, shmn_loss
from shmn.network.model import ALL_TASKS, SHMN, NetworkConfig, count_parameters, macs_probability

TINY = dict(base_filters=2, levels=3)


@pytest.mark.parametrize(
    "tasks", [t for r in range(1, 5) for t in itertools.combinations(ALL_TASKS, r)], ids="-".join
)
def test_forward_shapes_for_every_subset_of_branches(tasks):
    torch.manual_seed(0)
    model = SHMN(NetworkConfig(tasks=tasks, **TINY))
    outputs = model(torch.randn(2, 1, 8, 12, 4))
    assert set(outputs) == set(tasks)
    expected = {"pvl": (2, 2, 8, 12, 4), "ventricles": (2, 1, 8, 12, 4), "localization": (2, 1, 8, 12, 4), "macs": (2,)}
    for task in tasks:
        assert tuple(outputs[task].shape) == expected[task]
        assert torch.isfinite(outputs[task]).all()
    # Only the enabled branches own parameters (an ablation is a smaller network, not a masked one).
    assert set(model.decoders) == {t for t in tasks if t != "macs"}
    assert (model.macs is not None) == ("macs" in tasks)


def test_spatial_size_not_divisible_is_a_clear_error():
    model = SHMN(NetworkConfig(**TINY))  # divisor 2**(3-1) = 4
    with pytest.raises(ValueError, match=r"not divisible by 4"):
        model(torch.randn(1, 1, 8, 10, 8))
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(1, 2, 8, 8, 8))


def test_config_validation_and_filters():
    with pytest.raises(ValueError, match="empty"):
        NetworkConfig(tasks=())
    with pytest.raises(ValueError, match="unknown"):
        NetworkConfig(tasks=("pvl", "tumour"))
    # JSON gives lists back; the config stores a tuple and compares equal.
    assert NetworkConfig(tasks=["pvl", "macs"]) == NetworkConfig(tasks=("pvl", "macs"))
    assert NetworkConfig(base_filters=64, levels=6).filters == (64, 128, 256, 320, 320, 320)
    assert NetworkConfig().divisor == 16


def test_parameter_counts_shrink_with_ablations():
    full = count_parameters(SHMN(NetworkConfig(**TINY)))
    two = count_parameters(SHMN(NetworkConfig(tasks=("pvl", "macs"), **TINY)))
    assert two < full


def test_macs_probability_is_sigmoid():
    logit = torch.tensor([-2.0, 0.0, 3.0])
    assert torch.allclose(macs_probability(logit), torch.sigmoid(logit))
    assert macs_probability(torch.tensor(0.0)) == 0.5


def synthetic_batch() -> dict:
    """Two 16^3 cases: a PVL case (bright blob, mask, density) and a MACS case (with a ventricle mask)."""
    g = np.random.default_rng(0)
    image = g.normal(0, 0.1, (2, 1, 16, 16, 16)).astype(np.float32)
    zz, yy, xx = np.mgrid[:16, :16, :16]
    blob = ((zz - 6) ** 2 + (yy - 9) ** 2 + (xx - 7) ** 2) <= 6
    ventricle = (abs(zz - 8) <= 1) & (abs(yy - 8) <= 4) & (abs(xx - 8) <= 2)
    image[0, 0][blob] += 2.0
    image[1, 0][ventricle] -= 1.5
    pvl = np.zeros((2, 1, 16, 16, 16), np.float32)
    pvl[0, 0] = blob
    density = np.zeros_like(pvl)
    density[0, 0] = density_map(blob, (1.0, 1.0, 1.0), sigma_mm=2.0)
    ventricles = np.zeros_like(pvl)
    ventricles[1, 0] = ventricle
    return {
        "image": torch.from_numpy(image),
        "pvl": torch.from_numpy(pvl),
        "density": torch.from_numpy(density),
        "ventricles": torch.from_numpy(ventricles),
        "macs": torch.tensor([0.0, 1.0]),
        "has_pvl": torch.tensor([True, False]),
        "has_ventricles": torch.tensor([False, True]),
        "has_macs": torch.tensor([False, True]),
    }


def test_a_few_adam_steps_lower_the_loss_on_a_tiny_volume():
    torch.manual_seed(0)
    model = SHMN(NetworkConfig(base_filters=4, levels=3))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    batch = synthetic_batch()
    cfg = LossConfig(pseudo_labels=True, t1=0, t2=1)
    losses = []
    for _ in range(12):
        optimiser.zero_grad()
        total, values = shmn_loss(model(batch["image"]), batch, cfg, epoch=5)
        total.backward()
        optimiser.step()
        losses.append(total.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0], losses
    assert set(values) == {"pvl", "ventricles", "ventricles_pseudo", "localization", "macs", "alpha"}


def test_macs_pooling_is_checked():
    with pytest.raises(ValueError, match="macs_pooling"):
        NetworkConfig(macs_pooling="max", **TINY)
    with pytest.raises(ValueError, match="must include 'macs' and 'pvl'"):
        NetworkConfig(tasks=("ventricles", "macs"), macs_pooling="lesion", **TINY)


def test_instance_norm_leaves_the_global_average_of_the_bottleneck_almost_constant():
    # Why "lesion" pooling exists: two unrelated images give nearly the same globally averaged bottleneck,
    # because every channel is normalised over space before its activation.
    torch.manual_seed(0)
    model = SHMN(NetworkConfig(tasks=("pvl", "macs"), **TINY)).eval()
    with torch.no_grad():
        a = model.encoder(torch.randn(1, 1, 16, 16, 16))[-1].mean(dim=(2, 3, 4))
        b = model.encoder(torch.rand(1, 1, 16, 16, 16) * 5.0 + 3.0)[-1].mean(dim=(2, 3, 4))
    assert torch.allclose(a, b, atol=0.05), (a, b)


def test_lesion_pooling_reads_where_the_pvl_decoder_sees_lesions():
    torch.manual_seed(0)
    model = SHMN(NetworkConfig(tasks=("pvl", "macs"), macs_pooling="lesion", **TINY)).eval()
    bottleneck = torch.randn(1, model.config.filters[-1], 2, 2, 2)
    no_lesion = torch.zeros(1, 2, 8, 8, 8)
    no_lesion[:, 0] = 30.0  # background everywhere
    one_cell = no_lesion.clone()
    one_cell[:, 1, :4, :4, :4] = 60.0  # lesion over the bottleneck cell (0, 0, 0): 64 voxels
    pooled_free, pooled_lesion = model.macs.pool(bottleneck, no_lesion), model.macs.pool(bottleneck, one_cell)
    width = model.config.filters[-1]
    assert pooled_free.shape == (1, 2 * width + 1)
    torch.testing.assert_close(pooled_free[:, :width], bottleneck.mean(dim=(2, 3, 4)))  # the paper's average stays
    assert float(pooled_free[0, -1]) == pytest.approx(0.0, abs=1e-6)
    assert float(pooled_lesion[0, -1]) == pytest.approx(float(np.log1p(64 / 1000)), rel=1e-3)
    torch.testing.assert_close(pooled_lesion[0, width:-1], bottleneck[0, :, 0, 0, 0] * 64 / 65, rtol=1e-3, atol=1e-4)
    assert model.macs(bottleneck, no_lesion) != model.macs(bottleneck, one_cell)
    with pytest.raises(ValueError, match="needs the PVL decoder"):
        model.macs(bottleneck)
    assert model(torch.randn(2, 1, 8, 8, 8))["macs"].shape == (2,)
