"""`shmn evaluate RUN_DIR_OR_MODEL --data MANIFEST...`: metrics on a held-out split, as JSON and a table."""

from __future__ import annotations

import argparse
import json

from shmn.contract import evaluation_file_name
from shmn.io.manifest import SPLITS
from shmn.commands.options import add_boundary_option, add_data_option, add_device_option, add_tta_option


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a trained model on a split of one or more datasets",
        description=(
            "Run a model (a run folder's best model, a .safetensors file or a registered model name) on the cases "
            "of a split and compare with their labels on each case's native grid: PVL Dice, HD95, lesion-wise F1, "
            "absolute volume difference; ventricle Dice; MACS accuracy, F1, AUC, ECE of the network head and of the "
            "motor-burden estimate (the primary one). Prints a markdown table."
        ),
    )
    parser.add_argument("model", metavar="RUN_DIR_OR_MODEL", help="run folder, model file or registered model name")
    add_data_option(parser)
    parser.add_argument("--split", default="test", choices=SPLITS, help="which cases (default: test)")
    parser.add_argument("-o", "--output", metavar="METRICS_JSON",
                        help="metrics file to write (default: RUN_DIR/evaluation-<split>.json for a run folder, none otherwise)")
    parser.add_argument("--cache", metavar="DIR", help="preprocessing cache folder (the format of `shmn train --cache`): "
                        "models with the same preprocessing evaluated on one cohort preprocess each case once")
    add_boundary_option(parser)
    add_tta_option(parser, "as shmn predict, each case also run left-right mirrored and the two passes averaged")
    add_device_option(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from shmn.io.atomic import write_json
    from shmn.training.evaluate import evaluate, markdown_table

    results = evaluate(args.model, args.data, split=args.split, device=args.device, progress=not args.quiet,
                       cache_dir=args.cache, native_boundary=args.boundary == "native", tta=args.tta)
    output = args.output or (Path(args.model) / evaluation_file_name(args.split) if Path(args.model).is_dir() else None)
    print(f"{results['model']['name']} {results['model']['version']} on {len(results['cases'])} {args.split} cases "
          f"(compared on the native grid; boundaries: {results['boundary']}"
          f"{'; mirrored pass averaged in' if args.tta else '; one pass (--no-tta)'})\n")
    print(markdown_table(results["summary"]))
    if output:
        write_json(output, json.loads(json.dumps(results, allow_nan=True)))
        print(f"\nmetrics: {output}")
    return 0
