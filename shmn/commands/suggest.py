"""`shmn suggest DATASET --model NAME [-n 10]`: which unlabelled cases to label next (active learning)."""

from __future__ import annotations

import argparse
from shmn.commands.options import add_device_option


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "suggest",
        help="rank the cases missing a label by how much labelling them would teach the model",
        description=(
            "For every case of DATASET missing a PVL mask, a ventricle mask or a MACS group: run the model on the image "
            "and on its left-right mirror and score the uncertainty of the PVL and ventricle maps inside the brain, the "
            "instability of their pseudo-labels under mirroring, and how close p(severe) is to 0.5 (only the measures of "
            "the missing labels count). Writes DATASET/suggestions.json and prints the top N."
        ),
    )
    parser.add_argument("dataset", metavar="DATASET", help="dataset folder with manifest.json (or the manifest file)")
    parser.add_argument("--model", default=None, metavar="NAME|PATH", help="registered model name (name@version) or a .safetensors file; default: the registry's default model")
    parser.add_argument("-n", type=int, default=10, metavar="N", help="how many cases to suggest (default 10)")
    add_device_option(parser, help="where to run the network: auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--no-register", action="store_true", help="the images are already in MNI152 space: skip the registration")
    return parser


def run(args: argparse.Namespace) -> int:
    from shmn.inference.suggest import SUGGESTIONS_FILE, SuggestOptions, suggest
    from shmn.io.manifest import manifest_path

    from shmn.devices import resolve_device

    resolve_device(args.device)  # a wrong or absent device fails before any case is read
    quiet = bool(getattr(args, "quiet", False))
    options = SuggestOptions(device=args.device, register=not args.no_register)
    result = suggest(args.dataset, args.model, n=args.n, options=options, progress=not quiet)
    if not quiet:
        print(f"{'rank':>4}  {'case':<24} {'score':>6}  missing            why")
        for row in result["ranking"][: args.n]:
            print(f"{row['rank']:>4}  {row['id']:<24} {row['score']:>6.3f}  {','.join(row['missing']):<18} {'; '.join(row['reasons'])}")
        print(f"ranking of {len(result['ranking'])} case(s): {manifest_path(args.dataset).parent / SUGGESTIONS_FILE}")
    return 0
