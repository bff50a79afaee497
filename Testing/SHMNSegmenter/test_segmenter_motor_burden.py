"""SHMN Segmenter's results table shows the motor-pathway burden and both MACS estimates (issue 13).

The report entries are the engine's own (shmn.measures: a lesion placed in the left internal capsule on
the model grid, measured and scored), the table is a real vtkMRMLTableNode in the real MRML scene.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

pytest_plugins = ["slicer_fixtures"]


def left_plic_lesion_report(anatomy) -> dict:
    from shmn.io.anatomy import PALLIDUM, PUTAMEN, THALAMUS
    from shmn.measures.burden_macs import burden_report_fields
    from shmn.measures.motor_regions import motor_burden
    from shmn.preprocessing.preprocess import GRIDS, model_grid_reference

    labels = sitk.GetArrayViewFromImage(anatomy.labels)
    thalamus, lentiform = labels == THALAMUS[0], np.isin(labels, (PUTAMEN[0], PALLIDUM[0]))
    z = int(np.median(np.flatnonzero(thalamus.any(axis=(1, 2)) & lentiform.any(axis=(1, 2)))))
    y = int(round(np.argwhere(thalamus[z]).mean(axis=0)[0]))
    x = (np.flatnonzero(thalamus[z, y]).max() + np.flatnonzero(lentiform[z, y]).min()) / 2.0  # between them: the PLIC
    centre = np.array(anatomy.labels.TransformContinuousIndexToPhysicalPoint([float(x), float(y), float(z)]))
    grid = model_grid_reference(GRIDS["fast"], anatomy.template)
    index = np.argwhere(np.ones(grid.GetSize()[::-1], bool))[:, ::-1]
    points = np.array(grid.GetOrigin()) + (index * np.array(grid.GetSpacing())) @ np.array(grid.GetDirection()).reshape(3, 3).T
    lesion = (np.linalg.norm(points - centre, axis=1) <= 4.0).reshape(grid.GetSize()[::-1])
    report = {
        "case": "plic", "macs": {"probability_severe": 0.2, "group": "mild", "groups": {"mild": "MACS I-II", "severe": "MACS III-V"}},
        "pvl": {"volume_ml": float(lesion.sum()) * 8e-3, "lesion_count": 1, "lesions": []}, "ventricles": {"volume_ml": 10.0},
        "model": {"name": "m", "version": "1", "sha256": "0" * 64}, "disclaimer": "Synthetic-data model, not for clinical use.",
    }
    report.update(burden_report_fields(motor_burden(lesion, grid)))
    return report


def table_rows(table) -> dict:
    return {table.GetCellText(r, 0): [table.GetCellText(r, c) for c in range(table.GetNumberOfColumns())]
            for r in range(table.GetNumberOfRows())}


def test_results_table_shows_regional_burden_and_both_estimates(scene, anatomy):
    from SHMNSegmenterLib.results import importResultsTable

    report = left_plic_lesion_report(anatomy)
    rows = table_rows(importResultsTable(report, scene, "SHMN results"))
    plic = rows["Motor burden: Corticospinal tract, posterior limb of internal capsule, left"]
    assert float(plic[1]) > 0.1 and plic[2].startswith("mL (") and "% of region" in plic[2]
    assert float(rows["Motor burden: Corticospinal tract, posterior limb of internal capsule, right"][1]) == 0.0
    assert float(rows["Motor burden: Thalamic radiations, left"][1]) == 0.0
    assert float(rows["Motor burden: all regions"][1]) == pytest.approx(float(plic[1]), abs=2e-3)
    # the burden score's all-lesions term: the whole ball, in the capsule or just outside it
    every = rows["Lesion volume, template space (all lesions)"]
    assert every[2] == "mL" and float(every[1]) == pytest.approx(report["motor_burden"]["all_lesions_ml"], abs=1e-3)
    assert float(every[1]) >= float(rows["Motor burden: all regions"][1]) - 1e-3
    burden_p = float(rows["MACS probability (severe), from motor burden"][1])
    assert burden_p == pytest.approx(report["macs_from_burden"]["probability_severe"], abs=1e-4)
    assert rows["MACS group, from motor burden"][1] == report["macs_from_burden"]["group"]
    assert rows["Primary MACS estimate"][1] in ("network classifier", "motor-burden score")
    assert rows["MACS probability (severe)"][1] == "0.2000"  # the network's estimate stays in its row
    assert rows["MACS probability (severe), from motor burden"][2] == ""  # the shipped score, not recalibrated


def test_a_burden_estimate_recalibrated_at_a_site_says_so(scene, anatomy):
    from SHMNSegmenterLib.results import importResultsTable

    from shmn.inference.calibration import BURDEN_CARD_KEY, calibration_from_card
    from shmn.measures.burden_macs import burden_report_fields
    from shmn.measures.motor_regions import motor_burden
    from shmn.preprocessing.preprocess import GRIDS, model_grid_reference

    grid = model_grid_reference(GRIDS["fast"], anatomy.template)
    calibration = calibration_from_card({BURDEN_CARD_KEY: {"method": "platt", "parameters": {"a": 1.0, "b": 3.0}, "n_cases": 24}},
                                        "site.safetensors", BURDEN_CARD_KEY)
    report = left_plic_lesion_report(anatomy)
    report.update(burden_report_fields(motor_burden(np.zeros(grid.GetSize()[::-1], bool), grid), calibration=calibration))
    rows = table_rows(importResultsTable(report, scene, "SHMN results"))
    burden = rows["MACS probability (severe), from motor burden"]
    assert burden[1] == f"{report['macs_from_burden']['probability_severe']:.4f}" and burden[2] == "recalibrated on 24 cases"


def test_report_without_burden_adds_no_burden_rows(scene, anatomy):
    from SHMNSegmenterLib.results import importResultsTable

    report = left_plic_lesion_report(anatomy)
    for key in ("motor_burden", "macs_from_burden", "macs_primary"):
        del report[key]  # an engine older than the motor burden
    rows = table_rows(importResultsTable(report, scene, "SHMN results"))
    assert not [name for name in rows if "burden" in name.lower() or name == "Primary MACS estimate"]
    assert "MACS group" in rows
