"""The paper's models and data sets as data (paper/data/models.yaml), and what keeps a run from being comparable.

Every published row names the model that produced it (`paper_model(table, row)`: method, backbone,
layers, reduction, the parameters the paper fixes) and the data set it ran on (MVTec AD or STC, with
the paper's preprocessing). `model_differences` lists what a configuration changes from that model
(another backbone, another d, a smaller training budget, ...); `data_differences` what the data of a
run changes (a generated set, fewer classes). A figure can be set against the published one only
when both lists are empty; a claim gets a verdict only when every model it involves is comparable.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.errors import PadimError

MODEL_FIELDS = ("method", "backbone", "layers", "layer_mode", "reduce", "pretrained", "params", "d")
DATASETS = ("mvtec", "stc")
SHORT_NAMES = {"resnet18": "R18", "wide_resnet50_2": "WR50", "efficientnet_b5": "B5",
               "efficientnet_lite0": "Lite0", "efficientnet_lite2": "Lite2"}


def short_name(backbone: str) -> str:
    """The paper's short name of a backbone ("WR50"), or the name itself."""
    return SHORT_NAMES.get(backbone, backbone)


def vae_label(backbone: str, pretrained: bool) -> str:
    """A VAE's label: "VAE" for the paper's (an ImageNet ResNet18 encoder); otherwise it names the
    departure, e.g. "VAE (Lite0 stand-in)", "VAE (random-init R18)"."""
    if backbone == "resnet18" and pretrained:
        return "VAE"
    stand_in = "" if backbone == "resnet18" else " stand-in"
    return f"VAE ({'' if pretrained else 'random-init '}{short_name(backbone)}{stand_in})"


@dataclass(frozen=True)
class PaperModel:
    """One model the paper ran: the fields a comparable configuration must match (None: not fixed)."""

    name: str
    method: str
    backbone: str
    layers: tuple[str, ...] | None = None  # None: the backbone's default layers
    layer_mode: str = "concat"
    reduce: str | None = None
    pretrained: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)
    d: int | None = None  # the embedding size it keeps (informational: the memory law)


@functools.cache
def _catalogue(path: str) -> dict[str, Any]:
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or not {"datasets", "models", "rows"} <= set(doc):
        raise PadimError(f"{path}: expected the keys datasets, models and rows")
    models = {}
    for name, spec in doc["models"].items():
        unknown = sorted(set(spec) - set(MODEL_FIELDS))
        if unknown:
            raise PadimError(f"{path}: model {name!r} has unknown field(s) {unknown}; expected {list(MODEL_FIELDS)}")
        spec = dict(spec)
        if spec.get("layers") is not None:
            spec["layers"] = tuple(spec["layers"])
        models[name] = PaperModel(name=name, **spec)
    for table, entry in doc["rows"].items():
        if entry.get("dataset") not in doc["datasets"]:
            raise PadimError(f"{path}: table {table!r}: dataset {entry.get('dataset')!r} is not one of {list(doc['datasets'])}")
        missing = sorted(set(entry["models"].values()) - set(models))
        if missing:
            raise PadimError(f"{path}: table {table!r} names unknown model(s) {missing}")
    return {"datasets": doc["datasets"], "models": models, "rows": doc["rows"]}


