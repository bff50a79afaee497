"""The patient-facing header of a case report: name, ID and study date when the input's header has them.

DICOM series carry them as tags (0010,0010 name, 0010,0020 ID, 0008,0020 study date); NRRD, MHA and
NIfTI files only as free key/value fields, which are looked up under the usual names. Only the
header is read (SimpleITK ReadImageInformation), never the pixels. Anything else gets the file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import SimpleITK as sitk

# (field, DICOM tag as SimpleITK names it, free-text keys other writers use)
FIELDS = (
    ("name", "0010|0010", ("patientname", "patient_name", "dicom.patientname", "patient name")),
    ("id", "0010|0020", ("patientid", "patient_id", "dicom.patientid", "patient id")),
    ("date", "0008|0020", ("studydate", "study_date", "dicom.studydate", "study date", "acquisitiondate")),
)


@dataclass(frozen=True)
class PatientHeader:
    source: str  # the input's file or folder name
    name: Optional[str] = None
    id: Optional[str] = None
    date: Optional[str] = None  # as written in the header; DICOM YYYYMMDD shown as YYYY-MM-DD

    def rows(self, anonymise: bool) -> list[tuple[str, str]]:
        """Label/value rows for the page; anonymised: none of name, ID, date or file name."""
        if anonymise:
            return [("Patient", "anonymised (--anonymise)")]
        rows = [(label, value) for label, value in (("Name", self.name), ("Patient ID", self.id), ("Study date", self.date)) if value]
        return rows + [("Input", self.source)] if rows else [("Input", self.source + " (no patient fields in its header)")]


def _first_dicom_file(folder: Path) -> Optional[str]:
    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        if not series:
            return None
        return sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])[0]
    except (RuntimeError, IndexError):
        return None


def _clean(value: str) -> Optional[str]:
    value = value.replace("^", " ").strip().strip("\x00").strip()
    return value or None


def _date(value: Optional[str]) -> Optional[str]:
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value


def read_patient_header(path: str | os.PathLike) -> PatientHeader:
    """The header fields of an input file or DICOM folder; a file that cannot be read gives only its name."""
    path = Path(path)
    source = path.name or str(path)
    target = _first_dicom_file(path) if path.is_dir() else str(path)
    if not target or not Path(target).exists():
        return PatientHeader(source)
    reader = sitk.ImageFileReader()
    reader.SetFileName(target)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return PatientHeader(source)
    lowered = {key.lower(): key for key in reader.GetMetaDataKeys()}
    values = {}
    for field, tag, aliases in FIELDS:
        key = lowered.get(tag) or next((lowered[a] for a in aliases if a in lowered), None)
        values[field] = _clean(reader.GetMetaData(key)) if key else None
    return PatientHeader(source, values["name"], values["id"], _date(values["date"]))
