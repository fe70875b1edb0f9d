"""Exercises for a course: re-run one class with a changed parameter, and see what it does.

Each exercise of the book asks a student to predict what a change does (no smoothing, eps near 0,
one layer, few dimensions, a kind of defect the method cannot see), then shows the answer computed
by the same code as the experiments: `variants` runs the changed configurations as ordinary sweep
tasks (cached in the result store, features shared with the tables) and `variant_table` lays them
beside the unchanged one; `defect_type_table` says which defect types the image score separates
from good images and which it misses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError

METRIC_NAMES = {"pixel_auroc": "pixel AUROC (%)", "pro": "PRO (%)", "image_auroc": "image AUROC (%)"}


def variants(
    data_root: str | os.PathLike,
    category: str,
    base: ExperimentConfig,
    changes: Mapping[str, Mapping[str, Any]],
    *,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
    bootstrap: int = 0,
    workers: int | str = "auto",
) -> dict[str, str]:
    """Run `base` and each of its `changes` ({name: {field: value}}) on one class; returns
    {name: task key} with "as in the paper" -> the unchanged configuration's key."""
    from padim_lib.engine import sweep
    from padim_lib.engine.task import Task

    configs = {"unchanged": base}
    for name, change in changes.items():
        if name in configs:
            raise PadimError(f"variant name {name!r} is used twice")
        configs[name] = base.replace(**dict(change), label=name)
    tasks = {name: Task(str(data_root), category, cfg) for name, cfg in configs.items()}
    sweep.run(list(tasks.values()), results_dir, device=device, bootstrap=bootstrap, progress=False,
              workers=workers)
    return {name: task.key() for name, task in tasks.items()}


def variant_table(keys: Mapping[str, str], results_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """One row per variant: its metrics on the full test set (percent) and the change from "unchanged"."""
    from padim_lib.engine.results import ResultStore

    rows = ResultStore(results_dir).load(keys.values())
    full = rows[rows["replicate"] == -1]
    by_key = {k: n for n, k in keys.items()}
    table = (full.assign(variant=full["task_key"].map(by_key))
             .pivot_table(index="variant", columns="metric", values="value", aggfunc="first") * 100)
    table = table.reindex(list(keys)).reindex(columns=[m for m in METRIC_NAMES if m in table.columns])
    delta = table - table.loc["unchanged"]
    out = pd.DataFrame(index=table.index)
    for metric in table.columns:
        out[METRIC_NAMES[metric]] = [
            f"{v:.1f}" if name == "unchanged" else f"{v:.1f} ({d:+.1f})"
            for name, v, d in zip(table.index, table[metric], delta[metric], strict=True)
        ]
    out.index.name = None
    return out


def defect_type_table(artifacts: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Per defect type: its test images, and the image AUROC of good images vs that type alone
    (from a task's artifacts: labels, scores, defect_types), weakest first."""
    from padim_lib.metrics.image import image_auroc

    labels = np.asarray(artifacts["labels"])
    scores = np.asarray(artifacts["scores"], dtype=np.float64)
    types = np.asarray(artifacts["defect_types"]).astype(str)
    good = labels == 0
    if not good.any():
        raise PadimError("defect_type_table needs good test images to compare with; the artifacts have none")
    out = []
    for kind in sorted(set(types[~good])):
        sel = good | (types == kind)
        out.append({"defect type": kind, "images": int((types == kind).sum()),
                    "image AUROC vs good (%)": 100 * image_auroc(labels[sel], scores[sel])})
    return pd.DataFrame(out).sort_values("image AUROC vs good (%)").reset_index(drop=True)
