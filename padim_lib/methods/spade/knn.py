"""SPADE's nearest-neighbour distances, computed in bounded blocks on the device.

Shapes: one test image's layer maps, position-major, x_l (P_l, C_l) with P_l = h_l * w_l, layers
finest first (grid h_1 x w_1 = P_1); the training gallery of layer l, gal_l (N, P_l, C_l), each
layer at its own resolution, and its squared norms gal_sq_l (N, P_l); `index` (K,) the training
images whose pixel features this test image is compared with.

Squared distances are ||x||^2 + ||y||^2 - 2 x.y: one `addmm` per block yields ||y||^2 - 2 x.y,
the smallest values are kept (running minimum, or running top-kappa), and ||x||^2 is added only
to the kept values. A block covers a few gallery images (at most `block_bytes` of distances), so
memory does not grow with K or N: no (P_1, K * P_1) matrix is ever held.

Aligned concatenation ("concat") without building it: the aligned embedding of a position repeats
the coarse layers' vectors (nearest-exact, as padim_lib.features.extractor.align_concat), so its squared
distance is the sum over layers of the layer distances between the coarse cells that hold the two
positions. Each layer's distances are computed at its own resolution (P_l x P_l per image pair,
16x fewer products than on the fine grid for a layer 4x coarser) and combined coarse-to-fine
(see `pixel_distances_concat`). At WR50 shapes this does ~6x fewer multiply-adds than distances
on the 1792-channel concatenation, and the matrix products are ~90% of the time
(benchmarks/bench_spade.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F

# Bytes of one block of distances (float32): a few gallery images per matrix product. Fewer,
# larger products thread better: 256 MiB (6 WR50 layer-1 images) took ~25% less CPU than 64 MiB.
CPU_BLOCK_BYTES = 256 * 1024**2
GPU_BLOCK_BYTES = 1024**3


def block_bytes(device: torch.device) -> int:
    return GPU_BLOCK_BYTES if device.type == "cuda" else CPU_BLOCK_BYTES


def image_knn(test: torch.Tensor, train: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances (B, n) to the n nearest training vectors, ascending, and their indices (B, n).

    test (B, C), train (N, C): the average-pooled global features. B x N is small, so the exact
    (difference-based, not the ||x||^2 + ||y||^2 - 2 x.y) Euclidean distance is affordable."""
    dist = torch.cdist(test[None], train[None], compute_mode="donot_use_mm_for_euclid_dist")[0]
    return torch.topk(dist, n, dim=1, largest=False, sorted=True)


