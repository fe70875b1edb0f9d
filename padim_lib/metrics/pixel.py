"""Pixel AUROC and AU-PRO: one engine (`PixelScores`) and one-shot shortcuts to it.

Validation, regions, one sort, two exact evaluations. Definitions (pixel AUROC, PRO curve, AU-PRO,
image repeat counts) are in padim_lib.metrics.

Algorithm. All pixels are sorted once by descending score, defect pixels first inside a run of
tied scores, and kept as one uint32 "group" per pixel (region r -> r, defect-free pixel of image
i -> R + i) plus a run-end flag (5 bytes per pixel). Two evaluations read that order:

* the cumulative pass (unweighted metrics, every curve, and weightings too large for the pair
  tables): cumulative sums of per-pixel contributions (defect-free pixel: its image weight to
  the false-positive count; region pixel: image weight / region size to the PRO sum), read at
  the last pixel of each run of tied scores; O(P) per evaluation;
* the pair tables (`metrics.pairs`, built on the first weighted call): both areas are sums over
  pairs of images, so a weighting costs O(N^2 + P / C) instead of a pass over all P pixels.
  On an MVTec-sized class (150 images of 224 x 224) one weighting takes ~1 ms instead of ~0.4 s
  (benchmarks/bench_metrics.py); the results agree to ~1e-13.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc

from padim_lib.errors import PadimError
from padim_lib.metrics.pairs import PairTables, partial_area

# Ground-truth regions: 8-connectivity inside an image (the 3x3 structuring element) ...
CONNECTIVITY = ndimage.generate_binary_structure(2, 2)
# ... and none along the image axis of an (N, H, W) stack: regions never span two images.
_STACK_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STACK_STRUCTURE[1] = CONNECTIVITY

# Pixels handled per step of the cumulative pass: bounds the temporaries to a few tens of MB.
_CHUNK = 1 << 22
_LOW = np.uint64(0xFFFFFFFF)
_HIGH = np.uint64(0xFFFFFFFF00000000)


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
    """(n,) non-negative integer repeat counts as int64 (the one check of weights for every metric)."""
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


# ----------------------------------------------------------------------------- the sort
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
    """Sorted packed keys (P,) uint64 -> (group ids (P,) uint32, run-end flags (P,) bool), in chunks."""
    group = np.empty(key.size, np.uint32)
    run_end = np.empty(key.size, bool)
    for start in range(0, key.size, _CHUNK):
        part = key[start : start + _CHUNK + 1]  # one key of overlap to compare across chunks
        np.bitwise_and(part[:-1] if part.size > _CHUNK else part, _LOW, out=group[start : start + _CHUNK],
                       casting="unsafe")
        code = part >> np.uint64(32)
        np.not_equal(code[:-1], code[1:], out=run_end[start : start + code.size - 1])
    run_end[-1] = True
    return group, run_end


def _as_float32_if_exact(scores: np.ndarray) -> np.ndarray | None:
    """scores as float32 when that keeps every value (hence order and ties), else None."""
    if scores.dtype == np.float32:
        return scores
    if scores.dtype in (np.float16, np.int8, np.uint8, np.int16, np.uint16):
        return scores.astype(np.float32)
    s32 = scores.astype(np.float32)
    # An exact round trip means distinct values stay distinct in float32.
    return s32 if np.array_equal(s32.astype(scores.dtype), scores) else None


# ----------------------------------------------------------------------------- the engine
class PixelScores:
    """All pixels of a test set sorted once by score, for pixel AUROC and AU-PRO under many weightings.

    masks, maps: (N, H, W). fpr_limit: the default limit of `pro_auc`. Weightings other than
    "each image once" use pair tables of at most `checkpoints` (C) checkpoints, C (N, N) float64
    matrices bounded by `memory_budget` bytes; when even 4 do not fit (N above ~1,400 at the
    default budget), they use the cumulative pass. Keeps 5 bytes per pixel; building takes ~17
    bytes per pixel at peak, the pair tables ~40 while they are built. Maps exact in float32
    (the usual case) take a packed value sort; others (e.g. float64 noise) a lexsort, same results.

    Attributes: num_images N, num_regions R, num_pixels; region_sizes (R,), region_image (R,)
    (index of the image holding each region); defect_pixels (N,), normal_pixels (N,) per image.
    """

    def __init__(self, masks, maps, *, fpr_limit: float = 0.3, checkpoints: int = 128,
                 memory_budget: int = 256 * 1024**2):
        self.fpr_limit = _check_fpr_limit(fpr_limit)  # before the expensive sort
        m, maps = _check_pair(masks, maps)
        n, hw = maps.shape[0], maps[0].size
        self.num_images = n
        self.defect_pixels = m.reshape(n, hw).sum(axis=1, dtype=np.int64)  # (N,)
        self.normal_pixels = hw - self.defect_pixels  # (N,)
        self._check_classes(np.ones(n, np.int64), "masks")
        labels, n_regions = ndimage.label(m, structure=_STACK_STRUCTURE)
        region_pos = np.flatnonzero(m)
        region_lab = labels.reshape(-1)[region_pos].astype(np.int64) - 1
        del labels
        self.num_regions = int(n_regions)
        self.region_sizes = np.bincount(region_lab, minlength=n_regions).astype(np.int64)  # (R,)
        self.region_image = np.zeros(n_regions, np.int64)  # (R,)
        self.region_image[region_lab] = region_pos // hw
        if n_regions + n >= 2**32:
            raise PadimError(f"maps: too many images + regions ({n} + {n_regions}) for 32-bit group ids")
        # One uint64 per pixel: descending-score code in the high 32 bits (fast path), group id in
        # the low 32 bits. Region groups (< R) sort before defect-free ones among tied scores.
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
            key.sort()  # a value sort: about twice as fast as an argsort, and no gather
            self._group, self._run_end = _split_sorted_keys(key)
        else:
            # Ascending score, descending group among ties; reversed: what the packed sort gives.
            order = np.lexsort(((key & _LOW).astype(np.int64) * -1, flat))[::-1]
            self._group = (key[order] & _LOW).astype(np.uint32)
            self._run_end = np.empty(flat.size, bool)
            np.not_equal(flat[order][:-1], flat[order][1:], out=self._run_end[:-1])  # -0.0 == +0.0
            self._run_end[-1] = True
        del key
        self.num_pixels = self._group.size
        self._num_runs = int(np.count_nonzero(self._run_end))  # distinct scores
        self._pair_limits = (int(checkpoints), int(memory_budget))
        self._pairs: PairTables | None = None

    # -- weights --------------------------------------------------------------------------
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

    def _pair_tables(self, w: np.ndarray) -> PairTables | None:
        """The pair tables for a weighting other than all ones, when they fit in memory (else None)."""
        if (w == 1).all():
            return None  # the cumulative pass: one pass, equal to sklearn to the last bit
        if self._pairs is None:
            checkpoints, budget = self._pair_limits
            affordable = budget // max(1, 16 * self.num_images**2) - 1  # (C + 1) N x N float64 + temporaries
            if affordable < 4:
                return None
            self._pairs = PairTables(self._group, self._run_end, self.region_image, self.region_sizes,
                                     self.num_images, max(1, min(checkpoints, affordable)))
        return self._pairs

    # -- cumulative pass ------------------------------------------------------------------
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
            count = out["fp"] + out["tp"]  # a run adds weight iff the weighted pixel count grows
            keep = np.empty(pos, bool)
            keep[0] = True
            np.greater(count[1:], count[:-1], out=keep[1:])
            out = {c: o[keep] for c, o in out.items()}
        return out

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

    # -- metrics --------------------------------------------------------------------------
    def pixel_auroc(self, image_weights=None) -> float:
        """Pixel ROC AUC; image_weights (N,) repeat counts or None. Equals sklearn's roc_auc_score."""
        w = self._weights(image_weights)
        pairs = self._pair_tables(w)
        if pairs is not None:
            return pairs.pixel_auroc(w)
        pts = self._points(w, ["fp", "tp"])
        fpr = np.divide(pts["fp"], int(w @ self.normal_pixels), out=pts["fp"])
        tpr = np.divide(pts["tp"], int(w @ self.defect_pixels), out=pts["tp"])
        return float(auc(fpr, tpr))

    def pro_auc(self, image_weights=None, fpr_limit: float | None = None) -> float:
        """Area under the PRO curve up to fpr_limit (default: the instance's), divided by it (in [0, 1])."""
        limit = self.fpr_limit if fpr_limit is None else _check_fpr_limit(fpr_limit)
        w = self._weights(image_weights)
        pairs = self._pair_tables(w)
        if pairs is not None:
            return pairs.pro_auc(w, limit)
        # Only the curve up to the first point beyond the limit is needed: stop the pass there.
        fpr, pro = self._curve(w, limit)
        return partial_area(fpr, pro, limit) / limit

    def pro_curve(self, image_weights=None) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, pro), each (K + 1,): (0, 0) then one point per distinct score, by descending score.

        fpr is non-decreasing; the last point, at the lowest score, is (1, 1).
        """
        return self._curve(self._weights(image_weights), None)

    def roc_curve(self, image_weights=None) -> tuple[np.ndarray, np.ndarray]:
        """Pixel ROC (fpr, tpr), each (K + 1,): (0, 0) then one point per distinct score, ending at (1, 1)."""
        w = self._weights(image_weights)
        pts = self._points(w, ["fp", "tp"])
        return pts["fp"] / int(w @ self.normal_pixels), pts["tp"] / int(w @ self.defect_pixels)


# ----------------------------------------------------------------------------- one-shot shortcuts
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
