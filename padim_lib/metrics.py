"""Evaluation metrics of the MVTec AD protocol: image AUROC, pixel AUROC and AU-PRO.

numpy/scipy/sklearn/pandas only (no torch): maps arrive as numpy arrays.

Conventions
-----------
* ``masks`` (N, H, W): binary ground truth (bool or numbers in {0, 1}); ``maps`` (N, H, W): anomaly
  scores, higher = more anomalous. A pixel is *predicted anomalous at threshold t* when
  ``score >= t`` (as in the official MVTec AD evaluation code).
* Ground-truth regions are the connected components of each image's mask with 8-connectivity
  (``scipy.ndimage.label`` with a 3x3 structuring element); regions never span two images.
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

Algorithm: one global sort of all pixel scores, then cumulative sums of per-pixel contributions
(defect-free pixel: its image weight to the false-positive count; region pixel: image weight /
region size to the PRO sum), read at the last pixel of each run of tied scores. Time is
O(P log P), memory O(P) for P pixels; no pixel x region matrices. `PixelScores` keeps the sorted
order so that bootstrap replicates only redo the linear cumulative pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score

from padim_lib.errors import PadimError

__all__ = [
    "PixelScores",
    "aggregate",
    "image_auroc",
    "pixel_auroc",
    "pro_auc",
    "pro_curve",
]

# 8-connectivity inside each (H, W) slice, no connectivity along the image axis.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True

# Pixels handled per step of the cumulative pass: bounds the temporaries to a few tens of MB.
_CHUNK = 1 << 22

# Row names of the group means of `aggregate`, as in the paper's tables.
KIND_ROWS = {"texture": "textures", "object": "objects"}


# ----------------------------------------------------------------------------- validation
def _check_scores(values: np.ndarray, name: str) -> None:
    if values.dtype == bool or not (
        np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)
    ):
        raise PadimError(f"{name}: expected real-valued scores, got dtype {values.dtype}")
    # min() propagates NaN: one pass, no boolean temporary.
    if values.size and np.issubdtype(values.dtype, np.floating) and np.isnan(values.min()):
        raise PadimError(f"{name}: contains NaN scores ({int(np.isnan(values).sum())} values)")


def _check_binary(values: np.ndarray, name: str) -> np.ndarray:
    """`values` as a bool array of the same shape, after checking that they are 0/1."""
    if values.dtype == bool:
        return values
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise PadimError(f"{name}: expected binary values (bool or 0/1), got dtype {values.dtype}")
    if values.size:
        lo, hi = values.min(), values.max()
        bad = not (lo >= 0 and hi <= 1)  # also catches NaN
        if not bad and np.issubdtype(values.dtype, np.floating):
            bad = not np.all((values == 0) | (values == 1))
        if bad:
            hint = " (0/255 masks: divide by 255)" if hi == 255 else ""
            raise PadimError(f"{name}: expected binary values 0/1, got values in [{lo}, {hi}]{hint}")
    return values != 0


def _check_weights(weights, n: int, name: str = "image_weights") -> np.ndarray:
    """(n,) non-negative integer repeat counts as int64."""
    w = np.asarray(weights)
    if w.shape != (n,):
        raise PadimError(f"{name}: expected shape ({n},) (one repeat count per image), got {w.shape}")
    if w.dtype == bool or not (np.issubdtype(w.dtype, np.integer) or np.issubdtype(w.dtype, np.floating)):
        raise PadimError(f"{name}: expected integer repeat counts, got dtype {w.dtype}")
    if np.issubdtype(w.dtype, np.floating) and not np.all(np.isfinite(w) & (w == np.round(w))):
        raise PadimError(f"{name}: expected integer repeat counts, got non-integer values")
    if n and w.min() < 0:
        raise PadimError(f"{name}: expected non-negative repeat counts, got minimum {w.min()}")
    return w.astype(np.int64)


def _check_pair(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, H, W) masks and maps; return (bool masks, maps)."""
    masks, maps = np.asarray(masks), np.asarray(maps)
    if maps.ndim != 3:
        raise PadimError(f"maps: expected shape (N, H, W), got {maps.shape}")
    if masks.shape != maps.shape:
        raise PadimError(f"masks: expected the shape of maps {maps.shape}, got {masks.shape}")
    if maps.size == 0:
        raise PadimError(f"maps: expected at least one pixel, got shape {maps.shape}")
    _check_scores(maps, "maps")
    return _check_binary(masks, "masks"), maps


