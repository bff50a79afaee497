"""What a perfect model could score on the out-of-distribution cohort, through SHMN's own pipeline.

    .venv/bin/python benchmarks/ood_ceiling.py --work /tmp/ood-compare [--json FILE]

Run after benchmarks/ood_compare.py (it reuses WORK/ood and the preprocessing cache WORK/cache):

- segmentation at the 2 mm model grid: each case's reference mask is carried onto the model grid through
  the case's own registration (linear: the share of each 2 mm voxel it covers), back onto the native grid
  the way `shmn predict` carries probabilities (linear), and thresholded at 0.5: the Dice a model that is
  perfect on its 2 mm grid would get. Lesion figures are over the cases that have lesions (the evaluation
  scores a lesion-free case 1 or 0, whichever a model does there);
- MACS: the cohort's own severity score (from its generator's record: motor-box lesion mL / 1.5 +
  ventricular growth mm / 4 + lesion mL / 15) ranked against the observed groups, which carry the
  generator's random label flips: the AUC and the accuracy no estimate can beat on these labels.

It separates what the grid and the labels cost from what the model gets wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 2.0 * float((a & b).sum()) / total if total else 1.0


def grid_ceiling(item: dict, key: str) -> float | None:
    from shmn.preprocessing.preprocess import to_native

    if item[key] is None:
        return None
    case, native = item["case"], item["native"]
    truth = np.asarray(item[key]) > 0
    truth_image = sitk.GetImageFromArray(truth.astype(np.float32))
    truth_image.CopyInformation(native)
    on_grid = sitk.GetArrayFromImage(sitk.Resample(truth_image, case.reference, case.transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    back = sitk.GetArrayFromImage(to_native(on_grid.astype(np.float32), case, native, interpolation="linear")) >= 0.5
    return dice(truth, back)


def auc(labels: list[bool], scores: list[float]) -> float:
    y, s = np.array(labels, bool), np.array(scores, float)
    pos, neg = s[y][:, None], s[~y][None, :]
    return float(((pos > neg) + 0.5 * (pos == neg)).mean())


def main() -> None:
    from ood_compare import preprocessed_cases

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="benchmarks/ood_compare.py's work folder")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    records = json.loads((args.work / "ood" / "cases.json").read_text())
    cases = preprocessed_cases([args.work / "ood" / "manifest.json"], args.work / "cache")
    per_case = {}
    for item in cases:
        row = {"ventricles": grid_ceiling(item, "ventricles")}
        if records[item["id"]]["pvl_ml"] > 0:
            row["pvl"] = grid_ceiling(item, "pvl")
        per_case[item["id"]] = {k: None if v is None else round(v, 4) for k, v in row.items()}
        print(item["id"], per_case[item["id"]], flush=True)
    severe = [r["macs"] == "severe" for r in records.values()]
    score = [r["motor_ml"] / 1.5 + r["ventricle_growth_mm"] / 4.0 + r["pvl_ml"] / 15.0 for r in records.values()]
    summary = {
        "ventricle_dice_2mm_ceiling": round(float(np.mean([r["ventricles"] for r in per_case.values() if r["ventricles"] is not None])), 4),
        "pvl_dice_2mm_ceiling_lesion_cases": round(float(np.mean([r["pvl"] for r in per_case.values() if r.get("pvl") is not None])), 4),
        "n_lesion_cases": sum("pvl" in r for r in per_case.values()),
        "macs_auc_ceiling": round(auc(severe, score), 4),
        "macs_accuracy_ceiling": round(1.0 - sum(r["macs_flipped"] for r in records.values()) / len(records), 4),
        "n": len(per_case),
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "cases": per_case}, indent=1))


if __name__ == "__main__":
    main()
