"""The Segmenter's results table and summary show each lesion's mean probability, uncertainty and review flag,
and say whether the MACS probability is calibrated (real MRML table nodes from slicer-core)."""

from __future__ import annotations

import pytest

pytest_plugins = ["slicer_fixtures"]


def report_with_flags(calibrated: bool) -> dict:
    """report.json as `shmn predict` writes it for two lesions, the second flagged for review."""
    lesions = [
        {"centre_ras_mm": [10.0, -20.0, 15.0], "volume_ml": 0.8123, "voxels": 812, "mean_probability": 0.8611, "uncertainty": 0.4474, "review": False},
        {"centre_ras_mm": [-12.5, -30.0, 18.0], "volume_ml": 0.3012, "voxels": 301, "mean_probability": 0.6893, "uncertainty": 0.8803,
         "tta_disagreement": 0.04, "review": True},
    ]
    macs = {"probability_severe": 0.2689, "group": "mild", "groups": {"mild": "MACS I-II", "severe": "MACS III-V"}, "threshold": 0.5}
    macs.update({"calibrated": True, "calibration": {"method": "temperature scaling", "uncalibrated_probability_severe": 0.1192}}
                if calibrated else {"calibrated": False, "calibration": {"note": "no calibration"}})
    return {"case": "c", "macs": macs, "pvl": {"volume_ml": 1.1135, "lesion_count": 2, "lesions": lesions},
            "ventricles": {"volume_ml": 20.0}, "model": {"name": "m", "version": "1.0.0", "sha256": "ab"},
            "disclaimer": "Synthetic-data model, not for clinical use."}


def table_cells(table) -> list[list[str]]:
    return [[table.GetCellText(r, c) for c in range(table.GetNumberOfColumns())] for r in range(table.GetNumberOfRows())]


@pytest.mark.parametrize("calibrated", [True, False])
def test_results_table_flags_the_lesions_to_review(scene, calibrated):
    from SHMNSegmenterLib.results import TABLE_COLUMNS, importResultsTable

    table = importResultsTable(report_with_flags(calibrated), scene, "results")
    columns = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert columns == list(TABLE_COLUMNS) and columns[-4:] == ["Mean probability", "Uncertainty (bits)", "Mirror disagreement", "Review"]
    rows = {row[0]: row for row in table_cells(table)}
    assert rows["PVL lesion 1"][6:] == ["0.86", "0.45", "", "confident"]  # a report without the mirrored pass's figure
    assert rows["PVL lesion 2"][6:] == ["0.69", "0.88", "0.04", "REVIEW: model unsure"]
    assert rows["PVL lesion 2"][1] == "0.3012" and rows["PVL lesion 2"][3:6] == ["-12.5", "-30.0", "18.0"]
    assert rows["PVL total"][6:] == ["", "", "", ""]  # other rows leave the lesion columns empty
    probability = rows["MACS probability (severe)"]
    assert probability[1] == "0.2689"
    assert probability[2] == ("calibrated (temperature scaling)" if calibrated else "uncalibrated")


def test_an_older_report_without_the_fields_leaves_the_columns_empty(scene):
    from SHMNSegmenterLib.results import ResultSummary, importResultsTable

    report = report_with_flags(True)
    for lesion in report["pvl"]["lesions"]:
        for key in ("mean_probability", "uncertainty", "review", "tta_disagreement"):
            lesion.pop(key, None)
    for key in ("calibrated", "calibration"):
        report["macs"].pop(key)
    rows = {row[0]: row for row in table_cells(importResultsTable(report, scene, "old"))}
    assert rows["PVL lesion 2"][6:] == ["", "", "", ""] and rows["MACS probability (severe)"][2] == ""
    assert "review" not in ResultSummary.fromReport(report).text()


def test_summary_text_counts_the_flagged_lesions_and_names_the_calibration(slicer_app):
    from SHMNSegmenterLib.results import ResultSummary

    text = ResultSummary.fromReport(report_with_flags(True)).text()
    assert "p(severe) = 0.27, calibrated (temperature scaling)" in text
    assert "in 2 lesion(s), 1 flagged for review (model unsure)" in text
    assert "p(severe) = 0.27, uncalibrated" in ResultSummary.fromReport(report_with_flags(False)).text()


