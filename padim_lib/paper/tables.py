"""The paper's tables: which configurations make Table I and Table II, the role of each, and a run.

A table's rows are addressed by role, never by label prefix or position, so a chapter reads the
same on any backbone, with any number of layers or reduced sizes:

- Table I: "single" (one model per single layer), "sum" (the single-layer models, maps summed:
  "Layer 1+2+3"), "joint" (one Gaussian over the concatenated layers: PaDiM);
- Table II: "rd" (d channels chosen at random, one model per seed), "pca" (the d principal axes),
  "all" (every dimension).

`run_table` computes (or reads from the result cache) every class x configuration of one table
through padim_lib.engine.sweep and returns a `TableRun`; `comparability` says whether its numbers can be
set against the published ones, and why not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from padim_lib.datasets import CLASSES, Preprocess, category_kinds, check_split_counts
from padim_lib.engine import studyfile as study
from padim_lib.engine import sweep
from padim_lib.engine import task as experiments
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.results import ResultStore
from padim_lib.errors import PadimError
from padim_lib.methods.params import parse_reduce
from padim_lib.paper import stats
from padim_lib.paper.published import load_published

TABLES = ("Table I", "Table II")
ROLES: dict[str, dict[str, str]] = {
    "Table I": {
        "single": "the single layers: one model per layer",
        "sum": "the sum model: the single-layer models' maps summed",
        "joint": "the joint model: one Gaussian over the concatenated layers (PaDiM)",
    },
    "Table II": {
        "rd": "the Rd rows: d channels chosen at random, one model per seed",
        "pca": "the PCA rows: the d principal axes of the training embeddings",
        "all": "all dimensions: no reduction",
    },
}
BACKBONE_SHORT = {"resnet18": "R18", "wide_resnet50_2": "WR50", "efficientnet_b5": "B5", "efficientnet_lite0": "Lite0",
                  "efficientnet_lite2": "Lite2"}
PAPER_PREPROCESS = Preprocess()  # resize 256, centre crop 224


def config_role(table: str, config: ExperimentConfig) -> str:
    """The role of `config` in `table` (see ROLES), read from what it computes."""
    if table == "Table I":
        if config.layer_mode == "sum":
            return "sum"
        return "single" if len(config.resolved_layers()) == 1 else "joint"
    if table == "Table II":
        kind, _ = parse_reduce(config.reduce)
        return {"random": "rd", "pca": "pca", None: "all"}[kind]
    raise PadimError(f"table={table!r}; expected one of {TABLES}")


def table_configs(
    table: str,
    *,
    backbone: str,
    layers: Sequence[str] | None = None,
    dims: Sequence[int] = (100, 200),
    seeds: int | Sequence[int] = 10,
    **common: Any,
) -> list[ExperimentConfig]:
    """The configurations of the paper's Table I or II for `backbone`.

    `seeds`: a count (seeds 0..n-1) or explicit seeds, for Table II's Rd rows. `common`:
    ExperimentConfig fields shared by every row (preprocess, sigma, eps, max_train). Table I's joint
    model is labelled after the backbone it really runs ("PaDiM-Lite0"); its `published_row` stays
    "PaDiM-R18", the figure it is set against.
    """
    if table == "Table I":
        configs = experiments.table1_configs(backbone=backbone, layers=layers, **common)
        name = f"PaDiM-{BACKBONE_SHORT.get(backbone, backbone)}"
        return [c.replace(label=name) if config_role(table, c) == "joint" else c for c in configs]
    if table == "Table II":
        seed_list = range(int(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        return experiments.table2_configs(backbone=backbone, dims=dims, seeds=seed_list, layers=layers, **common)
    raise PadimError(f"table={table!r}; expected one of {TABLES}")


@dataclass
class TableRun:
    """One table's configurations, tasks and result rows (labelled with this table's names)."""

    table: str
    configs: list[ExperimentConfig]
    tasks: list
    results: pd.DataFrame  # tidy result rows (experiments.ROW_COLUMNS), all configurations
    results_dir: Path
    comparable: bool
    reasons: list[str]

    # ------------------------------------------------------------------ rows by role

    def roles(self) -> list[str]:
        """The roles present in this run, in the table's order."""
        present = {config_role(self.table, c) for c in self.configs}
        return [r for r in ROLES[self.table] if r in present]

    def _configs(self, role: str | None, dim: int | None = None) -> list[ExperimentConfig]:
        if role is not None and role not in ROLES[self.table]:
            raise PadimError(f"{self.table}: role={role!r}; expected one of {list(ROLES[self.table])}")
        chosen = [c for c in self.configs if role is None or config_role(self.table, c) == role]
        if dim is not None:
            chosen = [c for c in chosen if parse_reduce(c.reduce)[1] == int(dim)]
        return chosen

    def labels(self, role: str | None = None, *, dim: int | None = None) -> list[str]:
        """Labels in the table's order: all, or those of one role (and reduced size `dim`)."""
        return list(dict.fromkeys(c.label for c in self._configs(role, dim)))

    def label(self, role: str, *, dim: int | None = None) -> str:
        """The one label of `role` ("joint", "sum", "all"; "rd" / "pca" with `dim`)."""
        found = self.labels(role, dim=dim)
        if len(found) != 1:
            at = f" at dim={dim}" if dim is not None else ""
            raise PadimError(f"{self.table}: role {role!r}{at} has {len(found)} rows {found}; expected one"
                             + ("" if dim is not None else " (pass dim=)"))
        return found[0]

    def rows(self, role: str | None = None, *, dim: int | None = None) -> pd.DataFrame:
        """The result rows of every configuration, or of one role (and `dim`)."""
        if role is None and dim is None:
            return self.results
        return self.results[self.results["label"].isin(self.labels(role, dim=dim))]

    def seeds(self, role: str | None = None) -> list[int]:
        """The seeds the role's configurations ran with (e.g. the Rd models' random choices)."""
        return sorted({c.seed for c in self._configs(role)})

    def published_row(self, label: str) -> str:
        """The published row `label` is set against ("" when none)."""
        rows = {c.label: c.published_row for c in self.configs}
        if label not in rows:
            raise PadimError(f"{self.table}: no configuration labelled {label!r}; expected one of {self.labels()}")
        return rows[label]

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys(t.category for t in self.tasks))

    # ------------------------------------------------------------------ summaries

    def summary(self) -> pd.DataFrame:
        """stats.summarise of the rows: per label, metric and class / group, value with 95 % CI."""
        return stats.summarise(self.results)

    def comparison(self, summary: pd.DataFrame | None = None) -> pd.DataFrame:
        """stats.compare_published: reproduced vs published (percent), difference and source."""
        return stats.compare_published(self.summary() if summary is None else summary, self.table,
                                       comparable=self.comparable)

    def published(self) -> pd.DataFrame:
        """The published figures of this table as (group, label, metric, value as a fraction)."""
        pub = load_published()
        pub = pub[pub["table"] == self.table]
        rows = []
        for c in self.configs:
            for _, r in pub[pub["row"] == c.published_row].iterrows() if c.published_row else []:
                rows.append({"group": r["group"], "label": c.label, "metric": r["metric"], "value": r["value"] / 100})
        return pd.DataFrame(rows, columns=["group", "label", "metric", "value"]).drop_duplicates()

    # ------------------------------------------------------------------ stored arrays

    def artifacts(self, label: str, category: str) -> dict:
        """The arrays stored with the task of (label, category); seeded configurations: the lowest seed."""
        tasks = [t for t in self.tasks if t.config.label == label and t.category == category]
        if not tasks:
            raise PadimError(f"{self.table}: no task for configuration {label!r} and class {category!r}")
        task = min(tasks, key=lambda t: t.config.seed)
        return ResultStore(self.results_dir).artifacts(task.key())

    def curves(self, kind: str) -> dict[str, dict[str, tuple]]:
        """{class: {label: (x, y)}} for kind 'roc' (image ROC), 'pixel_roc' or 'pro' (PRO vs FPR)."""
        names = {"roc": ("image_roc_fpr", "image_roc_tpr"), "pixel_roc": ("pixel_roc_fpr", "pixel_roc_tpr"),
                 "pro": ("pro_fpr", "pro")}
        if kind not in names:
            raise PadimError(f"kind={kind!r}; expected one of {sorted(names)}")
        x, y = names[kind]
        out: dict[str, dict[str, tuple]] = {}
        for category in self.classes:
            for label in self.labels():
                art = self.artifacts(label, category)
                if x in art:
                    out.setdefault(category, {})[label] = (art[x], art[y])
        return out

    def examples(self, label: str, category: str) -> dict:
        """Overlay inputs of (label, category): images (k,S,S,3) in [0,1], maps, masks, titles."""
        import numpy as np

        art = self.artifacts(label, category)
        titles = [f"{art['defect_types'][i]}, score {float(art['scores'][i]):.1f}" for i in art["example_index"]]
        return {
            "images": art["example_images"].astype(np.float32) / 255.0,
            "maps": art["example_maps"].astype(np.float32),
            "masks": art["example_masks"],
            "titles": titles,
        }


