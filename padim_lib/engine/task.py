"""One experiment = one class x one configuration -> tidy result rows (+ arrays for plots).

`run_task` fits the configuration's detector (on the class's cached features when it reads a
frozen backbone's, on its training images otherwise: `Detector.training_data`), scores the test
split, and computes image AUROC, pixel AUROC and PRO on the full test set (replicate -1)
and on B bootstrap resamples of the test images (replicates 0..B-1).

Bootstrap design (so that differences between configurations are paired):
* replicate b of a class is drawn by `np.random.default_rng([hash(category), b])`, so it is
  the same resample for every configuration of that class, whatever the order tasks run in;
* resampling is stratified: good and defective test images are each resampled with
  replacement within their group, so every replicate keeps the test set's class balance (as
  the evaluation protocol fixes it) and every metric stays defined;
* a resample is a vector of repeat counts per image. `metrics.PixelScores` sorts the pixels
  once and then evaluates pixel AUROC and PRO under any weights in O(N^2) (N test images),
  exactly (tested against the physically repeated pixels), which makes 200 replicates cost well
  under a second instead of one pass over all pixels each.
Pixel metrics need ground-truth masks: without them the rows have image AUROC only (pixel
AUROC and PRO are "not available", never 0).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.features.backbones import resolve_layers
from padim_lib.features.cache import (
    FeatureBatches,
    FeatureSpec,
    data_identity,
    ensure_features,
    load_features,
)
from padim_lib.io.digest import stable_hash
from padim_lib.methods.registry import MethodSpec, get_method, register

ROW_COLUMNS = [
    "data_root", "category", "kind", "config_key", "label", "published_row", "method", "backbone",
    "layers", "layer_mode", "reduce", "seed", "metric", "value", "replicate",
]
FPR_LIMIT = 0.3  # PRO integrated up to 30 % FPR (MVTec AD protocol)
CURVE_POINTS = 1000
FEATURE_BATCH = 32


@dataclass(frozen=True)
class Task:
    """One class of one data set under one configuration.

    `method` is the configuration's registry entry, looked up when the task is made and carried
    with it, so a worker process (Dask) runs methods registered only in the planning process.
    """

    data_root: str
    category: str
    config: ExperimentConfig
    method: MethodSpec | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_root", str(self.data_root))
        if not isinstance(self.config, ExperimentConfig):
            raise PadimError(f"Task.config: expected an ExperimentConfig, got {type(self.config).__name__}")
        if self.method is None:
            object.__setattr__(self, "method", get_method(self.config.method))

    def key(self) -> str:
        """16 hex digits: the configuration's key, the class and the data's identity (files listed)."""
        return stable_hash(
            {"config": self.config.key(), "category": self.category, "data": data_identity(self.data_root, self.category)}
        )

    def detector(self, device: str = "auto", progress: bool = False):
        """The (unfitted) detector of this task's configuration."""
        register(self.method)  # a no-op where it is registered already (see the class docstring)
        return self.method.detector_class().from_config(self.config, device=device, progress=progress)

    def feature_layers(self) -> tuple[str, ...]:
        """The backbone's default layers plus any other layer the detector reads: one superset, so
        every configuration of a class on one backbone reads the same feature files."""
        cfg = self.config
        defaults = resolve_layers(cfg.backbone, None)
        return defaults + tuple(x for x in self.detector("cpu").feature_layers() if x not in defaults)

    def feature_specs(self) -> tuple[FeatureSpec, ...]:
        """(train, test) feature files this task reads; none for a detector that reads images."""
        if not self.method.detector_class().uses_features:
            return ()
        cfg = self.config
        common = dict(
            data_root=self.data_root, category=self.category, backbone=cfg.backbone, layers=self.feature_layers(),
            preprocess=cfg.preprocess, pretrained=cfg.pretrained, weights=cfg.weights,
        )
        return FeatureSpec(split="train", max_train=cfg.max_train, **common), FeatureSpec(split="test", **common)


