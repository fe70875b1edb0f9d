"""Image AUROC: one-shot (`image_auroc`) and under many bootstrap weightings (`ImageScores`).

Conventions (labels, weights) are those of padim_lib.metrics.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from padim_lib.errors import PadimError
from padim_lib.metrics.pixel import _check_binary, _check_scores, _check_weights


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
