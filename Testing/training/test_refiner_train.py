"""Training the lesion refiner: real steps on real bank files, and a killed run that resumes where it stopped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shmn.errors import ShmnError
from shmn.training.refiner_bank import read_sample, write_sample
from shmn.training.refiner_train import RefinerTrainConfig, draw_patch, load_bank, train_refiner

CONFIG = RefinerTrainConfig(steps=4, batch=2, patch=32, features=(2, 2, 2, 2, 2, 2), checkpoint_every=2, seed=3)


def tiny_bank(folder, count=2):
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        pvl = np.zeros((34, 36, 40), np.uint8)
        pvl[16:19, 17:20, 18:21] = 1
        image = (rng.normal(0, 1, pvl.shape) + 3 * pvl).astype(np.float16)
        prior = (0.7 * pvl + 0.05).astype(np.float16)
        path = folder / f"sample-{index}.npz"
        write_sample(path, {"image": image, "pvl": pvl, "prior": prior, "seed": np.int64(index)})
        paths.append(path)
    return load_bank(paths)


def test_lesion_patches_hold_lesion_and_channels_follow_the_prior_option(tmp_path):
    bank = tiny_bank(tmp_path)
    patch = draw_patch(bank[0], CONFIG, np.random.default_rng(1), on_lesion=True)
    assert patch["image"].shape == (2, 32, 32, 32) and patch["label"].shape == (1, 32, 32, 32)
    assert patch["label"].sum() == 27  # the whole 3x3x3 lesion lies inside a patch centred on it
    alone = draw_patch(bank[0], RefinerTrainConfig(patch=32, use_prior=False), np.random.default_rng(1), on_lesion=False)
    assert alone["image"].shape == (1, 32, 32, 32)


def test_a_killed_run_resumes_to_the_same_weights_as_an_unbroken_one(tmp_path):
    bank = tiny_bank(tmp_path)
    unbroken, record = train_refiner(bank, CONFIG, tmp_path / "unbroken", progress=False)
    assert record["steps_done"] == 4 and np.isfinite(record["loss_last_50"])
    _, first = train_refiner(bank, CONFIG, tmp_path / "killed", progress=False, stop_after=3)
    assert first["steps_done"] == 3  # "killed" after step 3: only its checkpoint survives
    with pytest.raises(ShmnError, match="--resume"):
        train_refiner(bank, CONFIG, tmp_path / "killed", progress=False)
    resumed, second = train_refiner(bank, CONFIG, tmp_path / "killed", resume=True, progress=False)
    assert second["steps_done"] == 4
    for key, value in unbroken.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key], value, atol=1e-5), key


def test_resume_with_other_options_is_refused(tmp_path):
    bank = tiny_bank(tmp_path)
    train_refiner(bank, CONFIG, tmp_path / "run", progress=False, stop_after=1)
    other = RefinerTrainConfig(**{**CONFIG.__dict__, "lr": 5e-4})
    with pytest.raises(ShmnError, match="another configuration"):
        train_refiner(bank, other, tmp_path / "run", resume=True, progress=False)


def test_a_damaged_bank_file_names_itself(tmp_path):
    path = tmp_path / "sample-9.npz"
    path.write_bytes(b"not an npz")
    with pytest.raises(ShmnError, match="sample-9.npz: damaged bank sample"):
        read_sample(path)
