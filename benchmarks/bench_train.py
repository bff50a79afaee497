"""Training step time and peak memory of every task preset at one resolution, on this machine.

    .venv/bin/python benchmarks/bench_train.py [--resolution fast] [--steps 3] [--device cpu] [--cpu-bf16]

One step = forward + SHMN loss + backward + Adam on a batch of ``batch_size`` (2, the paper's)
synthetic volumes of the resolution's model grid (shapes and label mix as in training; contents do
not change the cost). Each preset runs in its own process, so that the peak resident memory
(``resource.getrusage().ru_maxrss``; ``torch.cuda.max_memory_allocated`` on a GPU) is its own.
Also timed: one augmentation of one case (MONAI transforms of data.augmentation).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace

PRESETS = ("single-pvl", "single-macs", "shmn2", "shmn3", "shmn4", "shmn4-star")


def synthetic_batch(shape_zyx: tuple[int, int, int], batch_size: int):
    import torch

    generator = torch.Generator().manual_seed(0)
    image = torch.randn((batch_size, 1, *shape_zyx), generator=generator)
    lesions = (torch.rand((batch_size, 1, *shape_zyx), generator=generator) > 0.995).float()
    return {
        "image": image,
        "pvl": lesions, "density": lesions * 0.5, "has_pvl": torch.tensor([True, False] * (batch_size // 2) + [True] * (batch_size % 2)),
        "ventricles": (image > 1.5).float(), "has_ventricles": torch.tensor([False, True] * (batch_size // 2) + [True] * (batch_size % 2)),
        "macs": torch.tensor([0.0, 1.0] * (batch_size // 2) + [1.0] * (batch_size % 2)), "has_macs": torch.ones(batch_size, dtype=torch.bool),
    }


def measure_one(preset: str, resolution: str, steps: int, batch_size: int, device_name: str, cpu_bf16: bool) -> dict:
    import numpy as np
    import torch

    from shmn import devices
    from shmn.training.config import apply_overrides, preset_config
    from shmn.training.data import augmentation
    from shmn.network.losses import shmn_loss
    from shmn.network.model import SHMN, count_parameters

    config = apply_overrides(preset_config(preset, resolution), {"cpu_bf16": cpu_bf16, "device": device_name}, "bench")
    device = devices.resolve_device(config.device)
    mode = devices.precision(device, config.amp, config.cpu_bf16)
    torch.manual_seed(0)
    model = SHMN(config.network).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = devices.grad_scaler(device, mode)
    batch = {k: v.to(device) for k, v in synthetic_batch(config.grid_spec.shape_zyx, batch_size).items()}
    # Pseudo-labels active from the first step, so SHMN-4* pays for them as it does after t1.
    loss_cfg = replace(config.loss, t1=0.0, t2=1.0) if config.loss.pseudo_labels else config.loss

    def step() -> float:
        tick = time.perf_counter()
        with devices.autocast(device, mode):
            outputs = model(batch["image"])
        loss, _ = shmn_loss({k: v.float() for k, v in outputs.items()}, batch, loss_cfg, epoch=5)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - tick

    warmup = step()
    times = [step() for _ in range(steps)]
    arrays = {"image": np.random.rand(1, *config.grid_spec.shape_zyx).astype(np.float32),
              "brain": np.ones((1, *config.grid_spec.shape_zyx), np.float32),
              "pvl": np.zeros((1, *config.grid_spec.shape_zyx), np.float32)}
    arrays["density"], arrays["ventricles"] = arrays["image"].copy(), arrays["pvl"].copy()
    transforms = augmentation()
    augment_times = []
    for seed in range(5):
        transforms.set_random_state(seed=seed)
        tick = time.perf_counter()
        transforms(dict(arrays))
        augment_times.append(time.perf_counter() - tick)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux
    return {
        "preset": preset, "resolution": resolution, "grid": list(config.grid_spec.size), "base_filters": config.network.base_filters,
        "tasks": list(config.network.tasks), "parameters": count_parameters(model), "batch_size": batch_size,
        "device": str(device), "precision": mode, "threads": torch.get_num_threads(),
        "first_step_s": round(warmup, 3), "step_s_mean": round(float(np.mean(times)), 3), "step_s_min": round(float(np.min(times)), 3),
        "augment_case_s": round(float(np.mean(augment_times)), 3),
        "peak_rss_gb": round(peak_rss_gb, 2),
        "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 2) if device.type == "cuda" else None,
    }


def main() -> int:
    from shmn.training.config import DEVICES

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", default="fast", choices=("tiny", "fast", "paper"))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu", metavar="|".join(DEVICES) + "|cuda:N")
    parser.add_argument("--cpu-bf16", action="store_true", help="bf16 autocast on the CPU (fast on CPUs with bf16 instructions)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure this preset in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.resolution, args.steps, args.batch_size, args.device, args.cpu_bf16)))
        return 0
    rows = []
    for preset in args.presets:
        command = [sys.executable, __file__, "--one", preset, "--resolution", args.resolution, "--steps", str(args.steps),
                   "--batch-size", str(args.batch_size), "--device", args.device] + (["--cpu-bf16"] if args.cpu_bf16 else [])
        done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if done.returncode != 0:
            print(f"{preset}: failed\n{done.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{preset}: {rows[-1]['step_s_mean']} s/step", file=sys.stderr)
    print(f"\nTraining step (fwd + loss + bwd + Adam), batch {args.batch_size}, resolution {args.resolution}, "
          f"{rows[0]['device'] if rows else args.device}, {rows[0]['threads'] if rows else '?'} threads\n")
    print("| preset | tasks | params | precision | step s (mean / min) | first step s | augment s/case | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        gpu = "" if r["peak_gpu_gb"] is None else f" (GPU {r['peak_gpu_gb']})"
        print(f"| {r['preset']} | {'+'.join(r['tasks'])} | {r['parameters']:,} | {r['precision']} | {r['step_s_mean']} / {r['step_s_min']} "
              f"| {r['first_step_s']} | {r['augment_case_s']} | {r['peak_rss_gb']}{gpu} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(rows, stream, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
