"""The motor-pathway burden of one predicted case (issue 13, "MACS explained").

The template-space lesion mask is the model-grid lesion probability at the predictor's threshold, inside
the brain; the burden in the motor regions (shmn.measures.motor_regions) and the second MACS estimate
(shmn.measures.burden_macs) come from it. The regions that carry lesion are also carried onto the
input's grid for overview.png, through the case's registration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import SimpleITK as sitk

from shmn.inference.calibration import Calibration
from shmn.measures.burden_macs import SHIPPED_BURDEN_MODEL, burden_report_fields
from shmn.measures.motor_regions import CODES, REGIONS, MotorBurden, motor_burden, template_fractions
from shmn.preprocessing.preprocess import PreprocessedCase, to_native


@dataclass(frozen=True)
class CaseMotorBurden:
    burden: MotorBurden
    report_fields: dict  # motor_burden, macs_from_burden, macs_primary (report.json)
    regions_native: sitk.Image  # uint8 region codes (shmn.measures.motor_regions.CODES) on the input's grid


def template_lesion_mask(probability: np.ndarray, prep: PreprocessedCase, threshold: float) -> np.ndarray:
    """The lesion mask in template space: the model-grid probability at ``threshold``, inside the brain."""
    return (np.asarray(probability) >= threshold) & prep.brain


def regions_on_native(prep: PreprocessedCase, native: sitk.Image) -> sitk.Image:
    """Each model voxel labelled with the region covering most of it (at least half), carried onto the input's grid."""
    fractions = template_fractions(prep.reference)
    codes = np.array(sorted(CODES.values()), dtype=np.uint8)
    labels = np.where(fractions.max(axis=0) >= 0.5, codes[np.argmax(fractions, axis=0)], 0).astype(np.uint8)
    return to_native(labels, prep, native)


def case_motor_burden(probability: Optional[np.ndarray], prep: PreprocessedCase, native: sitk.Image,
                      threshold: float, network_macs: bool = True, calibration: Optional[Calibration] = None) -> Optional[CaseMotorBurden]:
    """None when the model has no lesion output (``probability`` None); ``network_macs``: the model has a MACS head;
    ``calibration``: the card's recalibration of the burden score (`shmn calibrate --macs-burden`)."""
    if probability is None:
        return None
    burden = motor_burden(template_lesion_mask(probability, prep, threshold), prep.reference)
    fields = burden_report_fields(burden, network_available=network_macs, calibration=calibration)
    return CaseMotorBurden(burden, fields, regions_on_native(prep, native))


def burden_macs_fields(probability: Optional[np.ndarray], prep: PreprocessedCase, threshold: float,
                       calibration: Optional[Calibration] = None) -> dict:
    """What `shmn evaluate` records per case (no overview regions): the burden MACS estimate
    (``macs_from_burden``), the lesion mL per motor region it was scored on (``motor_lesion_ml``, both sides)
    and all lesion mL in template space (``template_lesion_ml``), and the shipped score itself (``burden_score``, the
    logit before any recalibration): any other burden score can be tried on a
    cohort without predicting it again; None without a lesion output."""
    if probability is None:
        return {"macs_from_burden": None, "burden_score": None, "motor_lesion_ml": None, "template_lesion_ml": None}
    burden = motor_burden(template_lesion_mask(probability, prep, threshold), prep.reference)
    score = SHIPPED_BURDEN_MODEL.score(burden)
    return {"macs_from_burden": SHIPPED_BURDEN_MODEL.probability(burden) if calibration is None else calibration.probability(score),
            "burden_score": round(score, 4),
            "motor_lesion_ml": {region: round(burden.lesion_ml(region), 4) for region in REGIONS},
            "template_lesion_ml": round(burden.all_lesion_ml, 4)}
