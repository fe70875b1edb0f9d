"""SPADE (padim_lib.methods.spade.detector): equal to a brute-force numpy k-NN, bad input, save/load."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from padim_lib.errors import PadimError
from padim_lib.features.extractor import align_concat
from padim_lib.methods.postprocess import anomaly_maps
from padim_lib.methods.registry import get_method
from padim_lib.methods.spade import knn
from padim_lib.methods.spade.detector import SPADE, default_global_layer

PIXEL = ("layer1", "layer2", "layer3")
SIZE = (32, 32)


def _features(n: int, seed: int, grids=((8, 8), (4, 4), (2, 2))) -> dict[str, torch.Tensor]:
    """Random non-negative (post-ReLU-like) resnet18-named maps: 3 pixel layers and layer4."""
    g = torch.Generator().manual_seed(seed)
    out = {name: torch.rand(n, c, h, w, generator=g) for name, c, (h, w) in zip(PIXEL, (3, 4, 5), grids, strict=True)}
    out["layer4"] = torch.rand(n, 6, 1, 1, generator=g)
    return out


def _batches(feats: dict[str, torch.Tensor], size: int = 3) -> list[dict[str, torch.Tensor]]:
    n = len(feats["layer4"])
    return [{k: v[i : i + size] for k, v in feats.items()} for i in range(0, n, size)]


def _nearest_mean(a: np.ndarray, b: np.ndarray, kappa: int) -> np.ndarray:
    """(P,) mean of the kappa smallest Euclidean distances from each row of a to the rows of b."""
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, :kappa].mean(1)


def _brute(train, test, k, big_k, kappa, mode, sigma=4.0):
    """SPADE by the definition, in float64 numpy: all pairs, sorted."""
    as64 = {x: v.double() for x, v in train.items()}, {x: v.double() for x, v in test.items()}
    tr, te = as64
    gtr, gte = tr["layer4"].mean((2, 3)).numpy(), te["layer4"].mean((2, 3)).numpy()
    if mode == "concat":
        groups = [(align_concat([tr[x] for x in PIXEL]).numpy(), align_concat([te[x] for x in PIXEL]).numpy())]
    else:
        groups = [(tr[x].numpy(), te[x].numpy()) for x in PIXEL]
    scores, maps = [], []
    for i in range(len(gte)):
        d = np.sqrt(((gte[i] - gtr) ** 2).sum(1))
        order = np.argsort(d, kind="stable")
        scores.append(d[order[:k]].mean())
        total = 0.0
        for gal, x in groups:
            c, h, w = x.shape[1:]
            vecs = x[i].reshape(c, -1).T
            gallery = gal[order[:big_k]].transpose(0, 2, 3, 1).reshape(-1, c)
            grid = torch.from_numpy(_nearest_mean(vecs, gallery, kappa).reshape(1, h, w))
            total = total + anomaly_maps(grid, SIZE, sigma)[0].numpy()
        maps.append(total)
    return np.stack(maps), np.array(scores)


def _assert_close(got, want, rtol=1e-4):
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("mode", ["concat", "sum"])
@pytest.mark.parametrize("kappa", [1, 3])
@pytest.mark.parametrize("block", [1, knn.CPU_BLOCK_BYTES])
def test_equals_brute_force_knn(mode, kappa, block, monkeypatch):
    monkeypatch.setattr(knn, "CPU_BLOCK_BYTES", block)  # 1 byte: one gallery image per block
    train, test = _features(9, 0), _features(4, 1)
    est = SPADE(backbone="resnet18", layer_mode=mode, k=4, n_gallery=3, kappa=kappa, device="cpu", progress=False)
    maps, scores = est.fit_features(_batches(train)).predict_features(_batches(test), SIZE)
    want_maps, want_scores = _brute(train, test, 4, 3, kappa, mode)
    assert maps.shape == (4, *SIZE) and scores.shape == (4,)
    _assert_close(maps, want_maps)
    _assert_close(scores, want_scores)


@pytest.mark.parametrize("kappa", [1, 2])
def test_concat_with_cells_that_do_not_divide_the_grid(kappa):
    # 7 -> 4 -> 2 cells: not nested; the nearest-exact gathers instead of the coarse-to-fine minimum.
    grids = ((7, 7), (4, 4), (2, 2))
    train, test = _features(5, 2, grids), _features(2, 3, grids)
    est = SPADE(backbone="resnet18", k=2, n_gallery=2, kappa=kappa, device="cpu", progress=False)
    maps, scores = est.fit_features(_batches(train)).predict_features(_batches(test), SIZE)
    want_maps, want_scores = _brute(train, test, 2, 2, kappa, "concat")
    _assert_close(maps, want_maps)
    _assert_close(scores, want_scores)


def test_k_and_n_gallery_are_capped_with_a_warning():
    train, test = _features(5, 0), _features(2, 1)
    est = SPADE(backbone="resnet18", k=10, n_gallery=7, device="cpu", progress=False)
    with pytest.warns(UserWarning) as record:
        est.fit_features(_batches(train))
    assert sorted(str(w.message) for w in record) == [
        "k=10 is larger than the 5 training images; using k=5",
        "n_gallery=7 is larger than the 5 training images; using n_gallery=5",
    ]
    assert (est.k_, est.n_gallery_) == (5, 5)
    maps, scores = est.predict_features(_batches(test), SIZE)
    want_maps, want_scores = _brute(train, test, 5, 5, 1, "concat")
    _assert_close(maps, want_maps)
    _assert_close(scores, want_scores)


@pytest.mark.parametrize("name", ["k", "n_gallery", "kappa"])
def test_counts_below_one_are_errors_naming_the_parameter(name):
    train = _batches(_features(3, 0))
    with pytest.raises(PadimError, match=rf"^{name}=0; expected an integer >= 1"):
        SPADE(backbone="resnet18", device="cpu", **{name: 0}).fit_features(train)
    with pytest.raises(PadimError, match=rf"{name}=0"):
        get_method("spade").validate_params({name: 0})


def test_kappa_beyond_the_gallery_is_an_error_and_leaves_no_fitted_state():
    est = SPADE(backbone="resnet18", k=2, n_gallery=2, kappa=1000, device="cpu", progress=False)
    with pytest.raises(PadimError, match=r"kappa=1000 is larger than the 128 pixel features"):
        est.fit_features(_batches(_features(3, 0)))
    with pytest.raises(PadimError, match="not fitted"):
        est.predict_features(_batches(_features(1, 1)), SIZE)


def test_other_bad_parameters_and_inputs():
    train = _batches(_features(3, 0))
    with pytest.raises(PadimError, match="layer_mode='mean'"):
        SPADE(backbone="resnet18", layer_mode="mean", device="cpu").fit_features(train)
    with pytest.raises(PadimError, match="global_layer='fc'"):
        SPADE(backbone="resnet18", global_layer="fc", device="cpu").fit_features(train)
    with pytest.raises(PadimError, match="finer than"):  # pixel layers must come finest first
        SPADE(backbone="resnet18", layers=("layer2", "layer1"), device="cpu", progress=False).fit_features(train)
    est = SPADE(backbone="resnet18", k=2, n_gallery=2, device="cpu", progress=False).fit_features(train)
    with pytest.raises(PadimError, match="feature grids"):
        est.predict_features(_batches(_features(1, 1, ((4, 4), (2, 2), (1, 1)))), SIZE)
    with pytest.raises(PadimError, match="not fitted"):
        SPADE().predict_features(train, SIZE)


def test_save_load_round_trip_gives_identical_maps(tmp_path):
    train, test = _batches(_features(6, 0)), _batches(_features(3, 1))
    est = SPADE(backbone="resnet18", layer_mode="sum", k=3, n_gallery=2, kappa=2, sigma=2.0, device="cpu",
                progress=False)
    est.meta = {"category": "bottle"}
    maps, scores = est.fit_features(train).predict_features(test, SIZE)
    est.save(tmp_path / "spade.pt")
    loaded = SPADE.load(tmp_path / "spade.pt", device="cpu")
    maps2, scores2 = loaded.predict_features(test, SIZE)
    assert np.array_equal(maps, maps2) and np.array_equal(scores, scores2)
    assert loaded.get_params()["layer_mode"] == "sum" and loaded.meta == {"category": "bottle"}
    assert loaded.gallery_[0].dtype == torch.float32 and loaded.gallery_[0].shape == (6, 8, 8, 3)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path):
    est = SPADE(backbone="resnet18", k=2, n_gallery=2, device="cpu", progress=False)
    est.fit_features(_batches(_features(3, 0))).save(tmp_path / "spade.pt")
    data = (tmp_path / "spade.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(PadimError, match=r"cut.pt: not a readable SPADE model file"):
        SPADE.load(tmp_path / "cut.pt")
    torch.save({"format": "padim_lib.model", "tensors": {}}, tmp_path / "padim.pt")
    with pytest.raises(PadimError, match=r"padim.pt: not a SPADE model file"):
        SPADE.load(tmp_path / "padim.pt")
    with pytest.raises(FileNotFoundError):
        SPADE.load(tmp_path / "missing.pt")


def test_fit_predict_on_images_with_a_random_resnet18():
    torch.manual_seed(0)
    train = torch.randn(4, 3, 64, 64)
    est = SPADE(backbone="resnet18", pretrained=False, k=1, n_gallery=2, device="cpu", batch_size=3,
                progress=False).fit(train)
    assert est.feature_layers() == ("layer1", "layer2", "layer3", "layer4")
    assert est.grids_ == [(16, 16), (8, 8), (4, 4)] and est.image_size_ == (64, 64)
    test = torch.cat([train[:2], torch.randn(2, 3, 64, 64)])
    maps, scores = est.predict(test)
    assert maps.shape == (4, 64, 64) and scores.shape == (4,) and np.isfinite(maps).all()
    # A training image is its own nearest neighbour: zero score and zero map (up to rounding).
    assert scores[:2].max() < 1e-3 * scores[2:].min()
    assert maps[:2].max() < 1e-2 * maps[2:].max()
    with pytest.raises(PadimError, match="images are 32x32"):
        est.predict(torch.randn(1, 3, 32, 32))


def test_from_config_reads_the_common_fields_and_params():
    from padim_lib.engine.config import ExperimentConfig

    fields = dict(method="spade", backbone="resnet18", layers=("layer1", "layer2"), layer_mode="sum", sigma=2.0,
                  max_train=7, pretrained=False)
    config = ExperimentConfig(**fields, params={"k": 5, "kappa": 2})
    est = SPADE.from_config(config, device="cpu")
    got = est.get_params()
    assert {x: got[x] for x in ("backbone", "layers", "layer_mode", "sigma", "max_train", "k", "n_gallery",
                                "kappa", "global_layer", "pretrained")} == {
        "backbone": "resnet18", "layers": ("layer1", "layer2"), "layer_mode": "sum", "sigma": 2.0,
        "max_train": 7, "k": 5, "n_gallery": 50, "kappa": 2, "global_layer": None, "pretrained": False,
    }
    with pytest.raises(PadimError, match="unknown parameter"):  # checked by the configuration, before any detector
        ExperimentConfig(**fields, params={"K": 3})


def test_max_train_keeps_the_first_images():
    train = _features(6, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = SPADE(backbone="resnet18", k=2, n_gallery=2, max_train=4, device="cpu", progress=False)
        est.fit_features(_batches(train))
    assert est.n_train_ == 4 and torch.equal(est.global_, train["layer4"][:4].mean((2, 3)))


def test_default_global_layer_is_the_deepest():
    assert default_global_layer("wide_resnet50_2") == "layer4"
    assert default_global_layer("efficientnet_lite0") == "_blocks.15"
    assert default_global_layer("efficientnet_b5") == "features.8"


def test_registry_entry_matches_the_estimator():
    from sklearn.base import clone

    spec = get_method("spade")
    assert spec.detector_class() is SPADE and SPADE.uses_features
    assert spec.defaults() == {"k": 50, "n_gallery": 50, "kappa": 1, "global_layer": None}
    assert {x: SPADE().get_params()[x] for x in spec.defaults()} == spec.defaults()
    assert spec.reads == {"layers", "layer_mode"}
    assert clone(SPADE(k=3, layer_mode="sum")).get_params()["k"] == 3
