"""Seconds that brain extraction adds per case: deepbet's mask network at 256^3 (deepbet's own) against 192^3 (SHMN's).

Both run back to back on the same head phantoms, in alternating order, in one process (the networks
loaded once, as in `shmn predict`), so that a machine shared with other jobs weighs on both alike.
Prints, per case and setting, wall and CPU seconds of `extract_brain`, the brain-mask Dice against
the phantom's reference, and the load average at the time: on a shared machine read the figures
next to it.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_brain_extraction.py [--n 5] [--seed 11] [--repeats 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time

import numpy as np
import SimpleITK as sitk

from shmn.io.anatomy import load_anatomy
from shmn.preprocessing import brain_extraction
from shmn.synthesis.acquisition import SIZES
from shmn.synthesis.atlas import build_reference
from shmn.synthesis.case import CaseOptions, make_case
from shmn.synthesis.head import build_head_space

SHAPES = {"deepbet 256^3": (256, 256, 256), "shmn 192^3": brain_extraction.MASK_NETWORK_SHAPE}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


def timed_extraction(image: sitk.Image, shape: tuple[int, int, int]) -> tuple[float, float, np.ndarray]:
    """(wall s, CPU s, mask) of extract_brain with deepbet's mask network at ``shape``."""
    wall, cpu = time.perf_counter(), time.process_time()
    mask = brain_extraction.extract_brain(image, "bench", mask_network_shape=shape).mask
    return time.perf_counter() - wall, time.process_time() - cpu, sitk.GetArrayFromImage(mask) > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    profile = SIZES["paper"]
    ref = build_reference(load_anatomy(), profile.work_spacing_mm)
    ref = dataclasses.replace(ref, head=build_head_space(ref))
    cases = [make_case(ref, profile, args.seed, "pvl", index, f"head_{index:03d}", CaseOptions(heads=True, scale_range=(0.75, 1.05)))
             for index in range(args.n)]
    brain_extraction._load_deepbet()  # loaded once per process, as in `shmn predict`: not part of a case's time
    timed_extraction(sitk.Cast(cases[0].image, sitk.sitkFloat32), SHAPES["shmn 192^3"])  # warm-up (first-call costs)
    rows = []
    for repeat in range(args.repeats):
        for number, case in enumerate(cases):
            image = sitk.Cast(case.image, sitk.sitkFloat32)
            reference = sitk.GetArrayFromImage(case.brain) > 0
            order = list(SHAPES) if (number + repeat) % 2 == 0 else list(SHAPES)[::-1]
            for name in order:
                wall, cpu, mask = timed_extraction(image, SHAPES[name])
                row = {"case": case.id, "size": list(image.GetSize()), "setting": name, "repeat": repeat,
                       "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "dice_brain_deepbet": round(dice(mask, reference), 4),
                       "load_1min": round(os.getloadavg()[0], 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    for name in SHAPES:
        mine = [r for r in rows if r["setting"] == name]
        print(f"{name}: wall s median {statistics.median(r['wall_s'] for r in mine):.2f} (max {max(r['wall_s'] for r in mine):.2f}), "
              f"CPU s median {statistics.median(r['cpu_s'] for r in mine):.2f}, Dice median "
              f"{statistics.median(r['dice_brain_deepbet'] for r in mine):.4f} min {min(r['dice_brain_deepbet'] for r in mine):.4f}, "
              f"load {min(r['load_1min'] for r in mine):.1f}-{max(r['load_1min'] for r in mine):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