def _check_fpr_limit(fpr_limit: float) -> float:
    try:
        limit = float(fpr_limit)
    except (TypeError, ValueError):
        raise PadimError(f"fpr_limit: expected a number in (0, 1], got {fpr_limit!r}") from None
    if not 0.0 < limit <= 1.0:  # also rejects NaN
        raise PadimError(f"fpr_limit: expected a number in (0, 1], got {fpr_limit!r}")
    return limit


# ----------------------------------------------------------------------------- image level
def image_auroc(labels, scores, sample_weight=None) -> float:
    """ROC AUC of image scores; labels (N,) 1 = defective, scores (N,), sample_weight (N,) or None."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.ndim != 1:
        raise PadimError(f"labels: expected shape (N,), got {labels.shape}")
    if scores.shape != labels.shape:
        raise PadimError(f"scores: expected the shape of labels {labels.shape}, got {scores.shape}")
    _check_scores(scores, "scores")
    y = _check_binary(labels, "labels")
    present = y
    if sample_weight is not None:
        sample_weight = np.asarray(sample_weight, dtype=np.float64)
        if sample_weight.shape != labels.shape:
            raise PadimError(f"sample_weight: expected shape {labels.shape}, got {sample_weight.shape}")
        if not np.all(np.isfinite(sample_weight) & (sample_weight >= 0)):
            raise PadimError("sample_weight: expected finite non-negative weights")
        present = y[sample_weight > 0]
        if sample_weight.sum() == 0 or present.size == 0:
            raise PadimError("sample_weight: all weights are zero")
    if present.all() or not present.any():
        which = "defective" if not present.any() else "good"
        where = "" if sample_weight is None else " with weight > 0"
        raise PadimError(f"labels: image AUROC needs good and defective images; no {which} image{where}")
    return float(roc_auc_score(y, scores, sample_weight=sample_weight))


# ----------------------------------------------------------------------------- pixel level
def pixel_auroc(masks, maps, image_weights=None) -> float:
    """ROC AUC over all pixels; masks, maps (N, H, W); image_weights (N,) repeat counts or None.

    Equals sklearn's roc_auc_score on the flattened (repeated) pixels, computed from one packed
    sort (several times faster than roc_auc_score on millions of pixels).
    """
    return PixelScores(masks, maps).pixel_auroc(image_weights)


_LOW = np.uint64(0xFFFFFFFF)
_HIGH = np.uint64(0xFFFFFFFF00000000)


def _descending_code(scores: np.ndarray) -> np.ndarray:
    """float32 (P,) -> uint32 (P,) whose ascending order is descending score, equal iff scores tie.

    IEEE bit patterns of non-negative floats are ordered like the values; negative ones in
    reverse. -0.0 gets the code of +0.0.
    """
    bits = scores.view(np.uint32)
    if scores.size and scores.min() >= 0:  # anomaly scores usually are: one op fewer
        code = bits & np.uint32(0x7FFFFFFF)  # drops the sign of -0.0
        return np.subtract(np.uint32(0x7FFFFFFF), code, out=code)
    # Ascending code: non-negative -> set the sign bit, negative -> invert all bits.
    flip = (bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF) | np.uint32(0x80000000)
    code = np.bitwise_xor(bits, flip, out=flip)
    code[code == np.uint32(0x7FFFFFFF)] = np.uint32(0x80000000)  # -0.0 ties with +0.0
    return np.invert(code, out=code)


def _split_sorted_keys(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted packed keys (P,) uint64 -> (group ids (P,) uint32, run-end flags (P,) bool).

    Done in chunks so that the temporaries stay small.
    """
    group = np.empty(key.size, np.uint32)
    run_end = np.empty(key.size, bool)
    for start in range(0, key.size, _CHUNK):
        part = key[start : start + _CHUNK + 1]  # one key of overlap to compare across chunks
        np.bitwise_and(
            part[:-1] if part.size > _CHUNK else part,
            _LOW,
            out=group[start : start + _CHUNK],
            casting="unsafe",
        )
        code = part >> np.uint64(32)
        np.not_equal(code[:-1], code[1:], out=run_end[start : start + code.size - 1])
    run_end[-1] = True
    return group, run_end


