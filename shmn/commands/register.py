"""`shmn register RUN --name NAME --version X.Y.Z [--default]`: make a trained run's model selectable by name.

SHMN Training's "Register model" calls the same function (shmn.io.register_run).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "register",
        help="register a training run's best model so that `shmn predict --model NAME` and SHMN Segmenter can use it",
        description="Copy RUN/model-best.safetensors (else model-last) to <registry folder>/models/NAME-VERSION.safetensors "
                    "and add an entry (sha256, model card, run, evaluation) to the user's model registry "
                    "($SHMN_MODEL_REGISTRY, else ~/.cache/shmn/models.json). An existing NAME@VERSION is never replaced.",
    )
    parser.add_argument("run_dir", metavar="RUN", help="run folder written by `shmn train -o`")
    parser.add_argument("--name", required=True, help="model name (no '@' or '/')")
    parser.add_argument("--version", required=True, help="semantic version, e.g. 1.0.0")
    parser.add_argument("--default", action="store_true", help="make it the default model (SHMN Segmenter's first choice)")
    parser.add_argument("--intended-use", default="", help="replace the card's intended-use statement")
    parser.add_argument("--registry", default=None, metavar="MODELS_JSON", help="registry file (default: the user registry)")
    return parser


def run(args: argparse.Namespace) -> int:
    from shmn.io.register_run import register_run

    entry = register_run(args.run_dir, args.name, args.version, default=args.default,
                         intended_use=args.intended_use, registry_path=args.registry)
    if not getattr(args, "quiet", False):
        default = " (default)" if entry["default"] else ""
        print(f"registered {entry['name']}@{entry['version']}{default}: {entry['file']} sha256 {entry['sha256']}")
    return 0
