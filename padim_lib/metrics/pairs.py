"""Pair tables: pixel AUROC and AU-PRO of one sorted test set under any image weighting in O(N^2).

Used by `metrics.pixel.PixelScores` for weightings (bootstrap replicates); numpy only.

Why this is possible: both areas are sums over (defect-free pixel q, defect pixel p) pairs whose
weights factor per image. With all pixels sorted once by descending score,
  pixel AUROC(w) = sum_ij w_j w_i A_ji / ((w . pos)(w . neg)),
  A_ji = #(q in image j, p in image i, s_p > s_q) + 0.5 #(... s_p = s_q),
and the PRO area up to a run boundary b is, with CN_j(b) the defect-free pixels of image j ranked
before b and G_i(b) the region fractions (1 / region size per pixel) of image i there,
  sum_ij w_j w_i [CN_j(b) G_i(b) - Q_ji(b)] / ((w . neg)(w . regions)),
where Q(b) accumulates, over defect pixels p ranked before b, a_p times the defect-free pixels
ranked before p's run (plus half of those tied with it). CN, G and Q are stored at C checkpoints;
a weighting finds the checkpoint before its own FPR = fpr_limit crossing and walks the few pixels
to the crossing (interpolating there as the cumulative pass does).
"""

from __future__ import annotations

import numpy as np


def partial_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under (x, y), x non-decreasing, on [x[0], limit]; linear interpolation at limit."""
    idx = int(np.searchsorted(x, limit, side="right"))  # first point beyond the limit
    xs, ys = x[:idx], y[:idx]
    if idx < len(x) and xs[-1] < limit:
        y_lim = ys[-1] + (y[idx] - ys[-1]) * (limit - xs[-1]) / (x[idx] - xs[-1])
        xs, ys = np.append(xs, limit), np.append(ys, y_lim)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


class PairTables:
    """Per-image-pair sums of one sorted test set; a weighting then costs O(C N + N^2 + P / C).

    group (P,) uint32 and run_end (P,) bool: the pixels sorted by descending score, defect pixels
    first among tied scores; group r < R is region r, group R + i a defect-free pixel of image i.
    region_image, region_sizes (R,); n images; checkpoints C >= 1. Keeps (C + 1) (N, N) float64
    and references group / run_end (no copy).
    """

    def __init__(self, group: np.ndarray, run_end: np.ndarray, region_image: np.ndarray,
                 region_sizes: np.ndarray, n: int, checkpoints: int):
        self._group, self._run_end = group, run_end
        self._region_image, self._inv_size = region_image, 1.0 / region_sizes
        self._r = len(region_sizes)
        self.regions = np.bincount(region_image, minlength=n).astype(np.float64)  # (N,) regions per image
        img, is_pos, a = self._pixels(slice(None))
        self.pos = np.bincount(img[is_pos], minlength=n).astype(np.float64)  # (N,) defect pixels
        self.neg = np.bincount(img[~is_pos], minlength=n).astype(np.float64)  # (N,) defect-free pixels
        p = group.size
        run_start = np.empty(p, bool)
        run_start[0] = True
        run_start[1:] = run_end[:-1]
        starts = np.flatnonzero(run_start)
        # Checkpoint boundaries at run starts (whole runs per interval), about P / C pixels apart.
        want = np.linspace(0, p, checkpoints + 1)[1:-1]
        inner = starts[np.searchsorted(starts, want).clip(0, len(starts) - 1)]
        self._b = np.unique(np.concatenate([[0], inner[inner > 0], [p]]))
        c = len(self._b) - 1
        interval = np.repeat(np.arange(c), np.diff(self._b))  # (P,) checkpoint interval of each pixel
        neg_i, pos_i = np.flatnonzero(~is_pos), np.flatnonzero(is_pos)
        # CN, G at checkpoints: (C+1, N), row c = pixels ranked before b_c.
        self._cn = np.zeros((c + 1, n))
        self._cn[1:] = np.bincount(interval[neg_i] * n + img[neg_i], minlength=c * n).reshape(c, n).cumsum(0)
        self._g = np.zeros((c + 1, n))
        self._g[1:] = np.bincount(interval[pos_i] * n + img[pos_i], weights=a[pos_i],
                                  minlength=c * n).reshape(c, n).cumsum(0)

        # NB(p): defect-free pixels per image ranked before defect pixel p, (N,) per p, in blocks.
        gap = np.cumsum(is_pos)[neg_i]  # defect pixels before each defect-free pixel (non-decreasing)
        dq = np.zeros((c + 1, n, n))  # dq[c, i, j]: sum of a_p NB_j(p) over p in interval c-1, image i
        auc_pairs = np.zeros((n, n))  # [i, j]: sum over p in image i of NB_j(p)
        carry = np.zeros(n)
        block = max(1, (1 << 22) // max(n, 1))
        for t0 in range(0, len(pos_i), block):
            t1 = min(t0 + block, len(pos_i))
            lo, hi = np.searchsorted(gap, [t0, t1])
            counts = np.bincount((gap[lo:hi] - t0) * n + img[neg_i[lo:hi]], minlength=(t1 - t0) * n)
            nb = counts.reshape(t1 - t0, n).cumsum(0) + carry  # (block, N)
            carry = nb[-1].copy()  # defect-free pixels with gap t1 (after p_{t1-1}) start the next block
            q = pos_i[t0:t1]
            _add_rows(auc_pairs, img[q], nb)
            _add_rows(dq.reshape((c + 1) * n, n), (interval[q] + 1) * n + img[q], nb * a[q, None])
        # Half of the defect-free pixels tied with a defect pixel (runs holding both kinds).
        _add_tied_pairs(auc_pairs, dq, img, is_pos, a, run_start, interval, n)
        np.cumsum(dq, axis=0, out=dq)
        self._q = dq.transpose(0, 2, 1)  # (C+1, N_j, N_i)
        self._auc = np.outer(self.neg, self.pos) - auc_pairs.T  # (N_j, N_i)

    def _pixels(self, sl: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image (n,) int64, is-defect (n,) bool, region fraction (n,) float64) of sorted pixels `sl`."""
        g = self._group[sl]
        is_pos = g < self._r
        img = g.astype(np.int64) - self._r
        a = np.zeros(g.size)
        if is_pos.any():
            reg = g[is_pos]
            img[is_pos] = self._region_image[reg]
            a[is_pos] = self._inv_size[reg]
        return img, is_pos, a

    def pixel_auroc(self, w: np.ndarray) -> float:
        """Pixel ROC AUC under image repeat counts w (N,) (checked by the caller)."""
        w = np.asarray(w, np.float64)
        return float(w @ self._auc @ w / ((w @ self.pos) * (w @ self.neg)))

    def pro_auc(self, w: np.ndarray, fpr_limit: float) -> float:
        """AU-PRO up to fpr_limit, divided by it, under image repeat counts w (N,)."""
        w = np.asarray(w, np.float64)
        fp_total, r_total = w @ self.neg, w @ self.regions
        fp = self._cn @ w  # (C+1,) non-decreasing
        c = int(np.searchsorted(fp, fpr_limit * fp_total, side="right")) - 1
        g_c = self._g[c] @ w
        area = (fp[c] * g_c - w @ self._q[c] @ w) / (fp_total * r_total)
        if c < len(self._b) - 1:  # walk the pixels of the next interval up to the crossing
            img, is_pos, a = self._pixels(slice(self._b[c], self._b[c + 1]))
            wi = w[img]
            ends = self._run_end[self._b[c] : self._b[c + 1]]
            x = np.concatenate([[fp[c]], fp[c] + np.cumsum(np.where(is_pos, 0.0, wi))[ends]]) / fp_total
            y = np.concatenate([[g_c], g_c + np.cumsum(wi * a)[ends]]) / r_total
            area += partial_area(x, np.minimum(y, 1.0), fpr_limit)
        return float(area / fpr_limit)


