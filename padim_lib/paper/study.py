"""A study: configurations x classes (or STC scenes), run like the tables, compared with one published table.

The detection, non-aligned and STC chapters each set a few configurations (PaDiM, SPADE, the VAE)
against published figures that are not one of the paper's Tables I / II. `run_study` runs them
through the same sweep and result cache as the tables (`padim_lib.engine.sweep.run`: tasks already
stored in `results_dir` are read, not recomputed) and returns a `StudyRun`, which summarises the
rows (`stats.summarise`: per class and per group, 95 % bootstrap intervals over test images) and
joins them with `published.csv` by each configuration's `published_row`.

`spread_over_versions` averages a study repeated on several versions of a data set (the
non-aligned MVTec AD's seeded versions) and says how far the versions spread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine import sweep
from padim_lib.engine import task as experiments
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.results import ResultStore
from padim_lib.engine.task import Task
from padim_lib.errors import PadimError
from padim_lib.paper import stats


def short_name(backbone: str) -> str:
    """The paper's short name of a backbone ("WR50"), or the name itself."""
    from padim_lib.paper.tables import BACKBONE_SHORT

    return BACKBONE_SHORT.get(backbone, backbone)


def rd_label(backbone: str, rd: int | None) -> str:
    """ "PaDiM-WR50-Rd550", or "PaDiM-Lite0" without a reduction."""
    return f"PaDiM-{short_name(backbone)}" + (f"-Rd{int(rd)}" if rd else "")


@dataclass
class StudyRun:
    """Configurations, tasks and labelled result rows of one study; `table` names its published figures."""

    table: str
    configs: list[ExperimentConfig]
    tasks: list[Task]
    results: pd.DataFrame  # tidy rows (experiments.ROW_COLUMNS), labelled by the configs
    results_dir: Path
    comparable: bool = False  # whether the figures can be set against the paper's (see `comparability`)
    reasons: list[str] = field(default_factory=lambda: ["comparability not checked"])

    def labels(self) -> list[str]:
        """Labels in configuration order, each once."""
        return list(dict.fromkeys(c.label for c in self.configs))

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys(t.category for t in self.tasks))

    def rows(self, data_root: str | os.PathLike | None = None) -> pd.DataFrame:
        """All rows, or those computed on `data_root`."""
        if data_root is None:
            return self.results
        return self.results[self.results["data_root"] == str(data_root)]

    def summary(self, data_root: str | os.PathLike | None = None) -> pd.DataFrame:
        """stats.summarise of the rows (of one data root): value with 95 % CI per label, metric, group."""
        return stats.summarise(self.rows(data_root))

    def comparison(self, summary: pd.DataFrame | None = None, comparable: bool | None = None) -> pd.DataFrame:
        """Reproduced vs published (percent): stats.compare_published against `table`."""
        return stats.compare_published(self.summary() if summary is None else summary, self.table,
                                       comparable=self.comparable if comparable is None else comparable)

    def published(self) -> pd.DataFrame:
        """This study's published figures as (group, label, metric, value as a fraction), for plots."""
        from padim_lib.paper.published import load_published

        pub = load_published()
        pub = pub[(pub["table"] == self.table) & (pub["unit"] == "%")]
        rows = [{"group": r["group"], "label": c.label, "metric": r["metric"], "value": r["value"] / 100}
                for c in self.configs if c.published_row for _, r in pub[pub["row"] == c.published_row].iterrows()]
        return pd.DataFrame(rows, columns=["group", "label", "metric", "value"]).drop_duplicates()

    def stand_ins(self) -> pd.DataFrame:
        """Per configuration: the network it ran and the published row it is set against."""
        rows = {c.label: {"network run": c.backbone, "method": c.method, "set against (paper)": c.published_row or "–"}
                for c in self.configs}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("configuration")

    def artifacts(self, label: str, category: str, data_root: str | os.PathLike | None = None) -> dict:
        """The arrays stored with the task of (label, category[, data_root]); the lowest seed."""
        tasks = [t for t in self.tasks if t.config.label == label and t.category == category
                 and (data_root is None or t.data_root == str(data_root))]
        if not tasks:
            raise PadimError(f"{self.table}: no task for configuration {label!r} and class {category!r}")
        return ResultStore(self.results_dir).artifacts(min(tasks, key=lambda t: t.config.seed).key())

    def curves(self, kind: str = "roc", data_root: str | os.PathLike | None = None) -> dict[str, dict[str, tuple]]:
        """{class: {label: (x, y)}}: kind "roc" (image ROC), "pixel_roc" or "pro" (PRO vs FPR)."""
        names = {"roc": ("image_roc_fpr", "image_roc_tpr"), "pixel_roc": ("pixel_roc_fpr", "pixel_roc_tpr"),
                 "pro": ("pro_fpr", "pro")}
        if kind not in names:
            raise PadimError(f"kind={kind!r}; expected one of {sorted(names)}")
        x, y = names[kind]
        out: dict[str, dict[str, tuple]] = {}
        for category in self.classes:
            for label in self.labels():
                art = self.artifacts(label, category, data_root)
                if x in art:
                    out.setdefault(category, {})[label] = (art[x], art[y])
        return out


