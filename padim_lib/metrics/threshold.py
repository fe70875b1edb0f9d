"""A decision threshold from defect-free scores alone, at a chosen false-positive rate.

Rule: a score is flagged anomalous when it is strictly above the threshold. `threshold_at_fpr(v, fpr)`
is the smallest of the values v such that at most a fraction `fpr` of v lies strictly above it:
with n values and m = floor(n * fpr) false positives allowed, the (m + 1)-th largest value (the
empirical (1 - fpr) quantile, "inverted CDF" kind). With fewer than 1 / fpr values, m = 0 and the
threshold is the maximum: the held-out good images are then all accepted, and nothing finer can be
promised from so few.
`rates_at_threshold` gives the false- and true-positive rates that a threshold yields on labelled
scores (pixels or images), for checking it on a test set.
"""

from __future__ import annotations

import math

import numpy as np

from padim_lib.errors import PadimError

# n * fpr is computed in floating point (100 * 0.07 = 7.000000000000001): this much is not a part.
_ROUNDING = 1e-9


def check_fpr(fpr: float, name: str = "fpr") -> float:
    """`fpr` as a float in the open interval (0, 1); PadimError naming `name` otherwise."""
    if isinstance(fpr, bool) or not isinstance(fpr, (int, float, np.floating)) or not 0.0 < float(fpr) < 1.0:
        raise PadimError(f"{name}={fpr!r}; expected a false-positive rate in (0, 1), e.g. 0.01")
    return float(fpr)


def allowed_false_positives(n: int, fpr: float) -> int:
    """floor(n * fpr): how many of n good scores may lie above the threshold."""
    return int(math.floor(n * check_fpr(fpr) + _ROUNDING))


def threshold_at_fpr(values, fpr: float) -> float:
    """The threshold of defect-free `values` (any shape, flattened; image scores or map pixels) at
    false-positive rate `fpr`: the (m + 1)-th largest value, m = floor(n * fpr) (module docstring)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise PadimError("values: expected at least one defect-free score")
    if not np.isfinite(v).all():
        raise PadimError("values: expected finite scores (found NaN or infinity)")
    m = allowed_false_positives(v.size, fpr)
    k = v.size - 1 - m  # the (m + 1)-th largest is the k-th smallest (0-based)
    return float(np.partition(v, k)[k])


def rates_at_threshold(labels, scores, threshold: float) -> dict[str, float | None]:
    """False- and true-positive rates of the rule `score > threshold` on labelled scores of one shape
    (labels 1 = defective: images, or mask pixels): {"fpr": among the good, "tpr": among the
    defective}; a rate is None when its class is absent."""
    y = np.asarray(labels).ravel() != 0
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise PadimError(f"scores: expected {y.size} scores, one per label, got {s.size}")
    flagged = s > float(threshold)
    good, bad = int((~y).sum()), int(y.sum())
    return {
        "fpr": float(flagged[~y].sum() / good) if good else None,
        "tpr": float(flagged[y].sum() / bad) if bad else None,
    }
