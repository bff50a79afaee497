"""The synthetic cohort: the paper's two heterogeneous datasets, written atomically with statistics.

Dataset 1 (``pvl``): FLAIR + PVL mask. Dataset 2 (``macs``): FLAIR + MACS group; ventricle masks for
only ``n_ventricle_labels`` of its cases. Dataset 2's true PVL and ventricle masks for every case are
kept apart in ``macs/groundtruth/`` (dataset 1's ventricles in ``pvl/groundtruth/``): not in any
manifest, so training cannot see them, but evaluation can check pseudo-labels and segmentations.

MACS group: a case is truly severe when its motor burden (lesion volume weighted by closeness to
the thalamus, internal capsule and WM under the central cortex) is above the cohort's threshold, the
(1 - p) quantile of dataset 2's burdens; then each label flips with probability ``label_noise``.
p = (severe_fraction - label_noise) / (1 - 2 label_noise) makes the expected observed severe
fraction equal ``severe_fraction`` (1/3 by default: p = 0.29).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from shmn.progress import progress_bar

from shmn.io.anatomy import load_anatomy
from shmn.io.atomic import atomic_dir, write_json
from shmn.errors import ShmnError
from shmn.io.labels import label_path
from shmn.io.manifest import Case, Manifest
from shmn.io.splits import assign_splits
from shmn.synthesis.acquisition import SIZES
from shmn.synthesis.atlas import build_reference
from shmn.synthesis.case import CaseOptions
from shmn.synthesis.head import build_head_space
from shmn.synthesis.montage import MontageCase, render_montage
from shmn.synthesis.parallel import build_cases
from shmn.io.volume_io import read_volume

COHORT_FORMAT = "shmn-phantom-cohort/1"
# Every case of a small or paper cohort falls in these (the tests check small cohorts; the paper
# cohort of seed 0 measured lesions 0.3-24 mL, ventricles 16-93 mL).
EXPECTED_RANGES = {"lesion_volume_ml": (0.05, 40.0), "ventricle_volume_ml": (8.0, 150.0)}
DESCRIPTIONS = {
    "pvl": "SYNTHETIC phantom (not patient data), dataset 1: T2 FLAIR-like images with PVL lesion masks.",
    "macs": "SYNTHETIC phantom (not patient data), dataset 2: T2 FLAIR-like images with MACS groups "
            "(mild = I-II, severe = III-V); ventricle masks for some cases only.",
}


@dataclass(frozen=True)
class CohortConfig:
    seed: int = 0
    n_pvl: int = 24
    n_macs: int = 87
    n_ventricle_labels: int = 25
    size: str = "paper"
    severe_fraction: float = 1.0 / 3.0
    label_noise: float = 0.10
    heads: bool = True  # whole heads (skull, scalp, eyes, neck; varied fields of view); False: brain-only images
    scale_range: tuple = (0.82, 0.95)  # subject brain size / MNI152's, drawn per case (children: 0.75-1.05)

    def validate(self) -> None:
        """One clear error per bad option, named as on the command line."""
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ShmnError(f"--seed: {self.seed!r} is not allowed; expected a whole number >= 0")
        for option, value in (("--n-pvl", self.n_pvl), ("--n-macs", self.n_macs)):
            if not isinstance(value, int) or value < 1:
                raise ShmnError(f"{option}: {value!r} is not allowed; expected a whole number >= 1")
        if not isinstance(self.n_ventricle_labels, int) or not 0 <= self.n_ventricle_labels <= self.n_macs:
            raise ShmnError(f"--n-ventricle-labels: {self.n_ventricle_labels!r} is not allowed; "
                            f"expected a whole number from 0 to --n-macs ({self.n_macs})")
        if self.size not in SIZES:
            raise ShmnError(f"--size: {self.size!r} is not a size; expected one of {', '.join(SIZES)}")
        if (not isinstance(self.scale_range, (tuple, list)) or len(self.scale_range) != 2
                or not 0.5 <= float(self.scale_range[0]) <= float(self.scale_range[1]) <= 1.3):
            raise ShmnError(f"scale_range: {self.scale_range!r} is not allowed; expected (low, high) with 0.5 <= low <= high <= 1.3")
        if not 0 <= self.label_noise < 0.5:
            raise ShmnError(f"label_noise: {self.label_noise} must be in [0, 0.5)")
        if not self.label_noise < self.severe_fraction < 1 - self.label_noise:
            raise ShmnError(f"severe_fraction: {self.severe_fraction} must lie between label_noise and 1 - label_noise")

    def true_severe_fraction(self) -> float:
        return (self.severe_fraction - self.label_noise) / (1 - 2 * self.label_noise)


def case_ids(dataset: str, n: int) -> list[str]:
    width = max(3, len(str(n - 1)))
    return [f"{dataset}_{i:0{width}d}" for i in range(n)]


def macs_groups(burdens: list[float], flip_draws: list[float], config: CohortConfig) -> tuple[float, list[str], list[str]]:
    """(threshold, true groups, observed groups) for dataset 2."""
    threshold = float(np.quantile(burdens, 1 - config.true_severe_fraction()))
    true = ["severe" if b > threshold else "mild" for b in burdens]
    flip = {"mild": "severe", "severe": "mild"}
    observed = [flip[g] if u < config.label_noise else g for g, u in zip(true, flip_draws)]
    return threshold, true, observed


def _range(values: list[float]) -> dict:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def summarise(cases: list[dict]) -> dict:
    observed = [c["macs_group"] for c in cases if c["macs_group"] is not None]
    return {
        "n": len(cases),
        "severe_fraction": round(observed.count("severe") / len(observed), 4) if observed else None,
        "severe_fraction_true": round(sum(c["macs_group_true"] == "severe" for c in cases) / len(cases), 4),
        "lesion_volume_ml": _range([c["lesion_volume_ml"] for c in cases]),
        "ventricle_volume_ml": _range([c["ventricle_volume_ml"] for c in cases]),
        "lesion_count": _range([c["lesion_count"] for c in cases]),
        "motor_burden_ml": _range([c["motor_burden_ml"] for c in cases]),
        "periventricular_wm_fraction": _range([c["periventricular_wm_fraction"] for c in cases]),
        "slice_thickness_mm": _range([c["spacing_mm"][2] for c in cases]),
        "orientations": dict(sorted(Counter(c["orientation"] for c in cases).items())),
        "splits": dict(Counter(c["split"] for c in cases)),
    }


def _montage_cases(folder: Path, records: list[dict]) -> list[MontageCase]:
    """Two cases of each dataset: dataset 1's first two, dataset 2's highest- and median-burden."""
    pvl = [r for r in records if r["dataset"] == "pvl"][:2]
    macs = sorted((r for r in records if r["dataset"] == "macs"), key=lambda r: r["motor_burden_ml"])
    picked = pvl + ([macs[-1], macs[len(macs) // 2]] if len(macs) > 1 else macs)
    montage = []
    for r in picked:
        base = folder / r["dataset"]
        pvl_path = base / ("labels" if r["dataset"] == "pvl" else "groundtruth") / "pvl" / f"{r['id']}.nii.gz"
        group = r["macs_group"] or r["macs_group_true"]
        caption = (f"{r['id']} ({group}, {r['orientation']}, "
                   f"{'x'.join(f'{s:.1f}' for s in r['spacing_mm'])} mm)")
        montage.append(MontageCase(caption, read_volume(base / "images" / f"{r['id']}.nii.gz"), read_volume(pvl_path),
                                   read_volume(base / "groundtruth" / "ventricles" / f"{r['id']}.nii.gz")))
    return montage


def generate_cohort(root: str | os.PathLike, config: CohortConfig = CohortConfig(), progress: bool = True,
                    overwrite: bool = False, workers: int = 1) -> dict:
    """Build the cohort in ``root`` (atomically) and return the statistics also written to cohort.json.

    ``workers`` > 1 builds cases in that many processes; the output is the same byte for byte.
    """
    config.validate()
    if not isinstance(workers, int) or workers < 1:
        raise ShmnError(f"--workers: {workers!r} is not allowed; expected a whole number >= 1")
    profile = SIZES[config.size]
    with atomic_dir(root, overwrite=overwrite) as tmp:
        ref = build_reference(load_anatomy(), profile.work_spacing_mm)
        if config.heads:
            ref = dataclasses.replace(ref, head=build_head_space(ref))
        options = CaseOptions(heads=config.heads, scale_range=tuple(float(v) for v in config.scale_range))
        tasks = [(dataset, index, case_id) for dataset, n in (("pvl", config.n_pvl), ("macs", config.n_macs))
                 for index, case_id in enumerate(case_ids(dataset, n))]
        records, flips = [], {}
        with contextlib.closing(build_cases(ref, profile, config.seed, tmp, tasks, workers, options)) as results:
            for record, flip_draw in progress_bar(results, total=len(tasks), desc="phantom", unit="case", enabled=progress):
                records.append(record)
                flips[record["id"]] = flip_draw
        cohort = _label_and_split(tmp, records, flips, config)
        render_montage(tmp / "montage.png", _montage_cases(tmp, records))
    return cohort


def _label_and_split(tmp: Path, records: list[dict], flips: dict[str, float], config: CohortConfig) -> dict:
    macs = [r for r in records if r["dataset"] == "macs"]
    threshold, true, observed = macs_groups([r["motor_burden_ml"] for r in macs], [flips[r["id"]] for r in macs], config)
    for r in records:
        r["macs_group_true"] = "severe" if r["motor_burden_ml"] > threshold else "mild"
        r["macs_group"] = None
    for r, group in zip(macs, observed):
        r["macs_group"] = group
        r["macs_label_flipped"] = group != r["macs_group_true"]
    for dataset, strata_of in (("pvl", lambda r: "all"), ("macs", lambda r: r["macs_group"])):
        members = [r for r in records if r["dataset"] == dataset]
        rng = np.random.default_rng([config.seed, 10 + ("pvl", "macs").index(dataset)])
        for r, split in zip(members, assign_splits([strata_of(r) for r in members], rng)):
            r["split"] = split

    # Ventricle labels go to training cases first (then val, then test): a label in the test split
    # would only be held out. This order is nested, so its first 10 are the paper's SHMN-4* subset.
    shuffled = [macs[i] for i in np.random.default_rng([config.seed, 20]).permutation(len(macs))]
    order = [r["id"] for split in ("train", "val", "test") for r in shuffled if r["split"] == split]
    labelled = set(order[: config.n_ventricle_labels])
    for r in macs:
        r["ventricle_labelled"] = r["id"] in labelled
        if r["id"] in labelled:
            source = tmp / "macs" / "groundtruth" / "ventricles" / f"{r['id']}.nii.gz"
            target = tmp / "macs" / label_path("ventricles", r["id"])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)

    _write_manifests(tmp, records, config)
    cohort = {
        "format": COHORT_FORMAT,
        "synthetic": True,
        "description": "SYNTHETIC PVL phantom cohort built by `shmn phantom` from the MNI152 template and its "
                       "aparc+aseg labels; not patient data."
                       + (" Whole heads (CSF, skull, scalp, eyes, neck) drawn around the brain by SHMN's own code."
                          if config.heads else " Brain-only images (0 outside the brain)."),
        "labels": {"brain": "<dataset>/labels/brain/<id>.nii.gz: reference brain mask on the image's grid"},
        "config": asdict(config),
        "seed": config.seed,
        "size_profile": asdict(SIZES[config.size]),
        "macs_rule": {
            "burden": "lesion volume (mL, reference space) weighted by exp(-distance to motor zone / 8 mm); motor zone = "
                      "WM by the thalamus, internal capsule, WM under pre/postcentral and paracentral cortex",
            "threshold_motor_burden_ml": round(threshold, 4),
            "threshold_quantile": round(1 - config.true_severe_fraction(), 4),
            "label_noise": config.label_noise,
            "target_severe_fraction": round(config.severe_fraction, 4),
        },
        "datasets": {
            "pvl": {"manifest": "pvl/manifest.json", "groundtruth": {"ventricles": "pvl/groundtruth/ventricles"}},
            "macs": {"manifest": "macs/manifest.json",
                     "groundtruth": {"pvl": "macs/groundtruth/pvl", "ventricles": "macs/groundtruth/ventricles"}},
        },
        "ventricle_label_order": order[: config.n_ventricle_labels],
        "expected_ranges": {k: list(v) for k, v in EXPECTED_RANGES.items()},
        "summary": {
            "all": summarise(records),
            "pvl": summarise([r for r in records if r["dataset"] == "pvl"]),
            "macs": summarise(macs),
        },
        "cases": records,
    }
    write_json(tmp / "cohort.json", cohort)
    return cohort


def _write_manifests(tmp: Path, records: list[dict], config: CohortConfig) -> None:
    for dataset in ("pvl", "macs"):
        cases = []
        for r in (r for r in records if r["dataset"] == dataset):
            cases.append(Case(
                id=r["id"], image=f"images/{r['id']}.nii.gz",
                pvl=label_path("pvl", r["id"]) if dataset == "pvl" else None,
                ventricles=label_path("ventricles", r["id"]) if r.get("ventricle_labelled") else None,
                macs=r["macs_group"] if dataset == "macs" else None, split=r["split"],
            ))
        extra = {"phantom": {"seed": config.seed, "size": config.size, "statistics": "../cohort.json",
                             "groundtruth": "groundtruth/ (hidden labels for evaluation only; not for training)"}}
        Manifest(root=tmp / dataset, cases=cases, name=dataset, description=DESCRIPTIONS[dataset], synthetic=True,
                 extra=extra).save()
