"""One multivariate Gaussian per grid position: streaming fit, inverse Cholesky factor, Mahalanobis distance.

Shapes: B = samples in a batch, P = grid positions (h * w), D = embedding dimension.

Memory design (the fit must not grow with the number of training images):
- `StreamingGaussian` keeps only the running mean (P, D) and the centred sum of outer products
  M2 (P, D, D). Each batch is centred on its own mean and merged with Chan et al.'s pairwise
  update, which keeps float32 accumulation accurate (no large sums of x x^T to cancel).
- The batch scatter (P, B, D) -> (P, D, D) is done in place with `baddbmm_` over chunks of
  positions, so the only temporary is one chunk of centred samples.
- `covariance(inplace=True)` turns M2 into the covariance in the same buffer, and
  `inverse_cholesky(cov, out=cov)` overwrites it chunk by chunk with L^-1, so the peak stays
  about one (P, D, D) buffer (1.5x when a float64 accumulator is turned into a float32 factor).
- `choose_dtype` picks float64 when the (P, D, D) accumulator fits in `FLOAT64_BUDGET_BYTES`
  and float32 otherwise (WR50-Rd550: 3136 x 550^2 x 4 B = 3.8 GB instead of 7.6 GB).

Batched `torch.linalg.inv` is never used: on some CPU builds MKL's batched inverse fails or hangs
for several matrices larger than ~128 x 128. Cholesky + triangular solve is cheaper and stable.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from padim_lib.errors import PadimError

# The float64 accumulator is used when (P, D, D) float64 fits in this many bytes.
FLOAT64_BUDGET_BYTES = 2 * 1024**3
# Temporaries per chunk of positions are kept near this size.
CHUNK_BYTES = 64 * 1024**2


def choose_dtype(num_positions: int, dim: int, accumulate_dtype: str = "auto") -> torch.dtype:
    """Accumulator dtype: "float64", "float32", or "auto" (float64 if P*D*D*8 <= FLOAT64_BUDGET_BYTES)."""
    if accumulate_dtype == "float64":
        return torch.float64
    if accumulate_dtype == "float32":
        return torch.float32
    if accumulate_dtype != "auto":
        raise PadimError(f"accumulate_dtype={accumulate_dtype!r}; expected 'auto', 'float64' or 'float32'")
    return torch.float64 if num_positions * dim * dim * 8 <= FLOAT64_BUDGET_BYTES else torch.float32


def position_chunk(dim: int, per_position: int, itemsize: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """How many positions fit a temporary of `per_position` x `dim` elements in `chunk_bytes`."""
    return max(1, chunk_bytes // max(1, per_position * dim * itemsize))


class StreamingGaussian:
    """Running mean and covariance of P independent D-dimensional Gaussians (memory independent of N).

    `update(x)` with x (B, P, D) merges a batch with Chan et al.'s centred pairwise update:
        n = n_a + n_b,  delta = mean_b - mean_a
        mean = mean_a + delta * n_b / n
        M2 = M2_a + M2_b + delta delta^T * n_a * n_b / n
    """

    def __init__(self, num_positions: int, dim: int, *, dtype: torch.dtype = torch.float64, device="cpu"):
        if num_positions < 1 or dim < 1:
            raise PadimError(
                f"StreamingGaussian needs num_positions >= 1 and dim >= 1, got {num_positions}, {dim}"
            )
        self.num_positions = num_positions
        self.dim = dim
        self.dtype = dtype
        self.device = torch.device(device)
        self.count = 0
        self.mean = torch.zeros(num_positions, dim, dtype=dtype, device=self.device)  # (P, D)
        self._m2: torch.Tensor | None = torch.zeros(num_positions, dim, dim, dtype=dtype, device=self.device)

    def _chunk(self, batch: int) -> int:
        # The temporary is one chunk of centred samples, (chunk, B, D).
        return position_chunk(self.dim, batch, torch.finfo(self.dtype).bits // 8)

    def update(self, x: torch.Tensor) -> None:
        """Merge a batch x (B, P, D) of samples into the running statistics."""
        if x.ndim != 3 or x.shape[1:] != (self.num_positions, self.dim):
            raise PadimError(
                f"StreamingGaussian.update expects x of shape (B, {self.num_positions}, {self.dim}), got {tuple(x.shape)}"
            )
        p, step = self.num_positions, self._chunk(x.shape[0])
        blocks = (
            (slice(p0, min(p0 + step, p)), x[:, p0 : p0 + step].transpose(0, 1)) for p0 in range(0, p, step)
        )
        self.update_blocks(blocks, x.shape[0])

    def update_blocks(self, blocks: Iterable[tuple[slice, torch.Tensor]], batch_size: int) -> None:
        """Merge one batch of `batch_size` samples given position-major, as consecutive blocks
        (positions, x) with x (Pc, B, D) for the positions `positions` (a slice), which must cover
        0..P-1 in order (as `padim_lib.methods.padim.embedding.position_blocks` yields them)."""
        if self._m2 is None:
            raise PadimError(
                "StreamingGaussian.update after covariance(inplace=True): the statistics are consumed"
            )
        b = int(batch_size)
        if b == 0:
            return
        n_a, n = self.count, self.count + b
        covered = 0
        for sl, x in blocks:
            pc = sl.stop - sl.start
            if sl.start != covered or x.shape != (pc, b, self.dim) or sl.stop > self.num_positions:
                self._m2 = None  # earlier blocks are merged already: the statistics are no longer valid
                raise PadimError(
                    f"StreamingGaussian.update_blocks: block for positions {sl.start}:{sl.stop} with shape "
                    f"{tuple(x.shape)} does not continue at position {covered} with ({pc}, {b}, {self.dim})"
                )
            x = x.to(device=self.device, dtype=self.dtype)
            batch_mean = x.mean(dim=1)  # (Pc, D)
            delta = batch_mean - self.mean[sl]
            xc = x - batch_mean[:, None]  # (Pc, B, D)
            m2 = self._m2[sl]
            m2.baddbmm_(xc.mT, xc)  # += sum_b xc xc^T
            if n_a:
                m2.baddbmm_(delta[:, :, None], delta[:, None, :], alpha=n_a * b / n)
            self.mean[sl] += delta * (b / n)
            covered = sl.stop
        if covered != self.num_positions:
            self._m2 = None
            raise PadimError(
                f"StreamingGaussian.update_blocks: the blocks covered {covered} of {self.num_positions} positions"
            )
        self.count = n

    def covariance(self, eps: float = 0.01, *, inplace: bool = False) -> torch.Tensor:
        """(P, D, D) covariance with the N-1 divisor plus eps * I.

        inplace=True reuses the accumulator's memory (no second (P, D, D) buffer); the object
        cannot be updated afterwards.
        """
        if self._m2 is None:
            raise PadimError(
                "StreamingGaussian.covariance: the statistics were already consumed (inplace=True)"
            )
        if self.count < 2:
            raise PadimError(f"a covariance needs at least 2 samples, got {self.count}")
        cov = self._m2 if inplace else self._m2.clone()
        if inplace:
            self._m2 = None
        cov.div_(self.count - 1)
        cov.diagonal(dim1=1, dim2=2).add_(eps)
        return cov


def inverse_cholesky(
    cov: torch.Tensor, chunk: int | None = None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """L^-1 for cov = L L^T, per position: cov (P, D, D) -> (P, D, D) lower-triangular.

    Then (x - mu)^T cov^-1 (x - mu) = ||L^-1 (x - mu)||^2. Computed in chunks of positions with
    torch.linalg.cholesky + solve_triangular (in cov's dtype); `out` may be `cov` itself (its
    memory is overwritten chunk by chunk) or a buffer of another dtype (e.g. a float32 factor).
    """
    if cov.ndim != 3 or cov.shape[1] != cov.shape[2]:
        raise PadimError(f"inverse_cholesky expects cov of shape (P, D, D), got {tuple(cov.shape)}")
    p, d, _ = cov.shape
    if out is None:
        out = torch.empty_like(cov)
    elif out.shape != cov.shape:
        raise PadimError(f"inverse_cholesky: out has shape {tuple(out.shape)}, expected {tuple(cov.shape)}")
    step = chunk or position_chunk(d, 2 * d, cov.element_size())  # L and L^-1 per position
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    for p0 in range(0, p, step):
        sl = slice(p0, p0 + step)
        lower, info = torch.linalg.cholesky_ex(cov[sl])
        if bool((info != 0).any()):
            bad = p0 + int(torch.nonzero(info)[0, 0])
            raise PadimError(
                f"covariance at position {bad} is not positive definite (Cholesky failed); "
                "increase eps or check the features for constant or non-finite values"
            )
        out[sl] = torch.linalg.solve_triangular(lower, eye.expand_as(lower), upper=False)
    return out


def mahalanobis_block(x: torch.Tensor, mean: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Distances ||L^-1 (x - mu)|| of position-major vectors x (Pc, B, D), for mean (Pc, D) and
    factor L^-1 (Pc, D, D) -> (Pc, B), in factor's dtype and device."""
    diff = x.to(device=factor.device, dtype=factor.dtype) - mean.to(factor.device, factor.dtype)[:, None]
    # (Pc, B, D) @ (Pc, D, D)^T: both operands in memory order (the transpose is a BLAS flag)
    return torch.linalg.vector_norm(torch.bmm(diff, factor.mT), dim=-1)


def mahalanobis(
    x: torch.Tensor, mean: torch.Tensor, factor: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """Mahalanobis distances ||L^-1 (x - mu)|| for x (B, P, D), mean (P, D), factor L^-1 (P, D, D) -> (B, P).

    Computed in factor's dtype and device, batched over positions with bmm (`mahalanobis_block`
    on chunks of positions, which bounds the (Pc, B, D) temporaries).
    """
    b, p, d = x.shape
    if mean.shape != (p, d) or factor.shape != (p, d, d):
        raise PadimError(
            f"mahalanobis: x {tuple(x.shape)} does not match mean {tuple(mean.shape)} / factor {tuple(factor.shape)}"
        )
    out = torch.empty(p, b, dtype=factor.dtype, device=factor.device)
    step = chunk or position_chunk(d, 2 * b, factor.element_size())
    for p0 in range(0, p, step):
        sl = slice(p0, p0 + step)
        out[sl] = mahalanobis_block(x[:, sl].transpose(0, 1), mean[sl], factor[sl])
    return out.T
