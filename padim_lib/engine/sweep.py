"""Run a study grid (classes x configurations x seeds) in-process or on a Dask cluster, resumably.

Two kinds of jobs:

* a *feature job* per distinct `FeatureSpec` (backbone, class, split, preprocessing): runs
  `featcache.ensure_features` once, shared by every configuration that reads those features;
* a *task job* per `Task` (class x configuration x seed): depends on its two feature jobs, computes
  its rows with `experiments.run_task` and writes them to the `ResultStore` itself, on the worker.

Because each task stores its own rows, a client that dies loses nothing already computed, and a
restart skips every task whose rows exist. Writes are atomic and keyed by the task, so a task run
twice (a retry after its worker died, or two sweeps sharing a cache) replaces identical content:
no row is lost or duplicated.

Failures: a failing task is reported at once (exception type, message, task label); the sweep goes
on with the other tasks and finally raises `SweepError`, which carries the failures table and the
rows of the tasks that did complete.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from padim_lib.engine.jobs import FeatureFn, TaskFn, _failure, _feature_job, _Progress, _task_job, task_label
from padim_lib.engine.on_dask import _dask_client, _run_on_dask, check_scheduler
from padim_lib.engine.results import ResultStore
from padim_lib.errors import PadimError

if TYPE_CHECKING:  # the heavy modules (torch) are imported only when a sweep runs
    from distributed import Client

    from padim_lib.engine.task import Task
    from padim_lib.features.cache import FeatureSpec


DEFAULT_RETRIES = 2
FAILURE_COLUMNS = ["task_key", "label", "error_type", "message", "traceback"]


class SweepError(PadimError):
    """Some tasks failed. `failures` has one row per failed task; `rows` holds the completed tasks' rows."""

    def __init__(self, message: str, failures: pd.DataFrame, rows: pd.DataFrame) -> None:
        super().__init__(message)
        self.failures = failures
        self.rows = rows


@dataclasses.dataclass
class _Plan:
    todo: list[tuple[str, Task]]                 # (task key, task) still to compute
    specs: dict[str, FeatureSpec]                # feature key -> spec, for the todo tasks only
    deps: dict[str, list[str]]                   # task key -> feature keys (train, test)
    n_stored: int


def _plan(tasks: Sequence[Task], keys: Sequence[str], store: ResultStore, bootstrap: int) -> _Plan:
    todo: dict[str, Task] = {}
    n_stored = 0
    for task, key in zip(tasks, keys, strict=True):
        if store.has(key, bootstrap):  # rows of another bootstrap count are recomputed, not reused
            n_stored += 1
        elif key not in todo:
            todo[key] = task
    specs: dict[str, FeatureSpec] = {}
    deps: dict[str, list[str]] = {}
    spec_keys: dict[FeatureSpec, str] = {}  # a spec key lists the class's files: compute it once per spec
    for key, task in todo.items():
        deps[key] = []
        for spec in task.feature_specs():
            fkey = spec_keys.get(spec) or spec_keys.setdefault(spec, spec.key())
            specs.setdefault(fkey, spec)
            deps[key].append(fkey)
    return _Plan(list(todo.items()), specs, deps, n_stored)


def _run_in_process(plan, store, cache_dir, device, bootstrap, task_fn, feature_fn, progress, threads) -> list[dict]:
    failures: list[dict] = []
    feature_paths: dict[str, str] = {}
    feature_errors: dict[str, str] = {}
    for fkey, spec in plan.specs.items():
        progress.set_running(1)
        try:
            feature_paths[fkey] = _feature_job(spec, cache_dir, device, feature_fn, threads)
            progress.done()
        except Exception as exc:
            label = f"features {spec.category} {spec.split} {spec.backbone}"
            feature_errors[fkey] = f"{label}: {type(exc).__name__}: {exc}"
            failures.append(_failure(f"features-{fkey}", label, exc))
            progress.fail(label, type(exc).__name__, str(exc))
    for key, task in plan.todo:
        label = task_label(task)
        missing = [feature_errors[f] for f in plan.deps[key] if f in feature_errors]
        if missing:
            exc = PadimError(f"feature extraction failed: {missing[0]}")
            failures.append(_failure(key, label, exc, tb=""))
            progress.fail(label, "PadimError", str(exc))
            continue
        progress.set_running(1)
        try:
            _task_job(task, key, str(store.directory), cache_dir, device, bootstrap, task_fn, threads,
                      *[feature_paths[f] for f in plan.deps[key]])
            progress.done()
        except Exception as exc:
            failures.append(_failure(key, label, exc))
            progress.fail(label, type(exc).__name__, str(exc))
    progress.set_running(0)
    return failures


