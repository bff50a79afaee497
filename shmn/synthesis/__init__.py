"""The synthetic PVL cohort (`shmn phantom`): the project's embedded default data.

Built from real adult anatomy (MNI152 template + aparc+aseg, see shmn.io.anatomy) by a chain of small
steps, one module each: atlas (the reference space), subject (ventricles and lesions), contrast
(FLAIR-like appearance, bias, noise), acquisition (subject shape, head pose, clinical grid, partial
volume), case (one case end to end), cohort (datasets, MACS groups, splits, manifests, statistics),
montage (the picture). Not patient data; every output says so.
"""

from shmn.synthesis.acquisition import SIZES, SizeProfile
from shmn.synthesis.cohort import EXPECTED_RANGES, CohortConfig, generate_cohort

__all__ = ["CohortConfig", "EXPECTED_RANGES", "SIZES", "SizeProfile", "generate_cohort"]
