"""A threshold without test masks: hold out part of the good training images, fit on the rest, and
take the threshold that the held-out images' scores give at a chosen false-positive rate.

`holdout_split(n, holdout, seed)` draws the held-out images (seeded, deterministic, disjoint from
the rest). `holdout_threshold(detector, data_root, category, preprocess, holdout=, fpr=)` fits a
copy of `detector` (same parameters: sklearn.base.clone) on the rest, scores the held-out images,
and returns a `HoldoutThreshold`: the image threshold from their image scores and the pixel
threshold from all their map pixels (`padim_lib.metrics.threshold.threshold_at_fpr`: a score is
anomalous when strictly above). `HoldoutThreshold.test_rates(test)` scores a labelled test set
with that same fitted copy and reports the false- and true-positive rates the thresholds give:
the threshold belongs to the copy, whose scores are those it was chosen on.

The held-out images were never seen by the copy: scored by a model fitted on all the training
images, they would look more normal than new good images do, and the threshold would be too low.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.base import clone

from padim_lib.errors import PadimError
from padim_lib.metrics.threshold import check_fpr, rates_at_threshold, threshold_at_fpr


def check_holdout(holdout: float, name: str = "holdout") -> float:
    """`holdout` as a float in the open interval (0, 1); PadimError naming `name` otherwise."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float, np.floating)) or not 0.0 < holdout < 1.0:
        raise PadimError(f"{name}={holdout!r}; expected the fraction of the training images to hold out, in (0, 1)")
    return float(holdout)


def holdout_split(n: int, holdout: float, seed: int = 0, min_fit: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit (n - k,), held out (k,)) of n training images, both sorted, disjoint, covering
    0..n-1: k = round(n * holdout) (halves up, at least 1) drawn by numpy.random.default_rng(seed).
    PadimError when fewer than `min_fit` images are left to fit on."""
    holdout = check_holdout(holdout)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PadimError(f"seed={seed!r}; expected an integer >= 0")
    k = max(1, math.floor(n * holdout + 0.5))
    if n - k < min_fit:
        raise PadimError(f"holdout={holdout} leaves {max(n - k, 0)} of the {n} training images to fit on; "
                         f"expected at least {min_fit}")
    order = np.random.default_rng(int(seed)).permutation(n)
    return np.sort(order[k:]), np.sort(order[:k])


@dataclass
class HoldoutThreshold:
    """Thresholds from held-out good training images, and the detector fitted on the others.

    image_threshold / pixel_threshold: flag an image / pixel when its score is strictly above.
    holdout_scores (k,) and holdout_maps (k, H, W): the held-out images' scores and maps.
    """

    holdout: float
    fpr: float
    seed: int
    fit_indices: np.ndarray
    holdout_indices: np.ndarray
    holdout_paths: list[str]
    image_threshold: float
    pixel_threshold: float
    holdout_scores: np.ndarray = field(repr=False)
    holdout_maps: np.ndarray = field(repr=False)
    detector: Any = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """The thresholds and the split, JSON-able."""
        return {
            "holdout": self.holdout,
            "fpr": self.fpr,
            "seed": self.seed,
            "n_fit": len(self.fit_indices),
            "n_holdout": len(self.holdout_indices),
            "image_threshold": self.image_threshold,
            "pixel_threshold": self.pixel_threshold,
            "holdout_images": [os.path.basename(p) for p in self.holdout_paths],
        }

    def test_rates(self, test: Any, *, progress: bool = False) -> dict[str, float | None]:
        """False- and true-positive rates of both thresholds on a labelled test set (items with image,
        label and, when `test.has_masks`, mask), scored by the detector the thresholds belong to:
        image_fpr, image_tpr, pixel_fpr, pixel_tpr (None when the set lacks that class or masks)."""
        from padim_lib.engine.evaluation import evaluate

        res = evaluate(self.detector, test, return_maps=True, progress=progress)
        image = rates_at_threshold(res["labels"], res["scores"], self.image_threshold)
        out = {"image_fpr": image["fpr"], "image_tpr": image["tpr"], "pixel_fpr": None, "pixel_tpr": None}
        if res["masks"] is not None:
            pixel = rates_at_threshold(res["masks"], res["maps"], self.pixel_threshold)
            out.update(pixel_fpr=pixel["fpr"], pixel_tpr=pixel["tpr"])
        return out


def holdout_threshold(detector: Any, data_root: str | os.PathLike, category: str, preprocess: Any, *,
                      holdout: float, fpr: float, seed: int = 0) -> HoldoutThreshold:
    """Fit a copy of `detector` (its parameters, unfitted) on the training images of `category` less
    a held-out fraction `holdout` (`holdout_split` with `seed`; among the first max_train images when
    the detector has that cap), score the held-out images (test preprocessing), and take the
    thresholds at false-positive rate `fpr`. Checks every argument before fitting."""
    from padim_lib.datasets import open_dataset

    fpr = check_fpr(fpr)
    holdout = check_holdout(holdout)
    fit_data = detector.training_data(data_root, category, preprocess)  # the detector's own preprocessing
    n = len(fit_data)
    if getattr(detector, "max_train", None) is not None:
        n = min(n, int(detector.max_train))
    fit_idx, held_idx = holdout_split(n, holdout, seed, min_fit=int(getattr(detector, "min_train", 1)))
    held_data = open_dataset(data_root, category, "train", preprocess)  # scored like test images
    model = clone(detector)
    model.fit(torch.utils.data.Subset(fit_data, fit_idx.tolist()))
    maps, scores = model.predict(torch.utils.data.Subset(held_data, held_idx.tolist()))
    maps, scores = np.asarray(maps, np.float32), np.asarray(scores)
    paths = getattr(held_data, "paths", None)
    return HoldoutThreshold(
        holdout=holdout, fpr=fpr, seed=int(seed), fit_indices=fit_idx, holdout_indices=held_idx,
        holdout_paths=[str(paths[i]) for i in held_idx] if paths is not None else [],
        image_threshold=threshold_at_fpr(scores, fpr), pixel_threshold=threshold_at_fpr(maps, fpr),
        holdout_scores=scores, holdout_maps=maps, detector=model,
    )