def run_study(
    table: str,
    tasks: Sequence[Task],
    configs: Sequence[ExperimentConfig],
    *,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
    scheduler: str | None = None,
    bootstrap: int = 200,
    torch_threads: int | None = None,
    progress: bool = True,
    workers: int | str = "auto",
    comparability: tuple[bool, list[str]] | None = None,
) -> StudyRun:
    """Run (or read from the result cache) `tasks` as the tables do; rows labelled by `configs`.

    Rows are joined to configurations by key. Two configurations may share a label only if they
    run on different data roots (e.g. one method on aligned and non-aligned data): summarise
    those per root. `comparability`: (comparable, reasons) recorded on the run (default: not
    comparable, not checked).
    """
    labels = [c.label for c in configs]
    if not configs or any(not label for label in labels):
        raise PadimError(f"configs: expected configurations with non-empty labels, got {labels}")
    if progress:
        print(f"{table}: {len(tasks)} tasks ({len(configs)} configurations)", flush=True)
    rows = sweep.run(list(tasks), results_dir, scheduler=scheduler, device=device, bootstrap=bootstrap,
                     torch_threads=torch_threads, progress=progress, workers=1 if scheduler else workers)
    run = StudyRun(table, list(configs), list(tasks), experiments.label_rows(rows, configs), Path(results_dir))
    if comparability is not None:
        run.comparable, run.reasons = bool(comparability[0]), list(comparability[1])
    return run


def comparability(
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None,
    configs: Sequence[ExperimentConfig],
    paper_backbones: Mapping[str, str],
    *,
    preprocess: Preprocess,
    max_train: int | None = None,
) -> tuple[bool, list[str]]:
    """Whether an MVTec AD study can be set against the paper's figures, and if not, why: the
    tables' conditions (complete MVTec AD, all classes, 256 / 224, every training image), and each
    configuration on the backbone its published row names (`paper_backbones`: row -> backbone)."""
    from padim_lib.paper import tables

    _, reasons = tables.comparability(data_root, "resnet18", classes, preprocess=preprocess, max_train=max_train)
    reasons = [r for r in reasons if not r.startswith("backbone ")]
    for c in configs:
        wanted = paper_backbones.get(c.published_row)
        if wanted and c.backbone != wanted:
            reasons.append(f"{c.label} runs {c.backbone}, not the paper's {wanted}")
    return not reasons, reasons


def class_subset(data_root: str | os.PathLike, classes: Sequence[str] | str | None) -> list[str]:
    """A chapter's class choice: a list as given, "all" (every class), or None: the first texture and
    the first object class (one of each kind, so every group mean exists; a small budget)."""
    from padim_lib.datasets.catalog import category_kinds

    kinds = category_kinds(data_root)
    if classes == "all":
        return list(kinds)
    if classes is not None:
        return [classes] if isinstance(classes, str) else [str(c) for c in classes]
    picked = [next((c for c, k in kinds.items() if k == kind), None) for kind in ("texture", "object")]
    picked = [c for c in picked if c is not None] or list(kinds)[:1]
    if not picked:
        raise PadimError(f"data_root {data_root}: no class folders with train/good")
    return picked


def spread_over_versions(summaries: Mapping[str, pd.DataFrame], by: str = "label") -> pd.DataFrame:
    """Mean and spread of summaries of the same study on several data set versions.

    summaries: version name -> stats.summarise output (columns by, group, metric, value, ...).
    Returns one row per (by, group, metric) present in every version: mean, std (ddof=1; NaN for
    one version), sem, min, max of the versions' values, and n_versions; values as given (fractions).
    """
    if not summaries:
        raise PadimError("summaries: expected at least one version")
    parts = [s[[by, "group", "metric", "value"]].assign(version=v) for v, s in summaries.items()]
    df = pd.concat(parts, ignore_index=True)
    n = len(summaries)
    out = []
    for (name, group, metric), sub in df.groupby([by, "group", "metric"], sort=False):
        if sub["version"].nunique() != n:  # a group missing in one version would bias the mean
            continue
        values = sub["value"].to_numpy(float)
        std = float(np.std(values, ddof=1)) if n > 1 else float("nan")
        out.append({by: name, "group": group, "metric": metric, "mean": float(values.mean()), "std": std,
                    "sem": std / np.sqrt(n) if n > 1 else float("nan"), "min": float(values.min()),
                    "max": float(values.max()), "n_versions": n})
    return pd.DataFrame(out, columns=[by, "group", "metric", "mean", "std", "sem", "min", "max", "n_versions"])
