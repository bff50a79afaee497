"""shmn.contract: the names both sides of the engine/Slicer line share, the structured progress lines,
and the promise that what the Slicer modules import into Slicer's own process never pulls in torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shmn import contract
from shmn.errors import ShmnError
from shmn.io.model_card import read_card

REPO = Path(__file__).resolve().parents[2]
LIBS = {"SHMNCore": REPO / "SHMNCore" / "SHMNCoreLib", "SHMNSegmenter": REPO / "SHMNSegmenter" / "SHMNSegmenterLib", "SHMNTraining": REPO / "SHMNTraining" / "SHMNTrainingLib"}
# How the Slicer side names engine modules it imports in-process: shmn("io.x") and importEngineModule(engine, "shmn.x").
ENGINE_IMPORT = re.compile(r'(?:shmn|engineModule)\("([a-z_.]+)"|importEngineModule\(\s*\w+,\s*"shmn(?:\.([a-z_.]+))?"')
HEAVY = ("torch", "monai")


def _in_process_engine_modules() -> list[str]:
    names = {"shmn.contract"}
    for lib in LIBS.values():
        for source in lib.glob("*.py"):
            for short, dotted in ENGINE_IMPORT.findall(source.read_text(encoding="utf-8")):
                name = short or dotted
                names.add(f"shmn.{name}" if name else "shmn")
    return sorted(names)


def test_slicer_process_imports_never_pull_in_torch_or_monai():
    """Every Lib module of both modules (the Qt widget files aside) and every engine module they import
    in-process, in a fresh interpreter under the Slicer harness: neither torch nor MONAI gets loaded."""
    engine_modules = _in_process_engine_modules()
    assert {"shmn.contract", "shmn.io.dataset", "shmn.io.labels", "shmn.io.register_run", "shmn.io.registry", "shmn.terminology"} <= set(engine_modules)
    lib_modules = [f"{module}Lib.{path.stem}" for module, lib in LIBS.items() for path in sorted(lib.glob("*.py"))
                   if path.stem not in ("widget", "settings")]  # the Qt files: QSettings and the panels
    script = f"""
import importlib, sys
sys.path[:0] = {[str(REPO), str(REPO / "Testing"), str(REPO / "SHMNCore"), str(REPO / "SHMNSegmenter"), str(REPO / "SHMNTraining")]!r}
from slicer_harness import install_harness
install_harness()
for name in {lib_modules!r} + {engine_modules!r}:
    importlib.import_module(name)
from SHMNCoreLib.engine import availableModels, engineEnvironment, findEngine
from SHMNCoreLib.enginecontract import engineContract, parseProgress
engine = findEngine()
availableModels(engine); engineEnvironment(engine); parseProgress("SHMN-PROGRESS {{}}"); engineContract()
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {HEAVY!r})
print("HEAVY", heavy)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "HEAVY []" in result.stdout, result.stdout[-2000:]


def test_contract_is_standard_library_only():
    source = (REPO / "shmn" / "contract.py").read_text(encoding="utf-8")
    imported = set(re.findall(r"^(?:from|import) ([a-z_]+)", source, flags=re.MULTILINE))
    assert imported <= {"__future__", "json", "os", "typing"}, imported


def test_engine_names_are_the_contract_names():
    from shmn import devices
    from shmn.inference import predict
    from shmn.io import registry
    from shmn.network import model_file
    from shmn.training import config
    from shmn.training.checkpoint import RunFiles

    assert set(config.TASK_PRESETS) == set(contract.TASK_PRESETS)
    assert set(config.RESOLUTION_PRESETS) == set(contract.RESOLUTIONS)
    assert config.DEVICES is contract.DEVICES is devices.DEVICES
    assert registry.CARD_FIELDS is contract.CARD_FIELDS and model_file.CARD_KEY == contract.CARD_KEY
    files = RunFiles(Path("run"))
    assert (files.best_model.name, files.last_model.name) == contract.MODEL_FILES
    assert files.metrics.name == contract.METRICS_FILE and files.config.name == contract.CONFIG_FILE
    assert predict.OUTPUT_FILES["report"] == contract.REPORT_FILE and predict.PROBABILITY_FILES == contract.PROBABILITY_FILES


