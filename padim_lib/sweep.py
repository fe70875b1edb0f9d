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

import contextlib
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from padim_lib.errors import PadimError
from padim_lib.results import ResultStore

if TYPE_CHECKING:  # the heavy modules (torch) are imported only when a sweep runs
    from distributed import Client

    from padim_lib.config import ExperimentConfig
    from padim_lib.experiments import Task
    from padim_lib.featcache import FeatureSpec

TaskFn = Callable[..., tuple[pd.DataFrame, Mapping[str, Any]]]
"""task_fn(task, cache_dir, *, device, bootstrap, feature_paths) -> (rows, artifacts); see experiments.run_task."""
FeatureFn = Callable[..., os.PathLike | str]
"""feature_fn(spec, cache_dir, *, device, progress) -> path; see featcache.ensure_features."""

DEFAULT_RETRIES = 2
FAILURE_COLUMNS = ["task_key", "label", "error_type", "message", "traceback"]
PRESETS = ("table1", "table2")
STUDY_KEYS = {
    "name": "free text, shown in the progress line",
    "description": "free text",
    "data_root": "data set root in the MVTec AD layout (required)",
    "results": "result directory (default: results)",
    "features": "feature cache directory (default: <results>/features)",
    "classes": '"all" or a list of class names (default: all)',
    "seeds": "seeds for configurations that use one, i.e. random projections (default: [0])",
    "device": "auto, cpu, cuda, cuda:N (default: auto)",
    "bootstrap": "bootstrap replicates over test images (default: 200)",
    "torch_threads": "torch threads per task (default: torch's own in-process, the worker's threads on Dask)",
    "base": "ExperimentConfig fields shared by every configuration",
    "configurations": "list of presets (table1, table2) or ExperimentConfig field mappings (required)",
}


class SweepError(PadimError):
    """Some tasks failed. `failures` has one row per failed task; `rows` holds the completed tasks' rows."""

    def __init__(self, message: str, failures: pd.DataFrame, rows: pd.DataFrame) -> None:
        super().__init__(message)
        self.failures = failures
        self.rows = rows


# ---------------------------------------------------------------------------------------------
# Grid expansion
# ---------------------------------------------------------------------------------------------
def _categories(data_root: str | os.PathLike, categories: str | Sequence[str]) -> list[str]:
    from padim_lib.datasets.catalog import list_classes  # class folders, or an STC root's scenes

    if not Path(data_root).is_dir():
        raise FileNotFoundError(f"data root {data_root} does not exist or is not a directory")
    available = list_classes(data_root)
    if isinstance(categories, str):
        if categories != "all":
            categories = [categories]
        else:
            if not available:
                raise PadimError(f"data root {data_root} has no class folders with train/good")
            return available
    categories = list(categories)
    unknown = [c for c in categories if c not in available]
    if unknown:
        raise PadimError(f"classes {unknown} are not in data root {data_root}; available: {available}")
    if not categories:
        raise PadimError("categories is empty; expected 'all' or at least one class name")
    return categories


def _with_seeds(configs: Sequence[ExperimentConfig], seeds: Sequence[int] | None) -> list[ExperimentConfig]:
    out: list[ExperimentConfig] = []
    for cfg in configs:
        if not cfg.uses_seed():
            out.append(cfg.replace(seed=0))
        elif seeds is None:
            out.append(cfg)
        else:
            out.extend(cfg.replace(seed=int(s)) for s in seeds)
    return out


def make_tasks(
    data_root: str | os.PathLike,
    categories: str | Sequence[str],
    configs: Sequence[ExperimentConfig],
    seeds: Sequence[int] | None = None,
) -> list[Task]:
    """Expand classes x configurations (x seeds, for configs that use one) into unique tasks.

    `categories` is "all" (every class under `data_root`) or a list. Configurations that ignore the
    seed (`uses_seed()` false) run once, with seed 0. With `seeds=None` every config keeps its own
    seed. Tasks with the same key compute the same numbers and are kept once (the first one):
    e.g. Table I's "PaDiM" and Table II's "all" are one task, so select rows by `config_key`.
    """
    from padim_lib.experiments import Task

    cats = _categories(data_root, categories)
    expanded = _with_seeds(configs, seeds)
    tasks: dict[str, Task] = {}
    for category in cats:
        for cfg in expanded:
            task = Task(str(data_root), category, cfg)
            tasks.setdefault(task.key(), task)
    return list(tasks.values())


def _study_error(source: str, key: str, message: str) -> PadimError:
    return PadimError(f"{source}: {key}: {message}")


def _int_list(value: Any, source: str, key: str) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise _study_error(source, key, f"expected a non-empty list of integers, got {value!r}")
    return value


def _preset_configs(name: str, kwargs: dict[str, Any], seeds: list[int], source: str, where: str):
    from padim_lib import experiments

    if name not in PRESETS:
        raise _study_error(source, where, f"unknown preset {name!r}; expected one of {list(PRESETS)}")
    try:
        if name == "table1":
            return experiments.table1_configs(**kwargs)
        return experiments.table2_configs(**{"seeds": seeds, **kwargs})
    except (TypeError, ValueError) as exc:
        raise _study_error(source, where, f"preset {name}: {exc}") from exc


