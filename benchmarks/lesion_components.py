"""Every lesion component `shmn predict` finds on a cohort, true or false, and how far it stands out from the tissue.

For each test case of each manifest the model runs as `shmn predict` does (native-grid boundaries, mirrored pass)
but with every component kept (--keep-lesions-not-shown); each 26-connected component of the lesion mask is
then matched with the reference (true: it overlaps a reference lesion voxel, as lesion-wise F1 counts it) and
read by shmn.measures.lesion_visibility (the figure that decides whether it stays in the mask by default), with
its volume and the network's mean probability over it. Prints, per cohort, how many true and false components
the default leaves out; writes the rows as JSON.

    python benchmarks/lesion_components.py --model Resources/shmn4-fast-v2-2.7.0-calibrated.safetensors \
        --data /work/runs/cmp/ood/manifest.json /work/runs/ood7/manifest.json --cache /work/runs/cmp/cache \
        -o benchmarks/results/lesion-components-v2.7.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def component_rows(predictor, sample, cache) -> list[dict]:
    from shmn.inference.predict import PredictOptions, predict_native
    from shmn.io.volume_io import read_volume
    from shmn.measures.lesion_visibility import lesion_contrasts
    from shmn.measures.lesions import lesion_components
    from shmn.training.evaluate import _label_on

    native = read_volume(sample.image)
    prediction = predict_native(native, predictor, PredictOptions(device="cpu", lesions_shown_only=False),
                                prep=cache.preprocessed(sample) if cache is not None else None)
    truth = _label_on(native, sample.pvl, sample.image, sample.id)
    network = sitk.GetArrayFromImage((prediction.network_probabilities or prediction.probabilities)["pvl"])
    labels, n = lesion_components(sitk.GetArrayFromImage(prediction.masks["pvl"]))
    figures = lesion_contrasts(sitk.GetArrayFromImage(native), labels, n, native.GetSpacing()[::-1],
                               sitk.GetArrayFromImage(prediction.masks["ventricles"]))
    voxel_ml = float(np.prod(native.GetSpacing())) / 1000.0
    rows = []
    for figure in figures:
        component = labels == figure.label
        rows.append({"case": sample.id, "reference_lesion_free": not truth.any(), "true": bool((component & truth).any()),
                     "volume_ml": round(figure.voxels * voxel_ml, 4), "network_mean_probability": round(float(network[component].mean()), 3),
                     "contrast_to_spread": None if figure.contrast_to_spread is None else round(figure.contrast_to_spread, 3),
                     "shown": figure.visible})
    return rows


def main() -> None:
    from shmn.inference.predict import load_predictor
    from shmn.training.case_cache import CaseCache
    from shmn.training.data import load_manifests, split_samples
    from shmn.training.evaluate import DENSITY_SIGMA_UNUSED

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", nargs="+", required=True, help="manifests, one cohort each")
    parser.add_argument("--cache", help="preprocessing cache folder (as shmn evaluate --cache)")
    parser.add_argument("-o", "--output", required=True)
    args = parser.parse_args()
    predictor = load_predictor(args.model)
    cache = CaseCache(args.cache, predictor.preprocess, density_sigma_mm=DENSITY_SIGMA_UNUSED) if args.cache else None
    cohorts = {}
    print("| cohort | components | true / false | left out: true / false | false kept |\n|---|---|---|---|---|")
    for manifest in args.data:
        rows = [row for sample in split_samples(load_manifests([manifest]), "test") if sample.pvl is not None
                for row in component_rows(predictor, sample, cache)]
        cohorts[str(manifest)] = rows
        true, false = [r for r in rows if r["true"]], [r for r in rows if not r["true"]]
        print(f"| {manifest} | {len(rows)} | {len(true)} / {len(false)} | {sum(not r['shown'] for r in true)} / "
              f"{sum(not r['shown'] for r in false)} | {sum(r['shown'] for r in false)} |")
    Path(args.output).write_text(json.dumps({"model": args.model, "cohorts": cohorts}, indent=0))


if __name__ == "__main__":
    main()
