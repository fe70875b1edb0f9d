"""Tests of padim_lib.metrics.image against brute-force references, hand-computed cases and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import auc, roc_auc_score

from padim_lib.errors import PadimError
from padim_lib.metrics import pixel as metrics_pixel
from padim_lib.metrics.image import ImageScores, image_auroc
from padim_lib.metrics.pixel import PixelScores, pixel_auroc, pro_auc, pro_curve


# ----------------------------------------------------------------------------- references
def brute_pro_curve(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slow, obviously correct: loop over every distinct threshold, regions labelled per image."""
    regions = []
    for i, mask in enumerate(masks):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labels == k) for k in range(1, n + 1)]
    normal = maps[masks == 0]
    fpr, pro = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fpr.append(np.mean(normal >= t))
        pro.append(np.mean([np.mean(maps[i][region] >= t) for i, region in regions]))
    return np.array(fpr), np.array(pro)


def brute_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoids segment by segment, the one crossing the limit cut by linear interpolation."""
    area = 0.0
    for x0, x1, y0, y1 in zip(x[:-1], x[1:], y[:-1], y[1:], strict=True):
        if x0 >= limit:
            break
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            area += (limit - x0) * (y0 + y_lim) / 2
            break
    return area / limit


def random_case(seed: int, n: int = 6, size: int = 12, levels: int | None = None, dtype=np.float64):
    """Blob-like masks (some images defect-free) and scores correlated with them; ties if levels."""
    rng = np.random.default_rng(seed)
    seeds = rng.random((n, size, size)) < 0.04
    masks = ndimage.binary_dilation(seeds, structure=rng.random((1, 3, 3)) < 0.6).astype(np.uint8)
    masks[rng.random(n) < 0.3] = 0  # defect-free images
    masks[0, 2:4, 2:4] = 1  # at least one region
    maps = 0.4 * masks + rng.random(masks.shape)
    if levels is not None:
        maps = np.round(maps * levels) / levels
    return masks, maps.astype(dtype)


# ----------------------------------------------------------------------------- brute force
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("levels", [None, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunk", [None, 13])
def test_pro_matches_brute_force(seed, levels, dtype, chunk, monkeypatch):
    if chunk is not None:  # exercise the chunked pass, runs split across chunks, early stop
        monkeypatch.setattr(metrics_pixel, "_CHUNK", chunk)
    masks, maps = random_case(seed, levels=levels, dtype=dtype)
    fpr_ref, pro_ref = brute_pro_curve(masks, maps)
    fpr, pro = pro_curve(masks, maps)
    assert fpr.shape == fpr_ref.shape
    np.testing.assert_allclose(fpr, fpr_ref, atol=1e-12)
    np.testing.assert_allclose(pro, pro_ref, atol=1e-12)
    assert (fpr[-1], pro[-1]) == (1.0, 1.0)
    for limit in (0.3, 0.05, 0.5, 1.0):
        assert pro_auc(masks, maps, fpr_limit=limit) == pytest.approx(
            brute_area(fpr_ref, pro_ref, limit), abs=1e-6
        )


def test_full_range_area_is_plain_trapezoid():
    masks, maps = random_case(7, levels=9)
    fpr, pro = pro_curve(masks, maps)
    assert pro_auc(masks, maps, fpr_limit=1.0) == pytest.approx(auc(fpr, pro), abs=1e-12)


# ----------------------------------------------------------------------------- hand cases
def test_one_region_by_hand():
    masks = np.array([[[1, 1], [0, 0]]])
    maps = np.array([[[0.9, 0.4], [0.6, 0.1]]])
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1, 1])
    assert pro_auc(masks, maps) == pytest.approx(0.5)  # 0.3 * 0.5 / 0.3
    assert pro_auc(masks, maps, fpr_limit=1.0) == pytest.approx(0.75)
    assert pixel_auroc(masks, maps) == pytest.approx(0.75)  # 3 of 4 (defect, normal) pairs ordered


def test_pro_is_mean_over_regions_not_pixels():
    masks = np.array([[[1, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]]])
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0] = 0.9  # the 1-pixel region is found first
    maps[0, :2, 3:] = 0.2  # the 4-pixel region last
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 0, 1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1])
    # Per-region mean: (1 + 0) / 2 = 0.5; a pixel-level overlap would give 1/5.
    assert pro_auc(masks, maps) == pytest.approx(0.5)


def test_perfect_and_inverted_maps():
    masks, _ = random_case(3)
    perfect = masks.astype(np.float32)
    assert pro_auc(masks, perfect) == pytest.approx(1.0)
    assert pixel_auroc(masks, perfect) == pytest.approx(1.0)
    assert pro_auc(masks, 1 - perfect) == pytest.approx(0.0)
    assert pixel_auroc(masks, 1 - perfect) == pytest.approx(0.0)


def test_constant_maps_jump_to_one():
    masks, _ = random_case(4)
    maps = np.full(masks.shape, 0.7, dtype=np.float32)
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_array_equal(fpr, [0, 1])
    np.testing.assert_array_equal(pro, [0, 1])
    # Triangle up to 0.3: 0.3 * 0.3 / 2 = 0.045, / 0.3 = 0.15.
    assert pro_auc(masks, maps) == pytest.approx(0.15)
    assert pixel_auroc(masks, maps) == pytest.approx(0.5)


def test_defect_free_image_only_changes_fpr():
    masks = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]])
    maps = np.array([[[0.9, 0.4], [0.6, 0.1]], [[0.7, 0.05], [0.05, 0.05]]])
    fpr, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0, 0, 1 / 6, 2 / 6, 2 / 6, 3 / 6, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 0.5, 1, 1, 1])
    assert pro_auc(masks, maps) == pytest.approx(0.5)
    assert pro_auc(masks, maps, fpr_limit=1.0) == pytest.approx(0.5 / 3 + 2 / 3)


def test_diagonal_pixels_form_one_region():
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = 1
    maps = np.full(masks.shape, 0.5)
    maps[0, 0, 0], maps[0, 1, 1], maps[0, 1, 2] = 0.9, 0.1, 0.1
    _, pro = pro_curve(masks, maps)
    # One 3-pixel region (8-connectivity); 4-connectivity would give regions {1}, {2}: PRO 0.5.
    np.testing.assert_allclose(pro, [0, 1 / 3, 1 / 3, 1])
    assert pro_auc(masks, maps) == pytest.approx(1 / 3)


def test_regions_do_not_connect_across_images():
    # Two images with a defect at the same pixel: two regions, each found at its own threshold.
    masks = np.zeros((2, 3, 3), np.uint8)
    masks[:, 1, 1] = 1
    maps = np.zeros(masks.shape)
    maps[0, 1, 1] = 1.0
    _, pro = pro_curve(masks, maps)
    np.testing.assert_allclose(pro, [0, 0.5, 1])


# ----------------------------------------------------------------------------- dtypes
def test_exact_float32_fast_path_and_general_path_agree():
    masks, maps = random_case(5, levels=8, dtype=np.float32)
    ref = pro_curve(masks, maps)
    for other in (maps.astype(np.float64), (maps * 8).astype(np.int64), (maps * 8).astype(np.uint8)):
        got = pro_curve(masks, other)
        np.testing.assert_allclose(got[0], ref[0], atol=1e-15)
        np.testing.assert_allclose(got[1], ref[1], atol=1e-15)


def test_negative_scores_and_signed_zeros():
    masks, maps = random_case(6, levels=3)
    maps = (np.round(maps * 3) - 2).astype(np.float32)  # negative, zero and positive scores
    zeros = maps == 0
    maps[zeros] = np.copysign(0.0, np.arange(zeros.sum()) % 2 - 0.5)  # mix -0.0 and +0.0
    assert np.signbit(maps[zeros]).any() and not np.signbit(maps[zeros]).all()
    fpr_ref, pro_ref = brute_pro_curve(masks, maps)
    for m in (maps, maps.astype(np.float64)):
        fpr, pro = pro_curve(masks, m)
        np.testing.assert_allclose(fpr, fpr_ref, atol=1e-12)
        np.testing.assert_allclose(pro, pro_ref, atol=1e-12)


def test_bool_masks_and_float_masks_accepted():
    masks, maps = random_case(8)
    ref = pro_auc(masks, maps)
    assert pro_auc(masks.astype(bool), maps) == ref
    assert pro_auc(masks.astype(np.float32), maps) == ref


# ----------------------------------------------------------------------------- pixel AUROC
@pytest.mark.parametrize("levels", [None, 4])
def test_pixel_auroc_equals_sklearn(levels):
    masks, maps = random_case(9, levels=levels, dtype=np.float32)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert PixelScores(masks, maps).pixel_auroc() == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- weights
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("levels", [None, 6])
def test_image_weights_equal_physical_repetition(seed, levels):
    masks, maps = random_case(seed, n=8, levels=levels, dtype=np.float32)
    rng = np.random.default_rng(100 + seed)
    weights = np.bincount(rng.integers(0, len(masks), len(masks)), minlength=len(masks))
    weights[0], weights[-1] = 2, 0  # keep a defect; drop an image whatever the draw
    rep_masks, rep_maps = np.repeat(masks, weights, axis=0), np.repeat(maps, weights, axis=0)
    scores = PixelScores(masks, maps)

    fpr, pro = scores.pro_curve(weights)
    fpr_rep, pro_rep = brute_pro_curve(rep_masks, rep_maps)
    assert fpr.shape == fpr_rep.shape  # zero-weight-only thresholds are dropped
    np.testing.assert_allclose(fpr, fpr_rep, atol=1e-12)
    np.testing.assert_allclose(pro, pro_rep, atol=1e-12)
    for got, want in [(pro_curve(masks, maps, weights), pro_curve(rep_masks, rep_maps))]:
        np.testing.assert_allclose(got, want, atol=1e-12)
    for limit in (0.3, 1.0):
        want = pro_auc(rep_masks, rep_maps, fpr_limit=limit)
        assert scores.pro_auc(weights, fpr_limit=limit) == pytest.approx(want, abs=1e-12)
        assert pro_auc(masks, maps, limit, weights) == pytest.approx(want, abs=1e-12)

    sk = roc_auc_score(masks.ravel(), maps.ravel(), sample_weight=np.repeat(weights, masks[0].size))
    assert scores.pixel_auroc(weights) == pytest.approx(sk, abs=1e-9)
    assert pixel_auroc(masks, maps, weights) == pytest.approx(sk, abs=1e-12)
    assert pixel_auroc(rep_masks, rep_maps) == pytest.approx(sk, abs=1e-12)


def test_unit_weights_equal_unweighted():
    masks, maps = random_case(11, levels=7)
    scores = PixelScores(masks, maps)
    ones = np.ones(len(masks), int)
    assert scores.pro_auc(ones) == scores.pro_auc()
    assert scores.pixel_auroc(ones) == scores.pixel_auroc()
    np.testing.assert_array_equal(scores.pro_curve(ones.astype(float))[1], scores.pro_curve()[1])


# ----------------------------------------------------------------------------- errors
def test_errors_name_the_argument():
    masks, maps = random_case(12)
    with pytest.raises(PadimError, match="masks: expected the shape"):
        pro_auc(masks[:, :-1], maps)
    with pytest.raises(PadimError, match=r"maps: expected shape \(N, H, W\)"):
        pro_auc(masks[0], maps[0])
    with pytest.raises(PadimError, match="masks: expected binary.*divide by 255"):
        pro_auc(masks * 255, maps)
    with pytest.raises(PadimError, match="masks: expected binary"):
        pixel_auroc(masks * 0.5, maps)
    with pytest.raises(PadimError, match="masks: no defect pixel.*undefined"):
        pro_auc(np.zeros_like(masks), maps)
    with pytest.raises(PadimError, match="masks: no defect-free pixel"):
        PixelScores(np.ones_like(masks), maps)
    with pytest.raises(PadimError, match="masks: no defect pixel"):
        pixel_auroc(np.zeros_like(masks), maps)
    bad = maps.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(PadimError, match="maps: contains NaN"):
        pro_curve(masks, bad)
    for limit in (0, -0.1, 1.5, float("nan"), "x"):
        with pytest.raises(PadimError, match="fpr_limit"):
            pro_auc(masks, maps, fpr_limit=limit)


def test_weight_errors():
    masks, maps = random_case(13)
    scores = PixelScores(masks, maps)
    n = len(masks)
    for weights, pattern in [
        (np.ones(n + 1), r"image_weights: expected shape"),
        (-np.ones(n), "non-negative"),
        (np.full(n, 0.5), "integer"),
        (np.zeros(n, int), "no defect pixel"),
    ]:
        with pytest.raises(PadimError, match=pattern):
            scores.pro_auc(weights)
    good_only = (masks.reshape(n, -1).sum(1) == 0).astype(int)
    assert good_only.any()
    with pytest.raises(PadimError, match="image_weights: .*no defect pixel"):
        scores.pixel_auroc(good_only)
    with pytest.raises(PadimError, match="image_weights: .*no defect pixel"):
        pixel_auroc(masks, maps, good_only)


# ----------------------------------------------------------------------------- image AUROC
def test_image_auroc():
    rng = np.random.default_rng(14)
    labels = rng.integers(0, 2, 40)
    scores = labels + rng.normal(size=40)
    weights = rng.integers(0, 3, 40)
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert image_auroc(labels, scores, weights) == pytest.approx(
        roc_auc_score(np.repeat(labels, weights), np.repeat(scores, weights))
    )
    with pytest.raises(PadimError, match="labels: .*no defective"):
        image_auroc(np.zeros(5), np.arange(5.0))
    with pytest.raises(PadimError, match="scores: expected the shape"):
        image_auroc(labels, scores[:-1])
    with pytest.raises(PadimError, match="labels: expected binary"):
        image_auroc(labels + 1, scores)
    with pytest.raises(PadimError, match="scores: contains NaN"):
        image_auroc(labels, np.where(labels, np.nan, 0.0))
    with pytest.raises(PadimError, match="labels: .*no good"):
        image_auroc(labels, scores, sample_weight=labels)


# ----------------------------------------------------------------------------- pair tables
def _pixel_case(seed: int, quant: float | None, dtype=np.float32, n: int = 12, h: int = 20):
    """Random test set: a third good images, defective ones with 1-3 rectangles; quant > 0 makes ties."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, h), np.uint8)
    for i in range(n // 3, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, h - 4, 2)
            masks[i, y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = 1
    maps = rng.normal(size=(n, h, h)) + masks * rng.uniform(0, 2)
    if quant:
        maps = np.round(maps * quant) / quant
    return masks, maps.astype(dtype)


@pytest.mark.parametrize("quant", [None, 2.0, 8.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pair_tables_equal_the_cumulative_pass(quant, dtype):
    """Weightings through the pair tables (any number of checkpoints) = the cumulative pass."""
    rng = np.random.default_rng(11)
    for seed in range(4):
        masks, maps = _pixel_case(seed, quant, dtype)
        ref = PixelScores(masks, maps, memory_budget=0)  # no pair tables: the cumulative pass only
        for checkpoints, limit in ((1, 0.3), (7, 0.3), (128, 0.05), (7, 1.0)):
            fast = PixelScores(masks, maps, checkpoints=checkpoints)
            for _ in range(6):
                w = np.bincount(rng.integers(0, len(maps), len(maps)), minlength=len(maps))
                if w @ masks.reshape(len(maps), -1).sum(1) == 0:
                    continue  # no defect pixel drawn: undefined for both
                assert fast.pixel_auroc(w) == pytest.approx(ref.pixel_auroc(w), abs=1e-12)
                assert fast.pro_auc(w, fpr_limit=limit) == pytest.approx(ref.pro_auc(w, fpr_limit=limit), abs=1e-12)
            assert fast._pairs is not None and ref._pairs is None  # both paths were taken


def test_curves_and_pixel_errors_of_the_engine():
    from sklearn.metrics import roc_curve

    masks, maps = _pixel_case(3, 4.0)
    scores = PixelScores(masks, maps)
    fpr, tpr, _ = roc_curve(masks.ravel(), maps.ravel(), drop_intermediate=False)
    got = scores.roc_curve()
    np.testing.assert_allclose(got[0], fpr, atol=1e-12)
    np.testing.assert_allclose(got[1], tpr, atol=1e-12)
    with pytest.raises(PadimError, match="image_weights"):
        scores.pixel_auroc(np.ones(3))
    with pytest.raises(PadimError, match="defect"):
        PixelScores(np.zeros_like(masks), maps)


def test_regions_are_8_connected_within_an_image_only():
    np.testing.assert_array_equal(metrics_pixel.CONNECTIVITY, np.ones((3, 3), bool))
    masks = np.zeros((2, 6, 6), np.uint8)
    masks[0, 1, 1] = masks[0, 2, 2] = 1  # diagonal neighbours: one region
    masks[1, 1, 1] = 1  # same place in the next image: another region
    scores = PixelScores(masks, np.random.default_rng(0).random(masks.shape))
    assert scores.num_regions == 2 and list(scores.region_sizes) == [2, 1]


def test_image_scores_equal_sklearn_weights():
    rng = np.random.default_rng(12)
    labels = np.r_[np.zeros(7, int), np.ones(9, int)]
    scores = np.round(rng.normal(size=16) + labels, 1)  # ties included
    fast = ImageScores(labels, scores)
    assert fast.auroc() == pytest.approx(image_auroc(labels, scores))
    for _ in range(20):
        w = np.r_[np.bincount(rng.integers(0, 7, 7), minlength=7), np.bincount(rng.integers(0, 9, 9), minlength=9)]
        assert fast.auroc(w) == pytest.approx(image_auroc(labels, scores, sample_weight=w), abs=1e-12)
    with pytest.raises(PadimError, match="image_weights: .*no defective"):
        fast.auroc(np.r_[np.ones(7, int), np.zeros(9, int)])
    with pytest.raises(PadimError, match="image_weights: expected integer"):
        fast.auroc(np.full(16, 0.5))
    with pytest.raises(PadimError, match="labels: .*no defective"):
        ImageScores(np.zeros(4), np.arange(4.0))


def test_pooled_auroc_from_quantiles_is_within_a_tenth_of_a_point_of_the_exact_pooled_one():
    """Three test sets with their scores on different scales (like STC's scenes): the pixel AUROC of all
    their pixels ranked together, from each set's 1000 quantiles, against the exact one; one set alone
    gives its own AUROC; the pooled value is not the mean of the three."""
    from padim_lib.metrics.pooled import pooled_auroc, score_quantiles

    rng = np.random.default_rng(0)
    sets = []
    for scale, shift in ((1.0, 0.0), (3.0, 2.0), (0.5, -1.0)):
        masks = np.zeros((6, 32, 32), np.uint8)
        masks[:3, 8:16, 8:20] = 1
        sets.append((masks, ((rng.normal(0, 1, masks.shape) + 1.5 * masks) * scale + shift).astype(np.float32)))
    summaries = [score_quantiles(m, x) for m, x in sets]
    assert summaries[0]["pixel_quantiles_normal"].shape == (1000,) and int(summaries[0]["pixel_count_defect"]) == 3 * 96
    exact = pixel_auroc(np.concatenate([m for m, _ in sets]), np.concatenate([x for _, x in sets]))
    assert pooled_auroc(summaries) == pytest.approx(exact, abs=1e-3)
    singles = [pixel_auroc(m, x) for m, x in sets]
    for (m, x), single in zip(sets, singles, strict=True):
        assert pooled_auroc([score_quantiles(m, x)]) == pytest.approx(single, abs=1e-3)
    assert abs(float(np.mean(singles)) - exact) > 0.05  # the two averagings differ here
    with pytest.raises(PadimError, match="all defect-free"):
        pooled_auroc([score_quantiles(np.zeros((1, 4, 4)), np.ones((1, 4, 4)))])
