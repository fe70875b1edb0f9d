"""Score a test set with any fitted method and compute the MVTec AD metrics.

Works with every method exposing `predict(images (B, 3, H, W)) -> (maps (B, H, W), scores (B,))`
(PaDiM, and the baselines): the test set is read once, batch by batch, so images are decoded a
single time and masks/labels/paths are collected alongside the maps.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from padim_lib.errors import PadimError
from padim_lib.metrics.image import image_auroc
from padim_lib.metrics.pixel import PixelScores


def metrics_from_maps(labels, scores, masks, maps, fpr_limit: float = 0.3) -> dict[str, float | None]:
    """image_auroc from labels (N,) and scores (N,); pixel_auroc and pro (AU-PRO up to fpr_limit)
    from masks (N, H, W) and maps (N, H, W), or None for both when masks is None."""
    out: dict[str, float | None] = {
        "image_auroc": image_auroc(labels, scores),
        "pixel_auroc": None,
        "pro": None,
    }
    if masks is not None:
        pixels = PixelScores(masks, maps)  # one sort of all pixel scores serves both metrics
        out["pixel_auroc"] = pixels.pixel_auroc()
        out["pro"] = pixels.pro_auc(fpr_limit=fpr_limit)
    return out


def evaluate(model: Any, dataset: Any, *, return_maps: bool = False, progress: bool = True) -> dict[str, Any]:
    """Predict every test image of `dataset` (items: dicts with image, mask, label, path) and score it.

    Returns image_auroc, pixel_auroc and pro (None when `dataset.has_masks` is False), n_test,
    n_good, n_defective, timings {predict_s, images_per_s, fit_s when model.meta has it}; with
    return_maps also maps (N, H, W) float32, scores (N,), labels (N,), masks (N, H, W) uint8 or
    None, and paths.
    """
    if len(dataset) == 0:
        raise PadimError("dataset: the test set is empty")
    has_masks = bool(getattr(dataset, "has_masks", False))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=int(getattr(model, "batch_size", 16)), shuffle=False
    )
    maps, scores, labels, masks, paths = [], [], [], [], []
    start = time.perf_counter()
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        if not isinstance(batch, dict) or "image" not in batch or "label" not in batch:
            raise PadimError("dataset: items must be dicts with at least 'image' and 'label' keys")
        m, s = model.predict(batch["image"])
        maps.append(np.asarray(m, dtype=np.float32))
        scores.append(np.asarray(s))
        labels.append(np.asarray(batch["label"]))
        paths.extend(batch.get("path", [""] * len(s)))
        if has_masks:
            masks.append(np.asarray(batch["mask"], dtype=np.uint8))
    predict_s = time.perf_counter() - start
    maps_a, scores_a, labels_a = np.concatenate(maps), np.concatenate(scores), np.concatenate(labels)
    masks_a = np.concatenate(masks) if has_masks else None
    res: dict[str, Any] = metrics_from_maps(labels_a, scores_a, masks_a, maps_a)
    n_defective = int((labels_a != 0).sum())
    timings = {"predict_s": round(predict_s, 3), "images_per_s": round(len(labels_a) / predict_s, 3)}
    fit_s = (getattr(model, "meta", None) or {}).get("fit_s")
    if fit_s is not None:
        timings["fit_s"] = fit_s
    res.update(
        n_test=len(labels_a), n_good=len(labels_a) - n_defective, n_defective=n_defective, timings=timings
    )
    if return_maps:
        res.update(maps=maps_a, scores=scores_a, labels=labels_a, masks=masks_a, paths=paths)
    return res
