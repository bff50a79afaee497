"""SHMNSegmenter's implementation, one job per file.

parameters (typed choices), engine (find and command the ``shmn`` engine), process (run it in its
own process), results (engine outputs -> MRML nodes), casereport (open the case's report.html),
terminology (SHMN's segment codes in Slicer),
dependencies (install what the engine needs, after asking), logic (ties them together) and
widget (the Qt panel; imported by the module's widget only, so the rest runs without Qt).
"""

from .logic import JobState, SegmentationJob, SHMNSegmenterLogic
from .parameters import Device, SegmenterParameters
from .results import ImportedResults, ResultSummary

__all__ = [
    "Device",
    "ImportedResults",
    "JobState",
    "ResultSummary",
    "SegmentationJob",
    "SegmenterParameters",
    "SHMNSegmenterLogic",
]