def run_table(
    table: str,
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None = None,
    *,
    backbone: str,
    layers: Sequence[str] | None = None,
    dims: Sequence[int] = (100, 200),
    seeds: int | Sequence[int] = 10,
    preprocess: Preprocess = PAPER_PREPROCESS,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
    scheduler: str | None = None,
    bootstrap: int = 200,
    torch_threads: int | None = None,
    progress: bool = True,
    workers: int | str = "auto",
) -> TableRun:
    """Compute (or read from the result cache) one of the paper's tables on `data_root`.

    Every class x configuration (x seed) is a task of `padim_lib.engine.sweep.run`, in-process or on the
    Dask `scheduler`; tasks already stored in `results_dir` are not recomputed. `torch_threads`:
    intra-op threads per task (None: torch's default in-process, the worker's share on Dask).
    `workers`: without a scheduler, tasks run on that many single-threaded local processes ("auto":
    one per core; 1: here, one after the other); the rows are the same either way.
    """
    configs = table_configs(table, backbone=backbone, layers=layers, dims=dims, seeds=seeds, preprocess=preprocess,
                            sigma=sigma, eps=eps, max_train=max_train)
    chosen = as_list(classes)
    tasks = study.make_tasks(data_root, "all" if chosen is None else chosen, configs)
    if progress:
        names = list(dict.fromkeys(t.category for t in tasks))
        print(f"{table}: {len(tasks)} tasks ({len(configs)} configurations x {len(names)} classes: "
              f"{', '.join(names)})", flush=True)
    rows = sweep.run(tasks, results_dir, scheduler=scheduler, device=device, bootstrap=bootstrap,
                     torch_threads=torch_threads, progress=progress, workers=1 if scheduler else workers)
    comparable, reasons = comparability(data_root, backbone, chosen, preprocess=preprocess, max_train=max_train)
    return TableRun(table, configs, tasks, experiments.label_rows(rows, configs), Path(results_dir),
                    comparable, reasons)