def expand(study: Mapping[str, Any], *, source: str = "study") -> list[Task]:
    """The study grid (a parsed YAML mapping; its keys: README, "The study file") -> unique tasks.

    `source` names the file in error messages, which also name the offending key.
    """
    from padim_lib.config import ExperimentConfig

    if not isinstance(study, Mapping):
        raise PadimError(f"{source}: expected a mapping of study keys, got {type(study).__name__}")
    unknown = sorted(set(study) - set(STUDY_KEYS))
    if unknown:
        raise _study_error(source, unknown[0], f"unknown key; expected one of {sorted(STUDY_KEYS)}")
    if not study.get("data_root"):
        raise _study_error(source, "data_root", "missing; expected the data set root")
    classes = study.get("classes", "all")
    if not (classes == "all" or (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes))):
        raise _study_error(source, "classes", f'expected "all" or a list of class names, got {classes!r}')
    seeds = _int_list(study.get("seeds", [0]), source, "seeds")
    base = study.get("base") or {}
    if not isinstance(base, Mapping):
        raise _study_error(source, "base", f"expected a mapping of ExperimentConfig fields, got {base!r}")
    entries = study.get("configurations")
    if not isinstance(entries, list) or not entries:
        raise _study_error(source, "configurations", "expected a non-empty list of presets or field mappings")

    configs: list[ExperimentConfig] = []
    for i, entry in enumerate(entries):
        where = f"configurations[{i}]"
        if isinstance(entry, str):
            entry = {"preset": entry}
        if not isinstance(entry, Mapping):
            raise _study_error(source, where, f"expected a preset name or a mapping, got {entry!r}")
        fields = {**base, **entry}
        entry_seeds = _int_list(fields.pop("seeds"), source, f"{where}.seeds") if "seeds" in fields else seeds
        preset = fields.pop("preset", None)
        if preset is not None:
            group = _preset_configs(preset, fields, entry_seeds, source, where)
        else:
            try:
                group = [ExperimentConfig.from_dict(fields)]
            except (TypeError, ValueError) as exc:
                raise _study_error(source, where, str(exc)) from exc
        configs.extend(_with_seeds(group, entry_seeds))
    try:
        return make_tasks(study["data_root"], classes, configs, seeds=None)
    except (PadimError, FileNotFoundError) as exc:
        key = "data_root" if isinstance(exc, FileNotFoundError) else "classes"
        raise _study_error(source, key, str(exc)) from exc


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


# ---------------------------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------------------------
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


