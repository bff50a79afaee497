"""Put a trained model into Resources/ as the shipped default, with its measured figures (not a test).

    python benchmarks/ship_model.py MODEL.safetensors --comparison WORK/cohorts/comparison-TAG.json \
        --training-data "..." [--keep-default]

Copies the weights to ``Resources/<name>-<version>.safetensors`` (refusing to overwrite), and writes its
``Resources/models.json`` entry (written atomically): the card's identity, grid and tasks, the training
data text, the in-distribution and OOD rows of ``benchmarks/ood_compare.py``'s comparison, the card's
calibration (method, ECE before/after), and ``"default": true`` (every other entry loses it unless
--keep-default). The weights must stay under 25 MB (issue 13).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

MAX_WEIGHTS_MB = 25.0


def main() -> None:
    from shmn.io.atomic import write_json
    from shmn.io.digest import sha256_of
    from shmn.io.model_card import read_card
    from shmn.io.registry import shipped_registry_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--comparison", type=Path, required=True, help="ood_compare's comparison-TAG.json")
    parser.add_argument("--tag", required=True, help="the model's row tag in the comparison")
    parser.add_argument("--training-data", required=True)
    parser.add_argument("--recipe", default=None, help="the command that trains the model (stored in its registry entry)")
    parser.add_argument("--keep-default", action="store_true")
    args = parser.parse_args()
    size_mb = args.model.stat().st_size / 1e6
    if size_mb > MAX_WEIGHTS_MB:
        sys.exit(f"{args.model}: {size_mb:.1f} MB; shipped weights must stay under {MAX_WEIGHTS_MB:.0f} MB")
    card = read_card(args.model)
    registry = shipped_registry_path()
    target = registry.parent / f"{card['name']}-{card['version'].replace('+', '-')}.safetensors"  # no '+' in a file name (URLs)
    if target.exists():
        sys.exit(f"{target}: already shipped; give the model another version")
    comparison = json.loads(args.comparison.read_text(encoding="utf-8"))
    rows = {key.split(" | ")[1]: value for key, value in comparison.items() if key.split(" | ")[0] == args.tag}
    if set(rows) != {"in-distribution", "ood"}:
        sys.exit(f"{args.comparison}: no in-distribution and ood rows for tag {args.tag!r}")
    calibration = card.get("calibration") or {}
    entries = json.loads(registry.read_text(encoding="utf-8"))["models"]
    if not args.keep_default:
        for entry in entries:
            entry["default"] = False
    shutil.copyfile(args.model, target)
    entries.insert(0, {
        "name": card["name"],
        "version": card["version"],
        "file": target.name,
        "sha256": sha256_of(target),
        "preset": card["preset"],
        "resolution": card["resolution"],
        "grid": card["grid"],
        "tasks": card["tasks"],
        "input": {"grid": f"MNI152, {card['grid']['spacing_mm']:g} mm, {'x'.join(map(str, card['grid']['size']))} (x,y,z), after brain "
                          "extraction, affine registration, N4 and brain normalisation",
                  "accepts": "any 3D T2 FLAIR (NIfTI, NRRD, MHA/MHD, DICOM folder)"},
        "training_data": args.training_data,
        "metrics": {
            "in_distribution_phantoms_seed101": rows["in-distribution"],
            "ood_cohort_seed0": rows["ood"],
            "macs_calibration": {k: calibration.get(k) for k in ("method", "parameters", "split", "n_cases", "n_severe", "ece_before", "ece_after", "nll_before", "nll_after")
                                 if k in calibration} or None,
            "measured_by": f"python benchmarks/ood_compare.py (comparison file {args.comparison.name}); synthetic data only",
        },
        **({"recipe": args.recipe} if args.recipe else {}),
        "intended_use": "Demonstration and software testing on synthetic data. Not validated on patients; not for clinical use.",
        "default": not args.keep_default,
    })
    write_json(registry, {"models": entries})
    print(f"shipped {card['name']} {card['version']} -> {target} ({size_mb:.1f} MB); {registry} updated")


if __name__ == "__main__":
    main()
