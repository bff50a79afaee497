"""Battery, lost results: two writers of one case name, summary.csv after added cases, killed and
re-run batches, SIGTERM/SIGKILL leftovers. Real predictions with a real tiny model; real processes killed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shmn.errors import ShmnError
from shmn.inference.batch import predict_many
from shmn.inference.predict import PredictOptions, load_predictor, predict_case
from battery_helpers import write_brain
from engine_fixtures import make_tiny_model

pytestmark = pytest.mark.xdist_group("battery_outputs")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path, _ = make_tiny_model(tmp_path_factory.mktemp("models"))
    return path


@pytest.fixture(scope="module")
def predictor(model):
    return load_predictor(model)


@pytest.fixture(scope="module")
def scans(anatomy, tmp_path_factory):
    """Five brains; two of them are both called flair.nii.gz (different folders, different intensities)."""
    root = tmp_path_factory.mktemp("scans")
    return {
        "a/flair": write_brain(anatomy, root / "a" / "flair.nii.gz"),
        "b/flair": write_brain(anatomy, root / "b" / "flair.nii.gz", scale=2.0),
        **{name: write_brain(anatomy, root / "batch" / f"{name}.nii.gz", scale=1.0 + i / 10) for i, name in enumerate(("c1", "c2", "c3"))},
    }


OPTIONS = PredictOptions(register=False, device="cpu")


def _rows(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as f:
        return {row["case"]: row for row in csv.DictReader(f)}


def _hidden(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("overwrite", [False, True])
def test_two_writers_of_one_case_name_keep_one_result_and_refuse_the_other(overwrite, scans, predictor, tmp_path):
    """Writer A is mid-way through flair (inside its temporary folder) when writer B, another scan
    also called flair, runs start to finish. Tried 3 times: each time exactly one of them must
    fail with a clear error, and OUT/flair must hold the result of the one that succeeded."""
    options = PredictOptions(register=False, device="cpu", overwrite=overwrite)
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        b_done = threading.Event()
        results: dict[str, object] = {}

        def a_stage(stage, b_done=b_done):
            if stage == "inference":
                b_done.wait(60)

        def writer(key, on_stage, results=results, out=out):
            try:
                results[key] = predict_case(scans[key], out, predictor, options, on_stage=on_stage)
            except ShmnError as exc:
                results[key] = exc

        a = threading.Thread(target=writer, args=("a/flair", a_stage))
        a.start()
        while not any(p.name.endswith(".part") for p in (out.iterdir() if out.exists() else [])):
            time.sleep(0.02)
        writer("b/flair", lambda stage: None)
        b_done.set()
        a.join(120)
        failed = [k for k, v in results.items() if isinstance(v, ShmnError)]
        assert len(failed) == 1, results
        winner = next(k for k in results if k not in failed)
        report = json.loads((out / "flair" / "report.json").read_text())
        assert report["input"]["path"] == str(scans[winner])
        assert _hidden(out) == []  # no claim and no temporary folder left behind


def test_summary_lists_every_case_folder_and_a_rerun_does_not_mark_finished_cases_failed(scans, predictor, tmp_path):
    out = tmp_path / "out"
    predict_many([scans["c1"], scans["c2"]], out, predictor, OPTIONS, progress=False)
    assert set(_rows(out)) == {"c1", "c2"}
    predict_many([scans["c3"]], out, predictor, OPTIONS, progress=False)  # one more case into the same OUT
    rows = _rows(out)
    assert set(rows) == {"c1", "c2", "c3"} and {r["status"] for r in rows.values()} == {"ok"}
    outcomes = predict_many([scans["c1"], scans["c2"], scans["c3"]], out, predictor, OPTIONS, progress=False)
    assert all(o.status == "failed" and "already exists" in o.error for o in outcomes)  # nothing overwritten
    rows = _rows(out)
    assert {r["status"] for r in rows.values()} == {"ok"}, rows  # their results are still there
    assert rows["c3"]["pvl_volume_ml"] == str(json.loads((out / "c3" / "report.json").read_text())["pvl"]["volume_ml"])


def _spawn_batch(inputs, out, model):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "shmn", "predict", *map(str, inputs), "-o", str(out), "--model", str(model),
               "--no-register", "--device", "cpu", "-q"]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO))


def _wait_for(condition, process, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_batch_keeps_a_summary_and_the_next_run_cleans_up_and_finishes(sig, scans, model, predictor, tmp_path):
    out = tmp_path / "out"
    inputs = [scans["c1"], scans["c2"], scans["c3"]]
    process = _spawn_batch(inputs, out, model)
    try:
        started = _wait_for(lambda: (out / "c1").is_dir() and any(p.name.startswith(".c2.") and p.name.endswith(".part")
                                                                   for p in out.iterdir()), process)
        assert started, process.communicate()
        process.send_signal(sig)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    # A killed batch still leaves the summary of what it finished.
    assert _rows(out)["c1"]["status"] == "ok"
    assert not (out / "c2").exists()
    if sig == signal.SIGTERM:  # what Slicer's Cancel sends: the case being written cleans up after itself
        assert process.returncode == 128 + signal.SIGTERM
        assert _hidden(out) == []
    outcomes = predict_many(inputs, out, predictor, OPTIONS, progress=False)
    assert [o.status for o in outcomes] == ["failed", "ok", "ok"]  # c1 already exists and is kept
    assert _hidden(out) == []  # a SIGKILLed run's .part folder is gone too
    assert {r["status"] for r in _rows(out).values()} == {"ok"} and len(_rows(out)) == 3


def test_a_claimed_case_is_refused_and_free_again_after_release(scans, predictor, tmp_path):
    from shmn.io.claim import claim_case

    out = tmp_path / "out"
    out.mkdir()
    with claim_case(out, "flair"):
        with pytest.raises(ShmnError, match="another shmn run is writing"):
            predict_case(scans["a/flair"], out, predictor, OPTIONS)
    predict_case(scans["a/flair"], out, predictor, OPTIONS)
    assert (out / "flair" / "report.json").is_file() and _hidden(out) == []


def test_a_file_written_meanwhile_is_never_replaced_by_a_no_overwrite_write(tmp_path):
    from shmn.io.atomic import atomic_path

    target = tmp_path / "labels.nii.gz"
    with pytest.raises(ShmnError, match="already exists"):
        with atomic_path(target, overwrite=False) as tmp:
            tmp.write_text("mine")
            target.write_text("someone else's, written while mine was being made")
    assert target.read_text().startswith("someone else's")
    assert _hidden(tmp_path) == []


def test_concurrent_registrations_keep_every_entry(tmp_path):
    from shmn.io.registry import read_registry, register_model
    from engine_fixtures import make_tiny_model as make

    registry = tmp_path / "models.json"
    paths = [make(tmp_path, version=f"0.0.{i}")[0] for i in range(6)]
    start = threading.Barrier(len(paths))
    errors = []

    def register(i):
        start.wait()
        try:
            register_model(paths[i], registry, name="tiny", version=f"0.0.{i}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(m["version"] for m in read_registry(registry)) == [f"0.0.{i}" for i in range(6)]
    assert not any(p.name.endswith(".lock") for p in tmp_path.iterdir())