# ----------------------------------------------------------------------------- bootstrap
def _stable_int(text: str) -> int:
    """A process-independent 64-bit integer for a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def bootstrap_weights(category: str, labels: np.ndarray, replicates: int) -> np.ndarray:
    """Repeat counts (B, N) int64 of B stratified resamples of N test images.

    Row b depends only on (category, b, labels): identical for every configuration of a class.
    Good and defective images are resampled separately, each group keeping its size.
    """
    labels = np.asarray(labels)
    n = len(labels)
    groups = [np.flatnonzero(labels == v) for v in np.unique(labels)]
    out = np.zeros((replicates, n), np.int64)
    base = _stable_int(category)
    for b in range(replicates):
        rng = np.random.default_rng([base, b])
        for idx in groups:
            out[b] += np.bincount(idx[rng.integers(0, len(idx), len(idx))], minlength=n)
    return out


# ----------------------------------------------------------------------------- helpers
def _thin_curve(x: np.ndarray, y: np.ndarray, n: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most n points of a monotone curve, evenly spaced along its length (ends kept)."""
    if len(x) <= n:
        return x.astype(np.float32), y.astype(np.float32)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))])
    idx = np.unique(np.searchsorted(arc, np.linspace(0.0, arc[-1], n - 1)).clip(0, len(x) - 1))
    idx = np.union1d(idx, [0, len(x) - 1])
    return x[idx].astype(np.float32), y[idx].astype(np.float32)


def example_indices(labels: np.ndarray, defect_types: Sequence[str], k: int) -> np.ndarray:
    """k test images for overlays: the first good one, then defective ones round-robin over defect types."""
    labels = np.asarray(labels)
    good = [i for i in range(len(labels)) if labels[i] == 0][:1]
    by_type: dict[str, list[int]] = {}
    for i, t in enumerate(defect_types):
        if labels[i] != 0:
            by_type.setdefault(t, []).append(i)
    bad: list[int] = []
    queues = list(by_type.values())
    while queues and len(bad) < k:
        for q in queues:
            if q and len(bad) < k:
                bad.append(q.pop(0))
        queues = [q for q in queues if q]
    chosen = (good + bad)[:k] if k > 0 else []
    return np.asarray(sorted(chosen), dtype=np.int64)


