"""`shmn benchmark`: the ablation table (paper Table 1) on a cohort."""

from __future__ import annotations

import argparse
from pathlib import Path

from shmn.contract import RESOLUTIONS, TASK_PRESETS  # torch-free (not training.config): `shmn --help` stays fast
from shmn.errors import ShmnError
from shmn.commands.options import add_data_option, add_device_option


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "benchmark", help="train and evaluate the six task presets over several seeds (paper Table 1)",
        description="Writes OUT/benchmark.md and OUT/benchmark.json (mean ± sd over seeds). Resumable: "
        "run the same command again after an interruption.")
    add_data_option(parser, help="dataset manifests (e.g. COHORT/pvl COHORT/macs)")
    parser.add_argument("-o", "--out", required=True, help="output folder (runs, cache, table)")
    parser.add_argument("--presets", nargs="+", default=list(TASK_PRESETS), metavar="PRESET", help=f"default: all of {', '.join(TASK_PRESETS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--resolution", default="fast", choices=sorted(RESOLUTIONS))
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the preset's)")
    add_device_option(parser)
    parser.add_argument("--config", metavar="JSON", help='config fields applied to every run, e.g. {"lr": 0.001, "cpu_bf16": true} '
                        "(not preset, resolution or seed: the benchmark sets those)")
    return parser


def _read_overrides(path: str | None) -> dict:
    from shmn.training.config import apply_overrides, preset_config, read_config_file

    if path is None:
        return {}
    data = read_config_file(Path(path))
    owned = sorted(set(data) & {"preset", "resolution", "seed"})
    if owned:
        raise ShmnError(f"{path}: {', '.join(owned)} cannot be set here; the benchmark sets them (use --presets, --resolution, --seeds)")
    apply_overrides(preset_config(), data, path)  # so that an error names the file
    return data


def run(args: argparse.Namespace) -> int:
    from shmn.devices import resolve_device
    from shmn.training.benchmark import BenchmarkConfig, run_benchmark

    resolve_device(args.device)
    unknown = [p for p in args.presets if p not in TASK_PRESETS]
    if unknown:
        raise ShmnError(f"--presets: unknown {', '.join(unknown)}; expected some of {', '.join(TASK_PRESETS)}")
    if args.epochs is not None and args.epochs < 1:
        raise ShmnError("--epochs: must be at least 1")
    config = BenchmarkConfig(presets=tuple(args.presets), seeds=tuple(args.seeds), resolution=args.resolution,
                             epochs=args.epochs, device=args.device, overrides=_read_overrides(args.config))
    report = run_benchmark(args.data, args.out, config, progress=not args.quiet,
                           log=(lambda *_: None) if args.quiet else print)
    from shmn.training.benchmark import markdown

    print(markdown(report))
    print(f"table: {args.out}/benchmark.md  data: {args.out}/benchmark.json")
    return 0
