"""The ablation benchmark: aggregation, the paper-ordering verdict, and a real tiny run."""

from __future__ import annotations

import json

import pytest

from shmn.training.benchmark import aggregate, markdown, paper_ordering
from shmn.cli import main


def _row(**values):
    row = {k: None for k in ("macs_accuracy", "macs_f1", "macs_auc", "pvl_dice", "pvl_lesion_f1", "ventricle_dice")}
    row.update(values)
    return row


def test_aggregate_mean_sd_and_missing_tasks():
    table = aggregate({
        "single-pvl": [_row(pvl_dice=0.4), _row(pvl_dice=0.6)],
        "single-macs": [_row(macs_accuracy=0.5, macs_f1=0.25)],
    })
    assert table["single-pvl"]["pvl_dice"]["mean"] == pytest.approx(0.5)
    assert table["single-pvl"]["pvl_dice"]["sd"] == pytest.approx(0.1414, abs=1e-3)
    assert "macs_accuracy" not in table["single-pvl"]
    assert table["single-macs"]["macs_f1"] == {"mean": 0.25, "sd": 0.0, "n": 1}


def test_paper_ordering_verdict():
    def cell(v):
        return {"mean": v, "sd": 0.0, "n": 1}

    table = {
        "single-pvl": {"pvl_dice": cell(0.4)}, "single-macs": {"macs_accuracy": cell(0.6), "macs_f1": cell(0.5)},
        "shmn2": {"pvl_dice": cell(0.5), "macs_accuracy": cell(0.7), "macs_f1": cell(0.4)},
        "shmn3": {"pvl_dice": cell(0.55), "macs_accuracy": cell(0.75), "macs_f1": cell(0.6)},
        "shmn4": {"pvl_dice": cell(0.6), "macs_accuracy": cell(0.8), "macs_f1": cell(0.7)},
    }
    assert paper_ordering(table) == {"macs_accuracy": True, "macs_f1": False, "pvl_dice": True}
    del table["shmn3"]
    assert paper_ordering(table)["pvl_dice"] is None
    text = markdown({"table": table, "paper_ordering": paper_ordering(table), "resolution": "fast", "seeds": [0]})
    assert "| shmn4 | 0.800 ± 0.000 |" in text and "—" in text and "not clinical" in text


def test_unknown_preset_is_one_clear_line(tmp_path, capsys):
    assert main(["benchmark", "--data", str(tmp_path), "-o", str(tmp_path / "b"), "--presets", "shmn9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--presets: unknown shmn9" in err[0]


@pytest.mark.parametrize("fields, expected", [
    ({"seed": 3}, "seed cannot be set here"),
    ({"lr": "fast"}, "lr"),
    ({"learning_rate": 0.1}, "learning_rate"),
])
def test_bad_config_file_fails_before_any_training(tmp_path, capsys, fields, expected):
    config = tmp_path / "bench.json"
    config.write_text(json.dumps(fields))
    out = tmp_path / "b"
    args = ["benchmark", "--data", str(tmp_path), "-o", str(out), "--config", str(config), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and str(config) in err[0], err
    assert not (out / "runs").exists()


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(small_cohort, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["-q", "benchmark", "--data", str(small_cohort / "pvl"), str(small_cohort / "macs"), "-o", str(out),
            "--presets", "single-macs", "shmn2", "--seeds", "0", "--resolution", "tiny", "--epochs", "1", "--device", "cpu",
            "--config", str(tmp_path / "bench.json")]
    (tmp_path / "bench.json").write_text(json.dumps({"lr": 0.002, "loss": {"macs_epsilon": 0.4}}))
    assert main(args) == 0
    run_config = json.loads((out / "runs" / "shmn2-seed0" / "config.json").read_text())
    assert run_config["lr"] == 0.002 and run_config["loss"]["macs_epsilon"] == 0.4 and run_config["epochs"] == 1
    report = json.loads((out / "benchmark.json").read_text())
    assert set(report["table"]) == {"single-macs", "shmn2"}
    assert "pvl_dice" in report["table"]["shmn2"] and "pvl_dice" not in report["table"]["single-macs"]
    assert 0.0 <= report["table"]["shmn2"]["macs_accuracy"]["mean"] <= 1.0
    table_text = (out / "benchmark.md").read_text(encoding="utf-8")  # UTF-8 whatever the locale: reading DICOM with SimpleITK leaves the process in the C locale
    assert table_text.startswith("| preset |") and "1 epochs, overrides lr=0.002" in table_text
    # Run again: every run is complete, so nothing retrains and the table is the same.
    first = (out / "runs" / "shmn2-seed0" / "model-best.safetensors").stat().st_mtime_ns
    assert main(args) == 0
    assert (out / "runs" / "shmn2-seed0" / "model-best.safetensors").stat().st_mtime_ns == first
    assert json.loads((out / "benchmark.json").read_text())["table"] == report["table"]
