"""Does the network's MACS probability rise with motor-relevant lesion burden? (issue 13, item 2)

    .venv/bin/python benchmarks/macs_vs_burden.py [--model NAME_OR_FILE] [--n 40] [--seed 7] [--out FILE.json]

Synthesises N fresh subjects with the randomised engine on the model's grid (both anatomies: ICBM 2009 is
one the shipped models never trained on; seeds no training run used), runs the model on each image as
`shmn predict` would see it after preprocessing, and reports:
- Spearman rank correlation of the (calibrated) MACS probability with the drawn motor-pathway lesion
  burden (mL) and with the total lesion burden;
- the AUC of the probability against the drawn MACS label (10 % label noise, as in training);
- the mean probability per drawn severity (none, mild, moderate, severe): it should rise.
A classifier that gives every child the same probability has Spearman ~0 and equal means.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from shmn.inference.calibration import calibrate_macs, calibration_from_card
from shmn.inference.engine import InferenceOptions, run_inference
from shmn.inference.predict import load_predictor
from shmn.io.atomic import write_json
from shmn.measures.metrics import macs_metrics
from shmn.preprocessing.preprocess import GridSpec
from shmn.synthesis.randomised.dataset import sample_seed
from shmn.synthesis.randomised.sampler import SynthesisConfig, synthesise

SEVERITIES = ("none", "mild", "moderate", "severe")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registry name, name@version or .safetensors (default: the default model)")
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7, help="synthesis seed (training runs use their own run seeds with tag 12)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures and per-subject rows as JSON")
    args = parser.parse_args(argv)

    predictor = load_predictor(args.model)
    grid = GridSpec(**{k: (tuple(v) if k == "size" else v) for k, v in predictor.info.grid.items() if k in ("spacing_mm", "size")})
    calibration = calibration_from_card(predictor.card, predictor.info.file)
    config = SynthesisConfig(anatomies=("mni152", "icbm2009"))
    rows = []
    for i in range(args.n):
        sample = synthesise(sample_seed(args.seed, 1000, i), grid, config)
        result = run_inference(predictor.network, sample.image, InferenceOptions(device="cpu"))
        probability, _ = calibrate_macs(result.macs_probability, result.macs_logit, calibration)
        r = sample.record
        rows.append({"i": i, "anatomy": r["anatomy"], "severity": r["severity"], "motor_ml": r["motor_ml"], "pvl_ml": r["pvl_ml"],
                     "macs": r["macs"], "probability": round(float(probability), 4)})
        print(f"{i + 1}/{args.n} {r['anatomy']:8s} {r['severity']:8s} motor {r['motor_ml']:6.2f} mL  p {probability:.3f}", file=sys.stderr)
    p = np.array([row["probability"] for row in rows])
    summary = {
        "model": f"{predictor.info.name} {predictor.info.version}",
        "n": args.n,
        "seed": args.seed,
        "spearman_motor_ml": round(float(spearmanr(p, [row["motor_ml"] for row in rows]).statistic), 3),
        "spearman_pvl_ml": round(float(spearmanr(p, [row["pvl_ml"] for row in rows]).statistic), 3),
        "auc_vs_label": macs_metrics(p, np.array([row["macs"] for row in rows]))["auc"],
        "probability_range": [round(float(p.min()), 3), round(float(p.max()), 3)],
        "mean_probability_by_severity": {s: (round(float(np.mean([row["probability"] for row in rows if row["severity"] == s])), 3)
                                             if any(row["severity"] == s for row in rows) else None) for s in SEVERITIES},
    }
    print(json.dumps(summary, indent=1))
    if args.out:
        write_json(args.out, {**summary, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
