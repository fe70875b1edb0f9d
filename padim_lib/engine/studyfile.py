"""Study grids: classes x configurations (x seeds) -> tasks, and the study YAML file of `padim sweep`.

A study file names a data root, the classes, the seeds and a list of configurations (the paper's
tables as presets, or ExperimentConfig fields of any registered method); `expand` turns it into
unique tasks (configurations that compute the same numbers run once) and `run_study` runs them
with `sweep.run`. Errors name the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from padim_lib.errors import PadimError

if TYPE_CHECKING:
    from distributed import Client

    from padim_lib.engine.config import ExperimentConfig
    from padim_lib.engine.jobs import FeatureFn, TaskFn
    from padim_lib.engine.task import Task

# A preset names a function (keyword arguments: the entry's fields; Table II's also `seeds`) that
# returns configurations; the paper's tables are given by the caller (paper.tables.PRESETS), so
# this engine module never imports the layer above it.
Presets = Mapping[str, Any]
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
    from padim_lib.engine.task import Task

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
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise _study_error(source, key, f"expected a non-empty list of integers >= 0, got {value!r}")
    return value


def _preset_configs(name: str, kwargs: dict[str, Any], seeds: list[int], source: str, where: str,
                    presets: Presets) -> list[ExperimentConfig]:
    if name not in presets:
        raise _study_error(source, where, f"unknown preset {name!r}; expected one of {list(presets)}")
    make = presets[name]
    try:
        import inspect

        takes_seeds = "seeds" in inspect.signature(make).parameters
        return make(**({"seeds": seeds, **kwargs} if takes_seeds else kwargs))
    except (TypeError, ValueError) as exc:
        raise _study_error(source, where, f"preset {name}: {exc}") from exc


def expand(study: Mapping[str, Any], *, source: str = "study", presets: Presets | None = None) -> list[Task]:
    """The study grid (a parsed YAML mapping; its keys: STUDY_KEYS; the book appendix book/scale_out.md, "The study file") -> unique tasks.

    `source` names the file in error messages, which also name the offending key. `presets`: name
    -> configuration maker, for entries `{preset: name, ...}` (the CLI passes the paper's tables).
    """
    from padim_lib.engine.config import ExperimentConfig

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
            group = _preset_configs(preset, fields, entry_seeds, source, where, presets or {})
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
    presets: Presets | None = None,
) -> pd.DataFrame:
    """Run the study described by a YAML file (`padim sweep`); relative paths are relative to the cwd.

    `results` overrides the file's `results` directory; `presets` as in `expand`.
    """
    study = load_study(path)
    tasks = expand(study, source=str(path), presets=presets)
    bootstrap = study.get("bootstrap", 200)
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise _study_error(str(path), "bootstrap", f"expected a non-negative integer, got {bootstrap!r}")
    device = study.get("device", "auto")
    if not isinstance(device, str):
        raise _study_error(str(path), "device", f"expected a string such as auto, cpu or cuda, got {device!r}")
    from padim_lib.features.device import check_device

    check_device(device, f"{path}: ")  # before any feature is extracted
    threads = study.get("torch_threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise _study_error(str(path), "torch_threads", f"expected a positive integer, got {threads!r}")
    results_dir = results if results is not None else study.get("results", "results")
    from padim_lib.engine.sweep import run

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
