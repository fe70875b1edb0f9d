"""Pixel AUROC pooled over several test sets (STC's scenes) from a compact summary of each.

The mean over scenes of each scene's pixel AUROC and the pixel AUROC of all scenes' pixels ranked
together (pooled) are different numbers: pooling compares a pixel of one scene with a pixel of
another, whose scores sit on another scale. Pooling needs every pixel's score; a test set's
summary keeps instead the score distribution of its defect-free and of its defect pixels as
`QUANTILES` mid-point quantiles each (q_k = (k + 1/2) / n) and the two pixel counts
(`score_quantiles`). `pooled_auroc` then ranks the quantile points of every set together, each
weighted by its set's count / n: a weighted Mann-Whitney statistic. Each set's CDFs are known to
1 / (2n), so the pooled AUROC is within about 1 / n of the exact one (0.1 p.p. at n = 1000;
tests/test_metrics.py checks it against the exact pooled value).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from padim_lib.errors import PadimError

QUANTILES = 1000


def score_quantiles(masks: np.ndarray, maps: np.ndarray, n: int = QUANTILES) -> dict[str, np.ndarray]:
    """The pixel-score summary of one test set: masks (N, H, W) binary, maps (N, H, W) scores.

    Returns {"pixel_quantiles_normal", "pixel_quantiles_defect": (n,) float32 mid-point quantiles
    (empty when a set has no such pixel), "pixel_count_normal", "pixel_count_defect": int64}."""
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.shape != maps.shape:
        raise PadimError(f"masks {masks.shape} and maps {maps.shape}: expected the same shape")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PadimError(f"n={n!r}; expected a number of quantiles >= 1")
    defect = masks != 0
    q = (np.arange(n) + 0.5) / n
    out: dict[str, np.ndarray] = {}
    for name, pixels in (("normal", maps[~defect]), ("defect", maps[defect])):
        values = pixels.astype(np.float64, copy=False)
        out[f"pixel_quantiles_{name}"] = (np.quantile(values, q, method="inverted_cdf").astype(np.float32)
                                          if values.size else np.zeros(0, np.float32))
        out[f"pixel_count_{name}"] = np.asarray(values.size, np.int64)
    return out


def pooled_auroc(summaries: Sequence[dict[str, np.ndarray]]) -> float:
    """Pixel AUROC of the pixels of every summarised test set ranked together (see the module)."""
    scores, labels, weights = [], [], []
    for s in summaries:
        for name, label in (("normal", 0), ("defect", 1)):
            q = np.asarray(s[f"pixel_quantiles_{name}"], np.float64)
            count = int(s[f"pixel_count_{name}"])
            if q.size and count:
                scores.append(q)
                labels.append(np.full(q.size, label))
                weights.append(np.full(q.size, count / q.size))
    if not scores:
        raise PadimError("summaries: expected at least one test set with pixels")
    y = np.concatenate(labels)
    if y.min() == y.max():
        raise PadimError("summaries: the pooled pixels are all defect-free or all defective; AUROC needs both")
    return float(roc_auc_score(y, np.concatenate(scores), sample_weight=np.concatenate(weights)))