def test_slicer_choices_are_the_engine_names(tmp_path):
    """The modules' enums must exist before the engine is found (Slicer builds the GUI from them), so they
    cannot import the contract; this test is what keeps them equal."""
    for folder in (REPO / "Testing", REPO / "SHMNCore", REPO / "SHMNSegmenter", REPO / "SHMNTraining"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    from slicer_harness import install_harness

    install_harness(tmp_path)
    from SHMNSegmenterLib.parameters import Device
    from SHMNTrainingLib.casescene import KINDS
    from SHMNTrainingLib.parameters import Preset, Resolution, TrainDevice

    assert tuple(d.value for d in Device) == tuple(d.value for d in TrainDevice) == contract.DEVICES
    assert tuple(p.value for p in Preset) == contract.TASK_PRESETS
    assert set(r.value for r in Resolution) == set(contract.RESOLUTIONS)
    assert tuple(KINDS) == contract.LABEL_KINDS


def test_structured_lines_round_trip_and_reject_junk():
    line = contract.structured_line(contract.EPOCH_PREFIX, {"epoch": 2, "train_loss": float("nan")})
    assert contract.read_epoch_line(line)["epoch"] == 2
    assert contract.read_epoch_line("SHMN-EPOCH {\"loss\": 1}") is None  # no epoch
    assert contract.read_epoch_line("SHMN-EPOCHS {\"epoch\": 1}") is None
    assert contract.read_progress_line(contract.structured_line(contract.PROGRESS_PREFIX, contract.progress_record("p", 1, 4)))["percent"] == 25.0
    assert contract.read_progress_line("SHMN-PROGRESS [1, 2]") is None


def test_progress_bar_prints_structured_lines_when_a_gui_asks(monkeypatch, capsys):
    from shmn.progress import progress_bar

    monkeypatch.setenv(contract.PROGRESS_ENV, contract.PROGRESS_LINES)
    items = list(progress_bar(range(4), desc="epoch 2/2", share=lambda done, total: 100.0 * (1 + done / total) / 2))
    assert items == [0, 1, 2, 3]
    with progress_bar(total=2, desc="case_1", unit="step") as bar:
        bar.set_postfix_str("read")
        bar.update(1)
    records = [contract.read_progress_line(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["stage"], r["done"], r["percent"]) for r in records[:5]] == [("epoch 2/2", i, 50.0 + 12.5 * i) for i in range(5)]
    assert records[5:] == [{"stage": "case_1", "done": 0, "total": 2, "percent": 0.0},
                           {"stage": "case_1", "done": 1, "total": 2, "percent": 50.0, "step": "read"}]
    assert list(progress_bar(range(2), desc="quiet", enabled=False)) == [0, 1]
    assert capsys.readouterr().out == ""  # --quiet prints nothing, lines or not

    monkeypatch.delenv(contract.PROGRESS_ENV)
    list(progress_bar(range(2), desc="terminal"))
    captured = capsys.readouterr()
    assert "SHMN-PROGRESS" not in captured.out + captured.err and "terminal" in captured.err  # a tqdm bar


def test_card_reader_refuses_files_that_are_not_model_files(tmp_path):
    cases = {
        "short.safetensors": b"\x01\x02",
        "huge.safetensors": (2**62).to_bytes(8, "little") + b"{}",
        "truncated.safetensors": (100).to_bytes(8, "little") + b'{"a": 1}',
        "nojson.safetensors": (4).to_bytes(8, "little") + b"\xff\xfe{}",
        "nocard.safetensors": (2).to_bytes(8, "little") + b"{}",
    }
    messages = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ShmnError) as caught:
            read_card(tmp_path / name)
        messages[name] = str(caught.value)
        assert str(tmp_path / name) in messages[name] and "\n" not in messages[name]
    assert "without an SHMN model card" in messages["nocard.safetensors"]
    assert all("not a safetensors model file" in messages[n] for n in ("short.safetensors", "huge.safetensors", "truncated.safetensors", "nojson.safetensors"))
    header = json.dumps({"__metadata__": {contract.CARD_KEY: json.dumps({"network": {"base_filters": 4}, "preset": "shmn2"})}}).encode()
    (tmp_path / "ok.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    assert read_card(tmp_path / "ok.safetensors")["preset"] == "shmn2"


def test_the_command_line_help_loads_neither_torch_nor_monai():
    # `shmn --help` and `shmn train --help` only build the parser: the preset names come from the contract.
    import subprocess
    import sys

    # The help text goes to a buffer: it holds non-ASCII characters and a test run may have an ASCII locale.
    probe = ("import contextlib, io, sys\nfrom shmn.cli import main\n"
             "for argv in (['--help'], ['train', '--help'], ['benchmark', '--help']):\n"
             "    with contextlib.redirect_stdout(io.StringIO()):\n        try:\n            main(argv)\n"
             "        except SystemExit:\n            pass\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'monai'}))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]