def catalogue(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The parsed, checked models.yaml: {"datasets", "models": {name: PaperModel}, "rows"}."""
    return _catalogue(str(path or Path(__file__).resolve().parent / "data" / "models.yaml"))


def paper_model(table: str, row: str) -> PaperModel | None:
    """The model behind published row `row` of `table` (None: a row the catalogue does not describe)."""
    entry = catalogue()["rows"].get(table)
    name = entry["models"].get(row) if entry else None
    return catalogue()["models"][name] if name else None


def table_dataset(table: str) -> str:
    """The data set ("mvtec", "stc") a published table ran on."""
    entry = catalogue()["rows"].get(table)
    if entry is None:
        raise PadimError(f"table={table!r}: not in the catalogue of the paper's models; expected one of "
                         f"{sorted(catalogue()['rows'])}")
    return entry["dataset"]


def paper_preprocess(dataset: str) -> Preprocess:
    """The paper's preprocessing on `dataset` (MVTec AD: resize 256, centre crop 224; STC: 256, no crop)."""
    spec = catalogue()["datasets"][dataset]["preprocess"]
    return Preprocess(resize=spec["resize"], crop=spec["crop"])


def model_differences(config: Any, model: PaperModel) -> list[str]:
    """What the ExperimentConfig `config` changes from the paper's `model`, in words (empty: the
    paper's model; the data and preprocessing are `setup_differences`' and `data_differences`').
    Each reason starts with the configuration's label."""
    from padim_lib.features.backbones import resolve_layers

    who, out = config.label or config.method, []
    if config.method != model.method:
        out.append(f"{who} runs method {config.method}, not {model.method}")
    if config.backbone != model.backbone:
        out.append(f"{who} stands in for {model.name} on {config.backbone}, not the paper's {model.backbone}")
    elif "layers" in config.method_spec().reads:
        wanted = model.layers or resolve_layers(model.backbone, None)
        if model.layers is not None or model.method == "padim" and model.backbone != "efficientnet_b5":
            if config.resolved_layers() != tuple(wanted):
                out.append(f"{who} uses layers {list(config.resolved_layers())}, not {list(wanted)}")
    if config.method == model.method:
        if "layer_mode" in config.method_spec().reads and config.layer_mode != model.layer_mode:
            out.append(f"{who} is layer mode {config.layer_mode!r}, not {model.layer_mode!r}")
        if "reduce" in config.method_spec().reads and config.reduce != model.reduce:
            out.append(f"{who} keeps {config.reduce or 'all dimensions'}, not {model.reduce or 'all dimensions'}")
        changed = {k: config.params.get(k) for k, v in model.params.items() if config.params.get(k) != v}
        if changed:
            out.append(f"{who} runs " + ", ".join(f"{k}={v}" for k, v in changed.items()) + " (the paper: "
                       + ", ".join(f"{k}={model.params[k]}" for k in changed) + ")")
    if model.pretrained and not config.pretrained:
        out.append(f"{who}'s network starts from random weights, not ImageNet's")
    return out


def setup_differences(config: Any, dataset: str) -> list[str]:
    """What `config` changes from the paper's set-up on `dataset` whatever the model: the
    preprocessing and the training budget (no label: a study's configurations usually share them)."""
    out = []
    pre = paper_preprocess(dataset)
    if (config.preprocess.resize, config.preprocess.crop) != (pre.resize, pre.crop):
        crop = "no crop" if config.preprocess.crop is None else f"crop {config.preprocess.crop}"
        paper_crop = "no crop" if pre.crop is None else f"crop {pre.crop}"
        out.append(f"images resized to {config.preprocess.resize}, {crop} (the paper: {pre.resize}, {paper_crop})")
    if config.max_train is not None:
        out.append(f"at most {config.max_train} training images per class")
    return out


def data_differences(data_root: str | os.PathLike, classes: Sequence[str] | None, dataset: str) -> list[str]:
    """What the data at `data_root` (and the chosen `classes`, None: all) changes from the paper's
    `dataset`: a generated set, an incomplete MVTec AD, fewer classes or scenes."""
    from padim_lib.datasets.catalog import list_classes

    root = Path(data_root)
    name = catalogue()["datasets"][dataset]["name"]
    if (root / "dataset.json").is_file():
        return [f"the data at {data_root} is a generated set, not {name}"]
    if not root.is_dir():
        return [f"the data at {data_root} does not exist"]
    if dataset == "mvtec":
        from padim_lib.datasets import CLASSES, check_split_counts

        try:
            problems = check_split_counts(root)
        except Exception as exc:  # noqa: BLE001 - a missing or odd folder is a reason, not a crash
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            return [f"the data at {data_root} is not a complete MVTec AD ({problems[0]})"]
        if classes is not None and sorted(classes) != sorted(CLASSES):
            return [f"{len(classes)} of the 15 classes"]
        return []
    from padim_lib.datasets.stc import STC_SCENES

    chosen = list(classes) if classes is not None else list_classes(root)
    if sorted(chosen) != sorted(STC_SCENES):
        return [f"{len(chosen)} of STC's {len(STC_SCENES)} scenes"]
    return []


def rd_at_paper_ratio(model_name: str, backbone: str, layers: Sequence[str] | None = None) -> int:
    """Rd size on `backbone` that keeps the paper's ratio d / D of PaDiM model `model_name`
    (e.g. PaDiM-R18-Rd100: 100 of 448 -> 39 of EfficientNet-Lite0's 176)."""
    from padim_lib.features.backbones import embedding_size, resolve_layers

    model = catalogue()["models"].get(model_name)
    if model is None or model.method != "padim" or model.d is None:
        raise PadimError(f"model={model_name!r}; expected a PaDiM model of the catalogue with a size d")
    total = embedding_size(model.backbone, resolve_layers(model.backbone, model.layers))
    size = embedding_size(backbone, resolve_layers(backbone, layers))
    return max(1, min(size - 1, round(model.d * size / total)))


def paper_backbones() -> list[str]:
    """The networks of the paper's models whose ImageNet weights the paper profile needs."""
    models = catalogue()["models"].values()
    return sorted({m.backbone for m in models if m.pretrained})