def comparability(
    data_root: str | os.PathLike,
    backbone: str,
    classes: Sequence[str] | str | None = None,
    *,
    preprocess: Preprocess = PAPER_PREPROCESS,
    max_train: int | None = None,
) -> tuple[bool, list[str]]:
    """Whether reproduced numbers can be set against the paper's (Tables I and II), and if not, why.

    Comparable means the paper's set-up: all 15 MVTec AD classes with the published split sizes,
    ResNet18, resize 256 and centre crop 224, every training image.
    """
    reasons = []
    if (Path(data_root) / "dataset.json").is_file():
        reasons.append(f"the data at {data_root} is a generated set, not MVTec AD")
    else:
        try:
            problems = check_split_counts(data_root)
        except Exception as exc:  # noqa: BLE001 - a missing or odd folder is a reason, not a crash
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            reasons.append(f"the data at {data_root} is not a complete MVTec AD ({problems[0]})")
    chosen = as_list(classes)
    if chosen is not None and sorted(chosen) != sorted(CLASSES):
        reasons.append(f"{len(chosen)} of the 15 classes")
    if backbone != "resnet18":
        reasons.append(f"backbone {backbone}, not ResNet18")
    if (preprocess.resize, preprocess.crop) != (PAPER_PREPROCESS.resize, PAPER_PREPROCESS.crop):
        reasons.append(f"preprocessing resize {preprocess.resize} / crop {preprocess.crop}, not 256 / 224")
    if max_train is not None:
        reasons.append(f"training images capped at {max_train}")
    return not reasons, reasons


def class_features(
    data_root: str | os.PathLike,
    category: str,
    *,
    backbone: str,
    preprocess: Preprocess = PAPER_PREPROCESS,
    max_train: int | None = None,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
) -> tuple[dict, dict]:
    """(train, test) cached features of one class, as `featcache.load_features` returns them.

    The same files the Table I / II tasks read (`Task.feature_specs`, cache `<results_dir>/features`
    as `sweep.run` uses it), so the method chapter and the tables share one backbone pass.
    """
    from padim_lib.features.cache import ensure_features, load_features

    config = ExperimentConfig(backbone=backbone, preprocess=preprocess, max_train=max_train)
    task = experiments.Task(str(data_root), category, config)
    cache = Path(results_dir).resolve() / "features"
    train, test = (load_features(ensure_features(s, cache, device=device, progress=False)) for s in task.feature_specs())
    return train, test


def default_category(data_root: str | os.PathLike) -> str:
    """The first object class under `data_root` (objects make the clearest maps), else the first class."""
    kinds = category_kinds(data_root)
    if not kinds:
        raise PadimError(f"data_root {data_root}: no class folders with train/good")
    return next((c for c, k in kinds.items() if k == "object"), next(iter(kinds)))


def as_list(classes: Sequence[str] | str | None) -> list[str] | None:
    """A notebook's `classes` parameter: None / "all" -> None (every class), "x" -> ["x"]."""
    if classes is None or classes == "all":
        return None
    if isinstance(classes, str):
        return [classes]
    return [str(c) for c in classes]


def run_names(runs: Mapping[str, TableRun] | Sequence[TableRun]) -> dict[str, str]:
    """Published row name -> this run's label, where they differ (e.g. "Rd 100" -> "Rd 40")."""
    values = runs.values() if isinstance(runs, Mapping) else runs
    return {c.published_row: c.label for r in values for c in r.configs
            if c.published_row and c.published_row != c.label}
