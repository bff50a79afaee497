"""The one device and precision policy of training and inference.

A device is named ``auto`` (CUDA when PyTorch sees a GPU, else the CPU), ``cpu``, ``cuda`` (the
process's GPU: LOCAL_RANK's under torchrun, else the first) or ``cuda:N``; anything else, or a GPU
that is not there, is one error line naming the option. Precision is fp32, bf16 or fp16 autocast:
bf16 on a CUDA GPU that has it (fp32's exponent range: no overflow, no loss scaling), else fp16
with a GradScaler; on the CPU bf16 only where asked for or, left to ``None``, where the CPU has
native bf16 instructions (2-2.5x faster there, docs/DESIGN.md section 7; emulated and slower elsewhere).
"""

from __future__ import annotations

import contextlib
import re

import torch

from shmn.errors import ShmnError
from shmn.contract import DEVICES
from shmn.training.config import AMP_MODES

_CUDA_INDEX = re.compile(r"cuda:(\d+)")


def parse_device(name: str, option: str = "--device") -> str:
    """``name`` checked against auto | cpu | cuda | cuda:N (no GPU needed to check it)."""
    if isinstance(name, str) and (name in DEVICES or _CUDA_INDEX.fullmatch(name)):
        return name
    raise ShmnError(f"{option} {name}: expected one of {', '.join(DEVICES)} or cuda:N (N = a GPU index)")


def resolve_device(name: str, local_rank: int = 0, option: str = "--device") -> torch.device:
    """The torch device ``name`` means here; an impossible one is refused before any work starts."""
    name = parse_device(name, option)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ShmnError(f"{option} {name}: no CUDA GPU is available to PyTorch here; use {option} cpu or auto")
    count = torch.cuda.device_count()
    index = int(name.split(":")[1]) if ":" in name else local_rank % count
    if index >= count:
        raise ShmnError(f"{option} {name}: PyTorch sees {count} GPU(s) here (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def cpu_has_bf16() -> bool:
    # AVX512-BF16 or AMX: where bf16 autocast is fast; elsewhere it is emulated and slower than fp32.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def precision(device: torch.device, amp: str = "auto", cpu_bf16: bool | None = None) -> str:
    """fp32 | bf16 | fp16 on ``device``: ``amp`` (auto | off | bf16 | fp16) forces a mode; ``auto``
    picks bf16 (else fp16) on a GPU and, on the CPU, bf16 when ``cpu_bf16`` (None: when the CPU has it)."""
    if amp not in AMP_MODES:
        raise ShmnError(f"amp {amp!r}: expected one of {', '.join(AMP_MODES)}")
    if amp == "off":
        return "fp32"
    if amp in ("bf16", "fp16"):
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    use_bf16 = cpu_has_bf16() if cpu_bf16 is None else cpu_bf16
    return "bf16" if use_bf16 else "fp32"


def autocast(device: torch.device, mode: str):
    """The autocast context of ``mode`` (fp32: none) on ``device``."""
    if mode == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if mode == "bf16" else torch.float16)


def grad_scaler(device: torch.device, mode: str) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only (bf16 has fp32's exponent range)."""
    return torch.amp.GradScaler(device.type, enabled=(mode == "fp16" and device.type == "cuda"))
