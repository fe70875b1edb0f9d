"""A Study: the declaration of one experiment of the paper, as data.

A study names its published table, its configurations (each an `Entry` with a role, e.g. Table I's
"single" / "sum" / "joint", and the published row it is set against), the data it runs on (one
or more `DataVersion`s: the non-aligned chapter runs every configuration on the aligned data and
on seeded non-aligned versions), and its class selection. From that alone it gives its tasks
(classes x configurations x seeds, for `engine.sweep`), its comparability with the paper's set-up
(`paper.catalog`: what each configuration and the data change from the model and data behind its
published row), and the claims it can test. `paper.run.run(study)` runs it; the chapters' builders
(`paper.experiments`) make one from a chapter's parameters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from padim_lib.datasets.catalog import category_kinds
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.studyfile import make_tasks
from padim_lib.engine.task import Task
from padim_lib.errors import PadimError
from padim_lib.paper import catalog

MAIN = "main"  # the name of a study's first (or only) data version


@dataclass(frozen=True)
class Entry:
    """One configuration of a study: its role in the table, and the data version it runs on."""

    role: str
    config: ExperimentConfig
    version: str = MAIN


@dataclass(frozen=True)
class DataVersion:
    """A data set a study runs on: `root`, and a preprocessing that replaces the configurations'
    own there (None: keep theirs; the non-aligned versions are read with a random crop)."""

    name: str
    root: str
    preprocess: Preprocess | None = None


@dataclass(frozen=True)
class Study:
    """One experiment: configurations by role, data versions, classes, and the published table."""

    name: str
    table: str  # published.csv's table its figures are set against
    roles: Mapping[str, str]  # role -> description, in the table's order
    entries: tuple[Entry, ...]
    versions: tuple[DataVersion, ...]
    classes: tuple[str, ...] | None = None  # None: every class (scene) of the data
    # further published tables with figures for these models: (table, {our row name: its row name})
    other_tables: tuple[tuple[str, Mapping[str, str]], ...] = ()
    dataset: str = "mvtec"  # the paper's data set it reproduces (paper.catalog.DATASETS)
    notes: Mapping[str, Any] = field(default_factory=dict)  # chapter facts (e.g. the seeds asked for)

    def __post_init__(self) -> None:
        if not self.entries:
            raise PadimError(f"study {self.name!r}: no configurations")
        names = [v.name for v in self.versions]
        if not names or len(set(names)) != len(names):
            raise PadimError(f"study {self.name!r}: versions {names}; expected distinct names, at least one")
        for e in self.entries:
            if e.role not in self.roles:
                raise PadimError(f"study {self.name!r}: role {e.role!r} of {e.config.label!r}; expected one of "
                                 f"{list(self.roles)}")
            if e.version not in names:
                raise PadimError(f"study {self.name!r}: {e.config.label!r} runs on version {e.version!r}; "
                                 f"expected one of {names}")
            if not e.config.label:
                raise PadimError(f"study {self.name!r}: a {e.role!r} configuration has no label")
        if self.dataset not in catalog.DATASETS:
            raise PadimError(f"study {self.name!r}: dataset={self.dataset!r}; expected one of {catalog.DATASETS}")

    # ------------------------------------------------------------------ what it runs

    @property
    def data_root(self) -> str:
        """The main data version's root."""
        return self.versions[0].root

    def version(self, name: str | None = None) -> DataVersion:
        """The data version `name` (None: the main one)."""
        if name is None:
            return self.versions[0]
        for v in self.versions:
            if v.name == name:
                return v
        raise PadimError(f"study {self.name!r}: version={name!r}; expected one of {[v.name for v in self.versions]}")

    def resolved(self) -> list[Entry]:
        """The entries with each version's preprocessing applied to their configurations."""
        out = []
        for e in self.entries:
            pre = self.version(e.version).preprocess
            out.append(e if pre is None else replace(e, config=e.config.replace(preprocess=pre)))
        return out

    def configs(self, version: str | None = None) -> list[ExperimentConfig]:
        """The configurations (on `version`; None: every version), in declaration order."""
        return [e.config for e in self.resolved() if version is None or e.version == version]

    def tasks(self) -> list[Task]:
        """Classes x configurations (x seeds) on every version, each computation once."""
        tasks: dict[str, Task] = {}
        for v in self.versions:
            configs = self.configs(v.name)
            if configs:
                for t in make_tasks(v.root, list(self.classes) if self.classes else "all", configs):
                    tasks.setdefault(t.key(), t)
        return list(tasks.values())

    # ------------------------------------------------------------------ against the paper

    def paper_model(self, row: str) -> catalog.PaperModel | None:
        """The paper's model behind published `row` of this study's table or its other tables."""
        found = catalog.paper_model(self.table, row)
        for table, rename in self.other_tables:
            if found is None:
                found = catalog.paper_model(table, rename.get(row, row))
        return found

    def model_reasons(self) -> dict[str, list[str]]:
        """Per label of the main version: what it changes from the paper's model behind its row
        (an entry without a published row: nothing to compare, no reasons)."""
        out: dict[str, list[str]] = {}
        for e in self.resolved():
            if e.version != self.versions[0].name or not e.config.published_row:
                continue
            model = self.paper_model(e.config.published_row)
            reasons = (catalog.model_differences(e.config, model) if model is not None
                       else [f"{e.config.label}: no model of the paper's behind {e.config.published_row!r}"])
            out.setdefault(e.config.label, [])
            out[e.config.label] += [r for r in reasons if r not in out[e.config.label]]
        return out

    def setup_reasons(self) -> list[str]:
        """What the data, class selection, preprocessing and training budget change from the paper's."""
        reasons = catalog.data_differences(self.data_root, list(self.classes) if self.classes else None, self.dataset)
        for c in self.configs(self.versions[0].name):
            reasons += [r for r in catalog.setup_differences(c, self.dataset) if r not in reasons]
        return reasons

    def comparability(self) -> tuple[bool, list[str]]:
        """(comparable, reasons): comparable only when neither the set-up nor any model differs."""
        reasons = self.setup_reasons() + [r for rs in self.model_reasons().values() for r in rs]
        return not reasons, reasons

    def row_names(self) -> set[str]:
        """Every published row name this study's configurations answer to, in any of its tables."""
        rows = {c.published_row for c in self.configs() if c.published_row}
        return rows | {rename.get(r, r) for _, rename in self.other_tables for r in rows}

    def claims(self, all_claims: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The claims (claims.yaml) of this study's tables whose configurations are all its rows."""
        from padim_lib.paper.claims import claim_configs, load_claims

        tables = {self.table} | {t for t, _ in self.other_tables}
        names = self.row_names()
        return [dict(c) for c in (load_claims() if all_claims is None else all_claims)
                if c["table"] in tables and set(claim_configs(c)) <= names]


# ----------------------------------------------------------------------------- class selection


def as_list(classes: Sequence[str] | str | None) -> list[str] | None:
    """A chapter's `classes` parameter: None / "all" -> None (every class), "x" -> ["x"]."""
    if classes is None or classes == "all":
        return None
    if isinstance(classes, str):
        return [classes]
    return [str(c) for c in classes]


def per_kind(data_root: str | os.PathLike, classes: Sequence[str] | str | None, n: int | None) -> list[str] | None:
    """`classes` (None / "all": every class), cut to the first `n` textures and `n` objects (None:
    all of them), in the data set's order."""
    chosen = as_list(classes)
    if n is None:
        return chosen
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PadimError(f"classes_per_kind={n!r}; expected an integer >= 1 or None")
    kinds = category_kinds(data_root)
    out, counts = [], {}
    for name in (c for c in kinds if chosen is None or c in chosen):
        if counts.get(kinds[name], 0) < n:
            out.append(name)
            counts[kinds[name]] = counts.get(kinds[name], 0) + 1
    return out


def one_of_each(data_root: str | os.PathLike, classes: Sequence[str] | str | None) -> list[str]:
    """A chapter's class choice: a list as given, "all" (every class), or None: the first texture and
    the first object class (one of each kind, so every group mean exists; a small budget)."""
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


def default_category(data_root: str | os.PathLike) -> str:
    """The first object class under `data_root` (objects make the clearest maps), else the first class."""
    kinds = category_kinds(data_root)
    if not kinds:
        raise PadimError(f"data_root {data_root}: no class folders with train/good")
    return next((c for c, k in kinds.items() if k == "object"), next(iter(kinds)))
