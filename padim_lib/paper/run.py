"""`run(study)`: a Study computed (or read from the result cache) through the sweep, and what a chapter reads from it.

Every chapter gets the same `StudyRun`: rows addressed by role (and reduced size, and data
version), summaries with 95 % bootstrap intervals (`stats.summarise`), the comparison with the
published table (and the study's other tables where its own has no figure), the stored arrays
(curves, example maps), and for a study on several data versions the spread over the versions and
each configuration's drop from the main version.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from padim_lib.engine import sweep
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.results import ResultStore
from padim_lib.engine.task import Task, label_rows
from padim_lib.errors import PadimError
from padim_lib.methods.params import parse_reduce
from padim_lib.paper import claims, stats
from padim_lib.paper.published import load_published, published_value
from padim_lib.paper.study import Entry, Study

CURVES = {"roc": ("image_roc_fpr", "image_roc_tpr"), "pixel_roc": ("pixel_roc_fpr", "pixel_roc_tpr"),
          "pro": ("pro_fpr", "pro")}
DROP_METRIC = "pixel_auroc_drop"


@dataclass
class StudyRun:
    """A study's tasks and labelled result rows, and whether its figures compare with the paper's."""

    study: Study
    tasks: list[Task]
    results: pd.DataFrame  # tidy rows (engine.task.ROW_COLUMNS) of every version, labelled by the entries
    results_dir: Path
    comparable: bool
    reasons: list[str]

    # ------------------------------------------------------------------ what ran

    @property
    def table(self) -> str:
        return self.study.table

    @property
    def configs(self) -> list[ExperimentConfig]:
        """The configurations of the main version."""
        return self.study.configs(self.study.versions[0].name)

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys(t.category for t in self.tasks))

    def roles(self) -> list[str]:
        """The roles present, in the table's order."""
        present = {e.role for e in self.study.entries}
        return [r for r in self.study.roles if r in present]

    def _entries(self, role: str | None = None, dim: int | None = None, version: str | None = None) -> list[Entry]:
        if role is not None and role not in self.study.roles:
            raise PadimError(f"{self.table}: role={role!r}; expected one of {list(self.study.roles)}")
        name = self.study.version(version).name
        chosen = [e for e in self.study.resolved() if e.version == name and (role is None or e.role == role)]
        if dim is not None:
            chosen = [e for e in chosen if parse_reduce(e.config.reduce)[1] == int(dim)]
        return chosen

    def labels(self, role: str | None = None, *, dim: int | None = None) -> list[str]:
        """Labels in the table's order: all, or those of one role (and reduced size `dim`)."""
        return list(dict.fromkeys(e.config.label for e in self._entries(role, dim)))

    def label(self, role: str, *, dim: int | None = None) -> str:
        """The one label of `role` ("joint", "sum", "vae", ...; "rd" / "pca" with `dim`)."""
        found = self.labels(role, dim=dim)
        if len(found) != 1:
            at = f" at dim={dim}" if dim is not None else ""
            raise PadimError(f"{self.table}: role {role!r}{at} has {len(found)} rows {found}; expected one"
                             + ("" if dim is not None else " (pass dim=)"))
        return found[0]

    def role_of(self, label: str) -> str:
        """The role of configuration `label`."""
        for e in self.study.entries:
            if e.config.label == label:
                return e.role
        raise PadimError(f"{self.table}: no configuration labelled {label!r}; expected one of {self.labels()}")

    def config(self, label: str) -> ExperimentConfig:
        """The configuration labelled `label` (main version; the lowest seed)."""
        found = [e.config for e in self._entries() if e.config.label == label]
        if not found:
            raise PadimError(f"{self.table}: no configuration labelled {label!r}; expected one of {self.labels()}")
        return min(found, key=lambda c: c.seed)

    def seeds(self, role: str | None = None) -> list[int]:
        """The seeds the role's configurations ran with (e.g. the Rd models' random choices)."""
        return sorted({e.config.seed for e in self._entries(role)})

    def published_row(self, label: str) -> str:
        """The published row `label` is set against ("" when none)."""
        return self.config(label).published_row

    def version_names(self, *, main: bool = False) -> list[str]:
        """The data versions after the main one (with `main`: every version)."""
        names = [v.name for v in self.study.versions]
        return names if main else names[1:]

    def version_root(self, version: str | None = None) -> str:
        return self.study.version(version).root

    # ------------------------------------------------------------------ rows and summaries

    def rows(self, role: str | None = None, *, dim: int | None = None, version: str | None = None) -> pd.DataFrame:
        """The result rows on `version` (None: the main one), of every configuration or of one role."""
        rows = self.results[self.results["data_root"] == self.version_root(version)] if len(self.results) else self.results
        if role is None and dim is None:
            return rows
        return rows[rows["label"].isin(self.labels(role, dim=dim))]

    def summary(self, version: str | None = None) -> pd.DataFrame:
        """stats.summarise of the rows on `version`: value with 95 % CI per label, metric, class / group."""
        return stats.summarise(self.rows(version=version))

    def comparison(self, summary: pd.DataFrame | None = None) -> pd.DataFrame:
        """Reproduced vs published (percent), from the study's table and, where it has no figure,
        from its other tables (under their row names)."""
        summary = self.summary() if summary is None else summary
        out = stats.compare_published(summary, self.table, comparable=self.comparable)
        for table, rename in self.study.other_tables:
            other = stats.compare_published(summary.assign(published_row=summary["published_row"].replace(rename)),
                                            table, comparable=self.comparable)
            fill = out["published"].isna() & other["published"].notna()
            for col in ("published", "difference", "source", "note"):
                out.loc[fill, col] = other.loc[fill, col]
        return out

    def published(self) -> pd.DataFrame:
        """The published figures (percent units) of these configurations, as (group, label, metric,
        value as a fraction), from the study's table and then its other tables."""
        pub = load_published()
        pub = pub[pub["unit"] == "%"]
        sources = [(self.table, {}), *self.study.other_tables]
        rows, seen = [], set()
        for c in self.configs:
            if not c.published_row:
                continue
            for table, rename in sources:
                name = rename.get(c.published_row, c.published_row)
                for _, r in pub[(pub["table"] == table) & (pub["row"] == name)].iterrows():
                    key = (c.label, r["group"], r["metric"])
                    if key not in seen:
                        seen.add(key)
                        rows.append({"group": r["group"], "label": c.label, "metric": r["metric"],
                                     "value": r["value"] / 100})
        return pd.DataFrame(rows, columns=["group", "label", "metric", "value"])

    def claim_rows(self) -> pd.DataFrame:
        """The main version's rows for `claims.evaluate_claims`, also under the row names the other
        published tables use (SPADE (WR50) is "SPADE" in the detection table)."""
        rows = self.rows()
        extra = [rows[rows["published_row"] == old].assign(published_row=new)
                 for _, rename in self.study.other_tables for old, new in rename.items()]
        return pd.concat([rows, *extra], ignore_index=True)

    def row_reasons(self) -> dict[tuple[str, str], list[str]]:
        """(published table, row) -> why this run's model for that row is not the paper's: the
        set-up's reasons (data, classes, preprocessing, budget), then what the configurations set
        against the row change from the paper's model behind it (empty: comparable). Rows of the
        study's table and, under their names there, of its other tables."""
        setup = self.study.setup_reasons()
        models = self.study.model_reasons()
        out: dict[tuple[str, str], list[str]] = {}
        for c in self.configs:
            if not c.published_row:
                continue
            keys = [(self.table, c.published_row)]
            keys += [(table, rename.get(c.published_row, c.published_row)) for table, rename in self.study.other_tables]
            for key in keys:
                found = out.setdefault(key, list(setup))
                found += [r for r in models.get(c.label, []) if r not in found]
        return out

    def verdicts(self, all_claims: Any = None, *, level: float = 0.95) -> pd.DataFrame:
        """`claims.evaluate_claims` of the study's claims (`Study.claims`) on this run's rows, each
        claim judged only where every model it names is comparable with the paper's (`row_reasons`)."""
        return claims.evaluate_claims(self.claim_rows(), self.study.claims(all_claims), reasons=self.row_reasons(),
                                      level=level)

    def stand_ins(self) -> pd.DataFrame:
        """Per configuration: the network it ran and the published row it is set against."""
        rows = {c.label: {"network run": c.backbone, "method": c.method, "set against (paper)": c.published_row or "–"}
                for c in self.configs}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("configuration")

    # ------------------------------------------------------------------ stored arrays

    def task(self, role: str, category: str, version: str | None = None) -> Task:
        """The task of `role` on `category` (the lowest seed) on `version`."""
        return self._task(self.label(role), category, version)

    def _task(self, label: str, category: str, version: str | None) -> Task:
        root = self.version_root(version)
        tasks = [t for t in self.tasks if t.config.label == label and t.category == category and t.data_root == root]
        if not tasks:
            raise PadimError(f"{self.table}: no task for configuration {label!r} and class {category!r}; "
                             f"classes: {self.classes}")
        return min(tasks, key=lambda t: t.config.seed)

    def artifacts(self, label: str, category: str, version: str | None = None) -> dict:
        """The arrays stored with the task of (label, category) on `version`; the lowest seed."""
        return ResultStore(self.results_dir).artifacts(self._task(label, category, version).key())

    def curves(self, kind: str = "roc", version: str | None = None) -> dict[str, dict[str, tuple]]:
        """{class: {label: (x, y)}}: kind "roc" (image ROC), "pixel_roc" or "pro" (PRO vs FPR)."""
        if kind not in CURVES:
            raise PadimError(f"kind={kind!r}; expected one of {sorted(CURVES)}")
        x, y = CURVES[kind]
        out: dict[str, dict[str, tuple]] = {}
        for category in self.classes:
            for label in self.labels():
                art = self.artifacts(label, category, version)
                if x in art:
                    out.setdefault(category, {})[label] = (art[x], art[y])
        return out

    def examples(self, label: str, category: str, version: str | None = None) -> dict:
        """Overlay inputs of (label, category): images (k,S,S,3) in [0,1], maps, masks, titles."""
        art = self.artifacts(label, category, version)
        titles = [f"{art['defect_types'][i]}, score {float(art['scores'][i]):.1f}" for i in art["example_index"]]
        return {"images": art["example_images"].astype(np.float32) / 255.0,
                "maps": art["example_maps"].astype(np.float32), "masks": art["example_masks"], "titles": titles}

    # ------------------------------------------------------------------ several data versions

    def spread(self) -> pd.DataFrame:
        """Mean, std, sem, min, max over the versions after the main one of each (label, group, metric)."""
        return spread_over_versions({v: self.summary(v) for v in self.version_names()})

    def drops(self, metric: str = "pixel_auroc", group: str = "all") -> pd.DataFrame:
        """Per configuration: main-version value, mean over the other versions (with their spread), and
        the drop main - mean in p.p. with its spread over the versions; the published drop beside it."""
        if not self.version_names():
            raise PadimError(f"{self.table}: drops need data versions besides the main one")

        def values(summary: pd.DataFrame) -> pd.Series:
            return summary[(summary["metric"] == metric) & (summary["group"] == group)].set_index("label")["value"]

        main = values(self.summary())
        per_version = {v: self.summary(v) for v in self.version_names()}
        drop_summaries = {v: pd.DataFrame({"label": d.index, "group": group, "metric": DROP_METRIC,
                                           "value": (main.reindex(d.index) - d).to_numpy()})
                          for v, d in ((v, values(s)) for v, s in per_version.items())}
        spread = spread_over_versions(drop_summaries).set_index("label")
        shifted = spread_over_versions(per_version)
        shifted = shifted[(shifted["metric"] == metric) & (shifted["group"] == group)].set_index("label")
        published = load_published()
        out = []
        for label in self.labels():
            if label not in spread.index or label not in main.index:
                continue
            row = self.published_row(label)
            pub = published_value(published, self.table, row, "all", DROP_METRIC) if row else None
            out.append({"label": label, "aligned": 100 * main[label], "nonaligned": 100 * shifted.loc[label, "mean"],
                        "nonaligned_std": 100 * shifted.loc[label, "std"], "drop": 100 * spread.loc[label, "mean"],
                        "drop_std": 100 * spread.loc[label, "std"], "drop_sem": 100 * spread.loc[label, "sem"],
                        "n_versions": int(spread.loc[label, "n_versions"]),
                        "published_drop": float("nan") if pub is None else float(pub)})
        return pd.DataFrame(out)


