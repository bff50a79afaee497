"""`shmn phantom`: build the synthetic PVL cohort (the project's default data)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from shmn.errors import ShmnError

DEFAULTS = {"seed": 0, "n_pvl": 24, "n_macs": 87, "n_ventricle_labels": 25, "size": "paper"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "phantom",
        help="build the synthetic PVL cohort (two datasets, manifests, montage, statistics)",
        description="Build a SYNTHETIC cohort of T2 FLAIR-like child brain MRIs with PVL lesions from the MNI152 "
                    "anatomy: dataset 1 (pvl: FLAIR + PVL masks) and dataset 2 (macs: FLAIR + MACS groups, "
                    "ventricle masks for some). Not patient data. Same seed, same bytes.",
    )
    parser.add_argument("-o", "--output", required=True, help="cohort folder to create (must not exist unless --overwrite)")
    # Numbers are parsed here, not by argparse, so a bad value is one `shmn: error:` line like every other error.
    parser.add_argument("--seed", default=str(DEFAULTS["seed"]), help="random seed (default 0)")
    parser.add_argument("--n-pvl", default=str(DEFAULTS["n_pvl"]), help="dataset 1 cases with PVL masks (default 24)")
    parser.add_argument("--n-macs", default=str(DEFAULTS["n_macs"]), help="dataset 2 cases with MACS groups (default 87)")
    parser.add_argument("--n-ventricle-labels", default=str(DEFAULTS["n_ventricle_labels"]),
                        help="dataset 2 cases that carry a ventricle mask (default 25; the paper also uses 10)")
    parser.add_argument("--size", default=DEFAULTS["size"],
                        help="paper: clinical-size images (1 mm anatomy, 0.8-1.2 mm in-plane, 1-5 mm slices); "
                             "small: ~48^3 images for tests (default paper)")
    parser.add_argument("--workers", default=None,
                        help="processes building cases (default: the CPU count, at most 4); the output does not depend on it")
    parser.add_argument("--brain-only", action="store_true",
                        help="brain-only images (0 outside the brain) instead of whole heads with skull, scalp, eyes and neck")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder (only once the new one is complete)")
    return parser


def _whole_number(option: str, text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ShmnError(f"{option}: {text!r} is not a whole number") from None


def run(args: argparse.Namespace) -> int:
    from shmn.synthesis import CohortConfig, generate_cohort  # imported here: `shmn --help` stays fast

    config = CohortConfig(
        seed=_whole_number("--seed", args.seed), n_pvl=_whole_number("--n-pvl", args.n_pvl),
        n_macs=_whole_number("--n-macs", args.n_macs),
        n_ventricle_labels=_whole_number("--n-ventricle-labels", args.n_ventricle_labels), size=args.size,
        heads=not args.brain_only,
    )
    workers = min(os.cpu_count() or 1, 4) if args.workers is None else _whole_number("--workers", args.workers)
    config.validate()
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise ShmnError(f"{output}: already exists; use --overwrite or choose another output folder")
    started = time.time()
    cohort = generate_cohort(output, config, progress=not args.quiet, overwrite=args.overwrite, workers=workers)
    if not args.quiet:
        macs = cohort["summary"]["macs"]
        total = cohort["summary"]["all"]
        print(f"wrote {total['n']} synthetic cases to {output} in {time.time() - started:.0f} s: "
              f"pvl {config.n_pvl}, macs {config.n_macs} (severe fraction {macs['severe_fraction']:.2f}), "
              f"ventricle masks {config.n_ventricle_labels}; lesion volume {total['lesion_volume_ml']['min']:.1f}-"
              f"{total['lesion_volume_ml']['max']:.1f} mL; see {output / 'montage.png'} and {output / 'cohort.json'}")
    return 0
