"""`shmn benchmark`: the ablation table (paper Table 1) on a cohort."""

from __future__ import annotations

import argparse

from shmn.config import RESOLUTION_PRESETS, TASK_PRESETS
from shmn.errors import ShmnError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "benchmark", help="train and evaluate the six task presets over several seeds (paper Table 1)",
        description="Writes OUT/benchmark.md and OUT/benchmark.json (mean ± sd over seeds). Resumable: "
        "run the same command again after an interruption.")
    parser.add_argument("--data", nargs="+", required=True, metavar="MANIFEST", help="dataset manifests (e.g. COHORT/pvl COHORT/macs)")
    parser.add_argument("-o", "--out", required=True, help="output folder (runs, cache, table)")
    parser.add_argument("--presets", nargs="+", default=list(TASK_PRESETS), metavar="PRESET", help=f"default: all of {', '.join(TASK_PRESETS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--resolution", default="fast", choices=sorted(RESOLUTION_PRESETS))
    parser.add_argument("--epochs", type=int, help="epochs per run (default: the preset's)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    return parser


def run(args: argparse.Namespace) -> int:
    from shmn.benchmark import BenchmarkConfig, run_benchmark

    unknown = [p for p in args.presets if p not in TASK_PRESETS]
    if unknown:
        raise ShmnError(f"--presets: unknown {', '.join(unknown)}; expected some of {', '.join(TASK_PRESETS)}")
    if args.epochs is not None and args.epochs < 1:
        raise ShmnError("--epochs: must be at least 1")
    config = BenchmarkConfig(presets=tuple(args.presets), seeds=tuple(args.seeds), resolution=args.resolution,
                             epochs=args.epochs, device=args.device)
    report = run_benchmark(args.data, args.out, config, progress=not args.quiet,
                           log=(lambda *_: None) if args.quiet else print)
    from shmn.benchmark import markdown

    print(markdown(report))
    print(f"table: {args.out}/benchmark.md  data: {args.out}/benchmark.json")
    return 0
