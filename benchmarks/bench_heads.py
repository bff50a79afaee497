"""Whole-head FLAIRs: brain extraction, registration and segmentation against the same cases brain-only.

Builds N head phantoms of a seed never used for tuning (``shmn phantom``'s generator with heads,
child scales 0.75-1.05, 2D thick-slice and 3D acquisitions, RAS/LAS/LPS and oblique grids, tight,
whole-head and partial fields of view), each with its brain-only twin (the same acquisition, noise
included, without the head). For every case it measures, with the shipped model:

- whether the registration check flags it, with brain extraction (what `shmn predict` does) and
  without it (the whole head registered to the brain template: the behaviour before);
- the brain mask's Dice against the phantom's reference brain for three methods: deepbet alone,
  the MNI152 brain mask carried back by a registration of the whole head (no extraction), and
  deepbet cut to the registered template brain + 5 mm (the default);
- lesion and ventricle Dice of the head image against those of its brain-only twin (the twin goes
  through preprocessing without extraction, as brain-only inputs did before);
- the seconds brain extraction adds, and the whole `shmn predict` per case on a few cases.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_heads.py [--n 24] [--seed 2029] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from shmn.inference.engine import InferenceOptions, run_inference
from shmn.inference.masks import native_probability, threshold_mask
from shmn.inference.predict import PredictOptions, load_predictor, predict_case
from shmn.io.anatomy import load_anatomy
from shmn.io.volume_io import write_volume
from shmn.preprocessing.brain_extraction import template_mask
from shmn.preprocessing.preprocess import preprocess
from shmn.preprocessing.registration import register_to_template
from shmn.synthesis.acquisition import SIZES
from shmn.synthesis.atlas import build_reference
from shmn.synthesis.case import CaseOptions, make_case
from shmn.synthesis.head import build_head_space


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image) > 0


def segment(predictor, native: sitk.Image, config, source: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """Preprocess, infer, map back and threshold as `shmn predict` does: (quality, pvl, ventricles)."""
    prep = preprocess(native, config, source=source)
    result = run_inference(predictor.network, prep.image, InferenceOptions(device="cpu"))
    pvl = threshold_mask(native_probability(result.pvl_probability, prep, native), 0.5)
    ventricles = threshold_mask(native_probability(result.ventricle_probability, prep, native), 0.5)
    return prep, array(pvl), array(ventricles)


def kind(stats: dict) -> str:
    return "3D" if stats["spacing_mm"][2] < 1.6 else "2D"


def run_case(ref, profile, seed: int, index: int, predictor, template, folder: Path) -> dict:
    case = make_case(ref, profile, seed, "pvl", index, f"head_{index:03d}",
                     CaseOptions(heads=True, scale_range=(0.75, 1.05), twin=True))
    native = sitk.Cast(case.image, sitk.sitkFloat32)
    reference_brain = array(case.brain)
    row = {"id": case.id, "orientation": case.stats["orientation"], "acquisition": kind(case.stats),
           "field_of_view": case.stats["head"]["field_of_view"], "scale": round(float(np.mean(case.stats["scale"])), 3),
           "spacing_mm": case.stats["spacing_mm"]}

    # Without brain extraction: the whole head registered to the brain template (the behaviour before).
    config = predictor.preprocess
    whole_head = register_to_template(native, template, config.registration)
    row["flagged_without_extraction"] = not whole_head.quality["ok"]
    row["dice_brain_template_no_extraction"] = dice(template_mask(native, whole_head.transform, template), reference_brain)

    cpu = time.process_time()
    prep, pvl, ventricles = segment(predictor, native, config, case.id)
    row["case_cpu_s"] = round(time.process_time() - cpu, 2)
    # Wall seconds on a shared machine; the CPU seconds above say what the case itself cost.
    row["extraction_s"] = prep.timings_s["brain_extraction"]
    raw = prep.brain_native.unconstrained if prep.brain_native.unconstrained is not None else prep.brain_native.mask
    row["dice_brain_deepbet"] = dice(array(raw), reference_brain)
    row["flagged"] = not prep.quality["ok"]
    row["registration_warning"] = prep.quality.get("warning")
    row["registration_start"] = prep.quality.get("start")
    row["brain_mask_dice_check"] = prep.quality.get("brain_mask_dice")
    row["brain_in_view"] = prep.quality.get("brain_in_field_of_view")
    row["dice_brain_default"] = dice(array(prep.brain_native.mask), reference_brain)
    row["preprocess_s"] = prep.timings_s["total"]
    row["dice_pvl_head"] = dice(pvl, array(case.pvl))
    row["dice_ventricles_head"] = dice(ventricles, array(case.ventricles))

    twin_config = dataclasses.replace(config, brain_extraction="none")
    _, pvl, ventricles = segment(predictor, sitk.Cast(case.brain_only_twin, sitk.sitkFloat32), twin_config, case.id)
    row["dice_pvl_brain_only"] = dice(pvl, array(case.pvl))
    row["dice_ventricles_brain_only"] = dice(ventricles, array(case.ventricles))
    write_volume(case.image, folder / f"{case.id}.nii.gz")  # for the end-to-end timing below
    return row


def summary(rows: list[dict], predict_s: list[float]) -> dict:
    def stat(key):
        values = [r[key] for r in rows]
        return {"median": round(statistics.median(values), 4), "min": round(min(values), 4), "mean": round(statistics.mean(values), 4)}

    return {
        "n": len(rows),
        "kinds": {"acquisition": dict(Counter(r["acquisition"] for r in rows)),
                  "orientation": dict(Counter(r["orientation"] for r in rows)),
                  "field_of_view": dict(Counter(r["field_of_view"] for r in rows)),
                  "scale": [min(r["scale"] for r in rows), max(r["scale"] for r in rows)]},
        "flagged_by_registration_check": sum(r["flagged"] for r in rows),
        "flagged_without_brain_extraction": sum(r["flagged_without_extraction"] for r in rows),
        "dice_brain": {"deepbet+template (default)": stat("dice_brain_default"), "deepbet": stat("dice_brain_deepbet"),
                       "template, no extraction": stat("dice_brain_template_no_extraction")},
        "dice_pvl": {"head": stat("dice_pvl_head"), "brain_only": stat("dice_pvl_brain_only")},
        "dice_ventricles": {"head": stat("dice_ventricles_head"), "brain_only": stat("dice_ventricles_brain_only")},
        "brain_extraction_s": stat("extraction_s"),
        "preprocess_cpu_s_per_case": stat("case_cpu_s"),
        "predict_s_per_case": {"cases": len(predict_s), "median": round(statistics.median(predict_s), 2) if predict_s else None,
                               "max": round(max(predict_s), 2) if predict_s else None},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--start", type=int, default=0, help="first case index (to split a run over processes)")
    parser.add_argument("--rows", type=Path, nargs="*", default=None,
                        help="only summarise the rows of earlier runs (their .partial.jsonl files) and exit")
    parser.add_argument("--seed", type=int, default=2029, help="never used for tuning (default 2029)")
    parser.add_argument("--timed", type=int, default=3, help="cases also run through the whole `shmn predict`")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.rows:
        rows = [json.loads(line) for path in args.rows for line in path.read_text().splitlines() if line.strip()]
        rows = list({row["id"]: row for row in rows}.values())
        timed_files = [path.with_suffix(".timed.json") for path in args.rows]
        timed = [t for path in timed_files if path.is_file() for t in json.loads(path.read_text())]
        result = {"command": "benchmarks/bench_heads.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                  "summary": summary(rows, timed), "cases": rows}
        print(json.dumps(result["summary"], indent=2))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return 0

    profile = SIZES["paper"]
    ref = build_reference(load_anatomy(), profile.work_spacing_mm)
    ref = dataclasses.replace(ref, head=build_head_space(ref))
    predictor = load_predictor(None)
    template = load_anatomy().template
    rows, predict_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for index in range(args.start, args.start + args.n):
            row = run_case(ref, profile, args.seed, index, predictor, template, folder)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:  # partial results survive an interrupted run
                args.json.with_suffix(".partial.jsonl").open("a", encoding="utf-8").write(json.dumps(row) + "\n")
        for row in rows[: args.timed]:
            tick = time.perf_counter()
            predict_case(folder / f"{row['id']}.nii.gz", folder / "out", predictor, PredictOptions(device="cpu"))
            predict_s.append(time.perf_counter() - tick)
            if args.json:
                args.json.with_suffix(".partial.timed.json").write_text(json.dumps(predict_s), encoding="utf-8")
    result = {"command": "benchmarks/bench_heads.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": predictor.info.name, "summary": summary(rows, predict_s), "cases": rows}
    print(json.dumps(result["summary"], indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
