"""Train the 1 mm lesion refiner (shmn.network.refiner) and write its model file: bank, then training.

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \
    .venv/bin/python benchmarks/train_lesion_refiner.py --work /tmp/refiner --samples 120 --steps 1500 [--no-prior] [--resume]

1. Bank (WORK/bank, resumable, shmn.training.refiner_bank): domain-randomised MNI152 samples at 1 mm
   (ICBM 2009 held out for the OOD cohort), cut to the periventricular box, with the stage-1 prior of the
   registry's default model (its sha256 goes into the card).
2. Training (WORK/cascade or WORK/patch-only, resumable: shmn.training.refiner_train).
3. The model file (default WORK/<run>.safetensors; --out PATH), written atomically with its card.
Link a trained cascade to the default model with `--link Resources/models.json --out Resources/NAME.safetensors`
(the registry entry's "lesion_refiner": {"file", "sha256"}).
Everything is synthetic: the card says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from shmn.errors import ShmnError
from shmn.io.atomic import write_json
from shmn.network.refiner import save_refiner
from shmn.progress import progress_bar
from shmn.training.refiner_bank import SEED_OFFSET, build_bank, default_spec, shipped_stage1
from shmn.training.refiner_train import RefinerTrainConfig, load_bank, train_refiner


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path, help="folder for the bank, the run and the model file")
    parser.add_argument("--samples", type=int, default=120, help="bank samples (default 120)")
    parser.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    parser.add_argument("--patch", type=int, default=48, help="patch edge in 1 mm voxels, a multiple of 16 (default 48)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--no-prior", action="store_true", help="the patch-only alternative: no stage-1 prior channel")
    parser.add_argument("--resume", action="store_true", help="continue a killed run in --work")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stage1-model", default=None,
                        help="the 2 mm model whose probability is the prior (registry name or .safetensors; default: the default model)")
    parser.add_argument("--bank-only", action="store_true", help="build the bank and stop")
    parser.add_argument("--out", type=Path, default=None, help="model file (default WORK/<run>.safetensors)")
    parser.add_argument("--name", default=None, help="the refiner's name in its card")
    parser.add_argument("--link", type=Path, default=None, metavar="REGISTRY",
                        help="after training, link the cascade to REGISTRY's default model (its 'lesion_refiner' entry); "
                             "the model file must lie in REGISTRY's folder")
    args = parser.parse_args(argv)
    if args.patch % 16 or args.patch < 16:
        parser.error(f"--patch {args.patch}: expected a multiple of 16")
    if args.samples < 1 or args.steps < 1:
        parser.error("--samples and --steps: expected positive numbers")
    return args


def card(args: argparse.Namespace, config: RefinerTrainConfig, spec, record: dict, name: str) -> dict:
    return {
        "name": name, "version": "1.0.0", "window": None,  # the whole box as one window (batch norm)
        "stage1_sha256": spec.stage1_sha256 if config.use_prior else None,
        "bank_stage1_sha256": spec.stage1_sha256,
        "training_data": (f"SYNTHETIC ONLY: {args.samples} domain-randomised MNI152 samples at 1 mm "
                          f"(shmn.synthesis.randomised, seeds {SEED_OFFSET}..{SEED_OFFSET + args.samples - 1}; ICBM 2009 held out), "
                          "cut to the periventricular box; prior: the 2 mm default model on the 2x average-pooled image"),
        "recipe": {**config.to_json(), "loss": "MONAI DiceCELoss (sigmoid)", "optimiser": "Adam",
                   "augmentation": "MONAI left-right flip; intensity scale/shift/gamma/noise on the image channel",
                   "command": "benchmarks/train_lesion_refiner.py " + " ".join(sys.argv[1:])},
        "training": record,
        "intended_use": "Demonstration and software testing on synthetic data. Not validated on patients; not for clinical use.",
    }


def link_refiner(registry: Path, refiner: Path, sha256: str, stage1_sha256: str) -> dict:
    """Set the default entry's "lesion_refiner" of ``registry`` (written atomically); it must be the refiner's stage 1."""
    from shmn.io.registry import read_registry

    models = read_registry(registry)
    defaults = [entry for entry in models if entry.get("default")]
    if not defaults:
        raise ShmnError(f"{registry}: no default model to link the refiner to")
    if defaults[-1]["sha256"] != stage1_sha256:
        raise ShmnError(f"{registry}: the default model {defaults[-1]['name']} is not the refiner's stage 1 (sha256 {stage1_sha256})")
    try:
        file = refiner.resolve().relative_to(registry.resolve().parent).as_posix()
    except ValueError:
        raise ShmnError(f"--link {registry}: the refiner {refiner} must lie in the registry's folder") from None
    defaults[-1]["lesion_refiner"] = {"file": file, "sha256": sha256}
    write_json(registry, {"models": models})
    return defaults[-1]["lesion_refiner"]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    try:
        stage1, sha256 = shipped_stage1(args.stage1_model)
        spec = default_spec(sha256)
        bar = lambda items: progress_bar(items, file=sys.stderr, desc="bank", unit="sample")  # noqa: E731
        paths = build_bank(args.work / "bank", args.samples, spec, stage1, progress=bar)
        if args.bank_only:
            return 0
        config = RefinerTrainConfig(steps=args.steps, batch=args.batch, patch=args.patch, lr=args.lr, use_prior=not args.no_prior)
        run = "patch-only" if args.no_prior else "cascade"
        network, record = train_refiner(load_bank(paths), config, args.work / run, resume=args.resume)
        name = args.name or f"lesion-refiner-{run}"
        out = args.out or args.work / f"{name}.safetensors"
        digest = save_refiner(out, network, config.network, spec.box, card(args, config, spec, record, name))
        write_json(args.work / f"{run}.json", {"file": str(out), "sha256": digest, **record})
        print(json.dumps({"file": str(out), "sha256": digest, **record}))
        if args.link is not None:
            if args.no_prior:
                raise ShmnError("--link: only the cascade (with its prior) is linked to the 2 mm model")
            print(json.dumps({"linked": link_refiner(args.link, out, digest, spec.stage1_sha256)}))
    except ShmnError as exc:
        print(f"train_lesion_refiner: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
