"""A model card's grid and preprocessing parameters, read back into the configs the model was trained with.

A card comes from a file the user chose: every value is checked, and a damaged or hostile card gives
one error line naming the file, never a traceback (shmn.inference.predict.load_predictor calls these).
"""

from __future__ import annotations

import dataclasses

from shmn.errors import ShmnError
from shmn.preprocessing.preprocess import GRIDS, GridSpec, PreprocessConfig
from shmn.preprocessing.registration import RegistrationConfig

# A card's model grid must be one a brain MRI can be resampled to without exhausting memory.
GRID_SPACING_MM = (0.25, 10.0)
GRID_SIZE = (4, 512)


def grid_from_card(card: dict, source: str) -> GridSpec:
    grid = card.get("grid")
    if isinstance(grid, str) and grid in GRIDS:
        return GRIDS[grid]
    if isinstance(grid, dict) and "spacing_mm" in grid and "size" in grid:
        spacing, size = grid["spacing_mm"], grid["size"]
        ok_spacing = isinstance(spacing, (int, float)) and not isinstance(spacing, bool) and GRID_SPACING_MM[0] <= spacing <= GRID_SPACING_MM[1]
        ok_size = isinstance(size, (list, tuple)) and len(size) == 3 and all(
            isinstance(n, int) and not isinstance(n, bool) and GRID_SIZE[0] <= n <= GRID_SIZE[1] for n in size
        )
        if ok_spacing and ok_size:
            return GridSpec(float(spacing), tuple(size))
        raise ShmnError(
            f"{source}: model card 'grid' {grid!r} is out of range; expected spacing_mm in {GRID_SPACING_MM[0]}-{GRID_SPACING_MM[1]} "
            f"and 3 integer sizes in {GRID_SIZE[0]}-{GRID_SIZE[1]}"
        )
    raise ShmnError(f"{source}: model card has no usable 'grid' ({grid!r}); expected a grid name or {{spacing_mm, size}}")


def preprocess_config_from_card(card: dict, source: str) -> PreprocessConfig:
    """The card's preprocessing parameters (unknown keys ignored), each checked against its field's
    type as a training config's are: a damaged or hostile card gives one line, not a traceback."""
    from shmn.training.config import apply_overrides

    saved = card.get("preprocessing") or card.get("preprocess") or {}
    if not isinstance(saved, dict):
        raise ShmnError(f"{source}: model card 'preprocessing' is {type(saved).__name__}; expected an object")
    fields = {f.name for f in dataclasses.fields(PreprocessConfig)} - {"grid"}
    known = {k: v for k, v in saved.items() if k in fields}
    if isinstance(known.get("registration"), dict):
        registration_fields = {f.name for f in dataclasses.fields(RegistrationConfig)}
        known["registration"] = {k: v for k, v in known["registration"].items() if k in registration_fields}
    else:
        known.pop("registration", None)
    return apply_overrides(PreprocessConfig(grid=grid_from_card(card, source)), known, f"{source}: model card", prefix="preprocessing.")
