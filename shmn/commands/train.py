"""`shmn train CONFIG_OR_PRESET --data MANIFEST... -o RUN_DIR`: train or resume an SHMN model.

Several GPUs or nodes: ``torchrun --nproc_per_node N -m shmn train ...`` (same options).
"""

from __future__ import annotations

import argparse

from shmn.contract import RESOLUTIONS, TASK_PRESETS  # torch-free (not training.config): `shmn --help` stays fast
from shmn.commands.options import add_data_option, add_device_option


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train (or --resume) a model on one or more dataset manifests",
        description=(
            "Train SHMN. CONFIG_OR_PRESET is a task preset (" + ", ".join(TASK_PRESETS) + "), optionally with a "
            "resolution ('shmn4:fast'), or a JSON file of config fields, e.g. "
            '{"preset": "shmn4", "resolution": "fast", "epochs": 30, "loss": {"macs_epsilon": 0.5}}. '
            "Writes RUN_DIR/model-best.safetensors, model-last.safetensors, metrics.jsonl, curves.png and a "
            "resumable checkpoint; prints one 'SHMN-EPOCH {json}' line per epoch. --init-model fine-tunes: the run "
            "starts from that model's weights (same preset and resolution) and its model card says so. For several GPUs or nodes "
            "launch it with torchrun: torchrun --nproc_per_node N -m shmn train ..."
        ),
    )
    parser.add_argument("config", metavar="CONFIG_OR_PRESET", help="preset[:resolution] or a JSON config file")
    add_data_option(parser)
    parser.add_argument("-o", "--output", required=True, metavar="RUN_DIR", help="run folder (must not hold a run, unless --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR after its last completed epoch")
    parser.add_argument("--epochs", type=int, help="number of epochs (may be raised when resuming)")
    parser.add_argument("--init-model", metavar="MODEL",
                        help="start from this model's weights instead of a random initialisation (fine-tuning): a registered "
                             "name, name@version or a .safetensors file of the same preset and resolution")
    add_device_option(parser, default=None, help="auto (CUDA when present), cpu, cuda (under torchrun: LOCAL_RANK's GPU) or cuda:N")
    parser.add_argument("--resolution", choices=RESOLUTIONS, help="model grid and network width preset")
    parser.add_argument("--cache", metavar="DIR", help="preprocessing cache folder (default RUN_DIR/cache); share it between runs")
    parser.add_argument("--seed", type=int, help="random seed (initialisation, data order, augmentation)")
    parser.add_argument("--batch-size", type=int, help="cases per batch and per process (default 2)")
    parser.add_argument("--num-workers", type=int, help="data loader worker processes (default 0)")
    parser.add_argument("--synthesis", choices=("off", "on-the-fly", "mixed"),
                        help="train on images synthesised on the fly from label maps (domain randomisation), alone or mixed with the manifests' cases")
    parser.add_argument("--synthesis-samples", type=int, metavar="N", help="synthesised samples per epoch (default: as many as train cases, at least 8)")
    return parser


def run(args: argparse.Namespace) -> int:
    from shmn.devices import parse_device
    from shmn.training.config import load_config
    from shmn.training.train import train

    if args.device is not None:
        parse_device(args.device)  # named as the option it came from (a config file's is checked in load_config)

    overrides = {
        key: value
        for key, value in {
            "resolution": args.resolution, "epochs": args.epochs, "device": args.device, "seed": args.seed,
            "batch_size": args.batch_size, "num_workers": args.num_workers,
            "synthesis": args.synthesis, "synthesis_samples": args.synthesis_samples, "init_model": args.init_model,
        }.items()
        if value is not None
    }
    config = load_config(args.config, overrides)
    if args.init_model is not None and not args.resume:
        from shmn.training.initial_weights import load_initial_weights

        # Checked here, named as the option, before train() claims or writes anything (train() loads it again).
        load_initial_weights(args.init_model, config.network, option="--init-model")
    summary = train(config, args.data, args.output, resume=args.resume, progress=not args.quiet, cache_dir=args.cache)
    if summary["rank"] != 0:
        return 0
    print(f"run:        {summary['run_dir']} ({summary['epochs_completed']} epochs, {summary['device']}, {summary['precision']})")
    best = summary["best_epoch"]
    print(f"best model: {summary['best_model']} (epoch {best}, loss {summary['best_loss']:.4f})" if best else "best model: none (no epoch completed)")
    print(f"last model: {summary['last_model']}")
    print(f"curves:     {summary['curves']}")
    print(f"metrics:    {summary['metrics_log']}")
    return 0
