"""The paper's Tables I and II as Studies: which configurations make them, and the role of each.

A table's rows are addressed by role, never by label prefix or position, so a chapter reads the
same on any backbone, with any number of layers or reduced sizes:

- Table I: "single" (one model per single layer), "sum" (the single-layer models, maps summed:
  "Layer 1+2+3"), "joint" (one Gaussian over the concatenated layers: PaDiM);
- Table II: "rd" (d channels chosen at random, one model per seed), "pca" (the d principal axes),
  "all" (every dimension).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.task import Task
from padim_lib.errors import PadimError
from padim_lib.features.backbones import embedding_size, resolve_layers
from padim_lib.methods.params import parse_reduce
from padim_lib.paper.catalog import short_name
from padim_lib.paper.study import MAIN, DataVersion, Entry, Study, as_list

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
PUBLISHED_DIMS = (100, 200)
_FIXED = ("backbone", "layers", "layer_mode", "reduce", "seed", "label", "published_row")


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


def _check_common(common: dict[str, Any], where: str) -> None:
    names = {f.name for f in dataclasses.fields(ExperimentConfig)} | {"resize", "crop"}
    unknown = sorted(set(common) - names)
    if unknown:
        raise PadimError(f"{where}: unknown ExperimentConfig field(s) {unknown}; expected some of {sorted(names)}")
    fixed = sorted(set(common) & set(_FIXED))
    if fixed:
        raise PadimError(f"{where}: {fixed} are set by the table itself; pass them as the function's arguments")


def table1_configs(backbone: str = "resnet18", layers: Sequence[str] | None = None, **common: Any) -> list[ExperimentConfig]:
    """Table I: each layer alone, the sum of the single-layer models, and PaDiM (concatenation).

    Single and sum rows are labelled with published.csv's names ("Layer 1", ..., "Layer 1+2+3");
    the joint model after the backbone it runs ("PaDiM-R18", "PaDiM-Lite0"). `published_row` names
    the figure each is set against (empty when the number of layers is not 3).
    """
    _check_common(common, "table1_configs")
    chosen = resolve_layers(backbone, layers)
    n = len(chosen)
    three = n == 3
    configs = [ExperimentConfig(backbone=backbone, layers=(layer,), label=f"Layer {i}",
                                published_row=f"Layer {i}" if three else "", **common)
               for i, layer in enumerate(chosen, start=1)]
    if n > 1:
        sum_label = "Layer " + "+".join(str(i) for i in range(1, n + 1))
        configs.append(ExperimentConfig(backbone=backbone, layers=chosen, layer_mode="sum", label=sum_label,
                                        published_row=sum_label if three else "", **common))
        configs.append(ExperimentConfig(backbone=backbone, layers=chosen, label=f"PaDiM-{short_name(backbone)}",
                                        published_row="PaDiM-R18" if three else "", **common))
    return configs


def table2_configs(
    backbone: str = "resnet18",
    dims: Sequence[int] = PUBLISHED_DIMS,
    seeds: Iterable[int] | int = range(10),
    layers: Sequence[str] | None = None,
    **common: Any,
) -> list[ExperimentConfig]:
    """Table II: Rd d over seeds, PCA d, and all dimensions (concatenated layers).

    Labels name what runs ("Rd 40", "PCA 40", "all (176)"). `published_row` names the Table II
    row it is compared with: by value when every d is a published one (100, 200), otherwise by
    rank (first d <-> "Rd 100"/"PCA 100", second <-> "Rd 200"/"PCA 200", further ones none);
    "all (D)" <-> "all (448)". `seeds`: a count (0..n-1) or the seeds.
    """
    _check_common(common, "table2_configs")
    chosen = resolve_layers(backbone, layers)
    total = embedding_size(backbone, chosen)
    dims = [int(d) for d in dims]
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    bad = [d for d in dims if not 1 <= d < total]
    if bad or len(set(dims)) != len(dims):
        raise PadimError(f"dims={dims}: expected distinct sizes in 1..{total - 1} ({backbone} {list(chosen)} has {total} d)")
    if not seeds:
        raise PadimError("seeds is empty; expected at least one seed for the Rd configurations")
    by_value = all(d in PUBLISHED_DIMS for d in dims)
    configs = []
    for rank, d in enumerate(dims):
        ref = d if by_value else (PUBLISHED_DIMS[rank] if rank < len(PUBLISHED_DIMS) else None)
        configs += [ExperimentConfig(backbone=backbone, layers=chosen, reduce=f"random:{d}", seed=s, label=f"Rd {d}",
                                     published_row=f"Rd {ref}" if ref else "", **common) for s in seeds]
        configs.append(ExperimentConfig(backbone=backbone, layers=chosen, reduce=f"pca:{d}", label=f"PCA {d}",
                                        published_row=f"PCA {ref}" if ref else "", **common))
    configs.append(ExperimentConfig(backbone=backbone, layers=chosen, label=f"all ({total})",
                                    published_row="all (448)", **common))
    return configs


# `padim sweep` study files name these as presets (engine.studyfile.expand(presets=...)).
PRESETS = {"table1": table1_configs, "table2": table2_configs}


def _study(table: str, name: str, configs: list[ExperimentConfig], data_root: str | os.PathLike,
           classes: Sequence[str] | str | None, **notes: Any) -> Study:
    chosen = as_list(classes)
    return Study(name=name, table=table, roles=ROLES[table],
                 entries=tuple(Entry(config_role(table, c), c) for c in configs),
                 versions=(DataVersion(MAIN, str(data_root)),), classes=tuple(chosen) if chosen else None,
                 notes=notes)


def table1(
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None = None,
    *,
    backbone: str = "resnet18",
    layers: Sequence[str] | None = None,
    resize: int = 256,
    crop: int | None = 224,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    pretrained: bool = True,
) -> Study:
    """Table I on `data_root` (`classes` None / "all": every class). `pretrained=False`: random
    weights (a dry run: the numbers mean nothing)."""
    configs = table1_configs(backbone, layers, preprocess=Preprocess(resize=resize, crop=crop), sigma=sigma,
                             eps=eps, max_train=max_train, pretrained=pretrained)
    return _study("Table I", "table1", configs, data_root, classes)


def table2(
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None = None,
    *,
    backbone: str = "resnet18",
    layers: Sequence[str] | None = None,
    dims: Sequence[int] = PUBLISHED_DIMS,
    seeds: int | Sequence[int] = 10,
    resize: int = 256,
    crop: int | None = 224,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    pretrained: bool = True,
) -> Study:
    """Table II on `data_root`: Rd and PCA at each of `dims` (Rd over `seeds`), and all dimensions.
    `pretrained=False`: random weights (a dry run)."""
    configs = table2_configs(backbone, dims, seeds, layers, preprocess=Preprocess(resize=resize, crop=crop),
                             sigma=sigma, eps=eps, max_train=max_train, pretrained=pretrained)
    return _study("Table II", "table2", configs, data_root, classes)


def class_features(
    data_root: str | os.PathLike,
    category: str,
    *,
    backbone: str,
    preprocess: Preprocess,
    max_train: int | None = None,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
    pretrained: bool = True,
) -> tuple[dict, dict]:
    """(train, test) cached features of one class, as `features.cache.load_features` returns them.

    The same files the Table I / II tasks read (`Task.feature_specs`, cache `<results_dir>/features`
    as `sweep.run` uses it), so the method chapter and the tables share one backbone pass.
    """
    from padim_lib.features.cache import ensure_features, load_features

    config = ExperimentConfig(backbone=backbone, preprocess=preprocess, max_train=max_train, pretrained=pretrained)
    task = Task(str(data_root), category, config)
    cache = Path(results_dir).resolve() / "features"
    train, test = (load_features(ensure_features(s, cache, device=device, progress=False)) for s in task.feature_specs())
    return train, test
