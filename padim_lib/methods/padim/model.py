"""PaDiM's fitted state as a pure torch module: per-position Gaussians (mean and inverse Cholesky
factor) plus the channel reduction, scoring layer maps by Mahalanobis distance. The estimator
(`padim_lib.methods.padim.detector.PaDiM`) fits it, saves it and turns its distances into anomaly maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from padim_lib.errors import PadimError
from padim_lib.methods.padim.embedding import position_blocks
from padim_lib.methods.padim.gaussian import mahalanobis_block


class PaDiMModel(nn.Module):
    """Fitted state of one Gaussian-per-position model: buffers mean (P, D), factor L^-1 (P, D, D),
    and the reduction (channel_index (D,) or pca_mean (C,) + pca_components (D, C)) if any.

    forward(embedding (B, C, h, w)) -> Mahalanobis distances (B, h, w).
    """

    def __init__(
        self,
        mean: torch.Tensor,
        factor: torch.Tensor,
        grid: tuple[int, int],
        *,
        channel_index: torch.Tensor | None = None,
        pca_mean: torch.Tensor | None = None,
        pca_components: torch.Tensor | None = None,
    ):
        super().__init__()
        p, d = mean.shape
        if factor.shape != (p, d, d) or grid[0] * grid[1] != p:
            raise PadimError(
                f"inconsistent PaDiM state: mean {tuple(mean.shape)}, factor {tuple(factor.shape)}, grid {tuple(grid)}"
            )
        if channel_index is not None and (
            channel_index.shape != (d,) or bool((channel_index.diff() <= 0).any())
        ):
            raise PadimError(
                f"inconsistent PaDiM state: channel_index {tuple(channel_index.shape)} for D = {d} "
                "(expected increasing indices)"
            )
        if pca_components is not None and (pca_components.shape[0] != d or pca_mean is None):
            raise PadimError(
                f"inconsistent PaDiM state: pca_components {tuple(pca_components.shape)} for D = {d}"
            )
        self.grid = (int(grid[0]), int(grid[1]))
        self.register_buffer("mean", mean)
        self.register_buffer("factor", factor)
        self.register_buffer("channel_index", channel_index)
        self.register_buffer("pca_mean", pca_mean)
        self.register_buffer("pca_components", pca_components)

    @property
    def dim(self) -> int:
        return self.mean.shape[1]

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Distances (B, h, w) of a full embedding (B, C, h, w) (all channels of the layers)."""
        return self.score_layers([embedding])

    def score_layers(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Distances (B, h, w) from the layer maps (B, C_l, h_l, w_l), finest first; equals
        forward(aligned concatenation), built block by block for the channels this model keeps."""
        b, _, h, w = maps[0].shape
        if (h, w) != self.grid:
            raise PadimError(
                f"feature grid {h}x{w} differs from the {self.grid[0]}x{self.grid[1]} grid the model was "
                "fitted on; predict on images of the size used for fitting"
            )
        out = torch.empty(h * w, b, dtype=self.mean.dtype, device=self.mean.device)
        blocks = position_blocks(
            maps,
            self.channel_index,
            self.pca_mean,
            self.pca_components,
            dtype=self.mean.dtype,
            device=self.mean.device,
        )
        for sl, x in blocks:
            out[sl] = mahalanobis_block(x, self.mean[sl], self.factor[sl])
        return out.T.reshape(b, h, w)
