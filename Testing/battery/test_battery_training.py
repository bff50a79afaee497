"""Battery, training data and runs: non-binary masks, masks off their image, manifest paths that
leave the dataset, NaN in a config, a damaged run folder. Real datasets on disk, real `shmn train`."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.errors import ShmnError
from shmn.io.manifest import load_manifest
from shmn.training.config import load_config
from battery_helpers import lesion_mask, mni_brain, one_error_line, run_cli, write_dataset
from engine_fixtures import make_tiny_model

pytestmark = pytest.mark.xdist_group("battery_training")

TRAIN = ["--resolution", "tiny", "--epochs", "1", "--device", "cpu", "--batch-size", "1", "-q"]


def _train(data, run, capfd, preset="single-pvl", extra=()):
    return run_cli(["train", preset, "--data", data.parent, "-o", run, *TRAIN, *extra], capfd)


def test_mask_labelled_0_to_5_is_refused_naming_case_and_file(anatomy, tmp_path, capfd):
    mask = lesion_mask()
    mask[10:30, 10:40, 10:35] += np.random.default_rng(0).integers(0, 6, (20, 30, 25)).astype(np.uint8)
    data = write_dataset(tmp_path / "data", anatomy, {"p1": mask, "p2": lesion_mask()})
    line = one_error_line(["train", "single-pvl", "--data", data.parent, "-o", tmp_path / "run", *TRAIN], capfd, "'p1'", "p1_pvl.nii.gz", "binary")
    assert "0/255" in line


def test_mask_on_a_grid_that_misses_its_image_is_refused(anatomy, tmp_path, capfd):
    brain = mni_brain(anatomy, spacing=(4.0, 4.0, 4.0), size=(45, 54, 45))
    off = sitk.GetImageFromArray(lesion_mask())
    off.CopyInformation(brain)
    off.SetOrigin([v + 500.0 for v in brain.GetOrigin()])  # same size, half a metre away
    data = write_dataset(tmp_path / "data", anatomy, {"p1": lesion_mask(), "p2": off})
    one_error_line(["train", "single-pvl", "--data", data.parent, "-o", tmp_path / "run", *TRAIN], capfd, "'p2'", "p2_pvl.nii.gz", "does not cover")


def test_0_255_masks_train_and_the_run_files_follow_the_umask(anatomy, tmp_path, capfd):
    data = write_dataset(tmp_path / "data", anatomy, {"p1": lesion_mask(255), "p2": lesion_mask(1)})
    previous = os.umask(0o022)
    try:
        status, lines, _ = _train(data, tmp_path / "run", capfd)
    finally:
        os.umask(previous)
    assert status == 0, lines
    cached = sorted((tmp_path / "run" / "cache").glob("*.pvl.npz"))
    voxels = [int(np.load(p)["mask"].sum()) for p in cached]
    assert len(voxels) == 2 and abs(voxels[0] - voxels[1]) <= 2, voxels  # 255 is lesion, exactly like 1
    for name in ("model-best.safetensors", "model-last.safetensors", "checkpoint.pt", "config.json"):
        assert stat.S_IMODE((tmp_path / "run" / name).stat().st_mode) == 0o644, name


def test_manifest_path_that_leaves_the_dataset_is_refused(anatomy, tmp_path, capfd):
    data = write_dataset(tmp_path / "data", anatomy, {"p1": lesion_mask(), "p2": lesion_mask()})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data" / "images" / "p2.nii.gz").rename(elsewhere / "x.nii.gz")
    manifest = json.loads(data.read_text())
    manifest["cases"][1]["image"] = "../elsewhere/x.nii.gz"
    data.write_text(json.dumps(manifest))
    with pytest.raises(ShmnError, match="leaves the dataset folder"):
        load_manifest(data)
    one_error_line(["train", "single-pvl", "--data", data.parent, "-o", tmp_path / "run", *TRAIN], capfd, "'p2'", "../elsewhere/x.nii.gz")
    manifest["cases"][1]["image"] = "images/../labels/../../elsewhere/x.nii.gz"
    data.write_text(json.dumps(manifest))
    with pytest.raises(ShmnError, match="leaves the dataset folder"):
        load_manifest(data)


@pytest.mark.parametrize("text", ['{"lr": NaN}', '{"lr": Infinity}', '{"loss": {"macs_epsilon": NaN}}'])
def test_nan_or_infinite_number_in_a_config_is_refused(text, tmp_path, capfd):
    config = tmp_path / "config.json"
    config.write_text(text)
    with pytest.raises(ShmnError, match="finite"):
        load_config(str(config))
    one_error_line(["train", config, "--data", tmp_path / "none", "-o", tmp_path / "run", "-q"], capfd, "finite")


def test_resume_with_a_damaged_config_json_gives_one_line(anatomy, tmp_path, capfd):
    data = write_dataset(tmp_path / "data", anatomy, {"p1": lesion_mask(), "p2": lesion_mask()})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"preset": "single-pvl", "epo')
    one_error_line(["train", "single-pvl", "--data", data.parent, "-o", run, *TRAIN, "--resume"], capfd, "config.json", "damaged")


def test_evaluate_refuses_a_non_binary_reference_mask(anatomy, tmp_path, capfd):
    mask = lesion_mask(3)
    data = write_dataset(tmp_path / "data", anatomy, {"t1": mask}, splits={"t1": "test"})
    model, _ = make_tiny_model(tmp_path)
    one_error_line(["evaluate", model, "--data", data.parent, "--device", "cpu", "-q"], capfd, "'t1'", "t1_pvl.nii.gz", "binary")


def test_second_training_in_a_busy_run_folder_is_refused(anatomy, tmp_path, capfd):
    """Another process training in RUN (simulated by holding its lock, as that process would) means
    a second `shmn train -o RUN` must not write the same checkpoints."""
    import multiprocessing

    data = write_dataset(tmp_path / "data", anatomy, {"p1": lesion_mask(), "p2": lesion_mask()})
    run = tmp_path / "run"
    fork = multiprocessing.get_context("fork")
    ready, release = fork.Event(), fork.Event()
    holder = fork.Process(target=_hold_run_lock, args=(str(run), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        one_error_line(["train", "single-pvl", "--data", data.parent, "-o", run, *TRAIN], capfd, str(run), "another shmn train")
        assert not (run / "config.json").exists()
    finally:
        release.set()
        holder.join(30)


def _hold_run_lock(run, ready, release):
    from pathlib import Path

    from shmn.io.claim import exclusive

    run = Path(run)
    with exclusive(run.parent / f".{run.name}.lock", ShmnError("busy")):
        ready.set()
        release.wait(60)