def _run_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """(P,) bool marking the last element of each run of equal values (-0.0 == +0.0)."""
    run_end = np.empty(sorted_scores.size, dtype=bool)
    np.not_equal(sorted_scores[:-1], sorted_scores[1:], out=run_end[:-1])
    run_end[-1] = True
    return run_end


class PixelScores:
    """All pixels of a test set sorted once by score, for pixel AUROC and AU-PRO under many weightings.

    masks, maps: (N, H, W). Keeps 5 bytes per pixel (group id + run-end flag) after construction;
    building it takes ~17 bytes per pixel at peak. Maps whose values are exact in float32 (the usual
    case) take the fast packed sort; others (e.g. float64 noise) a slower argsort, same results.

    Attributes: num_images N, num_regions R, num_pixels; region_sizes (R,), region_image (R,)
    (index of the image holding each region); defect_pixels (N,), normal_pixels (N,) per image.
    """

    def __init__(self, masks, maps):
        m, maps = _check_pair(masks, maps)
        n = maps.shape[0]
        hw = maps[0].size
        self.num_images = n
        # (N,) defect and defect-free pixels per image.
        self.defect_pixels = m.reshape(n, hw).sum(axis=1, dtype=np.int64)
        self.normal_pixels = hw - self.defect_pixels
        self._check_classes(np.ones(n, np.int64), "masks")
        labels, n_regions = ndimage.label(m, structure=_STRUCTURE)
        region_pos = np.flatnonzero(m)
        region_lab = labels.reshape(-1)[region_pos].astype(np.int64) - 1
        del labels
        self.num_regions = int(n_regions)
        # (R,) pixels per region and the image holding it.
        self.region_sizes = np.bincount(region_lab, minlength=n_regions).astype(np.int64)
        self.region_image = np.zeros(n_regions, np.int64)
        self.region_image[region_lab] = region_pos // hw
        if n_regions + n >= 2**32:
            raise PadimError(f"maps: too many images + regions ({n} + {n_regions}) for 32-bit group ids")
        # One uint64 per pixel: descending-score code in the high 32 bits (fast path), group id in
        # the low 32 bits (region r -> r, defect-free pixel of image i -> R + i).
        flat = maps.reshape(-1)
        s32 = _as_float32_if_exact(flat)
        key = np.zeros(flat.size, np.uint64)
        if s32 is not None:
            key[:] = _descending_code(s32)
            key <<= np.uint64(32)
        key.reshape(n, hw)[:] |= (np.arange(n, dtype=np.uint64) + np.uint64(n_regions))[:, None]
        key[region_pos] = (key[region_pos] & _HIGH) | region_lab.astype(np.uint64)
        del region_pos, region_lab
        if s32 is not None:
            # Sorting values is about twice as fast as an argsort and needs no gather; the order
            # inside a run of tied scores does not matter.
            key.sort()
            self._group, self._run_end = _split_sorted_keys(key)
        else:
            order = np.argsort(flat, kind="stable")[::-1]
            self._group = (key[order] & _LOW).astype(np.uint32)
            self._run_end = _run_ends(flat[order])
        del key
        self.num_pixels = self._group.size
        self._num_runs = int(np.count_nonzero(self._run_end))  # distinct scores

    # -- cumulative pass ------------------------------------------------------------------
    def _check_classes(self, w: np.ndarray, arg: str) -> None:
        """Both pixel classes must keep a positive weight, else AUROC and PRO are undefined."""
        for count, what in ((self.defect_pixels, "defect"), (self.normal_pixels, "defect-free")):
            if int(w @ count) == 0:
                where = "" if arg == "masks" else " in the images with weight > 0"
                raise PadimError(f"{arg}: no {what} pixel{where}; pixel AUROC and PRO are undefined")

    def _weights(self, image_weights) -> np.ndarray:
        if image_weights is None:
            return np.ones(self.num_images, np.int64)
        w = _check_weights(image_weights, self.num_images)
        self._check_classes(w, "image_weights")
        return w

    def _points(self, w: np.ndarray, columns: Sequence[str], fpr_stop: float | None = None) -> dict:
        """Cumulative sums at the end of each run of tied scores (descending), with a leading 0.

        columns: any of "fp" (weighted defect-free pixels), "tp" (weighted defect pixels), "pro"
        (sum over marked region pixels of weight / region size). Returns {column: (K + 1,) float64}.
        Runs whose pixels all have weight 0 are dropped, so the points equal those of the
        physically repeated data. With `fpr_stop`, the pass stops once a point has
        fp / total > fpr_stop (the rest of the curve is not needed for the partial AUC).
        """
        w_region = w[self.region_image]
        zeros_n, zeros_r = np.zeros(self.num_images, np.int64), np.zeros(self.num_regions, np.int64)
        filter_zero = bool((w == 0).any())
        columns = list(dict.fromkeys(["fp", *columns, *(["tp"] if filter_zero else [])]))
        tables = {
            "fp": np.concatenate([zeros_r, w]),
            "tp": np.concatenate([w_region, zeros_n]),
            "pro": np.concatenate([w_region / self.region_sizes, zeros_n.astype(np.float64)]),
        }
        tables = {c: tables[c] for c in columns}
        fp_stop = np.inf if fpr_stop is None else fpr_stop * int(w @ self.normal_pixels)
        # Filled up to `pos`; np.empty commits no memory for the part an early stop never writes.
        out = {c: np.empty(self._num_runs + 1) for c in columns}
        carry = dict.fromkeys(columns, 0)
        for o in out.values():
            o[0] = 0.0
        pos = 1
        for start in range(0, self.num_pixels, _CHUNK):
            g = self._group[start : start + _CHUNK]
            ends = self._run_end[start : start + _CHUNK]
            k = int(np.count_nonzero(ends))
            for c, table in tables.items():
                part = table[g]
                np.cumsum(part, out=part)
                part += carry[c]
                carry[c] = part[-1]
                out[c][pos : pos + k] = part[ends]  # integer counts stay exact in float64 (< 2**53)
            pos += k
            # Chunk ends may split runs: test the last run end (curve point), not the chunk end.
            if out["fp"][pos - 1] > fp_stop:
                break
        out = {c: o[:pos] for c, o in out.items()}
        if filter_zero:
            # A run adds weight iff the weighted pixel count grows.
            count = out["fp"] + out["tp"]
            keep = np.empty(pos, bool)
            keep[0] = True
            np.greater(count[1:], count[:-1], out=keep[1:])
            out = {c: o[keep] for c, o in out.items()}
        return out

    # -- metrics --------------------------------------------------------------------------
    def pixel_auroc(self, image_weights=None) -> float:
        """Pixel ROC AUC; image_weights (N,) repeat counts or None. Equals sklearn's roc_auc_score."""
        w = self._weights(image_weights)
        pts = self._points(w, ["fp", "tp"])
        fpr = np.divide(pts["fp"], int(w @ self.normal_pixels), out=pts["fp"])
        tpr = np.divide(pts["tp"], int(w @ self.defect_pixels), out=pts["tp"])
        return float(auc(fpr, tpr))

    def _curve(self, w: np.ndarray, fpr_stop: float | None) -> tuple[np.ndarray, np.ndarray]:
        pts = self._points(w, ["fp", "pro"], fpr_stop=fpr_stop)
        fp_total = int(w @ self.normal_pixels)
        complete = pts["fp"][-1] == fp_total and fpr_stop is None
        fpr = np.divide(pts["fp"], fp_total, out=pts["fp"])
        regions_total = int(w[self.region_image].sum())  # regions of a repeated image repeat
        pro = np.divide(pts["pro"], regions_total, out=pts["pro"])
        np.minimum(pro, 1.0, out=pro)
        if complete:
            pro[-1] = 1.0  # 1 in exact arithmetic (every pixel marked); drop the rounding of the sum
        return fpr, pro

    def pro_curve(self, image_weights=None) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, pro), each (K + 1,): (0, 0) then one point per distinct score, by descending score.

        fpr is non-decreasing; the last point, at the lowest score, is (1, 1).
        """
        return self._curve(self._weights(image_weights), None)

    def pro_auc(self, image_weights=None, fpr_limit: float = 0.3) -> float:
        """Area under the PRO curve up to fpr_limit, divided by fpr_limit (in [0, 1])."""
        limit = _check_fpr_limit(fpr_limit)
        # Only the curve up to the first point beyond the limit is needed: stop the pass there.
        fpr, pro = self._curve(self._weights(image_weights), limit)
        return partial_area(fpr, pro, limit) / limit


def _as_float32_if_exact(scores: np.ndarray) -> np.ndarray | None:
    """scores as float32 when that keeps every value (hence order and ties), else None."""
    if scores.dtype == np.float32:
        return scores
    if scores.dtype in (np.float16, np.int8, np.uint8, np.int16, np.uint16):
        return scores.astype(np.float32)
    s32 = scores.astype(np.float32)
    # An exact round trip means distinct values stay distinct in float32.
    if np.array_equal(s32.astype(scores.dtype), scores):
        return s32
    return None


def partial_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under (x, y), x non-decreasing, on [x[0], limit]; linear interpolation at limit."""
    idx = int(np.searchsorted(x, limit, side="right"))  # first point beyond the limit
    xs, ys = x[:idx], y[:idx]
    if idx < len(x) and xs[-1] < limit:
        y_lim = ys[-1] + (y[idx] - ys[-1]) * (limit - xs[-1]) / (x[idx] - xs[-1])
        xs, ys = np.append(xs, limit), np.append(ys, y_lim)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def pro_curve(masks, maps, image_weights=None) -> tuple[np.ndarray, np.ndarray]:
    """PRO curve (fpr, pro) at every distinct score; masks, maps (N, H, W); see the module docstring."""
    return PixelScores(masks, maps).pro_curve(image_weights)


