"""Thresholds without test masks: the quantile rule against brute force, the held-out split, and
`padim evaluate --holdout` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from padim_lib.cli import main
from padim_lib.datasets import Preprocess, make_synthetic, open_dataset
from padim_lib.engine.threshold import holdout_split, holdout_threshold
from padim_lib.errors import PadimError
from padim_lib.methods.padim.detector import PaDiM
from padim_lib.metrics.threshold import rates_at_threshold, threshold_at_fpr

CATEGORY = "chip"
PRE = Preprocess(resize=64, crop=64)


def brute_force_threshold(values: np.ndarray, fpr: float) -> float:
    """The smallest of the values with at most a fraction fpr of them strictly above it."""
    n = values.size
    return min(t for t in values.ravel() if np.sum(values > t) <= fpr * n + 1e-9)


# ----------------------------------------------------------------------------- the quantile rule
def test_threshold_known_values():
    v = np.arange(1.0, 101.0)  # 1..100
    assert threshold_at_fpr(v, 0.01) == 99.0  # one of 100 may lie above
    assert threshold_at_fpr(v, 0.29) == 71.0  # 100 * 0.29 = 28.999999999999996 in floating point: 29 above
    assert threshold_at_fpr(v, 0.005) == 100.0  # fewer than 1 / fpr values: the maximum
    assert threshold_at_fpr(v[::-1].reshape(10, 10), 0.1) == 90.0  # any shape, any order


@pytest.mark.parametrize("seed", range(6))
def test_threshold_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    values = rng.normal(size=n).round(1)  # rounded: ties
    for fpr in (0.01, 0.05, 0.1, 0.25, 0.5, 0.9, 0.99):
        t = threshold_at_fpr(values, fpr)
        assert t == brute_force_threshold(values, fpr), (n, fpr)
        assert np.mean(values > t) <= fpr + 1e-12


def test_rates_at_threshold_known_values():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.5, 0.6, 0.9, 0.55, 2.0])
    assert rates_at_threshold(labels, scores, 0.5) == {"fpr": 0.5, "tpr": 1.0}  # 0.5 itself is not above
    assert rates_at_threshold(labels, scores, 1.0) == {"fpr": 0.0, "tpr": 0.5}
    assert rates_at_threshold(np.zeros(3), np.arange(3), 0.5) == {"fpr": 2 / 3, "tpr": None}


@pytest.mark.parametrize("fpr", [0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_fpr_outside_the_open_interval_is_refused(fpr):
    with pytest.raises(PadimError, match=r"^fpr=.*expected a false-positive rate in \(0, 1\)"):
        threshold_at_fpr(np.arange(5.0), fpr)


def test_threshold_refuses_empty_or_nan_values():
    with pytest.raises(PadimError, match="at least one"):
        threshold_at_fpr(np.array([]), 0.1)
    with pytest.raises(PadimError, match="finite"):
        threshold_at_fpr(np.array([1.0, np.nan]), 0.1)


# ----------------------------------------------------------------------------- the split
def test_split_is_disjoint_covering_and_reproducible():
    fit, held = holdout_split(20, 0.2, seed=3)
    assert len(held) == 4 and len(fit) == 16
    assert set(fit).isdisjoint(held) and sorted([*fit, *held]) == list(range(20))
    again_fit, again_held = holdout_split(20, 0.2, seed=3)
    np.testing.assert_array_equal(held, again_held)
    np.testing.assert_array_equal(fit, again_fit)
    others = {tuple(holdout_split(20, 0.2, seed=s)[1]) for s in range(5)}
    assert len(others) > 1  # the seed chooses the images


def test_split_sizes_round_half_up_and_hold_out_at_least_one():
    assert len(holdout_split(10, 0.25)[1]) == 3  # 2.5 -> 3
    assert len(holdout_split(10, 0.01)[1]) == 1  # 0.1 -> at least one
    with pytest.raises(PadimError, match=r"^holdout=0.5 leaves 1 of the 3 training images to fit on; expected at least 2"):
        holdout_split(3, 0.5, min_fit=2)
    for bad in (0.0, 1.0, -1, float("nan")):
        with pytest.raises(PadimError, match=r"^holdout="):
            holdout_split(10, bad)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A synthetic class and a PaDiM model file (shipped Lite0 weights: a file's backbone is then the
    one every reload and refit uses)."""
    root = tmp_path_factory.mktemp("threshold")
    make_synthetic(root, seed=0, n_train=8, n_test_good=3, n_test_defect=3, size=64, categories=[CATEGORY])
    model = PaDiM(reduce="random:16", device="cpu", batch_size=8, progress=False)
    model.fit(open_dataset(root, CATEGORY, "train", PRE))
    model.meta = {"preprocess": {"resize": 64, "crop": 64, "normalize": True}}
    model.save(root / "chip.pt")
    return root, root / "chip.pt"


def test_holdout_threshold_fits_on_the_rest_and_takes_the_quantile(fitted):
    root, model_file = fitted
    found = holdout_threshold(PaDiM.load(model_file, device="cpu"), root, CATEGORY, PRE, holdout=0.25, fpr=0.05)
    fit_idx, held_idx = holdout_split(8, 0.25, seed=0)
    np.testing.assert_array_equal(found.holdout_indices, held_idx)
    assert found.detector.n_train_ == len(fit_idx) == 6  # fitted on the rest only
    assert found.image_threshold == brute_force_threshold(found.holdout_scores, 0.05)
    assert found.pixel_threshold == threshold_at_fpr(found.holdout_maps, 0.05)
    assert found.holdout_maps.shape == (2, 64, 64)
    print("threshold (library):", found.summary())


def test_cli_evaluate_reports_the_holdout_threshold(fitted, tmp_path, capsys):
    root, model_file = fitted
    out = tmp_path / "metrics.json"
    args = ["evaluate", "--model", str(model_file), "--data", str(root), "--category", CATEGORY, "--device", "cpu",
            "--holdout", "0.25", "--fpr", "0.05", "--json", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    res = json.loads(out.read_text())
    t = res["threshold"]
    assert (t["holdout"], t["fpr"], t["seed"], t["n_fit"], t["n_holdout"]) == (0.25, 0.05, 0, 6, 2)
    found = holdout_threshold(PaDiM.load(model_file, device="cpu"), root, CATEGORY, PRE, holdout=0.25, fpr=0.05)
    assert t["image_threshold"] == pytest.approx(found.image_threshold, rel=1e-6)
    assert t["pixel_threshold"] == pytest.approx(found.pixel_threshold, rel=1e-6)
    assert t["holdout_images"] == [p.rsplit("/", 1)[-1] for p in found.holdout_paths]
    # the test-set rates are those of the refitted model's scores at the image threshold
    test = open_dataset(root, CATEGORY, "test", PRE)
    _, scores = found.detector.predict(test)
    expected = rates_at_threshold(test.labels, scores, found.image_threshold)
    assert t["test"]["image_fpr"] == pytest.approx(expected["fpr"]) and t["test"]["image_tpr"] == pytest.approx(
        expected["tpr"])
    assert all(0.0 <= t["test"][k] <= 1.0 for k in ("pixel_fpr", "pixel_tpr"))
    # the summary on stderr; stdout is the JSON alone
    assert json.loads(captured.out) == res
    assert f"image {t['image_threshold']:.4g}, pixel {t['pixel_threshold']:.4g}" in captured.err
    print("threshold (CLI):", json.dumps(t))