def test_lesion_centre_description_says_review(scene):
    from SHMNSegmenterLib.results import importLesionCentres

    centres = importLesionCentres(report_with_flags(True), scene, "centres")
    assert centres.GetNthControlPointDescription(0).endswith("mL")
    assert centres.GetNthControlPointDescription(1).endswith("(REVIEW: model unsure)")


def test_summary_and_table_say_check_where_the_ventricles_do_not_stand_out(scene):
    from SHMNSegmenterLib.results import ResultSummary, importResultsTable

    from shmn.measures.ventricle_visibility import ventricle_visibility, visibility_warning

    report = report_with_flags(True)
    report["ventricles"]["visibility"] = ventricle_visibility({"ventricles": {"contrast_to_spread": -1.4}})  # CSF brighter
    report["warnings"] = [visibility_warning(report["ventricles"]["visibility"])]
    text = ResultSummary.fromReport(report).text()
    assert "Lateral ventricles: 20.0 mL (boundary not visible on this image: check)" in text
    assert "Warning: the CSF in the ventricles is brighter than the tissue around them" in text
    rows = {row[0]: row for row in table_cells(importResultsTable(report, scene, "unclear"))}
    assert rows["Lateral ventricles total"][1] == "20.000" and rows["Lateral ventricles total"][-1] == "REVIEW: boundary not visible"
    report["ventricles"]["visibility"] = ventricle_visibility({"ventricles": {"contrast_to_spread": 6.0}})
    assert "(boundary not visible" not in ResultSummary.fromReport(report).text()
    assert {row[0]: row for row in table_cells(importResultsTable(report, scene, "clear"))}["Lateral ventricles total"][-1] == ""


def test_summary_table_and_points_list_the_candidates_the_image_does_not_show(scene):
    from SHMNSegmenterLib.results import ResultSummary, importLesionCentres, importResultsTable

    report = report_with_flags(True)
    report["pvl"]["not_shown"] = {"count": 1, "volume_ml": 0.25, "visible_min": 1.5, "candidates": [
        {"centre_ras_mm": [-12.0, 5.0, 20.0], "volume_ml": 0.25, "contrast_to_spread": 0.7}]}
    assert "; 1 more candidate(s) the image does not show, not in the mask: check" in ResultSummary.fromReport(report).text()
    rows = {row[0]: row for row in table_cells(importResultsTable(report, scene, "not-shown"))}
    candidate = rows["Candidate not shown by the image 1"]
    assert candidate[1:6] == ["0.2500", "mL", "-12.0", "5.0", "20.0"]
    assert candidate[-1] == "REVIEW: not shown by the image (not in the mask)"
    assert rows["PVL lesion count"][1] == "2"  # the mask's lesions only
    centres = importLesionCentres(report, scene, "centres-not-shown")
    assert [centres.GetNthControlPointLabel(i) for i in range(centres.GetNumberOfControlPoints())] == ["L1", "L2", "C1"]
    assert centres.GetNthControlPointPosition(2) == (-12.0, 5.0, 20.0)
    assert centres.GetNthControlPointDescription(2) == "Candidate 1 not shown by the image: 0.250 mL (REVIEW: not in the mask)"
    del report["pvl"]["not_shown"]  # an older engine
    assert "does not show" not in ResultSummary.fromReport(report).text()


def test_a_lesion_flagged_next_to_bright_csf_shows_its_reason(scene):
    """report.json's review_reason (an image whose CSF is not nulled) in the table, the summary and the centre's description."""
    from SHMNSegmenterLib.results import ResultSummary, importLesionCentres, importResultsTable

    report = report_with_flags(True)
    report["pvl"]["lesions"][0].update(review=True, review_reason="next to bright CSF")
    report["pvl"]["lesions"][1]["review_reason"] = "model unsure; next to bright CSF"
    rows = {row[0]: row for row in table_cells(importResultsTable(report, scene, "bright"))}
    assert rows["PVL lesion 1"][-1] == "REVIEW: next to bright CSF"
    assert rows["PVL lesion 2"][-1] == "REVIEW: model unsure; next to bright CSF"
    assert "in 2 lesion(s), 2 flagged for review (model unsure; next to bright CSF)" in ResultSummary.fromReport(report).text()
    centres = importLesionCentres(report, scene, "bright-centres")
    assert centres.GetNthControlPointDescription(0).endswith("(REVIEW: next to bright CSF)")
