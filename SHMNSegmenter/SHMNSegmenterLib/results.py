"""The engine's output folder (``OUT/<case>/``) turned into MRML nodes beside the input volume.

- segmentation: ``segmentation.seg.nrrd`` read by Slicer's own segmentation reader, so the segment
  IDs, names, colours and terminology are exactly what the engine wrote; shown in 2D and 3D;
- lesion centres: a markups point list, one control point per lesion of ``report.json`` (RAS mm), then one per
  candidate the engine left out of the mask because the image does not show it (C1, C2...);
- results table: one row per lesion (with its mean probability, uncertainty and a "REVIEW: <reason>" flag where
  the engine flagged it: "model unsure", or "next to bright CSF" on an image whose CSF is not nulled), the
  candidates the engine left out of the mask because the image does not show them (flagged "REVIEW: not shown by
  the image"), then totals, MACS prediction (calibrated or not), the motor-pathway burden and the burden MACS
  estimate, and the model's identity.

All three go under the input volume's parent in the subject hierarchy (its study) and under the
input's transform, so they overlay the volume wherever the user has moved it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from SHMNCoreLib.enginecontract import engineContract, engineModule  # the engine's file names (shmn.contract)
from SHMNCoreLib.tables import addStringTable

from .casereport import reportPath
from .motorburden import motorBurdenRows

VENTRICLE_OPACITY_3D = 0.4  # see-through ventricles: the lesions around them stay visible in 3D
TABLE_COLUMNS = ("Measurement", "Value", "Unit", "R (mm)", "A (mm)", "S (mm)", "Mean probability", "Uncertainty (bits)",
                 "Mirror disagreement", "Review")
REQUIRED_REPORT_KEYS = ("case", "macs", "pvl", "ventricles", "model", "disclaimer")
MODEL_UNSURE = "model unsure"  # the only reason an engine older than review_reason flagged a lesion for


def reviewReason(lesion: dict) -> str:
    """Why the engine flagged a lesion for review (report.json ``review_reason``; "model unsure" from older engines)."""
    return lesion.get("review_reason") or MODEL_UNSURE


class ResultsError(RuntimeError):
    """The engine's output folder is missing something the module needs."""


def readReport(caseDir: Path) -> dict:
    path = Path(caseDir) / engineContract().REPORT_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read the engine's report ({exc})") from None
    missing = [key for key in REQUIRED_REPORT_KEYS if key not in report]
    if missing:
        raise ResultsError(f"{path}: report lacks {', '.join(missing)}; the engine is older than this module")
    return report


def macsCalibrationLabel(report: dict) -> str:
    """How report.json's MACS probability was made: "calibrated (<method>)", "uncalibrated", or "" (older engine)."""
    macs = report["macs"]
    if macs.get("calibrated") is True:
        return f"calibrated ({(macs.get('calibration') or {}).get('method') or 'method not stated'})"
    return "uncalibrated" if macs.get("calibrated") is False else ""


def _macsGroupLabel(report: dict) -> str | None:
    macs = report["macs"]
    group = macs.get("group")
    if group is None:
        return None
    groups = macs.get("groups") or {"mild": "MACS I-II", "severe": "MACS III-V"}
    return f"{group} ({groups.get(group, '?')})"


@dataclass(frozen=True)
class ResultSummary:
    """The figures the radiologist sees first; None where the model lacks the task."""

    case: str
    macsGroup: str | None
    macsProbabilitySevere: float | None
    pvlVolumeMl: float | None
    lesionCount: int | None
    ventriclesVolumeMl: float | None
    model: str
    disclaimer: str
    warnings: tuple[str, ...] = ()
    macsCalibration: str = ""  # macsCalibrationLabel
    lesionsToReview: int = 0  # lesions the engine flagged: the model is unsure of them, or they lie next to bright CSF
    reviewReasons: str = MODEL_UNSURE  # the reasons of those flags, e.g. "model unsure; next to bright CSF"
    ventriclesVisible: bool | None = None  # False: the image shows no clear ventricle boundary (report.json ventricles.visibility)
    lesionsNotShown: int = 0  # candidates the engine left out of the mask: the image does not show them (pvl.not_shown)

    @classmethod
    def fromReport(cls, report: dict) -> "ResultSummary":
        pvl = report["pvl"]
        lesionCount = pvl.get("lesion_count")
        if lesionCount is None and pvl.get("volume_ml") is not None:
            lesionCount = len(pvl.get("lesions") or [])
        return cls(
            case=report["case"],
            macsGroup=_macsGroupLabel(report),
            macsProbabilitySevere=report["macs"].get("probability_severe"),
            pvlVolumeMl=pvl.get("volume_ml"),
            lesionCount=lesionCount,
            ventriclesVolumeMl=report["ventricles"].get("volume_ml"),
            model=f"{report['model'].get('name')} {report['model'].get('version')}",
            disclaimer=report["disclaimer"],
            warnings=tuple(report.get("warnings") or ()),
            macsCalibration=macsCalibrationLabel(report),
            lesionsToReview=sum(bool(lesion.get("review")) for lesion in pvl.get("lesions") or []),
            reviewReasons="; ".join(sorted({reason for lesion in pvl.get("lesions") or [] if lesion.get("review")
                                            for reason in reviewReason(lesion).split("; ")})) or MODEL_UNSURE,
            ventriclesVisible=(report["ventricles"].get("visibility") or {}).get("visible"),
            lesionsNotShown=len(_notShown(report)),
        )

    def text(self) -> str:
        """Plain text for the module's result label."""
        na = "n/a (not in this model)"
        lines = [
            f"MACS: {self.macsGroup}, p(severe) = {self.macsProbabilitySevere:.2f}"
            + (f", {self.macsCalibration}" if self.macsCalibration else "") if self.macsGroup else f"MACS: {na}",
            f"PVL: {self.pvlVolumeMl:.2f} mL in {self.lesionCount} lesion(s)"
            + (f", {self.lesionsToReview} flagged for review ({self.reviewReasons})" if self.lesionsToReview else "")
            + (f"; {self.lesionsNotShown} more candidate(s) the image does not show, not in the mask: check"
               if self.lesionsNotShown else "")
            if self.pvlVolumeMl is not None else f"PVL: {na}",
            f"Lateral ventricles: {self.ventriclesVolumeMl:.1f} mL"
            + (" (boundary not visible on this image: check)" if self.ventriclesVisible is False else "")
            if self.ventriclesVolumeMl is not None else f"Ventricles: {na}",
            f"Model: {self.model}",
        ]
        lines += [f"Warning: {warning}" for warning in self.warnings]
        return "\n".join(lines + [self.disclaimer])


