"""Time and memory of the detectors: a timing helper, the size of a fitted model, and the scaling runs.

- `time_call`: warm-up calls, then repeated timed calls; median, min and max (the spread).
- `state_bytes`: model memory = the bytes of the fitted state's tensors (attributes ending in "_":
  tensors, arrays, modules' parameters and buffers, and lists / dicts of them), not the process's
  memory, so it is the same number on every machine.
- `padim_bytes`: the theoretical size of a PaDiM model, positions x d^2 x 4 B (the float32 inverse
  Cholesky factors) plus the means (positions x d x 4 B) and the Rd channel indices (d x 8 B).
- `measure`: fit and predict one configuration on images (random ones, or a data set's: `RandomImages`,
  `DatasetImages`) and report times and memory, also by part (`Detector.memory_terms`: the network
  and the fitted statistics); `scaling`: the same over a range of d, training-set sizes or image sizes.
- `memory_law`: the paper's PaDiM memory figures (0.17 GB, 3.8 GB, 5.2 GB, ...) against the law for
  its models, read three ways: the Gaussians alone, plus the CNN as PaDiM runs it (up to its last
  layer), plus the whole classification CNN (what "the pretrained CNN" may mean).
- `forward_flops` / `spade_search_flops`: the operations of a backbone's forward pass (counted by
  torch's FlopCounterMode) and of SPADE's pixel search, for the image size in use.

Times depend on the machine and its load: `hardware()` says what the numbers were measured on.
They are measured, shown with their spread, and never tested against a threshold.
"""

from __future__ import annotations

import functools
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.methods.params import parse_reduce

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Timing:
    """Seconds of `repeats` timed calls (after the warm-up): median, min, max and every value."""

    median: float
    min: float
    max: float
    values: tuple[float, ...]


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3,
              sync: Callable[[], None] | None = None) -> Timing:
    """Call `fn` `warmup` times untimed (caches, lazy initialisation, allocator), then `repeats`
    times timed with perf_counter. `sync` (e.g. torch.cuda.synchronize) runs before each clock read,
    so queued GPU work is counted."""
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise PadimError(f"warmup={warmup!r}; expected an integer >= 0")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise PadimError(f"repeats={repeats!r}; expected an integer >= 1")
    sync = sync or (lambda: None)
    for _ in range(warmup):
        fn()
    values = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        values.append(time.perf_counter() - t0)
    return Timing(statistics.median(values), min(values), max(values), tuple(values))


def _nbytes(value: Any, seen: set[int]) -> int:
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, nn.Module):
        return sum(_nbytes(t, seen) for t in (*value.parameters(), *value.buffers()))
    if isinstance(value, Mapping):
        return sum(_nbytes(v, seen) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_nbytes(v, seen) for v in value)
    return 0


def state_bytes(detector: Any, *, exclude: Iterable[str] = ("_extractor_",)) -> int:
    """Bytes of the fitted state's tensors: every attribute ending in "_" (not "__"), except the frozen
    backbone (`_extractor_`, shared by every model of a backbone and not part of what is learnt)."""
    skip = set(exclude)
    seen: set[int] = set()
    total = 0
    for name, value in vars(detector).items():
        if name.endswith("_") and not name.endswith("__") and name not in skip:
            total += _nbytes(value, seen)
    return total


def padim_bytes(positions: int, d: int, *, reduced: bool = True) -> int:
    """Theoretical size of a fitted PaDiM model: positions x d^2 x 4 B (the factors) + positions x d x
    4 B (the means) + d x 8 B (the Rd channel indices, when `reduced`)."""
    return positions * (d * d + d) * FLOAT32_BYTES + (d * 8 if reduced else 0)


def hardware(device: str = "cpu") -> dict[str, str]:
    """What the numbers are measured on: CPU model and cores, torch threads, GPU (when used)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    out = {"CPU": f"{cpu}, {os.cpu_count()} logical cores", "torch threads": str(torch.get_num_threads()),
           "torch": torch.__version__}
    if device.startswith("cuda") and torch.cuda.is_available():
        out["GPU"] = torch.cuda.get_device_name(torch.device(device))
    return out


def random_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) float32 standard-normal images: timing does not depend on content."""
    return torch.randn((n, 3, size, size), generator=torch.Generator().manual_seed(seed))