def run(
    study: Study,
    *,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
    scheduler: str | None = None,
    bootstrap: int = 200,
    torch_threads: int | None = None,
    progress: bool = True,
    workers: int | str = "auto",
) -> StudyRun:
    """Compute (or read from the result cache) every task of `study` through `engine.sweep.run`.

    In-process or on the Dask `scheduler`; tasks already stored in `results_dir` are read, not
    recomputed. `torch_threads`: intra-op threads per task (None: torch's default in-process, the
    worker's share on Dask). `workers`: without a scheduler, tasks run on that many single-threaded
    local processes ("auto": one per core; 1: here, one after the other); the rows are the same.
    """
    tasks = study.tasks()
    if progress:
        names = list(dict.fromkeys(t.category for t in tasks))
        print(f"{study.table}: {len(tasks)} tasks ({len(study.entries)} configurations x {len(names)} classes: "
              f"{', '.join(names)})", flush=True)
    rows = sweep.run(tasks, results_dir, scheduler=scheduler, device=device, bootstrap=bootstrap,
                     torch_threads=torch_threads, progress=progress, workers=1 if scheduler else workers)
    comparable, reasons = study.comparability()
    return StudyRun(study, tasks, label_rows(rows, study.configs()), Path(results_dir), comparable, reasons)


