"""report.html / report.pdf of a case and summary.html of a batch, from real `shmn predict` outputs.

The pages are parsed (stdlib html.parser) and compared with report.json, number for number; the PDF
is opened with pypdf. A report.json carrying the later model's keys (calibrated MACS, regional
burden, per-lesion uncertainty, brain volume) is constructed here to show those sections render.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
import SimpleITK as sitk

from shmn.errors import ShmnError
from shmn.measures.motor_regions import REGION_NAMES
from shmn.reporting.case_report import case_context, render_case_html, write_case_report
from shmn.reporting.patient import PatientHeader, read_patient_header
from shmn.reporting.summary_report import read_summary, write_summary_html

pytestmark = pytest.mark.xdist_group("reporting")


class Tables(HTMLParser):
    """Tables by id (rows of cell texts), images (src) and links (href) of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.tables, self.images, self.links, self.ids = {}, [], [], {}
        self._table = self._row = self._cell = None
        self._id_stack = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", f"table{len(self.tables)}"), [])
        elif tag == "tr" and self._table is not None:
            self._row = []
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        if "id" in attrs and tag not in ("table",):
            self._id_stack.append((tag, attrs["id"], []))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        if self._id_stack and self._id_stack[-1][0] == tag:
            _, key, text = self._id_stack.pop()
            self.ids[key] = " ".join("".join(text).split())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        for _, _, text in self._id_stack:
            text.append(data)


def _case(out, name):
    folder = out / name
    return folder, json.loads((folder / "report.json").read_text())


def test_case_report_holds_report_json_numbers(predicted_batch):
    """Lesion count, each lesion's volume and centre, and the totals are those of report.json."""
    for folder in sorted(p for p in predicted_batch.iterdir() if p.is_dir()):
        report = json.loads((folder / "report.json").read_text())
        page = Tables((folder / "report.html").read_text(encoding="utf-8"))
        lesions = report["pvl"]["lesions"]
        rows = page.tables.get("lesions", [])[1:]
        assert len(rows) == report["pvl"]["lesion_count"] == len(lesions)
        for number, (row, lesion) in enumerate(zip(rows, lesions), start=1):
            assert row[0] == str(number)
            assert row[1] == f"{lesion['volume_ml']:.3f}"
            assert row[2] == ", ".join(f"{v:.1f}" for v in lesion["centre_ras_mm"])
            assert row[3] != "—", "the predictor registered the case, so each lesion has a region"
            assert row[4] == f"{lesion['mean_probability']:.2f}"
            mirrored = f", mirror diff {lesion['tta_disagreement']:.2f}" if "tta_disagreement" in lesion else ""
            assert row[5] == f"{'review' if lesion['review'] else 'confident'} ({lesion['uncertainty']:.2f} bits{mirrored})"
        findings = dict(row for row in page.tables["findings"] if len(row) == 2)
        assert findings["PVL lesions, total"] == f"{report['pvl']['volume_ml']:.2f} mL"
        assert findings["Number of lesions"] == str(report["pvl"]["lesion_count"])
        assert findings["Lateral ventricles"] == f"{report['ventricles']['volume_ml']:.1f} mL"
        macs = report["macs"]
        assert findings["MACS group (model)"].startswith(macs["group"])
        if macs["calibrated"]:  # the shipped default is calibrated: the network's own output stays beside it
            assert findings["p(severe), model output"] == f"{macs['calibration']['uncalibrated_probability_severe']:.2f}"
            method = macs["calibration"]["method"]
            assert findings[f"p(severe), calibrated ({method})"].startswith(f"{macs['probability_severe']:.2f} → {macs['group']}")
        else:
            assert findings["p(severe), model output"] == f"{macs['probability_severe']:.2f}"
            assert findings["p(severe), calibrated"] == "— not computed by this model"
        model = dict(page.tables["model"])
        assert model["sha256"] == report["model"]["sha256"] and model["Version"] == report["model"]["version"]
        assert page.ids["use-line"] == "Synthetic-data model, not for clinical use."
        assert page.ids["registration-verdict"] in ("passed", "FAILED — results are not trustworthy")
        # Self-contained: every image is embedded; nothing refers to the network.
        assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
        html = (folder / "report.html").read_text(encoding="utf-8")
        assert "http://" not in html and "https://" not in html and "<script" not in html