def run(
    tasks: Sequence[Task],
    results_dir: str | os.PathLike,
    *,
    scheduler: str | Client | None = None,
    local_cluster: int | None = None,
    device: str = "auto",
    bootstrap: int = 200,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    retries: int = DEFAULT_RETRIES,
    torch_threads: int | None = None,
    task_fn: TaskFn | None = None,
    feature_fn: FeatureFn | None = None,
    workers: int | str = 1,
) -> pd.DataFrame:
    """Compute every task whose rows are not stored yet, then return the rows of all `tasks`.

    Runs in-process by default; on Dask with `scheduler` (an address "tcp://host:port" or a
    `distributed.Client`) or `local_cluster=N` (N single-threaded worker processes on 127.0.0.1).
    `results_dir` (and `cache_dir`, default <results_dir>/features) must be visible to every worker.
    On Dask each job is retried `retries` times (a worker that dies mid-task is also retried).
    `torch_threads`: torch's intra-op threads inside each job (restored after it); default: the
    worker's thread count on Dask, torch's own setting in-process. On a busy machine 1 is much
    faster than several (OpenMP threads spin waiting for each other; book/scale_out.md, "Measured on this machine").
    `task_fn` / `feature_fn` default to experiments.run_task / featcache.ensure_features; they
    must be module-level functions so Dask can send them to workers.

    `workers`: without Dask, 1 runs the jobs here, one after the other; N > 1 (or "auto", one per
    core) on a local pool of single-threaded processes (padim_lib.engine.local_pool), with identical rows.

    Raises SweepError (a PadimError) after all other tasks finished when any task failed.
    """
    from padim_lib.features.device import check_device

    check_scheduler(scheduler, local_cluster)
    check_device(device)  # before any folder is made or feature extracted
    if torch_threads is not None and (not isinstance(torch_threads, int) or isinstance(torch_threads, bool)
                                      or torch_threads < 1):
        raise PadimError(f"torch_threads must be a positive integer or None, got {torch_threads!r}")
    if workers == "auto":
        from padim_lib.engine.local_pool import default_workers

        workers = default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PadimError(f"workers={workers!r}; expected a positive integer or 'auto' (one per core)")
    if task_fn is None:
        from padim_lib.engine.task import run_task as task_fn
    if feature_fn is None:
        from padim_lib.features.cache import ensure_features as feature_fn
    store = ResultStore(Path(results_dir).resolve())
    store.directory.mkdir(parents=True, exist_ok=True)
    store.remove_stale_tmp()  # left by writers killed in earlier runs
    cache = str(Path(cache_dir).resolve() if cache_dir is not None else store.directory / "features")
    tasks = list(tasks)
    keys = [t.key() for t in tasks]  # a key lists the class's files: compute each once
    plan = _plan(tasks, keys, store, bootstrap)
    where = (f"{workers} local processes" if workers > 1 else "in-process") if scheduler is None and local_cluster is None else (
        f"LocalCluster({local_cluster})" if local_cluster is not None else f"Dask {scheduler}")
    if progress:
        print(f"sweep: {len(tasks)} tasks, {plan.n_stored} already stored, {len(plan.todo)} to compute "
              f"({len(plan.specs)} feature jobs), {where}, results in {store.directory}", file=sys.stderr)
    t0 = time.perf_counter()
    failures: list[dict] = []
    if plan.todo:
        bar = _Progress(len(plan.specs) + len(plan.todo), progress, desc="sweep")
        try:
            if scheduler is None and local_cluster is None and workers > 1 and len(plan.todo) > 1:
                from padim_lib.engine.local_pool import run_in_pool

                failures = run_in_pool(plan, store, cache, device, bootstrap, task_fn, feature_fn, bar, workers)
            elif scheduler is None and local_cluster is None:
                failures = _run_in_process(plan, store, cache, device, bootstrap, task_fn, feature_fn, bar,
                                           torch_threads)
            else:
                with _dask_client(scheduler, local_cluster) as client:
                    failures = _run_on_dask(plan, store, cache, device, bootstrap, task_fn, feature_fn,
                                            bar, client, retries, torch_threads)
        finally:
            bar.close()
    rows = store.load(keys)
    if progress:
        n_failed = sum(1 for f in failures if not f["task_key"].startswith("features-"))
        print(f"sweep: {len(plan.todo) - n_failed} tasks computed, {len(failures)} jobs failed "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if failures:
        table = pd.DataFrame(failures, columns=FAILURE_COLUMNS)
        lines = "\n".join(f"  {f['label']}: {f['error_type']}: {f['message']}" for f in failures[:20])
        more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
        raise SweepError(
            f"{len(failures)} of {len(plan.specs) + len(plan.todo)} sweep jobs failed "
            f"(the other tasks' rows are stored in {store.directory}):\n{lines}{more}",
            failures=table,
            rows=rows,
        )
    return rows
