"""The dataset panel's case table: which case has which label, filtered as the annotator asks.

Opening a dataset (and making one from a plain folder of images) and the label status are the
engine's (shmn.io.dataset, the same code as `shmn dataset init|status`); this file only shapes its
rows for the table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .engineaccess import shmn

COLUMNS = ("Case", "Split", "PVL", "Ventricles", "MACS", "Suggested")


class CaseFilter(enum.Enum):
    """What the case table shows."""

    ALL = "all"
    MISSING_PVL = "pvl"
    MISSING_VENTRICLES = "ventricles"
    MISSING_MACS = "macs"
    MISSING_ANY = "any"

    def label(self) -> str:
        return {
            "all": "All cases",
            "pvl": "Missing PVL mask",
            "ventricles": "Missing ventricle mask",
            "macs": "Missing MACS group",
            "any": "Missing any label",
        }[self.value]

    def accepts(self, case) -> bool:
        if self is CaseFilter.ALL:
            return True
        if self is CaseFilter.MISSING_ANY:
            return not all(case.has(kind) for kind in ("pvl", "ventricles", "macs"))
        return not case.has(self.value)


@dataclass(frozen=True)
class CaseRow:
    """One row of the case table, as shown (the engine's status cells)."""

    id: str
    split: str
    cells: tuple  # the engine's status cells, then the 'Suggested' cell

    @property
    def suggested(self) -> str:
        """Rank and score from `shmn suggest` (suggestions.py), "-" when not ranked."""
        return self.cells[-1]


def caseRows(manifest, caseFilter: CaseFilter = CaseFilter.ALL, suggestions=None) -> list:
    """The table's rows; ``suggestions`` (suggestions.Suggestions) fills the 'Suggested' column."""
    datasets = shmn("io.dataset")
    return [CaseRow(status.id, status.split,
                    datasets.status_cells(status) + (suggestions.cell(status.id) if suggestions is not None else "-",))
            for status in datasets.case_status(manifest) if caseFilter.accepts(status)]


def statusText(manifest) -> str:
    """``12 cases: PVL 6, ventricles 3, MACS 9``."""
    return shmn("io.dataset").status_summary(manifest)


def openDataset(path):
    """The dataset at ``path`` (folder or manifest.json); a plain image folder gets a manifest first."""
    return shmn("io.dataset").open_dataset(path)
