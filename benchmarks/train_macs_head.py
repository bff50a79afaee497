"""Give a finished model a MACS classifier that learns (issue 13, item 2): lesion pooling, head-only training.

    python benchmarks/train_macs_head.py --work WORK -o OUT.safetensors --version 2.4.0 [--model shmn4-fast-v2]
        [--samples 800] [--epochs 80]

1. The model's network is copied with ``macs_pooling="lesion"`` (shmn.network.model): every weight but the
   classifier's is kept, so its lesions and ventricles do not change.
2. ``--samples`` fresh MACS-labelled subjects are synthesised (the training data engine, MACS-balanced
   severities, seeds no training run used: epoch tag 5000); each subject's pooled features (plain and
   mirrored) are cached in WORK/features (resumable).
3. FC1 -> ReLU -> FC2 is fitted on the first 90 % with eq. 1's class-balanced BCE; the last 10 % are held
   out. The same split is fitted twice more, with the paper's global average (the first columns of the same
   features) and with the lesion-volume column alone, so the poolings are compared on the same subjects,
   next to the true motor burden's own AUC.
4. The model file is written with a card that records the head's training; its MACS calibration is dropped
   (the head changed): run `shmn calibrate` on it next. WORK/macs-head.json holds the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

FRESH_EPOCH = 5000  # the sample_seed epoch tag: no training run reaches it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry name or file (default: the registry's default)")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--version", required=True, help="the new file's version (same name as the model)")
    parser.add_argument("--samples", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    if args.output.exists():
        sys.exit(f"{args.output}: exists; give another output file (models are never overwritten)")

    import torch

    from shmn.inference.predict import load_predictor
    from shmn.io.atomic import write_json
    from shmn.measures.metrics import macs_metrics
    from shmn.network.model import MacsClassifier
    from shmn.network.model_file import save_model
    from shmn.preprocessing.preprocess import GridSpec
    from shmn.progress import progress_bar
    from shmn.synthesis.randomised.dataset import SynthesisDataset
    from shmn.training.macs_head import (MacsHeadConfig, SynthesisedSubjects, collect_features, fit_macs_head,
                                         with_macs_pooling)

    predictor = load_predictor(args.model)
    network = with_macs_pooling(predictor.network, "lesion")
    grid = GridSpec(predictor.info.grid["spacing_mm"], tuple(predictor.info.grid["size"]))
    dataset = SynthesisDataset(grid, args.samples, seed=args.seed, macs_balanced=True)
    dataset.epoch = FRESH_EPOCH
    features, labels, records = collect_features(
        network, SynthesisedSubjects(dataset), args.work / "features",
        progress=lambda it: progress_bar(it, desc="subjects (synthesis + encoder)", unit="subject"))

    config = MacsHeadConfig(epochs=args.epochs, seed=args.seed)
    history = fit_macs_head(network.macs, features, labels, config)
    width = network.config.filters[-1]
    paper = MacsClassifier(replace(network.config, macs_pooling="mean"))
    paper_history = fit_macs_head(paper, features[..., :width], labels, config)
    volume_only = MacsClassifier(network.config)
    volume_only.fc1 = torch.nn.Linear(1, network.config.macs_hidden)  # the lesion-volume column alone
    volume_history = fit_macs_head(volume_only, features[..., -1:], labels, config)
    n_train = history["n_train"]
    burden = np.array([r["motor_ml"] for r in records])[n_train:]
    held_out = labels[n_train:]
    figures = {
        "subjects": args.samples, "severe_share": round(float(labels.mean()), 3), "head": history,
        "paper_mean_pooling_held_out": paper_history.get("validation"),
        "lesion_volume_column_only_held_out": volume_history.get("validation"),
        "motor_burden_truth_held_out_auc": (macs_metrics(burden / (burden.max() + 1e-6), held_out)["auc"]
                                            if len(set(held_out.tolist())) == 2 else None),
        "config": config.__dict__, "model": f"{predictor.card['name']} {predictor.card['version']}",
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "head"}, indent=1))
    print("lesion pooling, held out:", json.dumps(history.get("validation")))

    card = {k: v for k, v in predictor.card.items() if k not in ("calibration", "network", "metrics")}
    card["version"] = args.version
    card["macs_head"] = {"pooling": "lesion", "trained": "head only, encoder and decoders frozen (benchmarks/train_macs_head.py)",
                         "from": figures["model"], "subjects": args.samples, "epochs": args.epochs,
                         "held_out": history.get("validation"), "paper_mean_pooling_held_out": figures["paper_mean_pooling_held_out"]}
    card["training_data"] = f"{predictor.card.get('training_data', '')}; MACS head: {args.samples} fresh synthesised subjects"
    save_model(args.output, network, card)
    write_json(args.work / "macs-head.json", figures)
    print(f"wrote {args.output}; calibrate it next (shmn calibrate)")


if __name__ == "__main__":
    main()
