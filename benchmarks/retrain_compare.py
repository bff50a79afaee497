"""Issue 12, item 5 in one command: today's recipe and the domain-randomised data engine at the same preset and
budget, each scored on the in-distribution held-out phantoms and on the OOD cohort.

    .venv/bin/python benchmarks/retrain_compare.py --work /tmp/retrain [--budget-epochs 5] [--epochs 9] [--retrain-recipe]

- recipe: the shipped model (Resources/, trained by benchmarks/shipped_model.py: SHMN-4, fast grid, lr 1e-3,
  bf16, 9 epochs x 78 train cases = 702 samples). With --retrain-recipe it is trained again here on this
  cohort for as many samples as the engine's budget run;
- engine: the same config and data plus ``"synthesis": "mixed"`` (every epoch holds the 78 train cases and
  as many freshly synthesised samples) and ``"synthesis_anatomies": ["mni152"]``: the OOD cohort is built on
  the ICBM 2009 anatomy, so the engine must not train on it for the OOD column to stay out of distribution.
  It trains --budget-epochs first (5 = 780 samples, the recipe's budget; its best model is kept as
  ``engine-e<N>``), then the same run goes on to --epochs (9 = 1404 samples);
- the engine's final model is calibrated (`shmn calibrate`, temperature scaling on the run's validation
  split) as ``engine-calibrated.safetensors``;
- then benchmarks/ood_compare.py for each model (cohorts and their preprocessing shared in WORK/cohorts).

Resumable: run the same command again after a stop. Ship the engine's model only if its OOD row is better
(issue 12).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def run(*args: str) -> None:
    subprocess.run([sys.executable, *args], check=True)


def train(config: dict, path: Path, data: list[str], run_dir: Path, cache: Path) -> None:
    path.write_text(json.dumps(config))
    resume = ["--resume"] if (run_dir / "config.json").exists() else []
    run("-m", "shmn", "train", str(path), "--data", *data, "-o", str(run_dir), "--cache", str(cache), *resume)


def main() -> None:
    from shipped_model import TRAIN_CONFIG, with_ground_truth

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--budget-epochs", type=int, default=5, help="the engine's epochs at the recipe's budget (5 mixed epochs = 780 samples)")
    parser.add_argument("--epochs", type=int, default=9, help="the engine's epochs in all (the same run, continued)")
    parser.add_argument("--num-workers", type=int, default=2, help="loader workers of the engine's run")
    parser.add_argument("--retrain-recipe", action="store_true", help="train the recipe again for the budget (default: the shipped model)")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    cohort = work / "cohort"
    if not (cohort / "cohort.json").exists():
        run("-m", "shmn", "phantom", "-o", str(cohort), "--size", "paper", "--seed", "0", "-q")
    data = [str(cohort / "pvl"), str(with_ground_truth(cohort / "macs", "manifest-with-pvl.json", ("pvl",), all_test=False))]
    engine = {**TRAIN_CONFIG, "name": "shmn4-fast-randomised", "synthesis": "mixed", "synthesis_anatomies": ["mni152"],
              "num_workers": args.num_workers}
    budget_model = work / f"engine-e{args.budget_epochs}.safetensors"
    if not budget_model.exists():
        train({**engine, "epochs": args.budget_epochs}, work / "engine.json", data, work / "engine", work / "cache")
        shutil.copyfile(work / "engine" / "model-best.safetensors", budget_model)
    train({**engine, "epochs": args.epochs}, work / f"engine{args.epochs}.json", data, work / "engine", work / "cache")
    calibrated = work / "engine-calibrated.safetensors"
    if not calibrated.exists():
        run("-m", "shmn", "calibrate", str(work / "engine" / "model-best.safetensors"), "--data", *data, "--split", "val",
            "-o", str(calibrated), "--device", "cpu")
    models = {"engine": str(calibrated), "recipe": TRAIN_CONFIG["name"], f"engine-e{args.budget_epochs}": str(budget_model)}
    if args.retrain_recipe:  # the budget's training samples: twice the epochs of real cases alone
        train({**TRAIN_CONFIG, "epochs": 2 * args.budget_epochs, "name": "shmn4-fast-recipe"}, work / "recipe.json", data,
              work / "recipe", work / "cache")
        models["recipe"] = str(work / "recipe" / "model-best.safetensors")
    for i, (tag, model) in enumerate(models.items()):
        extra = [] if i == 0 else ["--skip-baseline"]
        run(str(HERE / "ood_compare.py"), "--work", str(work / "cohorts"), "--model", model, "--tag", tag, *extra)


if __name__ == "__main__":
    main()