class RandomImages:
    """An image source for `measure`: source(split, n, size) -> (n, 3, size, size) random images
    (another seed per split)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def __call__(self, split: str, n: int, size: int) -> torch.Tensor:
        return random_images(n, size, self.seed + (split == "test"))


class DatasetImages:
    """An image source for `measure`: the first n images of a class's split, square-resized to `size`
    (normalised like the models' inputs); a split with fewer images is repeated to n."""

    def __init__(self, data_root: str | os.PathLike, category: str) -> None:
        self.data_root, self.category = data_root, category

    def __call__(self, split: str, n: int, size: int) -> torch.Tensor:
        from padim_lib.datasets import Preprocess, open_dataset

        data = open_dataset(self.data_root, self.category, split, Preprocess(resize=size, crop=None))
        if len(data) == 0:
            raise PadimError(f"{self.data_root}: class {self.category!r} has no {split} images")
        return torch.stack([data[i % len(data)]["image"] for i in range(n)])


def _sync(device: str) -> Callable[[], None] | None:
    return torch.cuda.synchronize if device.startswith("cuda") and torch.cuda.is_available() else None


def measure(config: ExperimentConfig, *, n_train: int, n_test: int, image_size: int, device: str = "cpu",
            warmup: int = 1, repeats: int = 3, images: Callable[[str, int, int], torch.Tensor] | None = None,
            ) -> dict[str, Any]:
    """Fit the detector of `config` on `n_train` images and predict `n_test`, timed. `images`: the
    source (RandomImages (default) or DatasetImages), called as images(split, n, image_size).

    Returns fit_s and predict_s (seconds per test image) as medians with _min / _max, and
    memory_bytes (`state_bytes` of the last fitted model). The backbone's forward pass is part of
    both times (fit and predict run on images).
    """
    return _measure(config, n_train=n_train, n_test=n_test, image_size=image_size, device=device, warmup=warmup,
                    repeats=repeats, images=images)[0]


def _measure(config: ExperimentConfig, *, n_train: int, n_test: int, image_size: int, device: str, warmup: int,
             repeats: int, images: Callable[[str, int, int], torch.Tensor] | None) -> tuple[dict[str, Any], Any]:
    """`measure`'s numbers and the last fitted detector."""
    from padim_lib.methods.registry import build_detector

    images = images or RandomImages()
    train, test = images("train", n_train, image_size), images("test", n_test, image_size)
    holder: dict[str, Any] = {}

    def fit() -> None:
        holder["det"] = build_detector(config, device=device).set_params(progress=False).fit(train)

    fit_t = time_call(fit, warmup=warmup, repeats=repeats, sync=_sync(device))
    det = holder["det"]
    pred_t = time_call(lambda: det.predict(test), warmup=warmup, repeats=repeats, sync=_sync(device))
    return {
        "fit_s": fit_t.median, "fit_s_min": fit_t.min, "fit_s_max": fit_t.max,
        "predict_s": pred_t.median / n_test, "predict_s_min": pred_t.min / n_test,
        "predict_s_max": pred_t.max / n_test, "memory_bytes": state_bytes(det), "repeats": repeats,
        "device": device, **{f"{term}_bytes": n for term, n in det.memory_terms().items()},
    }, det


def scaling(config: ExperimentConfig, factor: str, values: Sequence[int], *, n_train: int, n_test: int,
            image_size: int, device: str = "cpu", warmup: int = 1, repeats: int = 3,
            images: Callable[[str, int, int], torch.Tensor] | None = None) -> pd.DataFrame:
    """PaDiM's fit time, predict time and memory as one factor grows: "d" (Rd size), "n_train" or
    "image_size". One row per value: the measurements, memory_mb, positions, and expected_mb =
    `padim_bytes(positions, d)` in MB (the theory the measurement is set against)."""
    if factor not in ("d", "n_train", "image_size"):
        raise PadimError(f"factor={factor!r}; expected 'd', 'n_train' or 'image_size'")
    from padim_lib.methods.registry import get_method

    if not hasattr(get_method(config.method).detector_class(), "gaussian_shape"):
        raise PadimError(f"scaling: method {config.method!r} fits no Gaussians per position; the memory law "
                         "set against the measurement is PaDiM's")
    rows = []
    for v in values:
        v = int(v)
        cfg, n, size = config, n_train, image_size
        if factor == "d":
            cfg = config.replace(reduce=f"random:{v}")
        elif factor == "n_train":
            n = v
        else:
            size = v
        out, probe = _measure(cfg, n_train=n, n_test=n_test, image_size=size, device=device, warmup=warmup,
                              repeats=repeats, images=images)
        positions, d = probe.gaussian_shape()
        kind, _ = parse_reduce(cfg.reduce)
        rows.append({factor: v, "n_train": n, "image_size": size, "d": d, "positions": positions, **out,
                     "memory_mb": out["memory_bytes"] / 1e6, "network_mb": out["network_bytes"] / 1e6,
                "statistics_mb": out["statistics_bytes"] / 1e6,
                     "expected_mb": padim_bytes(positions, d, reduced=kind is not None) / 1e6})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the paper's models

PAPER_GRID = 56 * 56  # patch positions of the paper's PaDiM models (layer 1 of ResNet18 / WR50 at 224)


def published_complexity() -> pd.DataFrame:
    """The paper's complexity figures (published.csv, table "Complexity"), MVTec AD: one row per model
    with inference_s (per image) and memory_gb (NaN where the paper gives none), and their sources."""
    from padim_lib.paper.published import load_published

    pub = load_published()
    pub = pub[(pub["table"] == "Complexity") & (pub["group"] == "MVTec AD")]
    wide = pub.pivot_table(index="row", columns="metric", values="value", aggfunc="first")
    wide = wide.rename(columns={"inference_s_per_image": "inference_s", "model_memory_gb": "memory_gb"})
    wide["source"] = pub.groupby("row")["source"].first()
    wide["note"] = pub.groupby("row")["note"].apply(lambda s: "; ".join(dict.fromkeys(x for x in s if x)))
    return wide.reset_index().rename(columns={"row": "published_row"})


def compare_models(models: Sequence[tuple[ExperimentConfig, str]], *, n_train: int, n_test: int, image_size: int,
                   devices: Sequence[str] = ("cpu",), warmup: int = 1, repeats: int = 3,
                   images: Callable[[str, int, int], torch.Tensor] | None = None) -> pd.DataFrame:
    """`measure` each (config, published row) on each device; one row per model and device, beside the
    paper's figures: inference_s (per image), memory_gb, and for PaDiM models theory_gb, the
    `padim_bytes` of the paper's model (56 x 56 positions, its d)."""
    pub = published_complexity().set_index("published_row")
    rows = []
    for config, published_row in models:
        published_row = {"SPADE (WR50)": "SPADE"}.get(published_row, published_row)  # the table's name
        for device in devices:
            out = measure(config, n_train=n_train, n_test=n_test, image_size=image_size, device=device,
                          warmup=warmup, repeats=repeats, images=images)
            paper_d = {"PaDiM-R18-Rd100": 100, "PaDiM-WR50-Rd550": 550}.get(published_row)
            rows.append({
                "model": config.label, "stands for": published_row, "device": device,
                "predict_s": out["predict_s"], "predict_s_min": out["predict_s_min"], "predict_s_max": out["predict_s_max"],
                "fit_s": out["fit_s"], "fit_s_min": out["fit_s_min"], "fit_s_max": out["fit_s_max"],
                "memory_mb": out["memory_bytes"] / 1e6, "network_mb": out["network_bytes"] / 1e6,
                "statistics_mb": out["statistics_bytes"] / 1e6,
                "paper_inference_s": pub["inference_s"].get(published_row, float("nan")) if "inference_s" in pub else np.nan,
                "paper_memory_gb": pub["memory_gb"].get(published_row, float("nan")) if "memory_gb" in pub else np.nan,
                "theory_gb": padim_bytes(PAPER_GRID, paper_d) / 1e9 if paper_d else np.nan,
            })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the paper's memory figures

DATASET_OF_GROUP = {"MVTec AD": "mvtec", "STC": "stc"}  # published.csv's Complexity groups -> catalog data sets
READINGS = {
    "statistics": "the Gaussians alone: positions x (d^2 + d) x 4 B",
    "statistics + CNN as run": "plus the CNN's parameters up to the last layer PaDiM reads",
    "statistics + whole CNN": "plus the whole classification CNN's parameters (the paper: 'the pretrained CNN')",
}


@functools.cache
def network_bytes(backbone: str, layers: tuple[str, ...] | None = None, *, whole: bool = False) -> int:
    """Bytes (float32 parameters and buffers) of `backbone` built with random weights (weights change
    no size): the network up to `layers` (None: the backbone's default layers), as PaDiM runs it, or,
    with `whole`, the whole classification network. Built on the "meta" device: shapes, no memory."""
    from padim_lib.features.extractor import FeatureExtractor, load_backbone
    from padim_lib.methods.base import tensor_bytes

    with torch.device("meta"):
        if whole:
            return tensor_bytes(load_backbone(backbone, pretrained=False))
        return tensor_bytes(FeatureExtractor(backbone, layers, pretrained=False))


def rounding_tolerance(text: str) -> float:
    """Half a unit of a printed figure's last digit: '0.17' -> 0.005, '3.8' -> 0.05, '37' -> 0.5."""
    decimals = len(text.split(".", 1)[1]) if "." in text else 0
    return 0.5 * 10.0 ** -decimals


def memory_law() -> pd.DataFrame:
    """The paper's PaDiM memory figures (published.csv, Complexity, model_memory_gb) against the law
    for the model behind each (paper.catalog: backbone and d; positions: the first layer's grid at
    the data set's preprocessing, 56 x 56 on MVTec AD's 224 crop, 64 x 64 on STC's 256 frames).

    One row per figure: model, data set, backbone, d, positions, published_gb (and its text),
    tolerance_gb (half a unit of its last printed digit), the three readings (READINGS) in GB
    (10^9 B) and, per reading, whether it rounds to the published figure ("matches ...")."""
    from padim_lib.features.backbones import _spec, resolve_layers
    from padim_lib.paper.catalog import paper_model, paper_preprocess
    from padim_lib.paper.published import _typed_values, load_published

    pub = load_published()
    pub = pub[(pub["table"] == "Complexity") & (pub["metric"] == "model_memory_gb")]
    typed = {k: v for k, v in _typed_values(str(Path(__file__).resolve().parent / "data" / "published.csv")).items()
             if k[0] == "Complexity"}
    rows = []
    for _, r in pub.iterrows():
        model = paper_model("Complexity", r["row"])
        if model is None or model.method != "padim" or model.d is None:
            continue  # SPADE and the VAE keep other things: no PaDiM law for them
        pre = paper_preprocess(DATASET_OF_GROUP[r["group"]])
        layers = resolve_layers(model.backbone, model.layers)
        side = (pre.crop or pre.resize) // _spec(model.backbone).strides[layers[0]]
        stats_b = padim_bytes(side * side, model.d, reduced=False)
        text = typed[("Complexity", r["row"], r["group"], "model_memory_gb")]
        values = {"statistics": stats_b,
                  "statistics + CNN as run": stats_b + network_bytes(model.backbone, layers),
                  "statistics + whole CNN": stats_b + network_bytes(model.backbone, whole=True)}
        tol = rounding_tolerance(text)
        row = {"model": r["row"], "data set": r["group"], "backbone": model.backbone, "d": model.d,
               "positions": f"{side} x {side}", "published_gb": float(r["value"]), "published": text,
               "tolerance_gb": tol}
        for reading, b in values.items():
            row[f"{reading} (GB)"] = b / 1e9
            row[f"matches {reading}"] = bool(abs(b / 1e9 - float(r["value"])) <= tol + 1e-12)
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- operation counts


def forward_flops(backbone: str, layers: Sequence[str] | None = None, image_size: int = 224, *,
                  pixel_layers: Sequence[str] | None = None) -> dict[str, Any]:
    """Floating-point operations of one image's forward pass through `backbone` up to `layers`
    (None: its default layers; SPADE's also hold its global layer: `Detector.feature_layers()`),
    counted by torch.utils.flop_counter (2 per multiply-add of the convolutions and matrix products;
    element-wise operations not counted). Returns flops, macs (= flops / 2), and what a pixel search
    works on: positions (the first of `pixel_layers`' grid) and d (their channels, concatenated;
    `pixel_layers` None: `layers`)."""
    from torch.utils.flop_counter import FlopCounterMode

    from padim_lib.features.extractor import FeatureExtractor

    with torch.device("meta"):  # the count needs the shapes only: no weights, no arithmetic
        ext = FeatureExtractor(backbone, layers, pretrained=False)
        with FlopCounterMode(display=False) as counter:
            maps = ext(torch.zeros(1, 3, int(image_size), int(image_size)))
    pixel = [maps[layer] for layer in (pixel_layers or maps)]
    flops = int(counter.get_total_flops())
    return {"backbone": backbone, "image_size": int(image_size), "flops": flops, "macs": flops // 2,
            "positions": int(pixel[0].shape[-2] * pixel[0].shape[-1]), "d": int(sum(m.shape[1] for m in pixel))}


def spade_search_flops(positions: int, n_gallery: int, d: int) -> int:
    """Operations of SPADE's pixel search for one test image: every test position against every
    position of the K = `n_gallery` gallery images, a squared distance of d dimensions each
    (a multiply-add per dimension: 2 x positions^2 x K x d)."""
    return 2 * int(positions) ** 2 * int(n_gallery) * int(d)
