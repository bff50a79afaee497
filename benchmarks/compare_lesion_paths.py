"""The 1 mm lesion path against its alternative and the 2 mm path, on held-out cohorts (issue 13, item 1).

    GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736 \
    .venv/bin/python benchmarks/compare_lesion_paths.py --work /tmp/compare \
        --refiner cascade=Resources/lesion-refiner-cascade-1.0.0.safetensors \
        --refiner patch-only=/tmp/refiner/lesion-refiner-patch-only.safetensors [--n 12]

Each case is preprocessed once with the default model's card, then predicted by the 2 mm path and by each
refiner (shmn.inference.predict.predict_native with that refiner in place), on the input's own grid:
lesion Dice, lesion-wise F1 (shmn.measures.metrics.lesion_f1), detection of small reference lesions
(< 0.3 mL: found when a predicted voxel lies in them), seconds of the lesion path and of the whole case.
Cohorts, read only: the in-distribution phantoms (seed 101, PVL dataset, full ground truth) and the OOD
cohort (ICBM 2009 anatomy, its own generator) of /work/runs/retrain/cohorts. Synthetic data only.
Writes WORK/lesion-paths.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from shmn.inference.predict import PredictOptions, load_predictor, predict_native
from shmn.io.atomic import write_json
from shmn.io.volume_io import read_volume
from shmn.measures.lesions import lesion_components
from shmn.measures.metrics import dice, lesion_f1
from shmn.network.refiner import load_refiner
from shmn.preprocessing.preprocess import preprocess
from shmn.training.data import load_manifests, split_samples

COHORTS = {
    "in-distribution": Path("/work/runs/retrain/cohorts/id/pvl/manifest-full-truth.json"),
    "ood": Path("/work/runs/retrain/cohorts/ood/manifest.json"),
}
SMALL_ML = 0.3


def small_lesions(predicted: np.ndarray, truth: np.ndarray, voxel_ml: float) -> tuple[int, int]:
    """(small reference lesions found, small reference lesions)."""
    labels, count = lesion_components(truth)
    sizes = np.bincount(labels.ravel(), minlength=count + 1) * voxel_ml
    small = [label for label in range(1, count + 1) if sizes[label] < SMALL_ML]
    found = set(np.unique(labels[predicted & (labels > 0)]).tolist())
    return sum(label in found for label in small), len(small)


def score(predicted: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict:
    detection = lesion_f1(predicted, truth)
    found, small = small_lesions(predicted, truth, voxel_ml)
    return {"dice": dice(predicted, truth), "lesion_f1": detection.f1, "small_found": found, "small_total": small,
            "volume_ml": float(predicted.sum() * voxel_ml), "true_ml": float(truth.sum() * voxel_ml)}


def run_case(sample, predictor, refiners: dict) -> dict:
    native = read_volume(sample.image)
    truth = sitk.GetArrayFromImage(sitk.Resample(read_volume(sample.pvl, check_values=False), native, sitk.Transform(),
                                                 sitk.sitkNearestNeighbor, 0)) > 0
    voxel_ml = float(np.prod(native.GetSpacing())) / 1000.0
    tick = time.perf_counter()
    prep = preprocess(native, predictor.preprocess, source=str(sample.image))
    preprocess_s = time.perf_counter() - tick
    out = {"id": sample.id, "preprocess_s": round(preprocess_s, 2), "paths": {}}
    for name, refiner in refiners.items():
        predictor.refiner = refiner
        timings: dict = {}
        tick = time.perf_counter()
        prediction = predict_native(native, predictor, PredictOptions(device="cpu", lesion_1mm=refiner is not None), timings, prep=prep)
        seconds = time.perf_counter() - tick
        mask = sitk.GetArrayFromImage(prediction.masks["pvl"]) > 0
        out["paths"][name] = {**score(mask, truth, voxel_ml), "lesion_1mm_s": round(timings.get("lesion_1mm", 0.0), 2),
                              "case_s": round(seconds + preprocess_s, 2), "lesion_grid": prediction.lesion_grid}
    return out


def summarise(cases: list[dict], name: str) -> dict:
    rows = [case["paths"][name] for case in cases]
    with_lesions = [row for row in rows if row["true_ml"] > 0]
    found, total = sum(r["small_found"] for r in rows), sum(r["small_total"] for r in rows)
    return {"dice": float(np.mean([r["dice"] for r in with_lesions])) if with_lesions else None,
            "lesion_f1": float(np.mean([r["lesion_f1"] for r in rows])),
            "small_found": found, "small_total": total, "small_recall": found / total if total else None,
            "lesion_1mm_s": float(np.median([r["lesion_1mm_s"] for r in rows])),
            "case_s": float(np.median([r["case_s"] for r in rows])), "n": len(rows), "n_with_lesions": len(with_lesions)}


def table(summary: dict) -> str:
    lines = ["| cohort | lesion path | lesion Dice | lesion-wise F1 | small lesions (< 0.3 mL) found | 1 mm path s (median) | case s (median) |",
             "|---|---|---|---|---|---|---|"]
    for cohort, paths in summary.items():
        for name, s in paths.items():
            dice_text = f"{s['dice']:.3f}" if s["dice"] is not None else "-"
            recall = f"{s['small_found']}/{s['small_total']}" + (f" ({s['small_recall']:.2f})" if s["small_total"] else "")
            lines.append(f"| {cohort} (n={s['n']}) | {name} | {dice_text} | {s['lesion_f1']:.3f} | {recall} | {s['lesion_1mm_s']:.2f} | {s['case_s']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--refiner", action="append", default=[], metavar="NAME=PATH", help="a refiner to compare (repeat)")
    parser.add_argument("--n", type=int, default=12, help="cases per cohort (default 12)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor = load_predictor(None)
    refiners = {"2 mm (SHMN grid)": None}
    for item in args.refiner:
        name, _, path = item.partition("=")
        refiners[name] = load_refiner(path)
    args.work.mkdir(parents=True, exist_ok=True)
    results, summary = {}, {}
    for cohort, manifest in COHORTS.items():
        samples = [s for s in split_samples(load_manifests([manifest]), "test") if s.pvl is not None][: args.n]
        results[cohort] = []
        for sample in samples:
            results[cohort].append(run_case(sample, predictor, refiners))
            print(json.dumps({cohort: results[cohort][-1]["id"], **{k: round(v["dice"], 3) for k, v in results[cohort][-1]["paths"].items()}}),
                  file=sys.stderr, flush=True)
        summary[cohort] = {name: summarise(results[cohort], name) for name in refiners}
    cards = {name: {"file": str(r.path), "sha256": r.sha256, "training": r.card.get("training")} for name, r in refiners.items() if r}
    write_json(args.work / "lesion-paths.json", {"summary": summary, "cases": results, "refiners": cards,
                                                 "command": "benchmarks/compare_lesion_paths.py " + " ".join(sys.argv[1:] if argv is None else argv),
                                                 "note": "synthetic cohorts only"})
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
