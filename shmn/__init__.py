"""SHMN: joint PVL segmentation, ventricle segmentation, lesion localisation and MACS prediction.

The engine behind the SHMN 3D Slicer extension (Yang et al., MICCAI 2021). No Qt, no Slicer here.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "Research software. The shipped model was trained on synthetic phantoms only; "
    "its outputs are not validated on patients and must not be used for clinical decisions."
)
