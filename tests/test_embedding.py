"""Position-major embedding blocks against the image-layout embedding they stand for."""

from __future__ import annotations

import pytest
import torch

from padim_lib.errors import PadimError
from padim_lib.methods.padim.embedding import embed, position_blocks
from padim_lib.methods.padim.gaussian import StreamingGaussian


def _maps(grids=((8, 8), (4, 4), (2, 2)), channels=(5, 6, 7), b: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, *hw, generator=g) for c, hw in zip(channels, grids, strict=True)]


def _joined(maps, **kw) -> tuple[list[slice], torch.Tensor]:
    parts = list(position_blocks(maps, **kw))
    return [sl for sl, _ in parts], torch.cat([x for _, x in parts])


def _reference(maps, channel_index=None) -> torch.Tensor:
    """(P, B, D) from the image-layout embedding."""
    emb = embed(maps, channel_index)
    return emb.flatten(2).permute(2, 0, 1)


@pytest.mark.parametrize("block_bytes", [1, 300, 10**9])
@pytest.mark.parametrize(
    ("index", "factor"), [(None, 4), ([0, 3, 4, 9, 17], 4), ([5, 6, 10], 2), ([12, 13, 14], 4)]
)
def test_blocks_equal_the_embedding(block_bytes, index, factor):
    maps = _maps()
    channel_index = None if index is None else torch.tensor(index)
    slices, x = _joined(maps, channel_index=channel_index, block_bytes=block_bytes)
    assert torch.equal(x, _reference(maps, channel_index))
    # consecutive, whole rows, a multiple of the largest scale factor among the layers kept:
    # a block never splits a coarse cell
    assert slices[0].start == 0 and slices[-1].stop == 64
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:], strict=False))
    assert all((sl.stop - sl.start) % (factor * 8) == 0 for sl in slices)
    if block_bytes == 1:  # the smallest block: one row of the coarsest kept cells
        assert len(slices) == 8 // factor
    if block_bytes == 10**9:
        assert len(slices) == 1


def test_blocks_with_non_integer_scale_and_rectangular_grids():
    maps = _maps(grids=((6, 10), (4, 5), (2, 3)))
    _, x = _joined(maps, block_bytes=1)
    assert torch.equal(x, _reference(maps))


def test_blocks_project_on_pca_axes():
    maps = _maps()
    c = 18
    g = torch.Generator().manual_seed(3)
    comps, mean = torch.randn(4, c, generator=g), torch.randn(c, generator=g)
    _, x = _joined(maps, pca_mean=mean, pca_components=comps, block_bytes=500)
    torch.testing.assert_close(x, (_reference(maps) - mean) @ comps.T, rtol=1e-6, atol=1e-6)
    with pytest.raises(PadimError, match="PCA components"):
        list(position_blocks(maps, pca_mean=mean, pca_components=comps[:, :5]))


def test_blocks_dtype_and_bad_input():
    maps = _maps()
    _, x = _joined(maps, dtype=torch.float64)
    assert x.dtype == torch.float64
    with pytest.raises(PadimError, match="out of range"):
        list(position_blocks(maps, channel_index=torch.tensor([1, 40])))
    with pytest.raises(PadimError, match="finer than"):
        list(position_blocks(maps[::-1]))


def test_streaming_gaussian_from_blocks_equals_update():
    maps = _maps(b=6)
    x = _reference(maps).transpose(0, 1).double()  # (B, P, D)
    a, b = StreamingGaussian(64, 18), StreamingGaussian(64, 18)
    for half in (slice(0, 3), slice(3, 6)):
        a.update(x[half])
        b.update_blocks(position_blocks([m[half] for m in maps], block_bytes=1, dtype=torch.float64), 3)
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.covariance(), b.covariance(), rtol=1e-12, atol=1e-12)


def test_update_blocks_rejects_gaps_and_stops():
    sg = StreamingGaussian(4, 2)
    x = torch.randn(4, 3, 2)
    with pytest.raises(PadimError, match="does not continue at position 0"):
        sg.update_blocks([(slice(1, 4), x[1:])], 3)
    with pytest.raises(PadimError, match="consumed"):  # a half-merged batch leaves no usable statistics
        sg.update(torch.randn(3, 4, 2))
    sg = StreamingGaussian(4, 2)
    with pytest.raises(PadimError, match="covered 2 of 4 positions"):
        sg.update_blocks([(slice(0, 2), x[:2])], 3)
