"""A fitted PaDiM as one torch module from images to maps and scores, written in ops ONNX has.

`PaDiMGraph` wraps the frozen backbone and the fitted `PaDiMModel`s (their buffers, unchanged)
and computes what `PaDiM.predict` computes, without its blockwise loops:

    images (N, 3, H, W) -> layer maps -> embedding (N, D, h, w) -> distances (N, h, w)
                        -> maps = A_h @ distances @ A_w^T (N, H, W) -> scores = max of each map (N,)

* Alignment and channel choice are gathers with constant indices, found once at construction
  (torch's own "nearest-exact" of each coarse grid, `split_channels` of the model's channel index).
* The Mahalanobis distance uses the stored inverse Cholesky factor L^-1 (computed by the fit, in
  chunks, never with a batched inverse): ||L^-1 (x - mu)|| as one batched MatMul over positions.
* Upsampling and smoothing are predict's own two matrices (`postprocess.map_operators`: torch's
  bicubic weights folded with scipy's "reflect" Gaussian filter). ONNX's Pad has no mode that
  repeats the edge sample as scipy's "reflect" does, so a conv2d would not match predict at the
  borders; the matrices match it everywhere, and cost two small MatMuls.

Everything but the batch size is fixed at construction: the input size is the one the model was
fitted on (its grid depends on it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from padim_lib.methods.padim.embedding import split_channels
from padim_lib.methods.padim.model import PaDiMModel
from padim_lib.methods.postprocess import map_operators


def nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """Source indices (n_out,) int64 of torch's "nearest-exact" resize of an axis n_in -> n_out
    (the alignment `align_concat` and `position_blocks` use), taken from torch itself."""
    src = torch.arange(n_in, dtype=torch.float64).view(1, 1, n_in)
    return F.interpolate(src, size=n_out, mode="nearest-exact").view(n_out).round().long()


class _GroupScorer(nn.Module):
    """Distances (N, h, w) of one fitted model from its layers' maps: gather the kept channels,
    align on the model's grid, concatenate, project (PCA), Mahalanobis distance."""

    def __init__(self, model: PaDiMModel, layers: Sequence[str], shapes: Sequence[tuple[int, int, int]]):
        super().__init__()
        self.model = model  # its buffers: mean (P, D), factor (P, D, D), channel_index / PCA
        self.layers = tuple(layers)
        self.grid = model.grid
        h, w = self.grid
        dummies = [torch.zeros(1, c, hl, wl) for c, hl, wl in shapes]
        self.parts: list[tuple[int, bool, bool]] = []  # (layer position, select channels, resize)
        for i, (local, (c, hl, wl)) in enumerate(zip(split_channels(dummies, model.channel_index), shapes, strict=True)):
            if local.numel() == 0:
                continue  # no kept channel in this layer
            select, resize = local.numel() < c, (hl, wl) != (h, w)
            self.register_buffer(f"channels_{i}", local if select else None, persistent=False)
            self.register_buffer(f"rows_{i}", nearest_index(hl, h) if resize else None, persistent=False)
            self.register_buffer(f"cols_{i}", nearest_index(wl, w) if resize else None, persistent=False)
            self.parts.append((i, select, resize))

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        chosen = []
        for i, select, resize in self.parts:
            t = maps[i]
            if select:
                t = t.index_select(1, getattr(self, f"channels_{i}"))
            if resize:
                t = t.index_select(2, getattr(self, f"rows_{i}")).index_select(3, getattr(self, f"cols_{i}"))
            chosen.append(t)
        emb = chosen[0] if len(chosen) == 1 else torch.cat(chosen, dim=1)  # (N, C, h, w)
        x = emb.flatten(2).permute(2, 0, 1)  # (P, N, C): position-major, as the fit's statistics
        m = self.model
        if m.pca_components is not None:
            x = torch.matmul(x - m.pca_mean, m.pca_components.transpose(0, 1))
        diff = (x - m.mean.unsqueeze(1)).transpose(1, 2)  # (P, D, N)
        # L^-1 (x - mu), batched over positions, the factor as stored (tracing a transposed view
        # of a large constant takes the tracer seconds)
        y = torch.matmul(m.factor, diff)  # (P, D, N)
        dist = torch.linalg.vector_norm(y, dim=1)  # (P, N)
        return dist.transpose(0, 1).reshape(-1, *self.grid)


class PaDiMGraph(nn.Module):
    """Images (N, 3, H, W) float32, preprocessed as for fitting -> (maps (N, H, W), scores (N,)).

    extractor: the frozen backbone (`FeatureExtractor`, float32) giving {layer: (N, C_l, h_l, w_l)};
    groups: the layer group of each fitted model (one in "concat" mode, one per layer in "sum");
    models: the fitted `PaDiMModel`s; image_size: (H, W) of the fitting images; sigma: predict's filter.
    """

    def __init__(self, extractor: nn.Module, groups: Sequence[Sequence[str]], models: Sequence[PaDiMModel],
                 image_size: tuple[int, int], sigma: float):
        super().__init__()
        self.extractor = extractor.eval()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        with torch.no_grad():  # the layers' shapes at this input size
            feats = extractor(torch.zeros(1, 3, *self.image_size))
        shapes = {name: tuple(t.shape[1:]) for name, t in feats.items()}
        self.groups = [tuple(g) for g in groups]
        self.scorers = nn.ModuleList(
            _GroupScorer(model, group, [shapes[layer] for layer in group])
            for group, model in zip(self.groups, models, strict=True)
        )
        for g, model in enumerate(models):
            a_h, a_w = map_operators(model.grid, self.image_size, float(sigma))
            self.register_buffer(f"rows_op_{g}", a_h.to(torch.float32), persistent=False)  # (H, h)
            self.register_buffer(f"cols_op_{g}", a_w.to(torch.float32).T.contiguous(), persistent=False)  # (w, W)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.extractor(images)
        total = None
        for g, (group, scorer) in enumerate(zip(self.groups, self.scorers, strict=True)):
            dist = scorer([feats[layer] for layer in group])  # (N, h, w)
            # predict's upsampling + smoothing; in "sum" mode the models' maps add up
            m = torch.matmul(torch.matmul(getattr(self, f"rows_op_{g}"), dist), getattr(self, f"cols_op_{g}"))
            total = m if total is None else total + m
        return total, total.flatten(1).amax(dim=1)