def _notShown(report: dict) -> list[dict]:
    """report.json's candidates left out of the lesion mask (an older engine wrote none)."""
    return (report["pvl"].get("not_shown") or {}).get("candidates") or []


def _number(value, digits: int) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def lesionReview(lesion: dict) -> tuple[str, str, str, str]:
    """A lesion's mean probability, uncertainty, mirror disagreement (how far the plain and the mirrored pass
    differ on it) and review flag as shown ("" where the engine gave none).

    "REVIEW: <reason>" marks the lesions the engine flagged (report.json ``review``, ``review_reason``): look twice."""
    review = lesion.get("review")
    flag = "" if review is None else (f"REVIEW: {reviewReason(lesion)}" if review else "confident")

    def shown(key: str) -> str:
        return _number(lesion[key], 2) if lesion.get(key) is not None else ""

    return shown("mean_probability"), shown("uncertainty"), shown("tta_disagreement"), flag


def tableRows(report: dict, caseReport: Path | None = None) -> list[tuple[str, ...]]:
    """The results table's rows (all text, as shown): lesions first, then totals, the case report and the model."""
    rows = []
    for index, lesion in enumerate(report["pvl"].get("lesions") or [], start=1):
        r, a, s = (f"{float(v):.1f}" for v in lesion["centre_ras_mm"])
        rows.append((f"PVL lesion {index}", _number(lesion["volume_ml"], 4), "mL", r, a, s) + lesionReview(lesion))
    for index, candidate in enumerate(_notShown(report), start=1):
        r, a, s = (f"{float(v):.1f}" for v in candidate["centre_ras_mm"])
        rows.append((f"Candidate not shown by the image {index}", _number(candidate["volume_ml"], 4), "mL", r, a, s, "", "", "",
                     "REVIEW: not shown by the image (not in the mask)"))
    summary = ResultSummary.fromReport(report)
    model = report["model"]
    rows += [
        ("PVL total", _number(summary.pvlVolumeMl, 3), "mL", "", "", ""),
        ("PVL lesion count", "n/a" if summary.lesionCount is None else str(summary.lesionCount), "", "", "", ""),
        ("Lateral ventricles total", _number(summary.ventriclesVolumeMl, 3), "mL", "", "", "", "", "", "",
         "REVIEW: boundary not visible" if summary.ventriclesVisible is False else ""),
        ("MACS probability (severe)", _number(summary.macsProbabilitySevere, 4), summary.macsCalibration, "", "", ""),
        ("MACS group", summary.macsGroup or "n/a", "", "", "", ""),
    ]
    rows += motorBurdenRows(report)  # the motor-pathway burden and the second MACS estimate, when the engine wrote them
    if caseReport is not None:
        rows.append(("Case report", str(caseReport), "", "", "", ""))
    rows += [
        ("Model", f"{model.get('name')} {model.get('version')}", "", "", "", ""),
        ("Model sha256", str(model.get("sha256")), "", "", "", ""),  # last: the module's self-test reads it there
    ]
    return [row + ("",) * (len(TABLE_COLUMNS) - len(row)) for row in rows]


def _subjectHierarchy(scene):
    import slicer

    return slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)