def test_case_pdf_has_pages_text_and_images(predicted_batch, tmp_path):
    import pypdf

    from shmn.reporting.pdf import write_case_pdf

    folder, report = _case(predicted_batch, "pvl_000")
    reader = pypdf.PdfReader(str(folder / "report.pdf"))
    # Every page carries its number in the footer, 1..N in order.
    assert [f"page {i + 1}" in " ".join(page.extract_text().split()) for i, page in enumerate(reader.pages)] == [True] * len(reader.pages)
    # A long lesion table runs onto more pages instead of off the page.
    long = copy.deepcopy(report)
    long["pvl"]["lesions"] = [dict(report["pvl"]["lesions"][0], volume_ml=0.001 * (i + 1)) for i in range(150)]
    longer = pypdf.PdfReader(str(write_case_pdf(tmp_path / "long.pdf", case_context(long, PatientHeader("long.nii.gz"), None, anonymise=False), None)))
    assert len(longer.pages) > len(reader.pages)
    long_text = " ".join(" ".join(page.extract_text() for page in longer.pages).split())
    assert all(f"{0.001 * (i + 1):.3f}" in long_text for i in range(150))  # every row printed, none cut off
    for page in reader.pages:  # A4 portrait (points)
        assert abs(float(page.mediabox.width) - 595) < 2 and abs(float(page.mediabox.height) - 842) < 2
    text = " ".join(page.extract_text() for page in reader.pages)
    flat = " ".join(text.split())
    assert "Synthetic-data model, not for clinical use." in flat
    assert f"{report['pvl']['volume_ml']:.2f} mL" in flat
    assert report["model"]["sha256"] in flat.replace(" ", "")
    for lesion in report["pvl"]["lesions"]:
        assert f"{lesion['volume_ml']:.3f}" in flat
    # Images actually drawn (matplotlib shares one resource dictionary across pages, so page.images
    # lists every image on every page): count the content streams' "Do" operators.
    drawn = [re.findall(rb"/(I\d+) Do", page.get_contents().get_data()) for page in reader.pages]
    assert sum(len(names) for names in drawn) == 1  # the planes, as in the HTML
    first = next(i for i, names in enumerate(drawn) if names)
    image = {img.name.split(".")[0]: img for img in reader.pages[first].images}[drawn[first][0].decode()]
    assert image.image.size[0] >= 600


def test_summary_html_links_every_case_and_plots(predicted_batch):
    page = Tables((predicted_batch / "summary.html").read_text(encoding="utf-8"))
    rows = read_summary(predicted_batch / "summary.csv")
    assert sorted(page.links) == sorted(f"{r['case']}/report.html" for r in rows if r["status"] == "ok")
    for link in page.links:
        assert (predicted_batch / link).is_file()
    cases = page.tables["cases"][1:]
    assert [row[0] for row in cases] == [r["case"] for r in rows]
    assert [row[1] for row in cases] == [r["status"] for r in rows]
    assert len(page.images) == 4 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert any("no such file" in " ".join(row) for row in cases)  # the failed case says why


