"""Per-position Gaussians: streaming statistics, inverse Cholesky factor, Mahalanobis distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from padim_lib.errors import PadimError
from padim_lib.methods.padim.gaussian import (
    FLOAT64_BUDGET_BYTES,
    StreamingGaussian,
    choose_dtype,
    inverse_cholesky,
    mahalanobis,
)


def _samples(n: int, p: int, d: int, seed: int = 0, offset: float = 0.0) -> torch.Tensor:
    """(n, p, d) correlated samples, float64; `offset` shifts the mean (stresses cancellation)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(p, d, d, generator=g, dtype=torch.float64) / d**0.5
    z = torch.randn(n, p, d, generator=g, dtype=torch.float64)
    return torch.einsum("pij,npj->npi", mix, z) + offset + torch.randn(p, d, generator=g, dtype=torch.float64)


def _two_pass(x: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference: float64 mean and np.cov (N-1) + eps I per position; x (N, P, D)."""
    mean = x.mean(axis=0)
    cov = np.stack([np.cov(x[:, i], rowvar=False) for i in range(x.shape[1])])
    return mean, cov + eps * np.eye(x.shape[2])


@pytest.mark.parametrize("batch", [1, 3, 7, 25])
def test_streaming_equals_two_pass_float64(batch):
    x = _samples(25, 6, 5, offset=3.0)
    sg = StreamingGaussian(6, 5)
    for chunk in x.split(batch):
        sg.update(chunk)
    mean, cov = _two_pass(x.numpy(), eps=0.01)
    assert sg.count == 25
    np.testing.assert_allclose(sg.mean.numpy(), mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sg.covariance(0.01).numpy(), cov, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batch", [4, 16])
def test_streaming_float32_agrees_with_float64_two_pass(batch):
    # Large mean offset (100 x the spread) and float32: the centred merge must stay accurate.
    x = _samples(64, 10, 12, seed=1, offset=100.0)
    sg = StreamingGaussian(10, 12, dtype=torch.float32)
    for chunk in x.float().split(batch):
        sg.update(chunk)
    _, cov = _two_pass(x.float().double().numpy(), eps=0.0)
    got = sg.covariance(0.0).double().numpy()
    rel = np.linalg.norm(got - cov, axis=(1, 2)) / np.linalg.norm(cov, axis=(1, 2))
    assert rel.max() < 1e-5


def test_covariance_known_values_and_chunking():
    # Two samples per position: the centred outer products sum to (a - b)(a - b)^T / 2, divisor N - 1 = 1.
    a = torch.tensor([[1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], dtype=torch.float64)  # (P=3, D=2)
    b = torch.tensor([[3.0, 2.0], [1.0, 1.0], [3.0, 1.0]], dtype=torch.float64)
    sg = StreamingGaussian(3, 2)
    sg.update(a[None])
    sg.update(b[None])
    diff = a - b
    expected = 0.5 * diff[:, :, None] * diff[:, None, :] + 0.01 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(sg.covariance(0.01), expected, atol=1e-15)
    assert torch.allclose(sg.mean, (a + b) / 2)


def test_inplace_covariance_reuses_memory_and_consumes():
    sg = StreamingGaussian(2, 3)
    sg.update(_samples(5, 2, 3))
    buffer = sg._m2
    cov = sg.covariance(0.01, inplace=True)
    assert cov.data_ptr() == buffer.data_ptr()
    with pytest.raises(PadimError, match="consumed"):
        sg.update(_samples(5, 2, 3))
    with pytest.raises(PadimError, match="consumed"):
        sg.covariance()


def test_update_checks_shape_and_count():
    sg = StreamingGaussian(4, 3)
    with pytest.raises(PadimError, match=r"\(B, 4, 3\)"):
        sg.update(torch.zeros(2, 4, 5))
    sg.update(torch.zeros(1, 4, 3))
    with pytest.raises(PadimError, match="at least 2 samples"):
        sg.covariance()


def test_inverse_cholesky_at_wr50_size_matches_numpy_inverse():
    # WR50-Rd550 dimension with a few positions: L^-T L^-1 must be the float64 inverse.
    p, d = 3, 550
    x = _samples(200, p, d, seed=2)
    sg = StreamingGaussian(p, d)
    sg.update(x)
    cov = sg.covariance(0.01)
    cov_np = cov.numpy().copy()
    factor = inverse_cholesky(cov.clone(), chunk=2)  # 2 chunks: exercises the chunk boundary
    assert torch.equal(factor, factor.tril())
    precision = factor.transpose(1, 2) @ factor
    for i in range(p):
        inv = np.linalg.inv(cov_np[i])
        np.testing.assert_allclose(precision[i].numpy(), inv, rtol=1e-7, atol=1e-9 * np.abs(inv).max())
    # Overwriting the covariance in place gives the same factor, in the same memory.
    ptr = cov.data_ptr()
    same = inverse_cholesky(cov, out=cov)
    assert same.data_ptr() == ptr and torch.equal(same, factor)
    # A float32 output from a float64 covariance is the rounded float64 factor.
    out32 = inverse_cholesky(torch.from_numpy(cov_np), out=torch.empty(p, d, d))
    assert out32.dtype == torch.float32 and torch.equal(out32, factor.float())


def test_inverse_cholesky_names_the_bad_position():
    cov = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1)
    cov[2, 1, 1] = -1.0
    with pytest.raises(PadimError, match="position 2"):
        inverse_cholesky(cov, chunk=3)


def test_mahalanobis_matches_explicit_inverse():
    x = _samples(30, 4, 6, seed=3)
    sg = StreamingGaussian(4, 6)
    sg.update(x[:20])
    cov = sg.covariance(0.01)
    factor = inverse_cholesky(cov)
    test = x[20:]
    got = mahalanobis(test, sg.mean, factor, chunk=3)
    assert got.shape == (10, 4)
    for i in range(4):
        diff = (test[:, i] - sg.mean[i]).numpy()
        ref = np.sqrt(np.einsum("bi,ij,bj->b", diff, np.linalg.inv(cov[i].numpy()), diff))
        np.testing.assert_allclose(got[:, i].numpy(), ref, rtol=1e-10)


def test_choose_dtype():
    assert choose_dtype(3136, 550) == torch.float32  # WR50-Rd550: 7.6 GB in float64
    assert choose_dtype(3136, 100) == torch.float64  # R18-Rd100: 0.25 GB in float64
    assert 3136 * 550**2 * 8 > FLOAT64_BUDGET_BYTES >= 3136 * 100**2 * 8
    assert choose_dtype(3136, 100, "float32") == torch.float32
    assert choose_dtype(3136, 550, "float64") == torch.float64
    with pytest.raises(PadimError, match="accumulate_dtype"):
        choose_dtype(1, 1, "half")
