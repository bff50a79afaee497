"""Training: configs and presets, splits, the preprocessing cache, real training steps, run folders, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from shmn.training.case_cache import CaseCache
from shmn.cli import main as cli_main
from shmn.training.config import TASK_PRESETS, apply_overrides, load_config, preset_config
from shmn.training.data import ShmnDataset, collate, load_manifests, split_samples, training_splits
from shmn.errors import ShmnError
from shmn.io.manifest import Manifest, load_manifest
from shmn.network.model_file import read_card
from shmn.training.train import EPOCH_PREFIX, train
from engine_fixtures import link_inside

pytestmark = pytest.mark.xdist_group("train")


def subset(cohort: Path, folder: Path, picks: dict[str, list[str]]) -> list[Path]:
    """Manifests holding only some cases of the cohort (files linked into ``folder``)."""
    paths = []
    for dataset, ids in picks.items():
        source = load_manifest(cohort / dataset)
        target = folder / dataset
        target.mkdir(parents=True, exist_ok=True)
        cases = []
        for case in source.cases:
            if case.id in ids:
                rel = {k: link_inside(source.root, getattr(case, k), target) for k in ("image", "pvl", "ventricles")}
                cases.append(replace(case, **rel))
        Manifest(root=target, cases=cases, name=source.name, synthetic=source.synthetic).save()
        paths.append(target)
    return paths


def pick(cohort: Path) -> dict[str, list[str]]:
    """A handful of cases: 2 train + 1 val with PVL masks; 2 train (one with ventricles) + 1 val with MACS."""
    pvl, macs = load_manifest(cohort / "pvl"), load_manifest(cohort / "macs")
    chosen_pvl = [c.id for c in pvl.split("train")[:2]] + [c.id for c in pvl.split("val")[:1]]
    train_macs = sorted(macs.split("train"), key=lambda c: c.ventricles is None)[:2]
    chosen_macs = [c.id for c in train_macs] + [c.id for c in macs.split("val")[:1]]
    return {"pvl": chosen_pvl, "macs": chosen_macs}


@pytest.fixture(scope="module")
def few(small_cohort, tmp_path_factory) -> list[Path]:
    return subset(small_cohort, tmp_path_factory.mktemp("few"), pick(small_cohort))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def tiny(preset: str = "shmn4", **overrides):
    base = {"epochs": 1, "device": "cpu", "augment": False}
    return load_config(f"{preset}:tiny", {**base, **overrides})


# Configuration ------------------------------------------------------------------------------------
def test_presets_follow_the_paper():
    tasks = {name: preset_config(name, "tiny").network.tasks for name in TASK_PRESETS}
    assert tasks["single-pvl"] == ("pvl",) and tasks["single-macs"] == ("macs",)
    assert set(tasks["shmn2"]) == {"pvl", "macs"} and set(tasks["shmn3"]) == {"pvl", "macs", "localization"}
    assert set(tasks["shmn4"]) == set(tasks["shmn4-star"]) == {"pvl", "macs", "localization", "ventricles"}
    from shmn.contract import PRESET_TASKS, RESOLUTIONS
    from shmn.training.config import RESOLUTION_PRESETS

    assert tasks == PRESET_TASKS  # what SHMN Training matches registry entries by, without torch
    assert {r: RESOLUTION_PRESETS[r]["grid"] for r in RESOLUTIONS} == {r: r for r in RESOLUTIONS}  # a grid names its resolution
    star, four = preset_config("shmn4-star"), preset_config("shmn4")
    assert star.ventricle_label_limit == 10 and star.loss.pseudo_labels
    assert four.ventricle_label_limit is None and not four.loss.pseudo_labels
    fast, paper = preset_config("shmn4", "fast"), preset_config("shmn4", "paper")
    assert (fast.grid, fast.network.base_filters, paper.grid, paper.network.base_filters) == ("fast", 8, "paper", 32)
    assert fast.lr == 3e-4 and fast.batch_size == 2


def test_json_config_overrides_nested_fields(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"preset": "shmn3", "resolution": "tiny", "epochs": 7, "loss": {"macs_epsilon": 0.5},
                                "network": {"base_filters": 6, "tasks": ["pvl", "macs"]}}))
    cfg = load_config(str(path), {"seed": 3})
    assert (cfg.preset, cfg.grid, cfg.epochs, cfg.loss.macs_epsilon, cfg.network.base_filters, cfg.seed) == ("shmn3", "tiny", 7, 0.5, 6, 3)
    assert cfg.network.tasks == ("pvl", "macs")
    assert load_config(str(path), {"resolution": "fast"}).grid == "fast"  # the command line wins


@pytest.mark.parametrize(
    "content, named",
    [({"loss": {"macs_epsilonn": 1}}, "loss.macs_epsilonn"), ({"epochz": 3}, "epochz"), ({"epochs": "ten"}, "epochs"),
     ({"preset": "shmn9"}, "shmn9"), ({"network": {"levels": 6}}, "network.levels")],
)
def test_bad_config_is_one_clear_line(tmp_path, capsys, content, named):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ShmnError, match=named.replace(".", r"\.")):
        load_config(str(path))
    assert cli_main(["train", str(path), "--data", str(tmp_path), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shmn: error:") and named in err and "\n" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", [{"resolution": "fast", "grid": "paper"}, {"grid": "tiny"}])
def test_a_grid_contradicting_the_resolution_is_refused(tmp_path, capsys, content):
    """One source of truth: the resolution names the grid; a model called "fast" on the 1 mm grid is refused."""
    path = tmp_path / "contradiction.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ShmnError, match=r"grid '(paper|tiny)' contradicts resolution 'fast'"):
        load_config(str(path))
    assert cli_main(["train", str(path), "--data", str(tmp_path), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("shmn: error:") and "grid" in err and "resolution" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_a_resolution_expands_to_its_one_grid(tmp_path):
    path = tmp_path / "agreeing.json"
    path.write_text(json.dumps({"resolution": "tiny", "grid": "tiny"}))  # as a run's config.json says it
    cfg = load_config(str(path))
    assert (cfg.grid, cfg.grid_spec, cfg.model_name) == ("tiny", cfg.preprocess_config().grid, "shmn4-tiny")
    assert load_config("shmn4", {"resolution": "paper"}).preprocess_config().grid.spacing_mm == 1.0


# Splits -------------------------------------------------------------------------------------------
def test_splits_keep_test_and_validation_images_out_of_training(small_cohort):
    manifests = load_manifests([small_cohort / "pvl", small_cohort / "macs"])
    for preset in TASK_PRESETS:
        splits = training_splits(manifests, preset_config(preset, "tiny"))
        train_ids = {s.id for s in splits.train}
        test_ids = {s.id for s in split_samples(manifests, "test")}
        val_images = {s.id for s in splits.val if s.role == "val"}
        assert train_ids and not train_ids & test_ids and not train_ids & val_images
        tasks = set(preset_config(preset).network.tasks)
        assert all((s.pvl is None) or tasks & {"pvl", "localization"} for s in splits.train)
        assert all((s.macs is None) or "macs" in tasks for s in splits.train)
        assert all(s.ventricles is None for s in splits.train) or "ventricles" in tasks


def test_ventricle_labels_limit_and_hold_out(small_cohort):
    manifests = load_manifests([small_cohort / "pvl", small_cohort / "macs"])
    labelled = [c.id for m in manifests for c in m.cases if c.ventricles and c.split != "test"]
    assert len(labelled) >= 2, "the small cohort should carry a few ventricle masks"
    full = training_splits(manifests, preset_config("shmn4", "tiny"))
    assert full.notes["ventricle_labels"]["pool"] == len(labelled)
    used = [s.id for s in full.train + full.val if s.ventricles is not None]
    assert sorted(used) == sorted(labelled)  # every mask used once: train or validation
    assert any(s.ventricles for s in full.val)
    limited = training_splits(manifests, apply_overrides(preset_config("shmn4-star", "tiny"), {"ventricle_label_limit": 2}, "t"))
    assert sorted(s.id for s in limited.train + limited.val if s.ventricles) == sorted(labelled[:2])
    assert limited.notes["ventricle_labels"]["unused"] == len(labelled) - 2 and limited.notes["pseudo_labels"]


# Cache and data -------------------------------------------------------------------------------------
def test_cache_registers_once_and_reuses_entries(few, cache):
    cfg = tiny("shmn4")
    splits = training_splits(load_manifests(few), cfg)
    store = CaseCache(cache, cfg.preprocess_config(), cfg.density_sigma_mm)
    first = store.prepare(splits.train + splits.val)
    cases = {s.id for s in splits.train + splits.val}
    assert first.registrations == len(cases)
    entries = sorted(cache.glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in entries]
    again = store.prepare(splits.train + splits.val)
    assert again.registrations == 0 and again.misses == 0 and again.hits == first.hits + first.misses
    assert [p.stat().st_mtime_ns for p in sorted(cache.glob("*.npz"))] == stamps
    # An edited label is resampled again through the stored affine; the image is not registered again.
    edited = next(s for s in splits.train if s.pvl is not None)
    os.utime(edited.pvl, ns=(edited.pvl.stat().st_atime_ns, edited.pvl.stat().st_mtime_ns + 10**9))
    after_edit = store.prepare(splits.train + splits.val)
    assert after_edit.registrations == 0 and after_edit.misses == 1


def test_items_and_batches_follow_the_loss_contract(few, cache):
    cfg = tiny("shmn4")
    splits = training_splits(load_manifests(few), cfg)
    store = CaseCache(cache, cfg.preprocess_config(), cfg.density_sigma_mm)
    store.prepare(splits.train)
    dataset = ShmnDataset(splits.train, store, augment=True, seed=1)
    batch = collate([dataset[i] for i in range(len(dataset))])
    n, shape = len(dataset), cfg.grid_spec.shape_zyx
    assert batch["image"].shape == (n, 1, *shape) and batch["pvl"].shape == (n, 1, *shape)
    assert batch["has_pvl"].dtype == torch.bool and batch["macs"].shape == (n,)
    for i, sample in enumerate(splits.train):
        assert bool(batch["has_pvl"][i]) == (sample.pvl is not None)
        if sample.pvl is None:
            assert not batch["pvl"][i].any() and not batch["density"][i].any()
        else:
            assert set(torch.unique(batch["pvl"][i]).tolist()) <= {0.0, 1.0} and batch["pvl"][i].sum() > 0
    again = dataset[0]["image"]
    assert torch.equal(again, dataset[0]["image"])  # augmentation is a function of (seed, epoch, item)
    dataset.epoch = 1
    assert not torch.equal(again, dataset[0]["image"])


# Training -----------------------------------------------------------------------------------------
def test_training_steps_lower_the_loss(few, cache, tmp_path):
    # Every train case in one batch, no augmentation, a brisk learning rate: the loss must fall.
    cfg = tiny("shmn2", epochs=6, lr=3e-3, batch_size=4)
    summary = train(cfg, few, tmp_path / "run", progress=False, cache_dir=cache)
    losses = [json.loads(line)["train_loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and summary["epochs_completed"] == 6
    assert losses[-1] < 0.97 * losses[0], losses
    assert sum(b < a for a, b in zip(losses, losses[1:])) >= 4, losses


def test_run_folder_contents_and_refusal_to_overwrite(few, cache, tmp_path, capsys):
    run = tmp_path / "run"
    config = tmp_path / "star.json"
    config.write_text(json.dumps({"preset": "shmn4-star", "resolution": "tiny", "augment": False}))
    command = ["-q", "train", str(config), "--data", *map(str, few), "-o", str(run), "--epochs", "2", "--device", "cpu", "--cache", str(cache)]
    assert cli_main(command) == 0
    out = capsys.readouterr().out
    assert f"best model: {run / 'model-best.safetensors'}" in out and f"curves:     {run / 'curves.png'}" in out
    lines = [line for line in out.splitlines() if line.startswith(EPOCH_PREFIX + " ")]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [json.loads(line.split(" ", 1)[1]) for line in lines] == records
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"train_loss", "train", "val_loss", "val", "lr", "alpha", "seconds"} <= set(records[0])
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = read_card(run / "model-best.safetensors")
    assert card["preset"] == "shmn4-star" and card["grid"]["name"] == "tiny" and card["training_data"]["synthetic"] is True
    assert card["tasks"] == list(tiny("shmn4-star").network.tasks) and "val_loss" in card["metrics"]
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    with pytest.raises(ShmnError, match="already holds a training run"):
        train(tiny("shmn4-star", epochs=2), few, run, progress=False, cache_dir=cache)
    assert cli_main(command) == 2 and "already holds a training run" in capsys.readouterr().err
    with pytest.raises(ShmnError, match="different configuration.*loss.macs_epsilon"):
        train(apply_overrides(tiny("shmn4-star", epochs=3), {"loss": {"macs_epsilon": 0.3}}, "t"), few, run, resume=True, progress=False, cache_dir=cache)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before
    _register_finished_run(run, tmp_path / "registry" / "models.json", capsys)


def _register_finished_run(run: Path, registry: Path, capsys) -> None:
    """`shmn register` on the finished run: a copy of its best model, its sha256, its card in the entry."""
    from shmn.io.digest import sha256_of
    from shmn.io.registry import load_models, resolve_model

    command = ["register", str(run), "--name", "tiny-run", "--version", "1.0.0", "--default", "--registry", str(registry)]
    assert cli_main(command) == 0
    assert "registered tiny-run@1.0.0 (default)" in capsys.readouterr().out
    stored = registry.parent / "models" / "tiny-run-1.0.0.safetensors"
    assert stored.read_bytes() == (run / "model-best.safetensors").read_bytes()
    (entry,) = [m.entry for m in load_models([registry])]
    assert entry["sha256"] == sha256_of(stored) and entry["file"] == "models/tiny-run-1.0.0.safetensors" and entry["default"]
    assert entry["preset"] == "shmn4-star" and entry["grid"]["name"] == "tiny" and entry["run"] == str(run.resolve())
    assert resolve_model("tiny-run@1.0.0", [registry]) == (stored, entry)
    before = registry.read_bytes()
    assert cli_main(command) == 2  # the same name@version again: refused, nothing replaced
    assert "already registered" in capsys.readouterr().err and registry.read_bytes() == before
    assert cli_main(["register", str(run), "--name", "tiny-run", "--version", "1.0", "--registry", str(registry)]) == 2
    assert "not a semantic version" in capsys.readouterr().err
    (run.parent / "untrained").mkdir()
    assert cli_main(["register", str(run.parent / "untrained"), "--name", "x", "--version", "1.0.1", "--registry", str(registry)]) == 2
    assert "no trained model yet" in capsys.readouterr().err
    assert sorted(p.name for p in stored.parent.iterdir()) == ["tiny-run-1.0.0.safetensors"]  # no orphan copies


def _weights(run: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_file(run / "model-last.safetensors").items()}


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(few, cache, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": "shmn4-star", "resolution": "tiny", "augment": True, "device": "cpu", "batch_size": 4,
                                  "loss": {"pseudo_labels": True, "t1": 0, "t2": 1}}))
    command = [sys.executable, "-m", "shmn", "-q", "train", str(config), "--data", *map(str, few), "--cache", str(cache), "--epochs", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    # The real thing: a training process killed (SIGKILL) once its first epoch is written.
    process = subprocess.Popen(command + ["-o", str(killed)], stdout=subprocess.PIPE, text=True, env=env)
    for line in process.stdout:
        if line.startswith(EPOCH_PREFIX):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    done = [json.loads(line)["epoch"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert done == [1]
    cfg = load_config(str(config), {"epochs": 2})
    resumed = train(cfg, few, killed, resume=True, progress=False, cache_dir=cache)
    whole = train(cfg, few, tmp_path / "whole", progress=False, cache_dir=cache)
    assert resumed["resumed_after"] == done[-1] and resumed["epochs_completed"] == whole["epochs_completed"] == 2
    a, b = _weights(killed), _weights(tmp_path / "whole")
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-6
    log_a = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in log_a] == pytest.approx([r["train_loss"] for r in log_b], rel=1e-5)
    assert log_a[-1]["alpha"] > 0  # the pseudo-label ramp was active, and reproduced


def test_a_second_stage_starts_from_a_model_with_balanced_macs_and_ventricle_dice(few, cache, tmp_path):
    from shmn.io.digest import sha256_of
    from shmn.training.data import load_manifests, training_splits
    from shmn.training.train import macs_balance_epsilon

    first = train(tiny("shmn4", lr=3e-3), few, tmp_path / "first", progress=False, cache_dir=cache)
    # lr so small that one epoch leaves the weights where they started: they must be the first run's
    second_config = tiny("shmn4", lr=1e-12, init_model=first["last_model"], macs_balance=True, loss={"ventricle_dice": True})
    second = train(second_config, few, tmp_path / "second", progress=False, cache_dir=cache)
    before, after = _weights(tmp_path / "first"), _weights(tmp_path / "second")
    assert all(np.allclose(before[k], after[k], atol=1e-6) for k in before)
    fresh = train(tiny("shmn4", lr=1e-12), few, tmp_path / "fresh", progress=False, cache_dir=cache)
    assert fresh["weights_sha256"] != second["weights_sha256"]
    card = read_card(second["last_model"])
    assert card["training_data"]["initialised_from"]["sha256"] == sha256_of(first["last_model"])
    train_cases = training_splits(load_manifests(few), second_config).train
    labels = [s.macs for s in train_cases if s.macs is not None]
    assert 0 < sum(labels) < len(labels)  # both classes, so epsilon is their ratio
    epsilon = sum(labels) / (len(labels) - sum(labels))
    assert macs_balance_epsilon(train_cases) == pytest.approx(epsilon, abs=1e-4)
    assert card["training"]["loss"]["macs_epsilon"] == pytest.approx(epsilon, abs=1e-4)
    assert card["training"]["loss"]["ventricle_dice"] is True
    with pytest.raises(ShmnError, match="init_model.*another network"):
        train(tiny("shmn2", init_model=first["last_model"]), few, tmp_path / "mismatch", progress=False, cache_dir=cache)


def test_shmn_train_init_model_fine_tunes_from_a_model_and_resume_keeps_saying_so(few, cache, tmp_path, capsys):
    from shmn.io.digest import sha256_of

    first = train(tiny("shmn4", lr=3e-3), few, tmp_path / "first", progress=False, cache_dir=cache)
    # lr so small that one epoch leaves the weights where they started: they must be the first run's
    config = tmp_path / "still.json"
    config.write_text(json.dumps({"preset": "shmn4", "resolution": "tiny", "lr": 1e-12, "augment": False, "device": "cpu"}))
    run = tmp_path / "fine-tuned"
    command = ["train", str(config), "--data", *map(str, few), "-o", str(run), "--cache", str(cache), "--quiet",
               "--init-model", first["last_model"]]
    assert cli_main(command + ["--epochs", "1"]) == 0
    before, after = _weights(tmp_path / "first"), _weights(run)
    assert before.keys() == after.keys() and all(np.allclose(before[k], after[k], atol=1e-6) for k in before)
    started = {"model": "shmn4-tiny", "version": "0.1.0", "sha256": sha256_of(first["last_model"])}
    assert read_card(run / "model-last.safetensors")["training_data"]["initialised_from"] == started
    assert json.loads((run / "config.json").read_text())["init_model"] == first["last_model"]
    # Resumed (the weights come from the checkpoint now), the card still says what the run started from.
    assert cli_main(command + ["--epochs", "2", "--resume"]) == 0
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert read_card(run / "model-last.safetensors")["training_data"]["initialised_from"] == started
    capsys.readouterr()


@pytest.mark.parametrize("preset, init_model, expected", [
    ("shmn4:tiny", "no-such-model", "unknown model 'no-such-model'; registered: "),
    ("shmn4:tiny", "{tmp}/missing.safetensors", "no such model file"),
    ("shmn4:tiny", "{tmp}/notes.txt", "must be a .safetensors file"),
    ("shmn2:tiny", "{model}", "has another network (shmn4/tiny: tasks"),  # a model of another preset
    ("shmn4:fast", "{model}", "has another network (shmn4/tiny: base_filters 4 (this run: 8)"),  # ... or resolution
])
def test_a_wrong_init_model_is_one_line_naming_the_option_and_nothing_is_written(few, tiny_run_model, tmp_path, capsys,
                                                                                  preset, init_model, expected):
    (tmp_path / "notes.txt").write_text("not a model")
    value = init_model.format(tmp=tmp_path, model=tiny_run_model)
    run = tmp_path / "runs" / "run"
    assert cli_main(["train", preset, "--data", *map(str, few), "-o", str(run), "--epochs", "1", "--device", "cpu",
                     "--quiet", "--init-model", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"shmn: error: --init-model {value!r}") and expected in err and "\n" not in err, err
    assert not run.parent.exists()  # neither the run folder (nor its cache) nor the lock beside it


@pytest.fixture(scope="module")
def tiny_run_model(few, cache, tmp_path_factory) -> str:
    return train(tiny("shmn4"), few, tmp_path_factory.mktemp("tiny-run") / "run", progress=False, cache_dir=cache)["last_model"]
