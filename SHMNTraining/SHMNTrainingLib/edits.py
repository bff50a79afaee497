"""Knowing whether the loaded case has edits that are not saved yet.

The segmentation node forwards its segmentation's content events (a segment added, removed or
renamed, its voxels painted: what the Segment Editor's effects and ``updateSegmentBinaryLabelmapFromArray``
fire). Any of them marks the case modified; a save marks it clean. Changes the module itself makes
while loading a case happen inside ``paused()`` and do not count. The MACS group is not in the
segmentation: the logic calls ``markModified()`` when it changes.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import slicer


def contentEvents() -> tuple[int, ...]:
    segmentation = slicer.vtkSegmentation
    return (
        segmentation.SegmentAdded,
        segmentation.SegmentRemoved,
        segmentation.SegmentModified,
        segmentation.SourceRepresentationModified,
    )


class EditTracker:
    """The modified flag of one segmentation node (see module docstring)."""

    def __init__(self, segmentationNode, onChange: Callable[[bool], None] | None = None):
        self.node = segmentationNode
        self.modified = False
        self._paused = 0
        self._onChange = onChange or (lambda modified: None)
        self._tags = [segmentationNode.AddObserver(event, self._onContentEvent) for event in contentEvents()]

    def _onContentEvent(self, caller=None, event=None) -> None:
        if not self._paused:
            self.markModified()

    def markModified(self) -> None:
        if not self.modified:
            self.modified = True
            self._onChange(True)

    def markSaved(self) -> None:
        if self.modified:
            self.modified = False
            self._onChange(False)

    @contextlib.contextmanager
    def paused(self):
        """Changes made inside do not count as edits (loading labels into the segmentation)."""
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def stop(self) -> None:
        for tag in self._tags:
            self.node.RemoveObserver(tag)
        self._tags = []
