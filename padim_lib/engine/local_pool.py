"""A sweep's jobs on a local pool of single-threaded worker processes (no Dask needed).

One torch thread per process and one process per core keeps every core busy without the
OpenMP threads of one process waiting for each other, which on a 2-core machine is markedly
faster than one process with two threads. Each job computes and stores exactly what it would
in-process (the same functions, seeded the same way), so the rows are identical; a task starts
once its feature files exist. Processes are started with "spawn": torch is not fork-safe once
it has run, and a spawned worker gets the parent's `sys.path`, so methods registered from any
importable module (a task carries its method's spec) run there too.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from padim_lib.errors import PadimError

# What workers="auto" means when set: e.g. 1 on a machine shared with other jobs, or in the test
# suite, whose tiny tasks take less than a worker process's start (seconds: it imports torch).
WORKERS_ENV = "PADIM_WORKERS"


def default_workers() -> int:
    """$PADIM_WORKERS when set, else the cores this process may run on (its CPU affinity), at least 1."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise PadimError(f"${WORKERS_ENV}={value!r}; expected a positive number of worker processes")
        return int(value)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _init_worker() -> None:
    # Before torch is imported in the worker, so OpenMP starts with one thread.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def run_in_pool(plan: Any, store: Any, cache_dir: str, device: str, bootstrap: int, task_fn: Any,
                feature_fn: Any, progress: Any, workers: int) -> list[dict]:
    """Run `plan` (see sweep._plan) on `workers` processes; returns the failures, as sweep does."""
    from padim_lib.engine.jobs import _failure, _feature_job, _task_job, task_label

    failures: list[dict] = []
    feature_paths: dict[str, str] = {}
    feature_errors: dict[str, str] = {}
    waiting = list(plan.todo)  # (key, task) whose feature files are not all there yet
    running: dict[Future, tuple[str, str, Any]] = {}  # future -> (kind, key, spec or task)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        for fkey, spec in plan.specs.items():
            fut = pool.submit(_feature_job, spec, cache_dir, device, feature_fn, 1)
            running[fut] = ("features", fkey, spec)

        def submit_ready() -> None:
            still = []
            for key, task in waiting:
                deps = plan.deps[key]
                failed = [feature_errors[f] for f in deps if f in feature_errors]
                if failed:
                    label = task_label(task)
                    exc = PadimError(f"feature extraction failed: {failed[0]}")
                    failures.append(_failure(key, label, exc, tb=""))
                    progress.fail(label, "PadimError", str(exc))
                elif all(f in feature_paths for f in deps):
                    fut = pool.submit(_task_job, task, key, str(store.directory), cache_dir, device, bootstrap,
                                      task_fn, 1, *[feature_paths[f] for f in deps])
                    running[fut] = ("task", key, task)
                else:
                    still.append((key, task))
            waiting[:] = still

        submit_ready()
        try:
            while running:
                progress.set_running(min(workers, len(running)))
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    kind, key, item = running.pop(fut)
                    label = (f"features {item.category} {item.split} {item.backbone}" if kind == "features"
                             else task_label(item))
                    exc = fut.exception()
                    if exc is None:
                        if kind == "features":
                            feature_paths[key] = fut.result()
                        progress.done()
                    else:
                        if kind == "features":
                            feature_errors[key] = f"{label}: {type(exc).__name__}: {exc}"
                        failures.append(_failure(key if kind == "task" else f"features-{key}", label, exc))
                        progress.fail(label, type(exc).__name__, str(exc))
                submit_ready()
        except BaseException:
            for fut in running:
                fut.cancel()
            raise
    progress.set_running(0)
    return failures
