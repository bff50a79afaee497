"""The tissue label scheme of the randomised synthesis: one uint8 class per voxel.

Anatomy classes come from the anatomy sources; pathology and normal-finding classes are painted per
sample. Which classes make a training target is fixed here, so that a normal finding can never
become a lesion label (tests check it).
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 0
SCALP = 1
SKULL = 2
EXTRA_CSF = 3  # subarachnoid CSF and sulci
CORTEX = 4
WHITE_MATTER = 5
DEEP_GREY = 6  # thalamus, basal ganglia, hippocampus, amygdala
VENTRICLE = 7  # lateral ventricles (the ventricle target)
OTHER_CSF = 8  # 3rd and 4th ventricles, cisterns
HINDBRAIN = 9  # cerebellum and brain stem
LESION = 10  # solid PVL (punctate, irregular, confluent)
CYST = 11  # the cavity of cystic PVL (CSF-like)
CYST_RIM = 12  # the gliotic rim around a cyst (bright on FLAIR)
CAPS_RIM = 13  # normal: periventricular caps at the frontal horns and the thin ependymal rim
TERMINAL_ZONE = 14  # normal in children: peritrigonal zones of late myelination
CHOROID_PLEXUS = 15  # normal: inside the ventricles (part of the ventricle target)
PERIVASCULAR = 16  # normal: perivascular spaces (CSF-like dots and lines)
FLOW_ARTEFACT = 17  # normal: CSF flow artefact inside the ventricles (part of the ventricle target)
N_CLASSES = 18

LESION_CLASSES = (LESION, CYST, CYST_RIM)
VENTRICLE_CLASSES = (VENTRICLE, CHOROID_PLEXUS, FLOW_ARTEFACT)
NORMAL_FINDINGS = (CAPS_RIM, TERMINAL_ZONE, CHOROID_PLEXUS, PERIVASCULAR, FLOW_ARTEFACT)
BRAIN_CLASSES = (CORTEX, WHITE_MATTER, DEEP_GREY, VENTRICLE, OTHER_CSF, HINDBRAIN, *LESION_CLASSES, *NORMAL_FINDINGS)
HEAD_CLASSES = (SCALP, SKULL, EXTRA_CSF)

# Lesions (and normal findings that mimic them) may only replace these classes.
LESION_HOSTS = (WHITE_MATTER,)


def pvl_target(labels: np.ndarray) -> np.ndarray:
    """The PVL mask (uint8) of a label map: solid lesions, cysts and their rims."""
    return np.isin(labels, LESION_CLASSES).astype(np.uint8)


def ventricle_target(labels: np.ndarray) -> np.ndarray:
    """The lateral-ventricle mask (uint8), with what lies inside them (choroid plexus, flow artefacts)."""
    return np.isin(labels, VENTRICLE_CLASSES).astype(np.uint8)
