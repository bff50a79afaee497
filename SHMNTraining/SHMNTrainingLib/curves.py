"""Live training curves as Slicer plot nodes: one table, two charts (losses; validation metrics).

The table node (one row per completed epoch) is the single source: each plot series draws one of
its columns against the epoch, so updating the table redraws both charts. Missing values (no
validation that epoch, a task the preset lacks) are NaN, which the plot leaves out.
"""

from __future__ import annotations

import math

import numpy as np
import slicer

# column -> (series title, chart, how to read it from an epoch record)
SERIES = {
    "train_loss": ("Training loss", "loss", lambda r: r.get("train_loss")),
    "val_loss": ("Validation loss", "loss", lambda r: r.get("val_loss")),
    "pvl_dice": ("PVL Dice (val)", "metrics", lambda r: (r.get("val") or {}).get("pvl_dice")),
    "ventricle_dice": ("Ventricle Dice (val)", "metrics", lambda r: (r.get("val") or {}).get("ventricle_dice")),
    "macs_accuracy": ("MACS accuracy (val)", "metrics", lambda r: (r.get("val") or {}).get("macs_accuracy")),
}
EPOCH_COLUMN = "epoch"
CHARTS = {"loss": ("Training and validation loss", "Loss"), "metrics": ("Validation metrics", "Dice / accuracy")}
COLOURS = {"train_loss": (0.2, 0.4, 0.9), "val_loss": (0.9, 0.4, 0.1), "pvl_dice": (0.9, 0.2, 0.2),
           "ventricle_dice": (0.35, 0.42, 0.84), "macs_accuracy": (0.2, 0.7, 0.3)}


def _value(value) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else float("nan")


def columnsFromRecords(records: list[dict]) -> dict[str, np.ndarray]:
    columns = {EPOCH_COLUMN: np.array([float(r["epoch"]) for r in records], dtype=np.float64)}
    for column, (_title, _chart, read) in SERIES.items():
        columns[column] = np.array([_value(read(r)) for r in records], dtype=np.float64)
    return columns


class TrainingCurves:
    """The table, series and chart nodes of one training run."""

    def __init__(self, scene, name: str):
        self.scene = scene
        self.table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} curves")
        self.records: list[dict] = []
        self._fillTable()
        self.charts = {}
        for key, (title, yTitle) in CHARTS.items():
            chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} {key}")
            chart.SetTitle(title)
            chart.SetXAxisTitle("Epoch")
            chart.SetYAxisTitle(yTitle)
            self.charts[key] = chart
        self.series = {}
        for column, (title, chartKey, _read) in SERIES.items():
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {title}")
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName(EPOCH_COLUMN)
            series.SetYColumnName(column)
            series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
            series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
            series.SetColor(*COLOURS[column])
            self.charts[chartKey].AddAndObservePlotSeriesNodeID(series.GetID())
            self.series[column] = series

    def _fillTable(self) -> None:
        columns = columnsFromRecords(self.records)
        slicer.util.updateTableFromArray(self.table, list(columns.values()), list(columns.keys()))

    def setRecords(self, records: list[dict]) -> None:
        self.records = sorted(records, key=lambda r: r["epoch"])
        self._fillTable()

    def addRecord(self, record: dict) -> None:
        """One completed epoch (a resumed run may repeat an epoch: the newer record wins)."""
        self.setRecords([r for r in self.records if r["epoch"] != record["epoch"]] + [record])

    def column(self, name: str) -> np.ndarray:
        return slicer.util.arrayFromTableColumn(self.table, name)

    def nodes(self) -> list:
        return [self.table, *self.charts.values(), *self.series.values()]
