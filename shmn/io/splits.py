"""The one split rule: 70/10/20 train/val/test (the paper's target-task split), stratified and seeded.

The phantom cohort (stratified by MACS group) and `shmn dataset init` (stratified by which labels a
case already has) both split with ``assign_splits``, so a dataset made either way is split alike.
"""

from __future__ import annotations

import numpy as np

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def assign_splits(strata: list[str], rng: np.random.Generator) -> list[str]:
    """70/10/20 splits, stratified: each stratum's shuffled members are spread over [0, 1] and the
    cases, sorted by that position, are cut into train, val, test by the overall counts."""
    n = len(strata)
    n_val, n_test = round(n * SPLIT_FRACTIONS["val"]), round(n * SPLIT_FRACTIONS["test"])
    if n >= 3:  # every split gets a case once there are enough
        n_val, n_test = max(1, n_val), max(1, n_test)
    position = np.zeros(n)
    for stratum in sorted(set(strata)):
        members = [i for i, s in enumerate(strata) if s == stratum]
        for rank, i in enumerate(rng.permutation(members)):
            position[i] = (rank + rng.uniform(0.25, 0.75)) / len(members)
    splits = [""] * n
    for rank, i in enumerate(np.argsort(position, kind="stable")):
        splits[i] = "train" if rank < n - n_val - n_test else ("val" if rank < n - n_test else "test")
    return splits
