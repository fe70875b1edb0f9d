"""A sweep's jobs: the functions a worker runs (module-level, so Dask and process pools pickle them by
reference), the failure record and the progress line. Below the runners (sweep, sweep_pool,
sweep_dask), which all import from here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from padim_lib.engine.results import ResultStore

if TYPE_CHECKING:
    from padim_lib.engine.task import Task
    from padim_lib.features.cache import FeatureSpec

TaskFn = Callable[..., tuple[pd.DataFrame, Mapping[str, Any]]]
"""task_fn(task, cache_dir, *, device, bootstrap, feature_paths) -> (rows, artifacts); see experiments.run_task."""
FeatureFn = Callable[..., os.PathLike | str]
"""feature_fn(spec, cache_dir, *, device, progress) -> path; see featcache.ensure_features."""


# ---------------------------------------------------------------------------------------------
# Jobs (module-level so Dask can pickle them by reference)
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _torch_threads(requested: int | None) -> Iterator[None]:
    """Set torch's intra-op threads for one job, and restore them after it.

    `requested` None: under a Dask worker, the worker's thread count (its share of the machine);
    in-process, unchanged. torch is only touched if the task's module already imported it, so
    cheap jobs do not pay for importing it. (Library code never sets the count for good.)
    """
    n = requested
    if n is None:
        try:
            from distributed import get_worker

            n = get_worker().state.nthreads
        except (ImportError, ValueError, AttributeError):
            n = None
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _feature_job(spec: FeatureSpec, cache_dir: str, device: str, feature_fn: FeatureFn,
                 threads: int | None = None) -> str:
    with _torch_threads(threads):
        return str(feature_fn(spec, cache_dir, device=device, progress=False))


def _task_job(
    task: Task,
    task_key: str,
    results_dir: str,
    cache_dir: str,
    device: str,
    bootstrap: int,
    task_fn: TaskFn,
    threads: int | None,
    *feature_paths: str,
) -> dict[str, Any]:
    """Compute one task and store its rows (on the worker). Returns a small summary, not the rows."""
    store = ResultStore(results_dir)
    if store.has(task_key, bootstrap):  # done by an earlier attempt or by another sweep on the same cache
        return {"task_key": task_key, "computed": False, "seconds": 0.0}
    t0 = time.perf_counter()
    with _torch_threads(threads):
        rows, artifacts = task_fn(
            task, cache_dir, device=device, bootstrap=bootstrap, feature_paths=tuple(Path(p) for p in feature_paths)
        )
    store.write(task_key, rows, artifacts)
    return {"task_key": task_key, "computed": True, "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------
def task_label(task: Task) -> str:
    """Short human name: class / configuration label (or key) / seed when the config uses one."""
    cfg = task.config
    label = f"{task.category} / {cfg.label or cfg.method + ' ' + cfg.backbone + ' ' + cfg.key()[:8]}"
    return f"{label} / seed {cfg.seed}" if cfg.uses_seed() else label


class _Progress:
    """A tqdm bar over all jobs with done / running / failed counts; failures printed as they happen."""

    def __init__(self, total: int, enabled: bool, desc: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="job", disable=not enabled, dynamic_ncols=True)
        self.running = 0
        self.failed = 0
        self._show()

    def _show(self) -> None:
        self.bar.set_postfix(running=self.running, failed=self.failed, refresh=True)

    def set_running(self, n: int) -> None:
        if n != self.running:
            self.running = n
            self._show()

    def done(self) -> None:
        self.bar.update(1)
        self._show()

    def fail(self, label: str, error_type: str, message: str) -> None:
        self.failed += 1
        # Always shown, also with the bar disabled: a failure must not pass unnoticed.
        self.bar.write(f"FAILED {label}: {error_type}: {message}", file=sys.stderr)
        self.bar.update(1)
        self._show()

    def close(self) -> None:
        self.bar.close()


def _failure(task_key: str, label: str, exc: BaseException, tb: str | None = None) -> dict[str, str]:
    message = str(exc).strip() or repr(exc)
    tb = tb if tb is not None else "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return dict(task_key=task_key, label=label, error_type=type(exc).__name__, message=message, traceback=tb)
