"""Test-time mirroring (`--tta`, shmn.inference.flips): the plain and the left-right mirrored pass averaged.

A real SHMN with random weights is not mirror-symmetric, which is what makes these checks bite: its plain
pass changes under a flip of the input; the averaged one must not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shmn.inference.engine import InferenceOptions, run_inference
from shmn.inference.flips import mirrored_inference
from shmn.network.model import SHMN, NetworkConfig

FP32 = InferenceOptions(device="cpu", cpu_bf16=False)  # exact arithmetic: the checks compare passes to 1e-5


@pytest.fixture(scope="module")
def network_and_image():
    torch.manual_seed(3)
    network = SHMN(NetworkConfig(base_filters=4, levels=4, macs_hidden=16))
    image = np.random.default_rng(3).normal(size=(32, 32, 32)).astype(np.float32)
    return network, image


def test_the_averaged_pass_commutes_with_a_left_right_flip_and_the_plain_one_does_not(network_and_image):
    network, image = network_and_image
    mirrored_image = np.ascontiguousarray(image[..., ::-1])
    plain, plain_of_mirror = run_inference(network, image, FP32), run_inference(network, mirrored_image, FP32)
    averaged, _, _ = mirrored_inference(network, image, FP32)
    averaged_of_mirror, _, _ = mirrored_inference(network, mirrored_image, FP32)
    for name in ("pvl_probability", "ventricle_probability", "localization"):
        assert np.abs(getattr(plain, name) - getattr(plain_of_mirror, name)[..., ::-1]).max() > 1e-3, name
        np.testing.assert_allclose(getattr(averaged, name), getattr(averaged_of_mirror, name)[..., ::-1], atol=1e-5, err_msg=name)


def test_the_spread_is_half_the_gap_between_the_passes_and_macs_stays_the_plain_pass(network_and_image):
    network, image = network_and_image
    plain = run_inference(network, image, FP32)
    averaged, spread, seconds = mirrored_inference(network, image, FP32)
    # Two passes: the mean sits halfway, and their standard deviation is half their difference.
    np.testing.assert_allclose(spread, np.abs(plain.pvl_probability - averaged.pvl_probability), atol=1e-6)
    assert spread.max() > 1e-3 and seconds > 0
    # The MACS calibration was fitted on single-pass outputs: the plain pass's logit, unchanged.
    assert averaged.macs_logit == pytest.approx(plain.macs_logit) and averaged.macs_probability == pytest.approx(plain.macs_probability)


def test_a_model_without_a_lesion_output_has_no_spread():
    torch.manual_seed(4)
    network = SHMN(NetworkConfig(base_filters=4, levels=4, tasks=("ventricles",)))
    image = np.random.default_rng(4).normal(size=(32, 32, 32)).astype(np.float32)
    averaged, spread, _ = mirrored_inference(network, image, FP32)
    assert spread is None and averaged.pvl_probability is None and averaged.ventricle_probability is not None
