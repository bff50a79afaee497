"""A second, interpretable MACS estimate: a logistic score on the lesion burden, in the motor pathways above all.

    logit p(severe) = intercept + weight[all lesions] * all lesion mL
                                + sum over motor regions of weight[region] * lesion mL in that region (both sides)

Weights are non-negative (more lesion never lowers the risk), so each one reads as "every mL of lesion
multiplies the odds of MACS III-V by exp(weight)": every lesion mL counts by the all-lesions weight, and a
mL in a motor region counts that region's weight on top, so a lesion in a motor pathway never weighs less
than the same lesion elsewhere. They were fitted by ``benchmarks/fit_burden_macs.py`` on a validation
phantom cohort (seed 23) with the shipped model's own lesion masks, the masks the report measures, so the
fit is also the score's calibration on validation cases; like the network's MACS head, it knows only
synthetic data.

A site with MACS levels for some of its own children can move the score's operating point: `shmn calibrate
--macs-burden` fits Platt scaling of the score on them and stores it in the model card; the report then gives the
recalibrated probability and says so (``recalibrated``, ``recalibration``).

Which estimate the report calls primary is one constant, MACS_PRIMARY, chosen on the out-of-distribution
cohort (``rank_estimates``, ``benchmarks/ood_compare.py``): the burden score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from shmn.measures.motor_regions import REGIONS, MotorBurden

ESTIMATES = ("network", "burden")  # the two MACS estimates in report.json
# Chosen on the OOD cohort (benchmarks/ood_compare.py, 24 OOD cases): with the shipped model's (v2.5) lesions the
# burden score ranks the MACS groups at AUC 0.931 (0.943 on the second OOD cohort, seed 7), the network's MACS
# head at 0.597 (0.671). The network's head fails out of distribution; the burden holds (README). Still so with v2.7 on
# five OOD cohorts (seeds 0/7/13/31/37, stop 29): burden 0.938/0.943/0.859/0.735/0.722, network 0.486/0.700/0.785/0.655/0.615.
MACS_PRIMARY = "burden"
GROUP_THRESHOLD = 0.5  # as the network's: p > 0.5 -> severe (MACS III-V)
ALL_LESIONS = "all_lesions"  # the feature of every lesion mL, in a motor region or not
FEATURES = (ALL_LESIONS, *REGIONS)

# Fitted by: python benchmarks/fit_burden_macs.py --work /tmp/burden-fit --n 80 --seed 23 --masks predicted
# (shmn phantom --size paper --seed 23 --n-pvl 1 --n-macs 80 --n-ventricle-labels 0, a cohort no model trained on;
# the shipped model's (v2.7) own template-space lesion masks; observed MACS groups with their 10 % label noise;
# L2 penalty 0.1, weights >= 0). Its output: leave-one-out AUC 0.863 / accuracy 0.863 / ECE 0.074 against the
# observed groups, AUC 0.981 against the noise-free ones (n 80, 26 / 24 severe). With v2.5's masks the motor
# regions alone, fitted the same way, reached 0.808 / 0.962 left out against 0.865 / 0.979 with the all-lesions
# term: the term was chosen on these validation figures.
# The thalamic radiations' weight is 0: on these phantoms a mL there predicts MACS no better than one elsewhere.
BURDEN_MACS_INTERCEPT = -2.901
BURDEN_MACS_WEIGHTS_PER_ML = {ALL_LESIONS: 0.277, "corticospinal_plic": 0.491, "thalamic_radiations": 0.0, "central_corona_radiata": 1.124}
BURDEN_MACS_FITTED_BY = "benchmarks/fit_burden_macs.py --n 80 --seed 23 --masks predicted (the shipped model's lesions on validation phantoms)"


@dataclass(frozen=True)
class BurdenModel:
    intercept: float
    weights_per_ml: dict  # feature (FEATURES) -> weight per mL of lesion (both sides together)

    def features(self, burden: MotorBurden) -> np.ndarray:
        return np.array([feature_ml(burden, feature) for feature in FEATURES])

    def score(self, burden: MotorBurden) -> float:
        """The logit of p(severe)."""
        return float(self.intercept + self.features(burden) @ self.weights())

    def probability(self, burden: MotorBurden) -> float:
        return 1.0 / (1.0 + math.exp(-self.score(burden)))

    def weights(self) -> np.ndarray:
        return np.array([self.weights_per_ml[feature] for feature in FEATURES])

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """p(severe) of each row of (n, len(FEATURES)) lesion mL (a cohort's, as fit_burden_model takes them)."""
        return 1.0 / (1.0 + np.exp(-(self.intercept + np.asarray(features, dtype=float) @ self.weights())))


def feature_ml(burden: MotorBurden, feature: str) -> float:
    """Lesion mL of one feature: all lesions, or one motor region (both sides)."""
    return burden.all_lesion_ml if feature == ALL_LESIONS else burden.lesion_ml(feature)


SHIPPED_BURDEN_MODEL = BurdenModel(BURDEN_MACS_INTERCEPT, dict(BURDEN_MACS_WEIGHTS_PER_ML))


def macs_from_burden(burden: MotorBurden, model: BurdenModel = SHIPPED_BURDEN_MODEL, calibration=None) -> dict:
    """report.json's ``macs_from_burden``: probability, group, the score and each region's share of it.
    ``calibration`` (shmn.inference.calibration.Calibration, from the card's BURDEN_CARD_KEY): the probability is then
    the score recalibrated on the cases it was fitted on (the score's own, uncalibrated, kept beside it)."""
    probability = model.probability(burden) if calibration is None else calibration.probability(model.score(burden))
    recalibrated = {} if calibration is None else {"recalibration": {
        "method": "Platt scaling of the score", "parameters": dict(calibration.record.get("parameters") or {}),
        "fitted_on": {key: calibration.record.get(key) for key in ("split", "n_cases", "manifests") if key in calibration.record},
        "ece_before": calibration.record.get("ece_before"), "ece_after": calibration.record.get("ece_after"),
        "uncalibrated_probability_severe": round(model.probability(burden), 4)}}
    return {
        "probability_severe": round(probability, 4),
        "group": "severe" if probability > GROUP_THRESHOLD else "mild",
        "threshold": GROUP_THRESHOLD,
        "score": round(model.score(burden), 4),
        "terms": {f: round(model.weights_per_ml[f] * feature_ml(burden, f), 4) for f in FEATURES},
        "intercept": model.intercept,
        "weights_per_ml": dict(model.weights_per_ml),
        "method": "logistic score on all lesion mL and on the lesion mL in each motor pathway (both sides), non-negative weights",
        "fitted_on": BURDEN_MACS_FITTED_BY + "; synthetic data only",
        "recalibrated": calibration is not None,
        **recalibrated,
    }


def primary_estimate(network_available: bool, burden_available: bool) -> str:
    """MACS_PRIMARY when both estimates exist, else the one that does ("network" when neither)."""
    if network_available and burden_available:
        return MACS_PRIMARY
    return "burden" if burden_available else "network"


def burden_report_fields(burden: Optional[MotorBurden], model: BurdenModel = SHIPPED_BURDEN_MODEL,
                         network_available: bool = True, calibration=None) -> dict:
    """The report.json entries of this module: motor_burden, macs_from_burden, macs_primary.
    ``network_available``: whether the network gave its own MACS probability (a model without the MACS head does not);
    ``calibration``: the card's recalibration of the score (macs_from_burden)."""
    return {
        "motor_burden": None if burden is None else burden.to_json(),
        "macs_from_burden": None if burden is None else macs_from_burden(burden, model, calibration),
        "macs_primary": primary_estimate(network_available, burden is not None),
    }


def fit_burden_model(features: np.ndarray, labels: Sequence[float], l2: float = 0.1) -> BurdenModel:
    """Maximum-likelihood logistic fit (weights >= 0, L2 penalty ``l2`` on the weights) of (n, len(FEATURES)) lesion mL."""
    from scipy.optimize import minimize

    x = np.asarray(features, dtype=float)
    y = np.asarray(labels, dtype=float)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] + x @ theta[1:]
        p = 1.0 / (1.0 + np.exp(-z))
        nll = float(np.sum(np.logaddexp(0.0, z) - y * z)) + l2 * float(theta[1:] @ theta[1:])
        gradient = np.concatenate([[np.sum(p - y)], x.T @ (p - y) + 2 * l2 * theta[1:]])
        return nll, gradient

    bounds = [(None, None)] + [(0.0, None)] * x.shape[1]
    result = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return BurdenModel(float(result.x[0]), {f: float(w) for f, w in zip(FEATURES, result.x[1:])})


