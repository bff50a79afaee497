"""How the shipped demo model is trained and measured (prints figures; not a test).

    python benchmarks/shipped_model.py train    --work /tmp/shipped   # cohort seed 0 -> shmn train
    python benchmarks/shipped_model.py evaluate --work /tmp/heldout --model shmn4-fast-phantom

Training data: the default phantom cohort (seed 0, 24 PVL-labelled + 87 MACS-labelled subjects,
25 ventricle masks). For the demo model the MACS dataset's cases also get their phantom PVL masks
(a copy of the manifest, `manifest-with-pvl.json`): 17 PVL-labelled training cases are too few to
learn lesions within a CPU budget. Evaluation: a fresh cohort (seed 100, never used in training)
whose every case carries its phantom ground truth and is held out. Synthetic data only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TRAIN_CONFIG = {"preset": "shmn4", "resolution": "fast", "epochs": 40, "lr": 0.001, "cpu_bf16": True,
                "name": "shmn4-fast-phantom", "version": "1.0.0"}


def with_ground_truth(dataset: Path, name: str, kinds: tuple[str, ...], all_test: bool) -> Path:
    """A copy of ``dataset``'s manifest whose cases also point at their hidden phantom ground truth."""
    manifest = json.loads((dataset / "manifest.json").read_text())
    for case in manifest["cases"]:
        for kind in kinds:
            truth = dataset / "groundtruth" / kind / f"{case['id']}.nii.gz"
            if case.get(kind) is None and truth.exists():
                case[kind] = str(truth.relative_to(dataset))
        if all_test:
            case["split"] = "test"
    manifest["description"] += f" Copy with phantom ground truth for: {', '.join(kinds)}."
    path = dataset / name
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path


def shmn(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "shmn", *args], check=True)


def train(work: Path) -> None:
    cohort = work / "cohort"
    if not (cohort / "cohort.json").exists():
        shmn("phantom", "-o", str(cohort), "--size", "paper", "--seed", "0")
    macs = with_ground_truth(cohort / "macs", "manifest-with-pvl.json", ("pvl",), all_test=False)
    config = work / "shmn4-fast.json"
    config.write_text(json.dumps(TRAIN_CONFIG))
    run = work / "run"
    resume = ["--resume"] if (run / "config.json").exists() else []
    shmn("train", str(config), "--data", str(cohort / "pvl"), str(macs), "-o", str(run), "--cache", str(work / "cache"), *resume)


def evaluate(work: Path, model: str) -> None:
    cohort = work / "cohort"
    if not (cohort / "cohort.json").exists():
        shmn("phantom", "-o", str(cohort), "--size", "paper", "--seed", "100", "--n-pvl", "12", "--n-macs", "36",
             "--n-ventricle-labels", "10")
    manifests = [with_ground_truth(cohort / d, "manifest-full-truth.json", ("pvl", "ventricles"), all_test=True)
                 for d in ("pvl", "macs")]
    shmn("evaluate", model, "--data", *map(str, manifests), "--split", "test", "-o", str(work / "metrics.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("train", "evaluate"))
    parser.add_argument("--work", type=Path, required=True, help="folder for the cohort, run and metrics")
    parser.add_argument("--model", default="shmn4-fast-phantom", help="registry name, run folder or .safetensors (evaluate)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    train(args.work) if args.step == "train" else evaluate(args.work, args.model)


if __name__ == "__main__":
    main()
