"""DistributedDataParallel: two CPU processes (gloo) train one tiny epoch together.

Each rank sees different cases; after the step their weights must be identical (gradients were
averaged), and only rank 0 may write into the run folder (checked with a Python audit hook that
records every file opened for writing, created, renamed or removed there by rank 1).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from shmn.io.manifest import Manifest, load_manifest
from engine_fixtures import link_inside

pytestmark = pytest.mark.xdist_group("ddp")
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_cases_only(cohort: Path, folder: Path) -> list[Path]:
    """Two train cases of each dataset, no validation case (the run then monitors the training loss)."""
    paths = []
    for dataset in ("pvl", "macs"):
        source = load_manifest(cohort / dataset)
        target = folder / dataset
        target.mkdir(parents=True)
        cases = [
            replace(c, **{k: link_inside(source.root, getattr(c, k), target) for k in ("image", "pvl", "ventricles")})
            for c in source.split("train")[:2]
        ]
        Manifest(root=target, cases=cases, name=source.name, synthetic=source.synthetic).save()
        paths.append(target)
    return paths


def _audit_writes(root: str, log: list) -> None:
    def hook(event: str, args: tuple) -> None:
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode, flags = os.fsdecode(args[0]), args[1], args[2] or 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool(flags & WRITE_FLAGS)
            if writing and os.path.abspath(path).startswith(root):
                log.append((event, path))
        elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.unlink", "os.rmdir", "shutil.rmtree"):
            if isinstance(args[0], (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(args[0])).startswith(root):
                log.append((event, os.fsdecode(args[0])))

    sys.addaudithook(hook)


def _rank(rank: int, world: int, port: int, manifests: list[str], run_dir: str, cache: str, results: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch

    torch.set_num_threads(1)
    from shmn.training.config import load_config
    from shmn.training.train import train

    writes: list = []
    _audit_writes(os.path.abspath(run_dir), writes)
    config = load_config("shmn4:tiny", {"epochs": 1, "device": "cpu", "batch_size": 1})
    summary = train(config, manifests, run_dir, progress=False, cache_dir=cache)
    Path(results, f"rank{rank}.json").write_text(json.dumps({**summary, "writes": writes}))


def test_two_cpu_processes_share_weights_and_only_rank0_writes(small_cohort, tmp_path):
    manifests = [str(p) for p in _train_cases_only(small_cohort, tmp_path / "data")]
    run_dir, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    mp.spawn(_rank, args=(2, _free_port(), manifests, str(run_dir), str(tmp_path / "cache"), str(results)), nprocs=2, join=True)
    rank0, rank1 = (json.loads((results / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (rank0["world_size"], rank0["rank"], rank1["rank"]) == (2, 0, 1)
    # Each rank trained on its own half of the 4 cases; equal weights mean the gradients were all-reduced.
    assert rank0["weights_sha256"] == rank1["weights_sha256"]
    assert rank1["writes"] == [] and rank0["writes"]
    names = {p.name for p in run_dir.iterdir()}
    assert {"config.json", "run.json", "checkpoint.pt", "model-last.safetensors", "model-best.safetensors", "metrics.jsonl", "curves.png"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary file left behind
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 1
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