def nearest_index(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """(n_out,) index of the input cell each output cell copies under nearest-exact upsampling
    n_in -> n_out: exactly the interpolation align_concat uses, applied to the cell numbers."""
    cells = torch.arange(n_in, dtype=torch.float64)[None, None]
    return F.interpolate(cells, size=n_out, mode="nearest-exact")[0, 0].long().to(device)


class _Smallest:
    """Running `kappa` smallest values per row over column blocks -> (R, kappa), ascending."""

    def __init__(self, kappa: int):
        self.kappa, self.values = kappa, None

    def add(self, block: torch.Tensor) -> None:
        if self.kappa == 1:
            low = block.amin(dim=1, keepdim=True)
            self.values = low if self.values is None else torch.minimum(self.values, low)
            return
        low = block.topk(min(self.kappa, block.shape[1]), dim=1, largest=False).values
        if self.values is not None:
            low = torch.cat([self.values, low], dim=1)
            low = low.topk(min(self.kappa, low.shape[1]), dim=1, largest=False).values
        self.values = low


def _mean_root(sq_smallest: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
    """Mean over the kept neighbours of sqrt(||x||^2 + (||y||^2 - 2 x.y)) -> (R,)."""
    return (sq_smallest + x_sq[:, None]).clamp_min_(0).sqrt_().mean(dim=1)


def _chunks(index: torch.Tensor, rows: int, cols: int, budget: int) -> tuple[torch.Tensor, ...]:
    per_image = 4 * rows * cols
    return index.split(max(1, budget // per_image))


def _scores(x: torch.Tensor, gal: torch.Tensor, gal_sq: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
    """||y||^2 - 2 x.y for x (P, C) against the gallery images `chunk`: (P, g * P_gal)."""
    y = gal[chunk].flatten(0, 1)  # (g * P_gal, C)
    return torch.addmm(gal_sq[chunk].reshape(1, -1), x, y.T, alpha=-2.0)


def pixel_distances_per_layer(
    xs: Sequence[torch.Tensor],
    gals: Sequence[torch.Tensor],
    gal_sqs: Sequence[torch.Tensor],
    index: torch.Tensor,
    kappa: int,
    budget: int = CPU_BLOCK_BYTES,
) -> list[torch.Tensor]:
    """Per layer, (P_l,): mean distance of each test position to its kappa nearest pixel features
    of layer l among the gallery images `index` (the most-used public SPADE code, kappa = 1)."""
    out = []
    for x, gal, gal_sq in zip(xs, gals, gal_sqs, strict=True):
        keep = _Smallest(kappa)
        for chunk in _chunks(index, x.shape[0], gal.shape[1], budget):
            keep.add(_scores(x, gal, gal_sq, chunk))
        out.append(_mean_root(keep.values, x.pow(2).sum(1)))
    return out


def _cell_min(acc: torch.Tensor, rows: int, rh: int, w: int, rw: int) -> torch.Tensor:
    """acc (R, rows * rh * w * rw), columns (rows, rh, w, rw) -> (R, rows * w): the minimum over
    each rh x rw cell. Pairwise torch.minimum over strided slices, first within a grid row, then
    across rows: ~10x faster on CPU than amin over the two short strided axes."""
    r = acc.shape[0]
    v = acc.view(r, rows * rh * w, rw)
    m = v[..., 0]
    for j in range(1, rw):
        m = torch.minimum(m, v[..., j])
    v = m.reshape(r, rows, rh, w)
    m = v[:, :, 0]
    for j in range(1, rh):
        m = torch.minimum(m, v[:, :, j])
    return m.reshape(r, rows * w)


def nested(grids: Sequence[tuple[int, int]]) -> bool:
    """True when every cell of a layer splits into whole cells of the next finer layer (integer
    ratios between consecutive grids, finest first): then nearest-exact alignment nests."""
    return all(h0 % h1 == 0 and w0 % w1 == 0 for (h0, w0), (h1, w1) in pairwise(grids))


def pixel_distances_concat(
    xs: Sequence[torch.Tensor],
    grids: Sequence[tuple[int, int]],
    gals: Sequence[torch.Tensor],
    gal_sqs: Sequence[torch.Tensor],
    index: torch.Tensor,
    kappa: int,
    budget: int = CPU_BLOCK_BYTES,
) -> torch.Tensor:
    """(P_1,): mean distance of each test position's aligned, concatenated embedding to its kappa
    nearest among the aligned embeddings of all positions of the gallery images `index`.

    kappa = 1 on nested grids (the usual case): the minimum is taken coarse-to-fine. A layer-l term
    is constant over the fine gallery columns of one layer-l cell, so the minimum over those columns
    can be taken before adding it: min_q sum_l D_l = min over layer-2 cells of (D_2 + min over their
    layer-1 columns of D_1), and so on. Only the first layer's block is full size (P_1, g * P_1);
    it is reduced to (P_1, g * P_2) at once, and the coarser terms are added at that size.
    Otherwise every layer's block is expanded onto the fine columns and added (any kappa, any grids).
    """
    (h1, w1), p1 = grids[0], xs[0].shape[0]
    device = xs[0].device
    # Fine position -> cell of layer l, per layer: rows (test side) and columns (gallery side).
    cells = []
    for h, w in grids:
        ih, iw = nearest_index(h, h1, device), nearest_index(w, w1, device)
        cells.append((ih[:, None] * w + iw[None, :]).reshape(-1))
    x_sq = sum(x.pow(2).sum(1)[c] for x, c in zip(xs, cells, strict=True))  # (P_1,)
    coarse_to_fine = kappa == 1 and nested(grids)
    keep = _Smallest(kappa)
    for chunk in _chunks(index, p1, p1, budget):
        g = chunk.numel()
        acc = _scores(xs[0], gals[0], gal_sqs[0], chunk)  # (P_1, g * P_1)
        for i in range(1, len(xs)):
            (h, w), (hf, wf), p = grids[i], grids[i - 1], xs[i].shape[0]
            d = _scores(xs[i], gals[i], gal_sqs[i], chunk)  # (P_l, g * P_l): own resolution
            if coarse_to_fine:  # min over the finer columns of each layer-l cell: (P_1, g * P_l)
                acc = _cell_min(acc, g * h, hf // h, w, wf // w)
            else:  # layer-l block onto the fine columns: (P_l, g * P_1)
                d = d.index_select(1, (torch.arange(g, device=device)[:, None] * p + cells[i]).reshape(-1))
            if h1 % h == 0 and w1 % w == 0:  # whole cells: rows by a broadcast add, no full-size copy
                acc.view(h, h1 // h, w, w1 // w, -1).add_(d.view(h, 1, w, 1, -1))
            else:
                acc.add_(d.index_select(0, cells[i]))
        keep.add(acc)
        del acc
    return _mean_root(keep.values, x_sq)