def _add_rows(target: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """target[index[k]] += rows[k] for repeated indices (sort + reduceat; np.add.at is slow)."""
    if len(index) == 0:
        return
    order = np.argsort(index, kind="stable")
    idx = index[order]
    first = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    target[idx[first]] += np.add.reduceat(rows[order], first, axis=0)


def _add_tied_pairs(auc_pairs, dq, img, is_pos, a, run_start, interval, n) -> None:
    """Add half of the (defect, defect-free) pairs tied in a run to auc_pairs [i, j] and dq [c + 1, i, j]."""
    run_end = np.r_[run_start[1:], True]
    tied = np.flatnonzero(~(run_start & run_end))  # pixels in runs of two or more (rare for float maps)
    if tied.size == 0:
        return
    run = np.cumsum(run_start[tied]) - 1  # tied pixels come in whole runs, so this numbers them
    k = int(run[-1]) + 1
    pos_t = is_pos[tied]
    mixed = (np.bincount(run, weights=pos_t, minlength=k) > 0) & (np.bincount(run, weights=~pos_t, minlength=k) > 0)
    sel = mixed[run]
    if not sel.any():
        return
    ids, local = np.unique(run[sel], return_inverse=True)
    k = len(ids)
    pix = tied[sel]
    key = local * n + img[pix]
    pos_n = np.bincount(key, weights=is_pos[pix], minlength=k * n).reshape(k, n)
    pos_a = np.bincount(key, weights=a[pix], minlength=k * n).reshape(k, n)
    neg_n = np.bincount(key, weights=~is_pos[pix], minlength=k * n).reshape(k, n)
    run_interval = np.zeros(k, np.int64)
    run_interval[local] = interval[pix]
    auc_pairs += 0.5 * (pos_n.T @ neg_n)
    for ci in np.unique(run_interval):
        rows = run_interval == ci
        dq[ci + 1] += 0.5 * (pos_a[rows].T @ neg_n[rows])