ESTIMATE_KEYS = {"network": "macs_probability", "burden": "macs_from_burden"}  # each estimate's per-case field


def estimate_pairs(cases: Sequence[dict], estimate: str) -> tuple[list[float], list[float]]:
    """(probabilities, labels 1 severe / 0 mild) of one MACS estimate over the cases that have both; cases carry
    ``macs_true`` (1, 0 or the group name) and the estimate's field (ESTIMATE_KEYS)."""
    key = ESTIMATE_KEYS[estimate]
    pairs = [(c[key], {"severe": 1.0, "mild": 0.0}.get(c["macs_true"], c["macs_true"])) for c in cases
             if c.get(key) is not None and c.get("macs_true") is not None]
    return [p for p, _ in pairs], [y for _, y in pairs]


def rank_estimates(cases: Sequence[dict]) -> dict:
    """AUC of each MACS estimate over a cohort: cases carry ``macs_true`` (1 severe, 0 mild, or the group name),
    ``macs_probability`` (the network's) and ``macs_from_burden`` (this module's). Returns
    {"network": auc, "burden": auc, "n": cases used, "better": the estimate of higher AUC}; None where undefined."""
    from shmn.measures.metrics import macs_metrics

    out: dict = {}
    for estimate in ESTIMATE_KEYS:
        probabilities, labels = estimate_pairs(cases, estimate)
        auc = macs_metrics(probabilities, labels)["auc"] if probabilities else float("nan")
        out[estimate] = None if math.isnan(auc) else round(auc, 4)
        out[f"n_{estimate}"] = len(probabilities)
    ranked = [e for e in ESTIMATES if out[e] is not None]
    out["better"] = max(ranked, key=lambda e: out[e]) if ranked else None
    return out
