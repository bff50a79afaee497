"""The torch-free engine code on every Python the extension supports (Slicer 5.8: 3.9.10; 5.10+: 3.12).

`.ci/run` runs this file with a CPython 3.9 that has only pytest installed (no torch, numpy or
SimpleITK), so each test here imports only what Slicer's own Python can import before the engine's
dependencies are installed: errors, atomic writes, manifests, the model registry, the shared contract
and the field-type reading that config overrides use. The main suite runs it too, on its Python.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLICER_SIDE = ("SHMNCore", "SHMNSegmenter", "SHMNTraining")


@dataclasses.dataclass
class _Example:
    limit: int | None = None
    spacing: tuple[float, ...] | None = None
    weights: dict[str, float | None] = dataclasses.field(default_factory=dict)
    name: str = ""


@dataclasses.dataclass
class _Derived(_Example):
    path: Path | str | None = None


def test_union_annotations_read_as_typing_unions():
    from shmn.training.fieldtypes import field_types

    hints = field_types(_Derived)
    assert hints["limit"] == typing.Optional[int]
    assert hints["spacing"] == typing.Optional[typing.Tuple[float, ...]] or hints["spacing"] == typing.Optional[tuple[float, ...]]
    assert typing.get_args(hints["weights"])[1] == typing.Optional[float]
    assert hints["path"] == typing.Union[Path, str, None]
    assert list(hints) == ["limit", "spacing", "weights", "name", "path"]  # base class first, as get_type_hints
    if sys.version_info >= (3, 10):
        assert hints == typing.get_type_hints(_Derived)


class _MadeUp(type):
    """A stand-in type for a name from another module: its attributes and subscripts are made up too."""

    def __getattr__(cls, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return _MadeUp(attribute, (), {})

    def __getitem__(cls, item):
        return cls


class _AnyName(dict):
    """Names an annotation refers to, made up on the spot: evaluation is what is tested, not the imports."""

    def __missing__(self, name):
        if name.startswith("__"):
            raise KeyError(name)  # dunder look-ups (pytest's __tracebackhide__) are not annotation names
        import builtins

        return getattr(builtins, name, None) or _MadeUp(name, (), {})


def _dataclass_annotations(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.AnnAssign):
                    yield f"{path.relative_to(REPO)}:{statement.lineno}", ast.unparse(statement.annotation)


def test_every_class_annotation_in_the_engine_and_modules_evaluates():
    """What get_type_hints-based code (config overrides, parameterNodeWrapper) may evaluate at run time."""
    from shmn.training.fieldtypes import evaluate_annotation

    namespace = _AnyName(vars(typing))
    checked = 0
    for folder in ("shmn",) + SLICER_SIDE:
        for path in sorted((REPO / folder).rglob("*.py")):
            for where, annotation in _dataclass_annotations(path):
                try:
                    evaluate_annotation(annotation, namespace)
                except Exception as exc:  # noqa: BLE001 - report which annotation
                    pytest.fail(f"{where}: {annotation!r} does not evaluate on Python {sys.version.split()[0]}: {exc}")
                checked += 1
    assert checked > 50


def test_every_file_compiles():
    for folder in ("shmn",) + SLICER_SIDE:
        for path in sorted((REPO / folder).rglob("*.py")):
            compile(path.read_text(encoding="utf-8"), str(path), "exec")  # `match`, 3.10+ syntax: SyntaxError here


def test_manifest_round_trip(tmp_path):
    from shmn.errors import ShmnError
    from shmn.io.manifest import Case, Manifest, label_status, load_manifest

    (tmp_path / "images").mkdir()
    for case_id in ("a", "b"):
        (tmp_path / "images" / f"{case_id}.nii.gz").write_bytes(b"not read here")
    cases = [Case("a", "images/a.nii.gz", macs="severe", split="train"), Case("b", "images/b.nii.gz", split="test")]
    Manifest(root=tmp_path, cases=cases, name="tiny").save()
    loaded = load_manifest(tmp_path)
    assert loaded.case("a").macs == "severe" and loaded.case("b").pvl is None
    assert label_status(loaded)["macs"] == 1
    with pytest.raises(ShmnError, match="no case with id"):
        loaded.case("c")


def test_registry_reads_the_shipped_models_and_registers_one(tmp_path):
    from shmn.errors import ShmnError
    from shmn.io.registry import load_models, read_registry, register_model, shipped_registry_path

    shipped = load_models([shipped_registry_path()])
    assert shipped and any(m.name for m in shipped)
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    registry = tmp_path / "models.json"
    entry = register_model(weights, registry, name="clinic", version="1.0.0", default=True)
    assert entry["sha256"] and read_registry(registry)[0]["name"] == "clinic"
    assert json.loads(registry.read_text())["models"][0]["default"] is True
    with pytest.raises(ShmnError):
        register_model(weights, registry, name="bad@name", version="1.0.0")


def test_the_models_a_run_can_start_from_are_read_without_torch(tmp_path):
    """SHMN Training lists them in Slicer's own Python: shmn.io.start_models imports no torch."""
    probe = ("import sys; from shmn.io.registry import shipped_registry_path as s; from shmn.io.start_models import *; "
             "r = [s()]; print([m.name for m in models_to_start_from('shmn4-star', 'fast', r)], "
             "default_start_model('shmn4', 'fast', r).name, default_start_model('shmn4', 'tiny', r), "
             "models_to_start_from('shmn2', 'fast', r), sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "['shmn4-fast-v2', 'shmn4-fast-randomised', 'shmn4-fast-phantom'] shmn4-fast-v2 None [] []"


def test_shared_contract_is_torch_free():
    """A fresh interpreter (this one's Python: 3.9 in `make check-py39`) imports the contract without torch."""
    probe = "import sys, shmn.contract; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.needs_torch
def test_config_overrides_with_optional_fields():
    """Needs torch (the configs hold the network's); the 3.9 run leaves it out (-m "not needs_torch") and
    the part above covers its type reading there."""
    from shmn.errors import ShmnError
    from shmn.training.config import load_config

    cfg = load_config("shmn4", {"epochs": 3, "ventricle_label_limit": None, "loss": {"macs_epsilon": 0.5}})
    assert (cfg.epochs, cfg.ventricle_label_limit, cfg.loss.macs_epsilon) == (3, None, 0.5)
    assert load_config("shmn4", {"ventricle_label_limit": 10}).ventricle_label_limit == 10
    with pytest.raises(ShmnError, match="ventricle_label_limit"):
        load_config("shmn4", {"ventricle_label_limit": "ten"})
