"""The one device and precision policy (shmn.devices), as training, inference and the commands use it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shmn import devices
from shmn.cli import main
from shmn.errors import ShmnError
from shmn.inference.engine import InferenceOptions, run_inference
from shmn.network.model import SHMN, NetworkConfig
from shmn.training.config import DEVICES, load_config

NO_GPU = not torch.cuda.is_available()


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_that_parse(name):
    assert devices.parse_device(name) == name


@pytest.mark.parametrize("name", ["gpu", "CPU", "cuda:", "cuda:x", "cuda:-1", "cuda0", "mps", ""])
def test_device_names_refused_with_one_line(name):
    with pytest.raises(ShmnError) as caught:
        devices.parse_device(name, option="--device")
    message = str(caught.value)
    assert message.startswith(f"--device {name}:") and "cuda:N" in message and "\n" not in message
    assert all(known in message for known in DEVICES)


def test_resolve_device_on_this_machine():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("auto").type == ("cpu" if NO_GPU else "cuda")


@pytest.mark.skipif(not NO_GPU, reason="with a GPU, cuda is valid: nothing to refuse")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_absent_gpu_is_refused_naming_the_option(name):
    with pytest.raises(ShmnError, match=f"^--device {name}: no CUDA GPU"):
        devices.resolve_device(name)


def test_precision_policy():
    cpu = torch.device("cpu")
    assert devices.precision(cpu, "off", True) == "fp32"
    assert devices.precision(cpu, "bf16") == "bf16" and devices.precision(cpu, "fp16") == "fp16"
    assert devices.precision(cpu, "auto", False) == "fp32" and devices.precision(cpu, "auto", True) == "bf16"
    assert devices.precision(cpu, "auto", None) == ("bf16" if devices.cpu_has_bf16() else "fp32")
    with pytest.raises(ShmnError, match="amp 'half'"):
        devices.precision(cpu, "half")


def test_autocast_changes_the_compute_dtype():
    cpu = torch.device("cpu")
    a = torch.ones(4, 4)
    with devices.autocast(cpu, "fp32"):
        assert (a @ a).dtype == torch.float32
    with devices.autocast(cpu, "bf16"):
        assert (a @ a).dtype == torch.bfloat16
    assert not devices.grad_scaler(cpu, "fp16").is_enabled()  # loss scaling is for fp16 on a GPU only


def test_inference_follows_the_same_policy():
    torch.manual_seed(0)
    model = SHMN(NetworkConfig(base_filters=2, levels=3, macs_hidden=4))
    volume = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    fp32 = run_inference(model, volume, InferenceOptions(device="cpu", cpu_bf16=False))
    bf16 = run_inference(model, volume, InferenceOptions(device="cpu", cpu_bf16=True))
    assert (fp32.device, fp32.precision, bf16.precision) == ("cpu", "fp32", "bf16")
    assert not np.array_equal(fp32.pvl_probability, bf16.pvl_probability)  # bf16 really ran
    np.testing.assert_allclose(fp32.pvl_probability, bf16.pvl_probability, atol=0.05)
    with pytest.raises(ShmnError, match="--device gpu"):
        run_inference(model, volume, InferenceOptions(device="gpu"))


def test_training_config_takes_the_same_names():
    assert load_config("shmn4:tiny", {"device": "cuda:1"}).device == "cuda:1"
    with pytest.raises(ShmnError, match="device gpu: expected one of auto, cpu, cuda or cuda:N"):
        load_config("shmn4:tiny", {"device": "gpu"})


@pytest.mark.parametrize("command", ["predict", "train", "evaluate", "calibrate", "suggest"])
def test_commands_accept_cuda_n_and_refuse_what_is_not_there(command, tmp_path, capsys):
    image = tmp_path / "image.nii.gz"
    image.write_bytes(b"")  # never read: the device is checked first
    out = tmp_path / "out"
    args = {
        "predict": ["predict", str(image), "-o", str(out)],
        "train": ["train", "shmn4:tiny", "--data", str(tmp_path), "-o", str(out)],
        "evaluate": ["evaluate", str(tmp_path), "--data", str(tmp_path)],
        "calibrate": ["calibrate", str(tmp_path), "--data", str(tmp_path), "-o", str(out / "model.safetensors")],
        "suggest": ["suggest", str(tmp_path)],
    }[command]
    assert main([*args, "--device", "gpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shmn: error: --device gpu: expected one of auto, cpu, cuda or cuda:N") and "\n" not in err
    if NO_GPU:
        assert main([*args, "--device", "cuda:1"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("shmn: error: --device cuda:1: no CUDA GPU") and "\n" not in err
    assert not out.exists()