def pro_auc(masks, maps, fpr_limit: float = 0.3, image_weights=None) -> float:
    """AU-PRO up to fpr_limit, normalised by fpr_limit; masks, maps (N, H, W)."""
    limit = _check_fpr_limit(fpr_limit)  # before the expensive sort
    return PixelScores(masks, maps).pro_auc(image_weights, fpr_limit=limit)


# ----------------------------------------------------------------------------- tables
def aggregate(
    per_class: pd.DataFrame, kinds: Mapping[str, str], value_cols: Sequence[str] | None = None
) -> pd.DataFrame:
    """Per-class rows followed by group means: "textures", "objects" (other kinds: the kind name), "all".

    per_class: one row per class, the class name in a "category" column or in the index.
    kinds: class -> kind ("texture", "object", or any other label). value_cols: columns to
    average (default: every numeric column). Means are unweighted over classes and NaN-propagating
    (a group mean is NaN when one of its classes lacks the value). A kind with no class gets no
    row. Returns a DataFrame indexed by "category" with value_cols as columns.
    """
    table = per_class.set_index("category") if "category" in per_class.columns else per_class
    table = table.copy()
    table.index = table.index.astype(str).rename("category")
    if table.index.has_duplicates:
        dups = sorted(set(table.index[table.index.duplicated()]))
        raise PadimError(f"per_class: expected one row per category, duplicated: {dups}")
    cols = list(table.select_dtypes("number").columns) if value_cols is None else list(value_cols)
    missing_cols = [c for c in cols if c not in table.columns]
    if missing_cols:
        raise PadimError(f"value_cols: not columns of per_class: {missing_cols}")
    unknown = [c for c in table.index if c not in kinds]
    if unknown:
        raise PadimError(f"kinds: no kind given for categories {unknown}")
    values = table[cols]
    # skipna=False: a class lacking a value must not be silently averaged away.
    groups = values.groupby(table.index.map(kinds), sort=False).agg(lambda s: s.mean(skipna=False))
    order = [k for k in KIND_ROWS if k in groups.index] + [k for k in groups.index if k not in KIND_ROWS]
    groups = groups.loc[order].rename(index=KIND_ROWS)
    overall = values.mean(skipna=False).to_frame("all").T
    out = pd.concat([values, groups, overall])
    out.index.name = "category"
    return out
