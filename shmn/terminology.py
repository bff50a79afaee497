"""The two segments SHMN writes: names, label values, colours and coded terminology, as plain data.

Slicer stores a segment's meaning in its ``TerminologyEntry`` tag (seg.nrrd header
``SegmentN_Tags``), seven ``~``-separated fields, each code as ``scheme^value^meaning``::

    contextName~category~type~typeModifier~anatomicContextName~anatomicRegion~anatomicRegionModifier

(format documented at slicer.readthedocs.io, developer guide, Segmentations, "TerminologyEntry tag";
slicerio.terminology_entry_from_string parses it). Codes:

- Lateral ventricles: Slicer's own "3D Slicer General Anatomy list" entry (category SCT 123037004
  "Anatomical Structure", type SCT 66720007 "Lateral ventricle", recommended colour 88,106,215),
  so Slicer recognises it without any extra file.
- PVL lesion: no standard code fits, so a private coding scheme. DICOM reserves designators (and
  code values) starting with "99" for private use: scheme "99SHMN", value "99PVL01". Category SCT
  49755003 "Morphologically Altered Structure"; anatomic region SCT 68523003 "Cerebral white matter".
  Its context is SHMN's own; a Slicer ``.term.json`` built from ``SHMN_CONTEXT`` and these
  constants lets the Segment Editor offer it.
"""

from __future__ import annotations

from dataclasses import dataclass

SLICER_ANATOMY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
SHMN_CONTEXT = "Segmentation category and type - SHMN periventricular leukomalacia"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
PRIVATE_SCHEME = "99SHMN"


@dataclass(frozen=True)
class Code:
    """One coded concept (DICOM code sequence item)."""

    scheme: str  # CodingSchemeDesignator
    value: str  # CodeValue
    meaning: str  # CodeMeaning

    def as_list(self) -> list[str]:
        return [self.scheme, self.value, self.meaning]

    def as_tag(self) -> str:
        return f"{self.scheme}^{self.value}^{self.meaning}"


EMPTY_CODE_TAG = "^^"


@dataclass(frozen=True)
class SegmentTerm:
    """Everything Slicer needs to show and classify one segment."""

    segment_id: str
    name: str
    label_value: int  # value in the written labelmaps and in segmentation.seg.nrrd
    color: tuple[float, float, float]  # 0-1 RGB
    context: str
    category: Code
    type: Code
    anatomic_region: Code | None = None

    @property
    def color_rgb255(self) -> tuple[int, int, int]:
        return tuple(int(round(c * 255)) for c in self.color)  # type: ignore[return-value]

    def terminology_entry(self) -> str:
        """The Slicer ``TerminologyEntry`` tag value."""
        region = self.anatomic_region.as_tag() if self.anatomic_region else EMPTY_CODE_TAG
        return "~".join(
            [self.context, self.category.as_tag(), self.type.as_tag(), EMPTY_CODE_TAG, ANATOMIC_CONTEXT, region, EMPTY_CODE_TAG]
        )

    def slicerio_terminology(self) -> dict:
        """The same entry as the dict slicerio.read_segmentation returns / write_segmentation takes."""
        terminology = {
            "contextName": self.context,
            "category": self.category.as_list(),
            "type": self.type.as_list(),
            "anatomicContextName": ANATOMIC_CONTEXT,
        }
        if self.anatomic_region:
            terminology["anatomicRegion"] = self.anatomic_region.as_list()
        return terminology


MORPHOLOGICALLY_ALTERED_STRUCTURE = Code("SCT", "49755003", "Morphologically Altered Structure")
ANATOMICAL_STRUCTURE = Code("SCT", "123037004", "Anatomical Structure")
CEREBRAL_WHITE_MATTER = Code("SCT", "68523003", "Cerebral white matter")

PVL_LESION = SegmentTerm(
    segment_id="pvl_lesion",
    name="PVL lesion",
    label_value=1,
    color=(0.9, 0.2, 0.2),
    context=SHMN_CONTEXT,
    category=MORPHOLOGICALLY_ALTERED_STRUCTURE,
    type=Code(PRIVATE_SCHEME, "99PVL01", "Periventricular leukomalacia lesion"),
    anatomic_region=CEREBRAL_WHITE_MATTER,
)

LATERAL_VENTRICLES = SegmentTerm(
    segment_id="lateral_ventricles",
    name="Lateral ventricles",
    label_value=2,
    color=(88 / 255, 106 / 255, 215 / 255),  # Slicer's recommended colour for "Lateral ventricle"
    context=SLICER_ANATOMY_CONTEXT,
    category=ANATOMICAL_STRUCTURE,
    type=Code("SCT", "66720007", "Lateral ventricle"),
)

# In label-value order: the order segments are written in.
SEGMENTS: tuple[SegmentTerm, ...] = (PVL_LESION, LATERAL_VENTRICLES)
