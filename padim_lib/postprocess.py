"""From a grid of patch distances to an anomaly map at the input size, and an image score.

The paper: upsample the distance grid to the input size with bicubic interpolation, then apply a
Gaussian filter with sigma = 4; the image score is the maximum of the map. The filter here is
the same as `scipy.ndimage.gaussian_filter(map, sigma, mode="reflect", truncate=4.0)` applied over
the two spatial axes, implemented in torch (separable convolution) so it runs batched on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from padim_lib.errors import PadimError


def gaussian_kernel1d(
    sigma: float, truncate: float = 4.0, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian weights: radius int(truncate * sigma + 0.5), normalised to sum 1. -> (2r+1,)"""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (w / w.sum()).to(dtype)


def _symmetric_index(n: int, pad: int, device=None) -> torch.Tensor:
    """Indices of a length-n axis padded by `pad` on both sides in scipy's "reflect" mode
    (d c b a | a b c d | d c b a: the edge sample is repeated), valid for any pad, even pad > n. -> (n + 2 pad,)
    """
    i = torch.arange(-pad, n + pad, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Gaussian filter over the last two axes of maps (B, H, W) -> (B, H, W), same dtype.

    Equals scipy.ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=truncate) per map.
    torch's own padding modes differ ("reflect" there is scipy's "mirror"), so the symmetric
    padding is built with an index gather. sigma == 0 returns the maps unchanged.
    """
    if sigma < 0:
        raise PadimError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return maps
    if maps.ndim != 3:
        raise PadimError(f"gaussian_blur expects maps of shape (B, H, W), got {tuple(maps.shape)}")
    _, h, w = maps.shape
    kernel = gaussian_kernel1d(sigma, truncate, maps.dtype).to(maps.device)
    r = kernel.numel() // 2
    x = maps[:, None]  # (B, 1, H, W)
    x = x.index_select(3, _symmetric_index(w, r, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = x.index_select(2, _symmetric_index(h, r, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]


def upsample(dist: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bicubic upsampling (align_corners=False) of dist (B, h, w) -> (B, H, W)."""
    if isinstance(size, int):
        size = (size, size)
    return F.interpolate(dist[:, None], size=tuple(size), mode="bicubic", align_corners=False)[:, 0]


def anomaly_maps(dist: torch.Tensor, size: int | tuple[int, int], sigma: float = 4.0) -> torch.Tensor:
    """Distance grid (B, h, w) -> anomaly maps (B, H, W): bicubic upsample, then Gaussian filter sigma."""
    return gaussian_blur(upsample(dist, size), sigma)


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """Image anomaly score = maximum of its map: (B, H, W) -> (B,)."""
    return maps.flatten(1).amax(dim=1)