def _example_images(task: Task, index: np.ndarray) -> np.ndarray:
    """(k, S, S, 3) uint8 of the chosen test images, preprocessed like the features (for overlays)."""
    from padim_lib.datasets import denormalize, open_dataset

    data = open_dataset(task.data_root, task.category, "test", task.config.preprocess)
    imgs = [denormalize(data[int(i)]["image"]) for i in index]
    if not imgs:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return (torch.stack(imgs).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def _fit_predict(task: Task, detector, feature_paths, cache_dir, device: str, progress: bool, timings: dict):
    """Fit `detector` and score the test split: from cached features when the detector reads them,
    else from the images. Returns (maps (N, S, S), scores (N,), test info dict, n_train)."""
    from padim_lib.datasets import open_dataset

    if detector.uses_features:
        if feature_paths is None or len(feature_paths) == 0:
            feature_paths = [ensure_features(s, cache_dir, device=device, progress=progress) for s in task.feature_specs()]
        if len(feature_paths) != 2:
            raise PadimError(f"feature_paths: expected (train, test) files, got {len(feature_paths)}")
        train, test = (load_features(p) for p in feature_paths)
        layers = detector.feature_layers()
        t0 = time.perf_counter()
        detector.fit_features(FeatureBatches(train["features"], layers, FEATURE_BATCH))
        timings["fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        maps, scores = detector.predict_features(FeatureBatches(test["features"], layers, FEATURE_BATCH),
                                                 test["image_size"])
        timings["predict_s"] = time.perf_counter() - t0
        return maps, scores, test, len(train["labels"])
    pre = task.config.preprocess
    train = detector.training_data(task.data_root, task.category, pre)
    detector.use_work_dir(Path(cache_dir) / "checkpoints" / task.key())  # resumable training: one folder per task
    test_data = open_dataset(task.data_root, task.category, "test", pre)
    t0 = time.perf_counter()
    detector.fit(train)
    timings["fit_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    maps, scores = detector.predict(test_data)
    timings["predict_s"] = time.perf_counter() - t0
    has_masks = bool(getattr(test_data, "has_masks", False))
    test = {
        "labels": np.asarray(test_data.labels, np.int64),
        "masks": np.stack([test_data[i]["mask"].numpy() for i in range(len(test_data))]) if has_masks else None,
        "paths": list(test_data.paths), "defect_types": list(test_data.defect_types), "image_size": pre.size,
    }
    n_train = len(train) if task.config.max_train is None else min(len(train), task.config.max_train)
    return maps, scores, test, n_train


# ----------------------------------------------------------------------------- the task
def run_task(
    task: Task,
    cache_dir: str | os.PathLike,
    *,
    device: str = "auto",
    bootstrap: int = 200,
    n_examples: int = 4,
    feature_paths: Sequence[str | os.PathLike] | None = None,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Fit and evaluate one task; returns (tidy rows, artifacts).

    Rows: columns ROW_COLUMNS, one per metric x replicate (-1 full test set, 0..B-1 bootstrap);
    metrics image_auroc, and pixel_auroc and pro when the class has masks. Values are fractions.
    Artifacts (numpy, for the book's plots): labels, scores, paths, defect_types (N,);
    image_roc_fpr/tpr; pixel_roc_fpr/tpr and pro_fpr/pro (<= 1000 points each, masks only);
    pixel_quantiles_normal/defect and pixel_count_normal/defect (masks only: `metrics.pooled`);
    example_index (k,), example_images (k, S, S, 3) uint8, example_maps (k, S, S) float16,
    example_masks (k, S, S) uint8; timings fit_s, predict_s, metrics_s, bootstrap_s; n_train; and the
    detector's own (`Detector.artifacts()`: e.g. loss_epoch_loss of a trained network).
    `feature_paths`: (train, test) files already made by `ensure_features` (the sweep's
    feature jobs); otherwise they are made here (and cached in `cache_dir`).
    """
    from padim_lib.datasets import category_kinds
    from padim_lib.metrics.image import ImageScores, image_auroc
    from padim_lib.metrics.pixel import PixelScores

    if not isinstance(bootstrap, int) or bootstrap < 0:
        raise PadimError(f"bootstrap={bootstrap!r}; expected a number of replicates >= 0")
    cfg = task.config
    timings: dict[str, float] = {}
    detector = task.detector(device=device, progress=progress)
    maps, scores, test, n_train = _fit_predict(task, detector, feature_paths, cache_dir, device, progress, timings)

    labels, masks = test["labels"], test["masks"]
    t0 = time.perf_counter()
    # Pixel metrics: one sort of all pixels serves the full set and every replicate.
    pixels = None if masks is None else PixelScores(masks, maps, fpr_limit=FPR_LIMIT)
    metrics: dict[str, list[tuple[int, float]]] = {"image_auroc": [(-1, image_auroc(labels, scores))]}
    if pixels is not None:
        metrics["pixel_auroc"] = [(-1, pixels.pixel_auroc())]
        metrics["pro"] = [(-1, pixels.pro_auc())]
    timings["metrics_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    weights = bootstrap_weights(task.category, labels, bootstrap)
    if bootstrap:
        img_boot = ImageScores(labels, scores)
        metrics["image_auroc"] += [(b, img_boot.auroc(w)) for b, w in enumerate(weights)]
        if pixels is not None:
            metrics["pixel_auroc"] += [(b, pixels.pixel_auroc(w)) for b, w in enumerate(weights)]
            metrics["pro"] += [(b, pixels.pro_auc(w)) for b, w in enumerate(weights)]
    timings["bootstrap_s"] = time.perf_counter() - t0

    kind = category_kinds(task.data_root).get(task.category, "other")
    layers = cfg.resolved_layers() if "layers" in task.method.reads else ()
    common = {
        "data_root": task.data_root, "category": task.category, "kind": kind, "config_key": cfg.key(),
        "label": cfg.label, "published_row": cfg.published_row, "method": cfg.method, "backbone": cfg.backbone,
        "layers": "+".join(layers), "layer_mode": cfg.layer_mode, "reduce": cfg.reduce or "none", "seed": int(cfg.seed),
    }
    rows = pd.DataFrame(
        [common | {"metric": m, "value": float(v), "replicate": int(r)} for m, vals in metrics.items() for r, v in vals],
        columns=ROW_COLUMNS,
    )

    t0 = time.perf_counter()
    artifacts = _artifacts(task, labels, scores, maps, masks, pixels, test, n_examples)
    timings["artifacts_s"] = time.perf_counter() - t0
    artifacts.update({k: np.asarray(v) for k, v in timings.items()})
    artifacts.update(detector.artifacts())  # e.g. the VAE's loss curves
    artifacts["n_train"] = np.asarray(n_train)
    return rows, artifacts


def _artifacts(task, labels, scores, maps, masks, pixels, test, n_examples) -> dict[str, np.ndarray]:
    from sklearn.metrics import roc_curve

    from padim_lib.metrics.pooled import score_quantiles

    out: dict[str, np.ndarray] = {
        "labels": np.asarray(labels, np.int8),
        "scores": np.asarray(scores, np.float32),
        "paths": np.asarray(test["paths"], dtype=str),
        "defect_types": np.asarray(test["defect_types"], dtype=str),
    }
    fpr, tpr, _ = roc_curve(labels, scores)
    out["image_roc_fpr"], out["image_roc_tpr"] = fpr.astype(np.float32), tpr.astype(np.float32)
    if pixels is not None:
        fpr, tpr = pixels.roc_curve()
        out["pixel_roc_fpr"], out["pixel_roc_tpr"] = _thin_curve(fpr, tpr)
        fpr, pro = pixels.pro_curve()
        out["pro_fpr"], out["pro"] = _thin_curve(fpr, pro)
        out.update(score_quantiles(masks, maps))  # to pool classes (STC's scenes) into one pixel AUROC
    index = example_indices(labels, test["defect_types"], n_examples)
    out["example_index"] = index
    examples = maps[index]
    # float16 halves the artifact; a map beyond its range (eps near 0 gives huge distances) stays float32
    fits = examples.size == 0 or float(np.abs(examples).max()) <= float(np.finfo(np.float16).max)
    out["example_maps"] = examples.astype(np.float16 if fits else np.float32)
    out["example_masks"] = (masks[index] if masks is not None else np.zeros_like(maps[index], np.uint8)).astype(np.uint8)
    out["example_images"] = _example_images(task, index)
    return out


# ----------------------------------------------------------------------------- the paper's tables


def label_rows(rows: pd.DataFrame, configs: Sequence[ExperimentConfig]) -> pd.DataFrame:
    """The rows of `configs`, labelled as those configs say.

    One computation can serve two tables under two names (Table I's "PaDiM-R18" is Table II's
    "all (448)"): the store keeps it once, under the first label it was run with. This selects
    each config's rows by `config_key` (and seed) and sets its label and published_row, so a
    chapter sees its own names. Configs without rows are skipped.
    """
    if rows.empty:
        return rows
    parts = []
    for cfg in configs:
        sel = rows[rows["config_key"] == cfg.key()]  # the key includes the seed where it matters
        if len(sel):
            parts.append(sel.assign(label=cfg.label, published_row=cfg.published_row))
    if not parts:
        return rows.iloc[0:0]
    out = pd.concat(parts, ignore_index=True)
    dup_cols = [c for c in ("data_root", "category", "label", "seed", "metric", "replicate") if c in out.columns]
    return out.drop_duplicates(dup_cols).reset_index(drop=True)