@contextlib.contextmanager
def _dask_client(scheduler: str | Client | None, local_cluster: int | None) -> Iterator[Client]:
    from distributed import Client, LocalCluster

    if scheduler is not None and not isinstance(scheduler, str):
        yield scheduler  # the caller's client: leave it open
        return
    if scheduler is not None:
        try:
            client = Client(scheduler)  # waits distributed.comm.timeouts.connect (default 30 s)
        except (OSError, TimeoutError) as exc:
            raise PadimError(f"cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from exc
        with client:
            yield client
        return
    if not isinstance(local_cluster, int) or isinstance(local_cluster, bool) or local_cluster < 1:
        raise PadimError(f"local_cluster must be a positive number of workers, got {local_cluster!r}")
    # One thread per worker process: torch gets one core each, and a worker that dies takes one task.
    # Everything listens on 127.0.0.1 only (the dashboard too, on a free port).
    with LocalCluster(
        n_workers=local_cluster, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster, Client(cluster) as client:
        yield client


def _describe(fut) -> str:
    if fut.status == "error":
        exc = fut.exception()
        return f"{type(exc).__name__}: {exc}"
    return f"job {fut.status}"


def _run_on_dask(plan, store, cache_dir, device, bootstrap, task_fn, feature_fn, progress, client, retries,
                 threads):
    from distributed import as_completed

    results_dir = str(store.directory)
    # Deterministic keys: two clients on one scheduler share a job instead of running it twice.
    ffuts = {
        fkey: client.submit(_feature_job, spec, cache_dir, device, feature_fn, threads,
                            key=f"padim-features-{fkey}", retries=retries, pure=False)
        for fkey, spec in plan.specs.items()
    }
    tfuts = {
        key: client.submit(_task_job, task, key, results_dir, cache_dir, device, bootstrap, task_fn, threads,
                           *[ffuts[f] for f in plan.deps[key]],
                           key=f"padim-task-{key}", retries=retries, pure=False)
        for key, task in plan.todo
    }
    labels = {f.key: f"features {s.category} {s.split} {s.backbone}" for f, s in
              ((ffuts[k], plan.specs[k]) for k in ffuts)}
    labels.update({tfuts[k].key: task_label(t) for k, t in plan.todo})
    store_keys = {f.key: k for k, f in {**ffuts, **tfuts}.items()}
    ours = set(labels)
    failures: list[dict] = []
    pending = as_completed(list(ffuts.values()) + list(tfuts.values()))
    try:
        while not pending.is_empty():
            # Feature jobs sort first ("padim-features-" < "padim-task-"), so a failed feature job is
            # reported before the tasks that fail because of it.
            for fut in sorted(pending.next_batch(block=False), key=lambda f: f.key):
                label, key = labels[fut.key], store_keys[fut.key]
                is_task = fut.key.startswith("padim-task-")
                # A task's rows in the store are the proof of completion, even when the worker that
                # held its (tiny) result died afterwards and Dask now calls the result lost.
                if fut.status == "finished" or (is_task and store.has(key, bootstrap)):
                    progress.done()
                    continue
                if fut.status in ("lost", "pending"):  # its worker died after it finished: Dask recomputes it
                    pending.add(fut)
                    continue
                dead = [f for f in plan.deps.get(key, []) if is_task and ffuts[f].status in ("error", "cancelled")]
                if dead:  # Dask hands the dependency's error down: name the real cause
                    cause = ffuts[dead[0]]
                    exc: BaseException = PadimError(
                        f"feature extraction failed: {labels[cause.key]}: {_describe(cause)}")
                    tb = ""
                elif fut.status == "error":
                    exc, tb = fut.exception(), "".join(traceback.format_tb(fut.traceback()))
                else:  # cancelled or lost: the scheduler went away or released it
                    exc, tb = PadimError(f"job {fut.key} was {fut.status} by the Dask scheduler"), ""
                failures.append(_failure(key if is_task else f"features-{key}", label, exc, tb))
                progress.fail(label, type(exc).__name__, str(exc))
            if not pending.is_empty():
                processing = client.processing()
                progress.set_running(sum(1 for keys in processing.values() for k in keys if k in ours))
                time.sleep(0.2)
    finally:
        progress.set_running(0)
        # Release our futures so the scheduler forgets them (and cancels any still queued on interrupt).
        client.cancel(list(ffuts.values()) + list(tfuts.values()))
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
    faster than several (OpenMP threads spin waiting for each other; README, "Measured on this machine").
    `task_fn` / `feature_fn` default to experiments.run_task / featcache.ensure_features; they
    must be module-level functions so Dask can send them to workers.

    `workers`: without Dask, 1 runs the jobs here, one after the other; N > 1 (or "auto", one per
    core) on a local pool of single-threaded processes (padim_lib.sweep_pool), with identical rows.

    Raises SweepError (a PadimError) after all other tasks finished when any task failed.
    """
    if scheduler is not None and local_cluster is not None:
        raise PadimError("pass either scheduler or local_cluster, not both")
    if torch_threads is not None and (not isinstance(torch_threads, int) or isinstance(torch_threads, bool)
                                      or torch_threads < 1):
        raise PadimError(f"torch_threads must be a positive integer or None, got {torch_threads!r}")
    if workers == "auto":
        from padim_lib.sweep_pool import default_workers

        workers = default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PadimError(f"workers={workers!r}; expected a positive integer or 'auto' (one per core)")
    if task_fn is None:
        from padim_lib.experiments import run_task as task_fn
    if feature_fn is None:
        from padim_lib.featcache import ensure_features as feature_fn
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
                from padim_lib.sweep_pool import run_in_pool

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


# ---------------------------------------------------------------------------------------------
# Study files
# ---------------------------------------------------------------------------------------------
def load_study(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a study YAML file into a mapping (errors name the file)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {path} does not exist")
    try:
        study = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PadimError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(study, dict):
        raise PadimError(f"{path}: expected a mapping of study keys at the top level, got {type(study).__name__}")
    return study


def run_study(
    path: str | os.PathLike,
    scheduler: str | Client | None = None,
    local_cluster: int | None = None,
    results: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    task_fn: TaskFn | None = None,
    feature_fn: FeatureFn | None = None,
) -> pd.DataFrame:
    """Run the study described by a YAML file (`padim sweep`); relative paths are relative to the cwd.

    `results` overrides the file's `results` directory.
    """
    study = load_study(path)
    tasks = expand(study, source=str(path))
    bootstrap = study.get("bootstrap", 200)
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise _study_error(str(path), "bootstrap", f"expected a non-negative integer, got {bootstrap!r}")
    device = study.get("device", "auto")
    if not isinstance(device, str):
        raise _study_error(str(path), "device", f"expected a string such as auto, cpu or cuda, got {device!r}")
    threads = study.get("torch_threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise _study_error(str(path), "torch_threads", f"expected a positive integer, got {threads!r}")
    results_dir = results if results is not None else study.get("results", "results")
    return run(
        tasks,
        results_dir,
        scheduler=scheduler,
        local_cluster=local_cluster,
        device=device,
        bootstrap=bootstrap,
        progress=progress,
        cache_dir=study.get("features"),
        torch_threads=threads,
        task_fn=task_fn,
        feature_fn=feature_fn,
    )
