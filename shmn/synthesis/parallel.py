"""Building cases one after another or in worker processes, with the same files either way.

Workers are forked so they inherit the reference space (about 150 MB of arrays at 1 mm) instead of
receiving a pickled copy per case; each worker writes its own case files and sends back only the
case's statistics. Where fork does not exist (Windows) cases are built in this process.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import SimpleITK as sitk

from shmn.synthesis.acquisition import SizeProfile
from shmn.synthesis.atlas import ReferenceSpace
from shmn.synthesis.case import CaseOptions, make_case, write_case

Task = tuple[str, int, str]  # dataset, index within the dataset, case id
BRAIN_ONLY = CaseOptions(heads=False)
_worker_inputs: dict = {}  # set once in each worker process by _start_worker; never used in the parent


def _build(ref: ReferenceSpace, profile: SizeProfile, seed: int, folder: Path, task: Task,
           options: CaseOptions = BRAIN_ONLY) -> tuple[dict, float]:
    dataset, index, case_id = task
    case = make_case(ref, profile, seed, dataset, index, case_id, options)
    write_case(folder / dataset, case)
    return {"id": case.id, "dataset": dataset, **case.stats}, case.flip_draw


def _start_worker(ref: ReferenceSpace, profile: SizeProfile, seed: int, folder: Path, options: CaseOptions) -> None:
    # ITK's thread pool does not survive fork (its threads stay in the parent): use plain threads,
    # one per worker, since the processes share the cores instead.
    sitk.ProcessObject.SetGlobalDefaultThreader("PLATFORM")
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _worker_inputs.update(ref=ref, profile=profile, seed=seed, folder=folder, options=options)


def _build_in_worker(task: Task) -> tuple[dict, float]:
    return _build(_worker_inputs["ref"], _worker_inputs["profile"], _worker_inputs["seed"], _worker_inputs["folder"], task,
                  _worker_inputs["options"])


def build_cases(ref: ReferenceSpace, profile: SizeProfile, seed: int, folder: Path, tasks: list[Task],
                workers: int = 1, options: CaseOptions = BRAIN_ONLY) -> Iterator[tuple[dict, float]]:
    """(statistics record, MACS flip draw) per task, in task order.

    With workers, every task is submitted (and the workers forked) before this returns, so the fork
    happens before the caller starts threads of its own (a progress bar's monitor, for one).
    """
    if workers <= 1 or len(tasks) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return (_build(ref, profile, seed, folder, task, options) for task in tasks)
    pool = ProcessPoolExecutor(min(workers, len(tasks)), mp_context=multiprocessing.get_context("fork"),
                               initializer=_start_worker, initargs=(ref, profile, seed, folder, options))
    try:
        results = pool.map(_build_in_worker, tasks)
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    return _drain(pool, results)


def _drain(pool: ProcessPoolExecutor, results: Iterator) -> Iterator:
    try:
        yield from results
    finally:
        pool.shutdown(cancel_futures=True)
