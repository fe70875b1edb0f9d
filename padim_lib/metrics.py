"""Evaluation metrics of the MVTec AD protocol: image AUROC, pixel AUROC and AU-PRO.

numpy/scipy/sklearn only (no torch): maps arrive as numpy arrays. One engine computes every
pixel metric, exactly, with or without image weights: `PixelScores` (padim_lib/metrics_pixel.py,
pair tables for weightings in padim_lib/metrics_pairs.py); the functions below are one-shot
shortcuts to it. `ImageScores` is its image-level counterpart for bootstrap replicates.

Conventions
-----------
* ``masks`` (N, H, W): binary ground truth (bool or numbers in {0, 1}); ``maps`` (N, H, W): anomaly
  scores, higher = more anomalous. A pixel is *predicted anomalous at threshold t* when
  ``score >= t`` (as in the official MVTec AD evaluation code).
* Ground-truth regions are the connected components of each image's mask with 8-connectivity
  (`CONNECTIVITY`, the 3x3 structuring element of ``scipy.ndimage.label``); regions never span
  two images.
* PRO curve: for every distinct score t (descending), FPR(t) = share of the defect-free pixels of
  all test images (mask 0, in good and defective images alike) with score >= t, and PRO(t) = mean
  over all regions of the share of the region's pixels with score >= t. A run of tied scores
  enters the curve at once (one point per distinct value). The curve starts at (0, 0) (threshold
  above the maximum) and ends at (1, 1) (the lowest threshold marks every pixel).
* AU-PRO: trapezoid rule on that curve up to ``fpr_limit`` (linear interpolation at the limit),
  divided by ``fpr_limit``. An uninformative map (all scores tied) gives 0.5 * fpr_limit, i.e.
  0.15 at the usual limit of 0.3, not 0.5.
* ``image_weights`` (N,): non-negative integer repeat counts (bootstrap resampling with
  replacement). Every result equals the result on the physically repeated arrays; the regions of
  a repeated image count once per repeat.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from padim_lib.errors import PadimError
from padim_lib.metrics_pairs import partial_area
from padim_lib.metrics_pixel import (
    CONNECTIVITY,
    PixelScores,
    _check_binary,
    _check_fpr_limit,
    _check_scores,
    _check_weights,
)

__all__ = [
    "CONNECTIVITY",
    "ImageScores",
    "PixelScores",
    "image_auroc",
    "partial_area",
    "pixel_auroc",
    "pro_auc",
    "pro_curve",
]


# ----------------------------------------------------------------------------- image level
def _check_labels(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validated (N,) bool labels (1 = defective) and (N,) scores."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 1:
        raise PadimError(f"labels: expected shape (N,), got {labels.shape}")
    if scores.shape != labels.shape:
        raise PadimError(f"scores: expected the shape of labels {labels.shape}, got {scores.shape}")
    _check_scores(scores, "scores")
    return _check_binary(labels, "labels"), scores


def _check_both_labels(present: np.ndarray, weighted: bool, arg: str = "labels") -> None:
    """present: labels of the images that count; both kinds are needed."""
    if present.all() or not present.any():
        which = "defective" if not present.any() else "good"
        where = " with weight > 0" if weighted else ""
        raise PadimError(f"{arg}: image AUROC needs good and defective images; no {which} image{where}")


def image_auroc(labels, scores, sample_weight=None) -> float:
    """ROC AUC of image scores; labels (N,) 1 = defective, scores (N,), sample_weight (N,) or None."""
    y, scores = _check_labels(labels, scores)
    present = y
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != y.shape:
            raise PadimError(f"sample_weight: expected shape {y.shape}, got {sample_weight.shape}")
        if not np.all(np.isfinite(sample_weight) & (sample_weight >= 0)):
            raise PadimError("sample_weight: expected finite non-negative weights")
        present = y[sample_weight > 0]
        if sample_weight.sum() == 0 or present.size == 0:
            raise PadimError("sample_weight: all weights are zero")
    _check_both_labels(present, sample_weight is not None)
    return float(roc_auc_score(y, scores, sample_weight=sample_weight))


class ImageScores:
    """Image AUROC of one test set under many image repeat counts, O(N^2) each.

    labels (N,) 1 = defective, scores (N,). With K_ij = [y_i = 1, y_j = 0] ([s_i > s_j] + 0.5 [s_i = s_j]),
    AUROC(w) = sum_ij w_i w_j K_ij / ((w . y)(w . (1 - y))), which equals
    `image_auroc(labels, scores, sample_weight=w)`. Keeps an (N, N) matrix.
    """

    def __init__(self, labels, scores):
        y, s = _check_labels(labels, scores)
        _check_both_labels(y, weighted=False)
        s = s.astype(np.float64)
        self.num_images = len(y)
        self._y = y.astype(np.float64)
        order = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
        self._k = order * (y[:, None] & ~y[None, :])

    def auroc(self, image_weights=None) -> float:
        """Image ROC AUC under image_weights (N,) repeat counts (None: each image once)."""
        if image_weights is None:
            w = np.ones(self.num_images)
        else:
            w = _check_weights(image_weights, self.num_images).astype(np.float64)
            _check_both_labels(self._y[w > 0] != 0, True, "image_weights")
        return float(w @ self._k @ w / ((w @ self._y) * (w @ (1.0 - self._y))))


# ----------------------------------------------------------------------------- pixel level
def pixel_auroc(masks, maps, image_weights=None) -> float:
    """ROC AUC over all pixels; masks, maps (N, H, W); image_weights (N,) repeat counts or None.

    Equals sklearn's roc_auc_score on the flattened (repeated) pixels, computed from one packed
    sort (several times faster than roc_auc_score on millions of pixels).
    """
    return PixelScores(masks, maps).pixel_auroc(image_weights)


def pro_curve(masks, maps, image_weights=None) -> tuple[np.ndarray, np.ndarray]:
    """PRO curve (fpr, pro) at every distinct score; masks, maps (N, H, W); see the module docstring."""
    return PixelScores(masks, maps).pro_curve(image_weights)


def pro_auc(masks, maps, fpr_limit: float = 0.3, image_weights=None) -> float:
    """AU-PRO up to fpr_limit, normalised by fpr_limit; masks, maps (N, H, W)."""
    return PixelScores(masks, maps, fpr_limit=_check_fpr_limit(fpr_limit)).pro_auc(image_weights)
