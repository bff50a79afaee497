"""`shmn suggest`: which unlabelled case would teach the model most if an annotator labelled it next.

For every case of a dataset that lacks at least one label (PVL mask, ventricle mask, MACS group), the
model is run twice on the preprocessed image: as it is, and mirrored left-right (the model grid is
MNI-aligned, so the mirror is another plausible brain). Four measures, each between 0 and 1:

- ``pvl_entropy`` / ``ventricle_entropy``: mean binary entropy (bits) of the probability map over the
  brain voxels where either pass sees the structure at all (p > 0.05). Why: voxels where the model
  hesitates are exactly what a label corrects; averaging over the candidate region (not the whole
  brain) keeps a tiny, doubtful lesion from being drowned by millions of confident background voxels.
- ``flip_disagreement_pvl`` / ``flip_disagreement_ventricles``: 1 - Dice between the pseudo-label (the
  thresholded prediction, what SHMN-4* would train on, paper eq. 4) and the prediction of the mirrored
  image mapped back. Why: a pseudo-label that changes when the brain is mirrored is unstable, so
  training on it would teach noise; a human label is worth most there. (Both masks empty: 0.)
- ``macs_ambiguity``: 1 - |2 p(severe) - 1|, 1 at p = 0.5 and 0 at p = 0 or 1, averaged over both
  passes. Why: the classifier's decision boundary is where one more labelled example moves it.

Only the measures of the labels the case is MISSING count: a case with a PVL mask but no MACS group is
ranked by MACS ambiguity alone. The score is their mean; ties keep manifest order. The ranking is
written atomically to DATASET/suggestions.json (nothing is written when the run is interrupted).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from shmn.errors import ShmnError
from shmn.io.atomic import write_json
from shmn.io.manifest import LABEL_KEYS, Case, Manifest, load_manifest

SUGGESTIONS_FILE = "suggestions.json"
FORMAT = "shmn-suggestions/1"
CANDIDATE_P = 0.05  # a voxel belongs to the candidate region when either pass gives it more than this
MEASURES_BY_LABEL = {
    "pvl": ("pvl_entropy", "flip_disagreement_pvl"),
    "ventricles": ("ventricle_entropy", "flip_disagreement_ventricles"),
    "macs": ("macs_ambiguity",),
}


@dataclass(frozen=True)
class SuggestOptions:
    device: str = "auto"
    register: bool = True
    threshold: float = 0.5  # the pseudo-label threshold (as predict's masks)


@dataclass
class CaseScore:
    id: str
    missing: list[str]
    measures: dict[str, Optional[float]]
    score: float
    macs_probability: Optional[float] = None
    reasons: list[str] = field(default_factory=list)


def binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p.astype(np.float64), 1e-6, 1 - 1e-6)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def region_entropy(p: np.ndarray, p_flipped: np.ndarray, brain: np.ndarray) -> float:
    """Mean entropy of the mean of both passes over the candidate region (0 when there is none)."""
    region = brain & ((p > CANDIDATE_P) | (p_flipped > CANDIDATE_P))
    if not region.any():
        return 0.0
    return float(binary_entropy((p[region] + p_flipped[region]) / 2).mean())


def flip_disagreement(p: np.ndarray, p_flipped: np.ndarray, brain: np.ndarray, threshold: float) -> float:
    a, b = (p >= threshold) & brain, (p_flipped >= threshold) & brain
    total = int(a.sum() + b.sum())
    return 0.0 if total == 0 else float(1.0 - 2.0 * (a & b).sum() / total)


def macs_ambiguity(probabilities: list[float]) -> float:
    return float(np.mean([1.0 - abs(2.0 * p - 1.0) for p in probabilities]))


def score_maps(
    brain: np.ndarray,
    pvl: tuple[np.ndarray, np.ndarray] | None,
    ventricles: tuple[np.ndarray, np.ndarray] | None,
    macs: tuple[float, float] | None,
    missing: list[str],
    threshold: float = 0.5,
) -> tuple[dict[str, Optional[float]], float]:
    """The measures from (as-is, mirrored-back) probability pairs, and the score over the missing labels."""
    measures: dict[str, Optional[float]] = {name: None for names in MEASURES_BY_LABEL.values() for name in names}
    if pvl is not None:
        measures["pvl_entropy"] = region_entropy(pvl[0], pvl[1], brain)
        measures["flip_disagreement_pvl"] = flip_disagreement(pvl[0], pvl[1], brain, threshold)
    if ventricles is not None:
        measures["ventricle_entropy"] = region_entropy(ventricles[0], ventricles[1], brain)
        measures["flip_disagreement_ventricles"] = flip_disagreement(ventricles[0], ventricles[1], brain, threshold)
    if macs is not None:
        measures["macs_ambiguity"] = macs_ambiguity(list(macs))
    counted = [measures[name] for label in missing for name in MEASURES_BY_LABEL[label] if measures[name] is not None]
    score = float(np.mean(counted)) if counted else 0.0
    return {k: None if v is None else round(v, 4) for k, v in measures.items()}, round(score, 4)


def _reasons(measures: dict, missing: list[str]) -> list[str]:
    """The two strongest counted measures, in words (for the table's tooltip and the CLI)."""
    words = {
        "pvl_entropy": "uncertain PVL map", "flip_disagreement_pvl": "PVL pseudo-label unstable under mirroring",
        "ventricle_entropy": "uncertain ventricle map", "flip_disagreement_ventricles": "ventricle pseudo-label unstable under mirroring",
        "macs_ambiguity": "MACS probability near 0.5",
    }
    counted = [(measures[n], n) for label in missing for n in MEASURES_BY_LABEL[label] if measures[n] is not None]
    return [f"{words[name]} ({value:.2f})" for value, name in sorted(counted, reverse=True)[:2] if value > 0]


def missing_labels(case: Case) -> list[str]:
    return [label for label in LABEL_KEYS if not case.has(label)]


def score_case(image_path: Path, case: Case, predictor, options: SuggestOptions) -> CaseScore:
    """Preprocess one case, run the model on it and on its left-right mirror, and score it."""
    from shmn.inference.engine import InferenceOptions, run_inference
    from shmn.io.volume_io import read_volume
    from shmn.preprocessing.preprocess import preprocess

    prep = preprocess(read_volume(image_path), dataclasses.replace(predictor.preprocess, register=options.register))
    inference = InferenceOptions(device=options.device)
    plain = run_inference(predictor.network, prep.image, inference)
    # The last array axis is MNI x (left-right): mirror, predict, and mirror the maps back.
    mirrored = run_inference(predictor.network, prep.image[:, :, ::-1].copy(), inference)

    def pair(a, b):
        return None if a is None or b is None else (a, b[:, :, ::-1])

    macs = None if plain.macs_probability is None else (plain.macs_probability, mirrored.macs_probability)
    missing = missing_labels(case)
    measures, score = score_maps(prep.brain, pair(plain.pvl_probability, mirrored.pvl_probability),
                                 pair(plain.ventricle_probability, mirrored.ventricle_probability), macs, missing, options.threshold)
    return CaseScore(case.id, missing, measures, score,
                     None if plain.macs_probability is None else round(plain.macs_probability, 4), _reasons(measures, missing))


def rank(scores: list[CaseScore]) -> list[CaseScore]:
    return sorted(scores, key=lambda s: -s.score)  # stable: ties keep manifest order


def suggest(
    dataset: str | os.PathLike,
    model=None,
    n: int = 10,
    options: SuggestOptions = SuggestOptions(),
    progress: bool = True,
    on_case: Callable[[int, int, str], None] = lambda done, total, case_id: None,
) -> dict:
    """Score every case missing a label, rank them, write DATASET/suggestions.json; returns its content."""
    from shmn.inference.predict import Predictor, load_predictor
    from shmn.progress import progress_bar

    if n < 1:
        raise ShmnError(f"-n {n}: expected at least 1 case to suggest")
    manifest: Manifest = load_manifest(dataset)
    candidates = [c for c in manifest.cases if missing_labels(c)]
    if not candidates:
        raise ShmnError(f"{manifest.path}: every case already has all its labels (PVL, ventricles, MACS); nothing to suggest")
    predictor = model if isinstance(model, Predictor) else load_predictor(model)
    scores = []
    for index, case in enumerate(progress_bar(candidates, desc="shmn suggest", unit="case", enabled=progress)):
        scores.append(score_case(manifest.resolve(case.image), case, predictor, options))
        on_case(index + 1, len(candidates), case.id)
    ranking = rank(scores)
    result = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": manifest.name or manifest.root.name,
        "model": {"name": predictor.info.name, "version": predictor.info.version, "sha256": predictor.info.sha256},
        "measures": {
            "pvl_entropy": "mean binary entropy of the PVL map over its candidate region (p > 0.05 in either pass)",
            "ventricle_entropy": "mean binary entropy of the ventricle map over its candidate region",
            "flip_disagreement_pvl": "1 - Dice(PVL pseudo-label, prediction of the left-right mirrored image)",
            "flip_disagreement_ventricles": "1 - Dice(ventricle pseudo-label, prediction of the mirrored image)",
            "macs_ambiguity": "1 - |2 p(severe) - 1|, mean of both passes",
            "score": "mean of the measures of the labels the case is missing",
        },
        "suggested": [s.id for s in ranking[:n]],
        "ranking": [dict(rank=i + 1, **dataclasses.asdict(s)) for i, s in enumerate(ranking)],
    }
    write_json(manifest.root / SUGGESTIONS_FILE, result)
    return result


def read_suggestions(dataset: str | os.PathLike) -> Optional[dict]:
    """DATASET/suggestions.json, or None when there is none (torch-free: SHMN Training reads it)."""
    import json

    path = Path(dataset) / SUGGESTIONS_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ShmnError(f"{path}: unreadable suggestions file ({exc}); run `shmn suggest` again") from None
    if data.get("format") != FORMAT or not isinstance(data.get("ranking"), list):
        raise ShmnError(f"{path}: not a {FORMAT} file; run `shmn suggest` again")
    return data
