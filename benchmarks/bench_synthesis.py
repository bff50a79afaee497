"""Throughput of the on-the-fly synthesis (shmn.synthesis.randomised) against the training step it feeds.

    .venv/bin/python benchmarks/bench_synthesis.py [--grids fast paper] [--workers 1 2] [--samples 8] [--cpu-bf16]

For each grid and worker count: samples per second drawn through the trainer's own path (a
SynthesisDataset in a torch DataLoader with that many background workers, batch 1, after the
anatomies are prepared and the workers started; the first sample of each worker is not counted).
Then the time of one SHMN-4 training step (forward + loss + backward + Adam, batch 2) at the fast
grid on synthesised samples, for comparison: the data engine keeps up when
samples/s >= batch size / step time. The paper grid's step is a GPU job and is not timed here.
"""

from __future__ import annotations

import argparse
import json
import time


def throughput(grid_name: str, workers: int, samples: int) -> dict:
    from torch.utils.data import DataLoader

    from shmn.preprocessing.preprocess import GRIDS
    from shmn.synthesis.randomised.dataset import SynthesisDataset
    from shmn.synthesis.randomised.sampler import SynthesisConfig, warm_up
    from shmn.training.data import collate

    grid = GRIDS[grid_name]
    tick = time.perf_counter()
    warm_up(grid, SynthesisConfig())
    prepare_s = time.perf_counter() - tick
    dataset = SynthesisDataset(grid, samples + workers, seed=0)
    loader = DataLoader(dataset, batch_size=1, num_workers=workers, collate_fn=collate)
    stream = iter(loader)
    for _ in range(workers):  # each worker's first sample: start-up, not throughput
        next(stream)
    tick = time.perf_counter()
    for _ in range(samples):
        next(stream)
    seconds = time.perf_counter() - tick
    return {"grid": grid_name, "workers": workers, "samples": samples, "samples_per_s": round(samples / seconds, 3),
            "seconds_per_sample": round(seconds / samples, 3), "anatomy_preparation_s": round(prepare_s, 1)}


def train_step(grid_name: str, cpu_bf16: bool, steps: int = 3) -> dict:
    import torch

    from shmn.network.losses import shmn_loss
    from shmn.network.model import SHMN
    from shmn.synthesis.randomised.dataset import SynthesisDataset
    from shmn.training import distributed
    from shmn.training.config import load_config
    from shmn.training.data import collate

    config = load_config(f"shmn4:{grid_name}", {"device": "cpu", "cpu_bf16": cpu_bf16})
    device = distributed.resolve_device("cpu")
    mode = distributed.precision(device, config.amp, config.cpu_bf16)
    dataset = SynthesisDataset(config.grid_spec, 2, seed=0)
    batch = collate([dataset[0], dataset[1]])
    torch.manual_seed(0)
    model = SHMN(config.network)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    times = []
    for _ in range(steps + 1):
        tick = time.perf_counter()
        with distributed.autocast(device, mode):
            outputs = model(batch["image"])
        loss, _ = shmn_loss({k: v.float() for k, v in outputs.items()}, batch, config.loss, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - tick)
    step = sorted(times[1:])[len(times[1:]) // 2]
    return {"grid": grid_name, "preset": "shmn4", "batch_size": 2, "precision": mode, "step_s": round(step, 3),
            "samples_needed_per_s": round(2 / step, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", default=["fast", "paper"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--samples", type=int, default=8, help="samples timed per setting (paper grid: a quarter)")
    parser.add_argument("--cpu-bf16", action="store_true", help="time the training step with bf16 autocast")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    for grid in args.grids:
        for workers in args.workers:
            n = args.samples if grid != "paper" else max(2, args.samples // 4)
            rows.append(throughput(grid, workers, n))
            print(json.dumps(rows[-1]), flush=True)
    rows.append(train_step("fast", args.cpu_bf16))
    print(json.dumps(rows[-1]), flush=True)
    print("\n| grid | workers | samples/s | s/sample |\n|---|---|---|---|")
    for row in rows[:-1]:
        print(f"| {row['grid']} | {row['workers']} | {row['samples_per_s']} | {row['seconds_per_sample']} |")
    step = rows[-1]
    print(f"\nSHMN-4 training step at the fast grid, batch 2 ({step['precision']}): {step['step_s']} s "
          f"-> the loader must deliver {step['samples_needed_per_s']} samples/s")
    if args.json:
        from pathlib import Path

        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
