"""Issue 12, item 5 in one command: today's recipe and the domain-randomised data engine at the same preset and
budget, each scored on the in-distribution held-out phantoms and on the OOD cohort.

    .venv/bin/python benchmarks/retrain_compare.py --work /tmp/retrain [--epochs 5] [--num-workers 2] [--retrain-recipe]

- recipe: the shipped model (Resources/, trained by benchmarks/shipped_model.py: SHMN-4, fast grid, lr 1e-3,
  bf16, 9 epochs x 78 train cases = 702 samples). With --retrain-recipe it is trained again here on this
  cohort for as many samples as the engine's run;
- engine: the same config and data plus ``"synthesis": "mixed"`` (every epoch holds the train cases and as
  many freshly synthesised samples: 5 epochs = 780 samples, the recipe's budget) and
  ``"synthesis_anatomies": ["mni152"]``: the OOD cohort is built on the ICBM 2009 anatomy, so the engine must
  not train on it for the OOD column to stay out of distribution;
- then benchmarks/ood_compare.py for each model (cohorts and their preprocessing shared in WORK/cohorts).

Resumable: run the same command again after a stop. Ship the engine's model only if its OOD row is better
(issue 12).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def run(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True)


def main() -> None:
    from shipped_model import TRAIN_CONFIG, with_ground_truth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--epochs", type=int, default=5, help="the engine's epochs (5 mixed epochs = 780 samples, the shipped recipe's 702)")
    parser.add_argument("--num-workers", type=int, default=2, help="loader workers of the engine's run")
    parser.add_argument("--synthesis", default="mixed", choices=("mixed", "on-the-fly"))
    parser.add_argument("--retrain-recipe", action="store_true", help="train the recipe again for as many samples (default: the shipped model)")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    cohort = work / "cohort"
    if not (cohort / "cohort.json").exists():
        run("-m", "shmn", "phantom", "-o", str(cohort), "--size", "paper", "--seed", "0", "-q")
    macs = with_ground_truth(cohort / "macs", "manifest-with-pvl.json", ("pvl",), all_test=False)
    recipes = {
        "engine": {**TRAIN_CONFIG, "epochs": args.epochs, "name": "shmn4-fast-randomised", "synthesis": args.synthesis,
                   "synthesis_anatomies": ["mni152"], "num_workers": args.num_workers},
    }
    if args.retrain_recipe:  # as many training samples (and steps) as the engine's run
        recipes["recipe"] = {**TRAIN_CONFIG, "epochs": args.epochs * (2 if args.synthesis == "mixed" else 1), "name": "shmn4-fast-recipe"}
    for tag, config in recipes.items():
        path = work / f"{tag}.json"
        path.write_text(json.dumps(config))
        run_dir = work / tag
        resume = ["--resume"] if (run_dir / "config.json").exists() else []
        run("-m", "shmn", "train", str(path), "--data", str(cohort / "pvl"), str(macs), "-o", str(run_dir),
            "--cache", str(work / "cache"), *resume)
    models = {tag: str(work / tag / "model-best.safetensors") for tag in recipes}
    models.setdefault("recipe", TRAIN_CONFIG["name"])  # the shipped model, by its registry name
    for i, (tag, model) in enumerate(models.items()):
        extra = [] if i == 0 else ["--skip-baseline"]
        run(str(HERE / "ood_compare.py"), "--work", str(work / "cohorts"), "--model", model, "--tag", tag, *extra)


if __name__ == "__main__":
    main()