def placeBeside(nodes: list, volumeNode) -> None:
    """Put ``nodes`` under the volume's parent item (its study) and under the volume's transform."""
    hierarchy = _subjectHierarchy(volumeNode.GetScene())
    volumeItem = hierarchy.GetItemByDataNode(volumeNode)
    parentItem = hierarchy.GetItemParent(volumeItem) if volumeItem else hierarchy.GetSceneItemID()
    for node in nodes:
        # In Slicer the subject hierarchy plugins give every new node an item; reuse it if so.
        item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(parentItem, node)
        hierarchy.SetItemParent(item, parentItem)
        if node.IsA("vtkMRMLTransformableNode"):
            node.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())


def importSegmentation(caseDir: Path, volumeNode, segmentationsLogic, name: str):
    """Load ``segmentation.seg.nrrd`` with Slicer's reader; show it in 2D and as a 3D surface."""
    path = Path(caseDir) / engineContract().SEGMENTATION_FILE
    if not path.is_file():
        raise ResultsError(f"{path}: the engine wrote no segmentation file")
    segmentation = segmentationsLogic.LoadSegmentationFromFile(str(path), False, name)
    if segmentation is None:
        raise ResultsError(f"{path}: Slicer could not read the segmentation file")
    # Edits in the Segment Editor then happen on the input volume's grid, where the engine put the masks.
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.CreateClosedSurfaceRepresentation()
    display = segmentation.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility3D(True)
    segments = segmentation.GetSegmentation()
    for index in range(segments.GetNumberOfSegments()):
        segmentId = segments.GetNthSegmentID(index)
        if "ventricle" in segments.GetSegment(segmentId).GetName().lower():
            display.SetSegmentOpacity3D(segmentId, VENTRICLE_OPACITY_3D)
    return segmentation


def importLesionCentres(report: dict, scene, name: str):
    """One locked control point per lesion, labelled L1, L2... with its volume as description; then one per candidate
    the engine left out of the mask because the image does not show it, labelled C1, C2..., so that the radiologist
    can jump to it and look."""
    import vtk

    centres = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    centres.CreateDefaultDisplayNodes()
    centres.GetDisplayNode().SetSelectedColor(*engineModule("terminology").PVL_LESION.color)  # the PVL segment's colour
    for number, lesion in enumerate(report["pvl"].get("lesions") or [], start=1):
        index = centres.AddControlPoint(vtk.vtkVector3d(*[float(v) for v in lesion["centre_ras_mm"]]), f"L{number}")
        review = f" (REVIEW: {reviewReason(lesion)})" if lesion.get("review") else ""
        centres.SetNthControlPointDescription(index, f"PVL lesion {number}: {float(lesion['volume_ml']):.3f} mL{review}")
        centres.SetNthControlPointLocked(index, True)
    for number, candidate in enumerate(_notShown(report), start=1):
        index = centres.AddControlPoint(vtk.vtkVector3d(*[float(v) for v in candidate["centre_ras_mm"]]), f"C{number}")
        centres.SetNthControlPointDescription(index, f"Candidate {number} not shown by the image: {float(candidate['volume_ml']):.3f} mL "
                                                     "(REVIEW: not in the mask)")
        centres.SetNthControlPointLocked(index, True)
    return centres


def importResultsTable(report: dict, scene, name: str, caseReport: Path | None = None):
    table = addStringTable(scene, name, TABLE_COLUMNS, tableRows(report, caseReport))
    table.SetAttribute("SHMN.disclaimer", report["disclaimer"])
    if caseReport is not None:
        table.SetAttribute("SHMN.report", str(caseReport))
    return table


@dataclass
class ImportedResults:
    volume: object  # the input vtkMRMLScalarVolumeNode
    segmentation: object  # vtkMRMLSegmentationNode
    centres: object  # vtkMRMLMarkupsFiducialNode
    table: object  # vtkMRMLTableNode
    summary: ResultSummary
    report: dict
    caseDir: Path

    @property
    def overview(self) -> Path:
        return self.caseDir / engineContract().OVERVIEW_FILE

    @property
    def caseReport(self) -> Path | None:
        """report.html of the case, None when the engine wrote none."""
        path = reportPath(self.caseDir)
        return path if path.is_file() else None


def importResults(caseDir: Path, volumeNode, segmentationsLogic) -> ImportedResults:
    """Everything of one case into the volume's scene; nothing is added if the report is unusable."""
    report = readReport(caseDir)
    base = volumeNode.GetName()
    scene = volumeNode.GetScene()
    segmentation = importSegmentation(caseDir, volumeNode, segmentationsLogic, f"{base} SHMN segmentation")
    centres = importLesionCentres(report, scene, f"{base} PVL lesion centres")
    caseReport = reportPath(caseDir)
    table = importResultsTable(report, scene, f"{base} SHMN results", caseReport if caseReport.is_file() else None)
    placeBeside([segmentation, centres, table], volumeNode)
    return ImportedResults(volumeNode, segmentation, centres, table, ResultSummary.fromReport(report), report, Path(caseDir))