def spread_over_versions(summaries: dict[str, pd.DataFrame], by: str = "label") -> pd.DataFrame:
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


def chapter_verdicts(runs: dict[str, StudyRun], all_claims: Any = None, *, level: float = 0.95) -> pd.DataFrame:
    """Every claim tested on every run that can test it (`StudyRun.verdicts`), with a column
    "chapter" (the runs' keys); a claim that no run can test is one row, "not tested", its note
    saying so. One claim may be tested by two chapters (the image AUROC of the baselines and of the
    detection chapter): one row each."""
    all_claims = claims.load_claims() if all_claims is None else list(all_claims)
    parts, tested = [], set()
    for name, r in runs.items():
        v = r.verdicts(all_claims, level=level)
        tested |= set(v["id"])
        parts.append(v.assign(chapter=name))
    rest = [c for c in all_claims if c["id"] not in tested]
    if rest:
        none = claims.evaluate_claims(pd.DataFrame(), rest)
        parts.append(none.assign(chapter="", note="no chapter runs the configurations this claim names"))
    order = {c["id"]: i for i, c in enumerate(all_claims)}
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values("id", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def run_names(runs: Any) -> dict[str, str]:
    """Published row name -> the runs' label, where they differ (e.g. "Rd 100" -> "Rd 40")."""
    values = runs.values() if isinstance(runs, dict) else runs
    return {c.published_row: c.label for r in values for c in r.configs
            if c.published_row and c.published_row != c.label}