def test_summary_html_needs_a_summary_csv(tmp_path):
    with pytest.raises(ShmnError, match="summary.csv: no such file"):
        write_summary_html(tmp_path)
    (tmp_path / "summary.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ShmnError, match="not a summary.csv"):
        write_summary_html(tmp_path)


UNCERTAINTY_KEYS = ("mean_probability", "uncertainty", "tta_disagreement", "review")


def _without_later_keys(report: dict) -> dict:
    """report.json as a model without calibration or lesion uncertainty wrote it."""
    plain = copy.deepcopy(report)
    plain["pvl"]["lesions"] = [{k: v for k, v in lesion.items() if k not in UNCERTAINTY_KEYS} for lesion in plain["pvl"]["lesions"]]
    for key in ("calibrated", "calibration"):
        plain["macs"].pop(key, None)
    return plain


def _later_model_report(report: dict) -> dict:
    """report.json as the later model (calibration, regional burden, lesion uncertainty) will write it."""
    later = _without_later_keys(report)
    later["brain"] = {"volume_ml": 1234.5}
    later["macs"]["calibrated"] = {"probability_severe": 0.8125, "group": "severe", "method": "temperature scaling"}
    later["motor_burden"] = later["macs_from_burden"] = None  # the regional_burden shape alone (today's motor_burden: below)
    later["macs"]["regional_burden"] = {
        "corticospinal tract": {"left": 0.25, "right": 1.5, "unit": "mL"},
        "posterior limb of internal capsule": {"left": 0.0, "right": 0.125, "unit": "mL"},
    }
    later["pvl"]["lesions"] = [dict(lesion, uncertain=(i % 2 == 1), probability=0.9 - 0.1 * i)
                               for i, lesion in enumerate(later["pvl"]["lesions"])]
    return later


def test_later_model_sections_render_when_present(predicted_batch, tmp_path):
    folder, report = _case(predicted_batch, "pvl_000")
    assert len(report["pvl"]["lesions"]) >= 2, "the phantom case should give at least two lesions"
    later = _later_model_report(report)
    header = PatientHeader("pvl_000.nii.gz")
    page = Tables(render_case_html(case_context(later, header, None, anonymise=False)))
    findings = dict(row for row in page.tables["findings"] if len(row) == 2)
    assert findings["p(severe), calibrated (temperature scaling)"] == "0.81 → severe"
    assert findings["Brain"] == "1234 mL" or findings["Brain"] == "1235 mL"
    burden = page.tables["burden"][1:]
    assert burden == [["corticospinal tract", "0.250", "1.500", "—", "mL"],
                      ["posterior limb of internal capsule", "0.000", "0.125", "—", "mL"]]
    lesions = page.tables["lesions"][1:]
    assert [row[5] for row in lesions] == ["uncertain" if i % 2 else "confident" for i in range(len(lesions))]
    assert lesions[0][4] == "0.90"
    # Today's report: the motor burden and each lesion's review from predict itself.
    today = Tables(render_case_html(case_context(report, header, None, anonymise=False)))
    assert all(row[5].startswith(("confident (", "review (")) for row in today.tables["lesions"][1:])
    # And a report without the uncertainty and calibration keys says they were not computed.
    plain = Tables(render_case_html(case_context(_without_later_keys(report), header, None, anonymise=False)))
    # Today's predict writes the motor-pathway burden (shmn.reporting.motor): its table, both sides, and the totals.
    assert [row[0] for row in plain.tables["burden"][1:]] == [*REGION_NAMES.values(), "All motor regions",
                                                            "All lesions, in a motor region or not"]
    # Brain volume comes from brain extraction (today's predict writes it); the later keys do not.
    plain_brain = dict(r for r in plain.tables["findings"] if len(r) == 2)["Brain"]
    brain_ml = (report.get("brain") or {}).get("volume_ml")
    assert plain_brain == f"{brain_ml:.0f} mL" if brain_ml else plain_brain.startswith("— (not computed")
    assert {row[5] for row in plain.tables["lesions"][1:]} == {"—"}
    # The full writer (HTML + PDF) takes the later report too.
    out = tmp_path / "later"
    out.mkdir()
    for name in ("pvl.nii.gz", "ventricles.nii.gz"):
        shutil.copy(folder / name, out / name)
    html, pdf = write_case_report(out, later, header=header)
    assert "corticospinal tract" in html.read_text(encoding="utf-8") and pdf.stat().st_size > 10_000


def test_patient_header_shown_and_anonymised(tmp_path, predicted_batch):
    """NRRD key/value fields give name, ID and date; --anonymise leaves all of them (and the file name) out."""
    image = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    image.SetMetaData("PatientName", "Doe^Jane")
    image.SetMetaData("PatientID", "MRN-0042")
    image.SetMetaData("StudyDate", "20240131")
    path = tmp_path / "flair_jane.nrrd"
    sitk.WriteImage(image, str(path))
    header = read_patient_header(path)
    assert (header.name, header.id, header.date) == ("Doe Jane", "MRN-0042", "2024-01-31")
    _, report = _case(predicted_batch, "pvl_000")
    shown = render_case_html(case_context(report, header, None, anonymise=False))
    hidden = render_case_html(case_context(report, header, None, anonymise=True))
    for secret in ("Doe Jane", "MRN-0042", "2024-01-31", "flair_jane"):
        assert secret in shown
        assert secret not in hidden
    assert "anonymised" in hidden
    # A NIfTI has no patient fields: the file name stands in.
    assert read_patient_header(predicted_batch.parent / "cohort" / "pvl" / "images" / "pvl_000.nii.gz").rows(False) == [
        ("Input", "pvl_000.nii.gz (no patient fields in its header)")]


def test_predict_anonymise_flag(tmp_path, predicted_batch):
    """`shmn predict --anonymise` writes report.html/pdf without the header fields."""
    from shmn.cli import main

    source = sitk.ReadImage(str(predicted_batch.parent / "cohort" / "pvl" / "images" / "pvl_000.nii.gz"))
    source.SetMetaData("PatientName", "Roe^Richard")
    source.SetMetaData("PatientID", "ID-777")
    path = tmp_path / "case.nrrd"
    sitk.WriteImage(source, str(path))
    from shmn.io.registry import shipped_registry_path

    entry = json.loads(shipped_registry_path().read_text())["models"][0]
    default = shipped_registry_path().parent / entry["file"]
    assert main(["-q", "predict", str(path), "-o", str(tmp_path / "plain"), "--device", "cpu", "--model", str(default)]) == 0
    assert main(["-q", "predict", str(path), "-o", str(tmp_path / "anon"), "--device", "cpu", "--model", str(default), "--anonymise"]) == 0
    plain = (tmp_path / "plain" / "case" / "report.html").read_text(encoding="utf-8")
    anon = (tmp_path / "anon" / "case" / "report.html").read_text(encoding="utf-8")
    assert "Roe Richard" in plain and "ID-777" in plain
    assert "Roe Richard" not in anon and "ID-777" not in anon and "anonymised" in anon
    assert np.isclose(json.loads((tmp_path / "anon" / "case" / "report.json").read_text())["pvl"]["volume_ml"],
                      json.loads((tmp_path / "plain" / "case" / "report.json").read_text())["pvl"]["volume_ml"])


def test_patient_header_from_a_dicom_series(tmp_path):
    """A DICOM folder's first slice gives name, ID and study date (tags 0010,0010 / 0010,0020 / 0008,0020)."""
    folder = tmp_path / "dicom"
    folder.mkdir()
    volume = sitk.Image([6, 5, 3], sitk.sitkInt16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(volume.GetDepth()):
        plane = volume[:, :, k]
        for tag, value in (("0010|0010", "Doe^John"), ("0010|0020", "PID-9"), ("0008|0020", "20230704"),
                           ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.2"),
                           ("0020|0032", f"0\\0\\{k}"), ("0020|0013", str(k + 1)), ("0008|0060", "MR")):
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k}.dcm"))
        writer.Execute(plane)
    header = read_patient_header(folder)
    assert (header.source, header.name, header.id, header.date) == ("dicom", "Doe John", "PID-9", "2023-07-04")
    assert header.rows(anonymise=True) == [("Patient", "anonymised (--anonymise)")]


def test_calibrated_report_shows_both_probabilities_and_the_review_flags(predicted_batch):
    """report.json as `shmn predict` writes it with a calibrated model: p(severe) is the calibrated one,
    the model output is kept beside it; lesions show mean probability and 'review (x bits)'."""
    _, report = _case(predicted_batch, "pvl_000")
    calibrated = copy.deepcopy(report)
    calibrated["macs"].update(probability_severe=0.8125, group="severe", calibrated=True,
                              calibration={"method": "Platt scaling", "uncalibrated_probability_severe": 0.4375})
    calibrated["pvl"]["lesions"][0].update(mean_probability=0.6543, uncertainty=0.8765, tta_disagreement=0.1234, review=True)
    page = Tables(render_case_html(case_context(calibrated, PatientHeader("pvl_000.nii.gz"), None, anonymise=False)))
    findings = dict(row for row in page.tables["findings"] if len(row) == 2)
    assert findings["p(severe), model output"] == "0.44"
    assert findings["p(severe), calibrated (Platt scaling)"] == "0.81 → severe"
    first = page.tables["lesions"][1]
    assert first[4:] == ["0.65", "review (0.88 bits, mirror diff 0.12)"]
    # a lesion flagged because it touches ventricles whose CSF is bright says so (report.json review_reason)
    calibrated["pvl"]["lesions"][0]["review_reason"] = "model unsure; next to bright CSF"
    page = Tables(render_case_html(case_context(calibrated, PatientHeader("pvl_000.nii.gz"), None, anonymise=False)))
    assert page.tables["lesions"][1][5] == "review: model unsure; next to bright CSF (0.88 bits, mirror diff 0.12)"


def test_the_model_table_says_how_the_result_was_made(predicted_batch):
    """Device, test-time mirroring, outlines and lesion grid from report.json's inference block, as predict ran
    (its defaults: mirrored pass averaged in, outlines refined on the input's grid), with --no-tta and
    --boundary model, and from a report of a version that wrote none of it."""
    _, report = _case(predicted_batch, "pvl_000")

    def model_table(changed: dict) -> dict:
        page = Tables(render_case_html(case_context(changed, PatientHeader("pvl_000.nii.gz"), None, anonymise=False)))
        return dict(page.tables["model"])

    made = model_table(report)
    assert made["Run on"].startswith(report["inference"]["device"])
    assert made["Test-time mirroring"] == "on: the image and its left-right mirror, averaged"
    assert made["Outlines"].startswith("refined on the input's own grid") and made["Lesion grid"] == report["inference"]["lesion_grid"]
    one_pass = copy.deepcopy(report)
    one_pass["inference"].update(test_time_mirroring="off (one pass)", boundary={"method": "the model's, resampled (--boundary model)"})
    made = model_table(one_pass)
    assert made["Test-time mirroring"] == "off: one pass (--no-tta)"
    assert made["Outlines"] == "the model's 2 mm outlines, resampled (--boundary model)"
    earlier = copy.deepcopy(report)
    del earlier["inference"]
    assert not {"Run on", "Test-time mirroring", "Outlines", "Lesion grid"} & set(model_table(earlier))


def test_disclaimer_ends_each_sentence_once():
    from shmn.reporting.report import ModelInfo, disclaimer

    info = ModelInfo(name="m", version="1", sha256="0" * 64, file="m.safetensors", registered=True, tasks=["pvl"], grid={},
                     training_data="synthetic only: phantoms.", intended_use="Demonstration. Not for clinical use.", metrics=None)
    text = disclaimer(info)
    assert ".." not in text and text.endswith("Intended use: Demonstration. Not for clinical use.")
    assert "synthetic only: phantoms. Intended use" in text
    assert ".." not in disclaimer(ModelInfo(**{**info.__dict__, "intended_use": None, "training_data": None}))
