"""Patch embeddings: layer maps aligned on the finest grid, reduced, and laid out by position.

Shapes: B images; layer maps (B, C_l, h_l, w_l), finest first; grid h x w = P positions;
C = sum C_l channels; D = the dimensions kept (a channel selection, or a PCA projection).

`embed` gives the embedding as an image, (B, C, h, w). `position_blocks` gives the same vectors
position-major, (Pc, B, D), a few grid rows at a time, which is the layout the per-position
Gaussian work wants: the fit's scatter and the Mahalanobis distance are batches over positions of
small (B, D) x (D, D) products. Building the whole (B, C, h, w) embedding and transposing it
costs two (B, P, D) temporaries per batch, and on CPU these large fresh buffers cost, in page
faults and memory traffic, about as much as the distance itself. A block is built straight into
its final layout (each coarse cell copied onto its r x r fine cells, only for the kept channels)
and stays in the cache while the distance reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from padim_lib.errors import PadimError
from padim_lib.features.extractor import align_concat, check_layer_maps

# Target size of one CPU block: small enough to stay in L2 while the bmm reads it.
CPU_BLOCK_BYTES = 1024**2
# On a GPU the launches dominate small blocks: use few, large ones.
GPU_BLOCK_BYTES = 256 * 1024**2


def split_channels(maps: Sequence[torch.Tensor], channel_index: torch.Tensor | None) -> list[torch.Tensor]:
    """Per layer, the indices (into that layer's channels) of the sorted channel_index (D,) over the
    concatenated channels; all channels of every layer when channel_index is None."""
    out, offset = [], 0
    for t in maps:
        c = t.shape[1]
        if channel_index is None:
            out.append(torch.arange(c, device=t.device))
        else:
            local = channel_index[(channel_index >= offset) & (channel_index < offset + c)] - offset
            out.append(local.to(t.device))
        offset += c
    if channel_index is not None and channel_index.numel() and int(channel_index[-1]) >= offset:
        raise PadimError(
            f"channel index {int(channel_index[-1])} is out of range for an embedding of {offset} channels"
        )
    return out


def embed(maps: Sequence[torch.Tensor], channel_index: torch.Tensor | None = None) -> torch.Tensor:
    """Embedding of layer maps (B, C_l, h_l, w_l), finest first: aligned on the first grid and
    concatenated -> (B, C, h, w), or (B, D, h, w) with a sorted channel_index (D,) into the
    concatenated channels. The selection is applied to each layer before the alignment (the same
    result as selecting afterwards, without upsampling channels that are dropped)."""
    check_layer_maps(maps)
    if channel_index is not None:
        selected = []
        for i, (t, local) in enumerate(zip(maps, split_channels(maps, channel_index), strict=True)):
            if i == 0 or local.numel():  # the first map sets the grid, even with no channel kept
                selected.append(t.index_select(1, local))
        maps = selected
    return maps[0] if len(maps) == 1 else align_concat(maps)


def position_blocks(
    maps: Sequence[torch.Tensor],
    channel_index: torch.Tensor | None = None,
    pca_mean: torch.Tensor | None = None,
    pca_components: torch.Tensor | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    block_bytes: int | None = None,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """The embedding of `maps` as position-major blocks: yields (positions, x) with x (Pc, B, D)
    for the grid positions `positions` (a slice of the row-major P = h * w), in order, covering
    every position once. Equals `embed(maps, channel_index)` flattened to (P, B, D) and, with
    pca_components (D, C), centred on pca_mean (C,) and projected.

    Blocks hold whole grid rows, a multiple of every layer's integer scale factor, about
    `block_bytes` each (default: 1 MiB on CPU, 256 MiB on CUDA). Layers whose grid does not divide
    the finest one are aligned with "nearest-exact" first, as `align_concat` does.
    """
    check_layer_maps(maps)
    device = torch.device(device) if device is not None else maps[0].device
    b, _, h, w = maps[0].shape
    parts = []  # (grid-major map (h_l, w_l, B, c_l), row factor, column factor, first dim)
    width = 0
    for t, local in zip(maps, split_channels(maps, channel_index), strict=True):
        if local.numel() == 0:
            continue
        t = t.index_select(1, local) if local.numel() < t.shape[1] else t
        if h % t.shape[2] or w % t.shape[3]:
            t = F.interpolate(t, size=(h, w), mode="nearest-exact")
        grid_major = t.to(device, dtype).permute(2, 3, 0, 1).contiguous()
        parts.append((grid_major, h // t.shape[2], w // t.shape[3], width))
        width += t.shape[1]
    if pca_components is not None:
        if pca_mean is None or pca_components.shape[1] != width:
            raise PadimError(
                f"PCA components {tuple(pca_components.shape)} do not match an embedding of {width} channels"
            )
        pca_mean = pca_mean.to(device, dtype)
        pca_components = pca_components.to(device, dtype)
    step = math.lcm(*(rh for _, rh, _, _ in parts)) if parts else 1
    if block_bytes is None:
        block_bytes = GPU_BLOCK_BYTES if device.type == "cuda" else CPU_BLOCK_BYTES
    row_bytes = max(1, w * b * max(width, 1) * torch.finfo(dtype).bits // 8)
    rows = max(step, block_bytes // row_bytes // step * step)
    for i0 in range(0, h, rows):
        n = min(rows, h - i0)
        x = torch.empty(n, w, b, width, dtype=dtype, device=device)
        for g, rh, rw, d0 in parts:
            c = g.shape[3]
            src = g[i0 // rh : (i0 + n) // rh]  # (n / rh, w_l, B, c)
            dst = x.view(n // rh, rh, w // rw, rw, b, width)[..., d0 : d0 + c]
            dst.copy_(src[:, None, :, None])
        x = x.view(n * w, b, width)
        if pca_components is not None:
            x = (x - pca_mean) @ pca_components.T
        yield slice(i0 * w, (i0 + n) * w), x
