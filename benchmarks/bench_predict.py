"""End-to-end `shmn predict` time per case, split by step, and peak memory, on a 1 mm clinical volume.

The input is bench_preprocess's 1 mm oblique LAS-like FLAIR-like volume built from the real MNI152
anatomy (about 180x220x180 voxels, child-sized brain, bias field, noise), or --input FILE. The model
is the registry's default (its preset's grid), --model NAME|PATH, or, while no default model is
registered, an untrained network of the "fast" resolution preset (same cost; says so).

Each timed case runs in a fresh process (spawned), so its peak resident memory is the case's own:
Python, torch, the model, the volume and every intermediate. Also compares fp32 and bf16 inference
on the CPU (time and how many mask voxels agree).

    .venv/bin/python benchmarks/bench_predict.py [--model NAME|PATH] [--repeat N] [--device cpu|cuda|auto] [--boundary native|model] [--no-tta] [--json FILE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_preprocess import clinical_volume, truth_transform  # noqa: E402

from shmn.io.anatomy import load_anatomy  # noqa: E402
from shmn.errors import ShmnError  # noqa: E402
from shmn.devices import cpu_has_bf16  # noqa: E402
from shmn.inference.engine import InferenceOptions, run_inference  # noqa: E402
from shmn.inference.predict import PredictOptions, load_predictor, predict_case  # noqa: E402
from shmn.preprocessing.preprocess import preprocess  # noqa: E402
from shmn.training.config import DEVICES  # noqa: E402

STEPS = ("read", "brain_extraction", "register", "resample", "n4", "inference", "tta", "lesion_1mm", "postprocess", "write", "total")


def peak_rss_gb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    spawned child would report its parent's peak (here: building the input volume)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def stand_in_model(folder: Path) -> str:
    """An untrained network of the "fast" preset, saved as a model file (timing only)."""
    from shmn.training.config import RESOLUTION_PRESETS
    from shmn.network.model import SHMN, NetworkConfig
    from shmn.network.model_file import save_model

    preset = RESOLUTION_PRESETS["fast"]
    network = NetworkConfig(base_filters=preset["base_filters"], levels=preset["levels"], macs_hidden=preset["macs_hidden"])
    path = folder / "untrained-fast.safetensors"
    card = {"name": "untrained-fast", "version": "0.0.0", "grid": preset["grid"], "preset": "shmn4:fast",
            "training_data": "none (untrained stand-in for timing)"}
    save_model(path, SHMN(network), card)
    return str(path)


def load(model: str | None, folder: Path):
    try:
        return load_predictor(model), ""
    except ShmnError as exc:
        if model is not None:
            raise
        return load_predictor(stand_in_model(folder)), f"{exc}; timing an untrained 'fast' network instead"


def one_case(source: str, out: str, model: str, device: str, native_boundary: bool = True,
             tta: bool = True) -> tuple[dict, dict, float, float]:
    """In a fresh process: load the model, predict one case; (timings, inference info, baseline GB, peak GB)."""
    predictor = load_predictor(model)
    baseline = peak_rss_gb()
    report = predict_case(source, out, predictor, PredictOptions(device=device, overwrite=True, native_boundary=native_boundary, tta=tta))
    return report["timings_s"], report["inference"], baseline, peak_rss_gb()


def compare_precisions(predictor, image: sitk.Image, device: str) -> dict:
    """fp32 vs bf16 CPU inference on the same preprocessed volume: seconds and mask agreement."""
    case = preprocess(image, predictor.preprocess)
    runs = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        run_inference(predictor.network, case.image, InferenceOptions(device=device, cpu_bf16=bf16))  # warm-up
        tick = time.perf_counter()
        runs[name] = run_inference(predictor.network, case.image, InferenceOptions(device=device, cpu_bf16=bf16))
        runs[name].seconds = time.perf_counter() - tick
    out = {f"{name}_s": round(r.seconds, 3) for name, r in runs.items()}
    for task in ("pvl_probability", "ventricle_probability"):
        a, b = getattr(runs["fp32"], task), getattr(runs["bf16"], task)
        if a is not None:
            out[f"{task}_mask_agreement"] = round(float(((a > 0.5) == (b > 0.5))[case.brain].mean()), 5)
    if runs["fp32"].macs_probability is not None:
        out["macs_probability_abs_diff"] = round(abs(runs["fp32"].macs_probability - runs["bf16"].macs_probability), 5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="registered name or .safetensors path (default: the registry's default)")
    parser.add_argument("--input", default=None, help="a 3D volume to time instead of the built-in 1 mm volume")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu", metavar="|".join(DEVICES) + "|cuda:N")
    parser.add_argument("--no-precision-comparison", action="store_true")
    parser.add_argument("--boundary", choices=("native", "model"), default="native", help="as shmn predict --boundary (default native)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="as shmn predict --tta / --no-tta (default on: the mirrored pass averaged in)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_predict.") as tmp:
        folder = Path(tmp)
        predictor, note = load(args.model, folder)
        if args.input:
            source = Path(args.input)
        else:
            source = folder / "clinical_1mm.nii.gz"
            sitk.WriteImage(clinical_volume(load_anatomy(), truth_transform()), str(source), True)
        image = sitk.ReadImage(str(source))
        runs, peaks = [], []
        spawn = multiprocessing.get_context("spawn")
        for run in range(args.repeat):
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                timings, inference, baseline, peak = pool.submit(
                    one_case, str(source), str(folder / "out"), predictor.info.file, args.device, args.boundary == "native", args.tta
                ).result()
            runs.append(timings)
            peaks.append((baseline, peak))
            print(f"run {run + 1}: " + ", ".join(f"{k} {timings.get(k, 0):.2f}" for k in STEPS) + f" s; peak RSS {peak:.2f} GB", flush=True)
        figures = {
            "input": {"file": str(args.input or "built-in 1 mm oblique volume"), "size": list(image.GetSize()),
                      "spacing_mm": [round(s, 3) for s in image.GetSpacing()]},
            "model": {"name": predictor.info.name, "version": predictor.info.version, "grid": predictor.info.grid,
                      "network": predictor.card.get("network"), "note": note},
            "device": inference["device"],
            "precision": inference["precision"],
            "inference_mode": inference["mode"],
            "test_time_mirroring": inference.get("test_time_mirroring"),
            "cpu_bf16_available": cpu_has_bf16(),
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),  # other work on the machine skews timings
            "sitk_threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(),
            "median_s": {k: round(statistics.median(r.get(k, 0.0) for r in runs), 3) for k in STEPS},
            "first_run_s": {k: round(runs[0].get(k, 0.0), 3) for k in STEPS},
            "peak_rss_gb": round(max(peak for _, peak in peaks), 2),
            "rss_after_loading_model_gb": round(max(base for base, _ in peaks), 2),
        }
        if not args.no_precision_comparison and inference["device"] == "cpu":
            figures["cpu_precision"] = compare_precisions(predictor, image, "cpu")

    if note:
        print(f"note: {note}")
    print(json.dumps(figures, indent=2))
    print("\n| step | median s |\n|---|---|")
    for key, value in figures["median_s"].items():
        print(f"| {key} | {value:.2f} |")
    print(f"| peak RSS | {figures['peak_rss_gb']:.2f} GB |")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
