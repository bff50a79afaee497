"""Run a trained SHMN on one preprocessed volume: whole volume when it fits, sliding windows otherwise.

Device and precision follow shmn.devices, as training does ("auto" = CUDA when present; cuda:N
picks a GPU; bf16, else fp16, autocast on CUDA; bf16 autocast on CPUs with native bf16 instructions:
2-2.5x faster there with 99.6-99.8% of voxels unchanged, docs/DESIGN.md section 7), with a fall-back
to the CPU when the GPU runs out of memory. Returns per-task arrays on the model grid (z, y, x).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from shmn.devices import autocast, precision, resolve_device

# Peak memory of a forward pass, bytes per input voxel per base filter (docs/DESIGN.md section 7: 0.9 GB for
# base 16 at 96x112x96 is ~55; 7.3 GB for base 32 at 192x224x192 is ~28). Rounded up for safety.
BYTES_PER_VOXEL_PER_FILTER = 64
# Use at most this share of the free memory for a whole-volume pass.
MEMORY_SHARE = 0.6


@dataclass(frozen=True)
class InferenceOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N (shmn.devices)
    sliding_window: bool = False  # force sliding windows even when the whole volume fits
    roi_size_zyx: tuple[int, int, int] = (96, 96, 96)
    overlap: float = 0.25
    cpu_bf16: bool | None = None  # None: on when the CPU has native bf16 instructions
    cuda_amp: bool = True  # False: fp32 on the GPU too


@dataclass
class InferenceResult:
    """Per-task outputs on the model grid (z, y, x); a task the model lacks is None."""

    pvl_probability: np.ndarray | None
    ventricle_probability: np.ndarray | None
    localization: np.ndarray | None
    macs_probability: float | None
    device: str
    precision: str  # fp32 | bf16 | fp16
    mode: str  # whole | sliding_window
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    macs_logit: float | None = None  # before the sigmoid: what a card's calibration rescales (shmn.inference.calibration)


def free_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def whole_volume_fits(model: torch.nn.Module, shape_zyx, device: torch.device) -> bool:
    base = getattr(getattr(model, "config", None), "base_filters", 32)
    needed = int(np.prod(shape_zyx)) * base * BYTES_PER_VOXEL_PER_FILTER
    return needed <= MEMORY_SHARE * free_memory_bytes(device)


def _precision(device: torch.device, options: InferenceOptions) -> str:
    return precision(device, "auto" if device.type == "cpu" or options.cuda_amp else "off", options.cpu_bf16)


def _roi_size(model: torch.nn.Module, shape_zyx, roi_zyx) -> tuple[int, ...]:
    # Windows must be multiples of the network's divisor and no larger than the volume.
    divisor = getattr(getattr(model, "config", None), "divisor", 16)
    return tuple(max(divisor, (min(r, s) // divisor) * divisor) for r, s in zip(roi_zyx, shape_zyx))


def _dense_outputs(model: torch.nn.Module):
    def predictor(window: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = model(window)
        return {task: value.float() for task, value in outputs.items() if task != "macs"}

    return predictor


def _macs_logit(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    # The classifier reads the whole brain's bottleneck: run the encoder alone on the full volume
    # (a fraction of a full pass's memory) rather than averaging per-window guesses.
    if getattr(model, "macs", None) is None:
        return None
    return model.macs(model.encoder(x)[-1])


def _run(model: torch.nn.Module, x: torch.Tensor, device: torch.device, mode: str, sliding: bool, options: InferenceOptions) -> dict:
    model.to(device)
    x = x.to(device)
    with torch.inference_mode(), autocast(device, mode):
        if not sliding:
            return {task: value.float() for task, value in model(x).items()}
        from monai.inferers import sliding_window_inference

        roi = _roi_size(model, x.shape[2:], options.roi_size_zyx)
        outputs = dict(
            sliding_window_inference(
                x, roi, sw_batch_size=1, predictor=_dense_outputs(model), overlap=options.overlap, mode="gaussian"
            )
        )
        macs = _macs_logit(model, x)
        if macs is not None:
            outputs["macs"] = macs.float()
        return outputs


def _is_cpu_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc).lower())


def run_inference(model: torch.nn.Module, image_zyx: np.ndarray, options: InferenceOptions = InferenceOptions()) -> InferenceResult:
    """Forward one (z, y, x) float32 volume on the model grid; probabilities back on the same grid."""
    start = time.perf_counter()
    device = resolve_device(options.device)
    model.eval()
    x = torch.from_numpy(np.ascontiguousarray(image_zyx, dtype=np.float32))[None, None]
    notes: list[str] = []
    sliding = options.sliding_window or not whole_volume_fits(model, x.shape[2:], device)
    mode = _precision(device, options)
    try:
        outputs = _run(model, x, device, mode, sliding, options)
    except torch.cuda.OutOfMemoryError:
        note = "GPU ran out of memory; inference repeated on the CPU"
        warnings.warn(note, RuntimeWarning, stacklevel=2)
        notes.append(note)
        model.to("cpu")
        torch.cuda.empty_cache()
        device = torch.device("cpu")
        mode = _precision(device, options)
        sliding = options.sliding_window or not whole_volume_fits(model, x.shape[2:], device)
        outputs = _run(model, x, device, mode, sliding, options)
    except (MemoryError, RuntimeError) as exc:
        if sliding or not _is_cpu_oom(exc):
            raise
        note = "whole-volume inference ran out of memory; repeated with sliding windows"
        warnings.warn(note, RuntimeWarning, stacklevel=2)
        notes.append(note)
        sliding = True
        outputs = _run(model, x, device, mode, sliding, options)
    return _result(outputs, str(device), mode, "sliding_window" if sliding else "whole", notes, time.perf_counter() - start)


def _result(outputs: dict, device: str, precision: str, mode: str, notes: list[str], seconds: float) -> InferenceResult:
    def volume(tensor: torch.Tensor | None) -> np.ndarray | None:
        return None if tensor is None else tensor[0, 0].cpu().numpy().astype(np.float32, copy=False)

    pvl = outputs.get("pvl")
    ventricles = outputs.get("ventricles")
    macs = outputs.get("macs")
    return InferenceResult(
        pvl_probability=volume(torch.softmax(pvl, dim=1)[:, 1:2]) if pvl is not None else None,
        ventricle_probability=volume(torch.sigmoid(ventricles)) if ventricles is not None else None,
        localization=volume(outputs.get("localization")),
        macs_probability=float(torch.sigmoid(macs)[0]) if macs is not None else None,
        device=device,
        precision=precision,
        mode=mode,
        warnings=notes,
        seconds=seconds,
        macs_logit=float(macs.reshape(-1)[0]) if macs is not None else None,
    )
