"""PaDiM: maps against a brute-force per-position reference, streaming, reductions, save/load, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from sklearn.base import clone

from padim_lib.errors import PadimError
from padim_lib.methods.padim.detector import PaDiM, parse_reduce
from padim_lib.methods.postprocess import anomaly_maps, gaussian_blur, image_scores

# A fake resnet18 feature source: real layer names and channel counts, small grids (image 32 px).
LAYERS = {"layer1": (64, 8), "layer2": (128, 4), "layer3": (256, 2)}
IMAGE = 32


def fake_features(n: int, seed: int, layers=tuple(LAYERS), shift: float = 0.0) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in layers:
        c, s = LAYERS[name]
        # A per-channel scale and offset pattern, so that positions and channels differ.
        base = (
            torch.linspace(-1, 1, c)[None, :, None, None] * torch.linspace(0.5, 1.5, s)[None, None, :, None]
        )
        out[name] = base + 0.5 * torch.randn(n, c, s, s, generator=g) + shift
    return out


def batches(sizes, seed0: int = 0, **kw) -> list[dict]:
    return [fake_features(n, seed0 + i, **kw) for i, n in enumerate(sizes)]


def merged(batch_list: list[dict]) -> dict:
    return {k: torch.cat([b[k] for b in batch_list]) for k in batch_list[0]}


def model(**kw) -> PaDiM:
    # layer1 + layer2 = 192 d by default: the three layers (448 d) make each fit needlessly slow.
    kw.setdefault("backbone", "resnet18")
    kw.setdefault("layers", ("layer1", "layer2"))
    kw.setdefault("device", "cpu")
    return PaDiM(progress=False, **kw)


# ----------------------------------------------------------------- brute-force reference
def _embed_np(feats: dict, layers) -> np.ndarray:
    """(N, C, h, w) float64: layers nearest-upsampled onto the first grid and concatenated."""
    size = feats[layers[0]].shape[-2:]
    maps = [F.interpolate(feats[name].double(), size=size, mode="nearest") for name in layers]
    return torch.cat(maps, 1).numpy()


def _distance_np(train: np.ndarray, test: np.ndarray, eps: float = 0.01) -> np.ndarray:
    """Per-position np.cov + explicit np.linalg.inv; train (N, D, h, w), test (M, D, h, w) -> (M, h, w)."""
    _, d, h, w = train.shape
    out = np.zeros((test.shape[0], h, w))
    for i in range(h):
        for j in range(w):
            x = train[:, :, i, j]
            inv = np.linalg.inv(np.cov(x, rowvar=False) + eps * np.eye(d))
            diff = test[:, :, i, j] - x.mean(axis=0)
            out[:, i, j] = np.sqrt(np.einsum("bi,ij,bj->b", diff, inv, diff))
    return out


def _upsample_np(dist: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(dist)[:, None]
    return F.interpolate(t, size=(IMAGE, IMAGE), mode="bicubic", align_corners=False)[:, 0].numpy()


def _smooth_np(maps: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    return np.stack([ndi.gaussian_filter(m, sigma, mode="reflect", truncate=4.0) for m in maps])


def _pca_np(train: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-d principal axes (d, C) and mean (C,) of all training vectors (every image and position)."""
    vecs = train.transpose(0, 2, 3, 1).reshape(-1, train.shape[1])
    vals, axes = np.linalg.eigh(np.cov(vecs, rowvar=False))
    return axes[:, np.argsort(vals)[::-1][:d]].T, vecs.mean(axis=0)


def _project_np(x: np.ndarray, comps: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return np.einsum("kc,nchw->nkhw", comps, x - mean[None, :, None, None])


@pytest.mark.parametrize("reduce", [None, "random:60", "pca:40"])
def test_concat_maps_match_bruteforce(reduce):
    train, test = batches([7, 7, 6]), batches([5], seed0=100, shift=0.3)
    est = model(reduce=reduce).fit_features(train)
    maps, scores = est.predict_features(test, IMAGE)

    layers = ("layer1", "layer2")
    x_train, x_test = _embed_np(merged(train), layers), _embed_np(test[0], layers)
    if reduce and reduce.startswith("random"):
        index = est.model_[0].channel_index.numpy()
        assert len(np.unique(index)) == 60
        x_train, x_test = x_train[:, index], x_test[:, index]
    elif reduce:
        # The distance is invariant to the sign (and any rotation) of the basis inside the subspace.
        comps, mean = _pca_np(x_train, 40)
        x_train, x_test = _project_np(x_train, comps, mean), _project_np(x_test, comps, mean)
    ref = _smooth_np(_upsample_np(_distance_np(x_train, x_test)))
    assert maps.shape == (5, IMAGE, IMAGE) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, ref, rtol=1e-4)
    np.testing.assert_array_equal(scores, maps.reshape(5, -1).max(axis=1))


def test_sum_mode_matches_bruteforce():
    # The paper's "Layer 1+2+3": one model per layer, upsampled maps summed, then smoothed.
    train, test = batches([10, 10]), batches([4], seed0=50, shift=0.2)
    maps, _ = model(layers=tuple(LAYERS), layer_mode="sum").fit_features(train).predict_features(test, IMAGE)
    up = sum(
        _upsample_np(_distance_np(_embed_np(merged(train), (name,)), _embed_np(test[0], (name,))))
        for name in LAYERS
    )
    np.testing.assert_allclose(maps, _smooth_np(up), rtol=1e-4)


def test_forward_on_the_full_embedding_equals_layerwise_selection():
    # PaDiMModel.forward takes the full aligned embedding; predict selects channels per layer first.
    from padim_lib.features.extractor import align_concat

    est = model(layers=tuple(LAYERS), reduce="random:100").fit_features(batches([5]))
    feats = fake_features(3, seed=8)
    maps = [feats[name] for name in LAYERS]
    m = est.model_[0]
    np.testing.assert_allclose(m(align_concat(maps)).numpy(), m.score_layers(maps).numpy(), rtol=1e-6)


def test_single_layer_is_the_same_in_both_modes():
    train, test = batches([6, 6]), batches([3], seed0=9)
    a = model(layers=("layer2",)).fit_features(train).predict_features(test, IMAGE)[0]
    b = model(layers=("layer2",), layer_mode="sum").fit_features(train).predict_features(test, IMAGE)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sizes", [[1] * 12, [5, 5, 2], [12]])
def test_streaming_fit_does_not_depend_on_batching(sizes):
    all_in_one = merged(batches([4, 4, 4]))
    split = np.cumsum([0, *sizes])
    train = [{k: v[a:b] for k, v in all_in_one.items()} for a, b in zip(split[:-1], split[1:], strict=True)]
    test = batches([3], seed0=77)
    ref = model().fit_features([all_in_one]).predict_features(test, IMAGE)[0]
    got = model().fit_features(train).predict_features(test, IMAGE)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_float32_accumulator_agrees_with_float64():
    train, test = batches([8, 8, 8]), batches([3], seed0=5)
    a = model(accumulate_dtype="float64").fit_features(train)
    b = model(accumulate_dtype="float32").fit_features(train)
    assert (a.accumulate_dtypes_, b.accumulate_dtypes_) == (["float64"], ["float32"])
    np.testing.assert_allclose(
        b.predict_features(test, IMAGE)[0], a.predict_features(test, IMAGE)[0], rtol=1e-4
    )


def test_random_reduction_is_seeded():
    train = batches([3, 3])
    idx = [model(reduce="random:50", seed=s).fit_features(train).model_[0].channel_index for s in (0, 0, 1)]
    assert torch.equal(idx[0], idx[1]) and not torch.equal(idx[0], idx[2])
    assert torch.equal(idx[0], idx[0].sort().values) and int(idx[0].max()) < 192


def test_pca_basis_is_orthonormal_and_needs_two_passes():
    train = batches([6, 6])
    m = model(reduce="pca:30").fit_features(train).model_[0]
    comps = m.pca_components.double()
    assert comps.shape == (30, 192)
    assert torch.allclose(comps @ comps.T, torch.eye(30, dtype=torch.float64), atol=1e-5)
    with pytest.raises(PadimError, match="two passes"):
        model(reduce="pca:30").fit_features(iter(train))


@pytest.mark.parametrize(
    "kw",
    [{}, {"reduce": "random:60"}, {"reduce": "pca:40"}, {"layer_mode": "sum", "reduce": "random:30"}],
    ids=["full", "random", "pca", "sum"],
)
def test_save_load_gives_identical_maps(tmp_path, kw):
    train, test = batches([6, 6]), batches([4], seed0=31)
    est = model(**kw).fit_features(train)
    est.meta = {"category": "x", "preprocess": {"resize": 36, "crop": 32}}
    maps, scores = est.predict_features(test, IMAGE)
    path = tmp_path / "sub" / "model.pt"
    est.save(path)
    loaded = PaDiM.load(path, device="cpu")
    maps2, scores2 = loaded.predict_features(test, IMAGE)
    assert np.array_equal(maps, maps2) and np.array_equal(scores, scores2)
    assert loaded.get_params() == {**est.get_params(), "device": "cpu"}
    assert loaded.meta == est.meta and loaded.n_train_ == 12
    for a, b in zip(est.model_, loaded.model_, strict=True):
        assert dict(a.named_buffers()).keys() == dict(b.named_buffers()).keys()
        assert all(torch.equal(x, y) for x, y in zip(a.buffers(), b.buffers(), strict=True))
    # The file is read with weights_only=True: tensors and primitives only.
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == 1 and '"backbone": "resnet18"' in payload["metadata"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        PaDiM.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file at all")
    with pytest.raises(PadimError, match="junk.pt"):
        PaDiM.load(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(PadimError, match="foreign.pt.*not a padim_lib model"):
        PaDiM.load(foreign)
    est = model(layers=("layer3",)).fit_features(batches([3]))
    good = tmp_path / "good.pt"
    est.save(good)
    payload = torch.load(good, weights_only=True)
    torch.save({**payload, "format_version": 99}, tmp_path / "v99.pt")
    with pytest.raises(PadimError, match="v99.pt.*version 99"):
        PaDiM.load(tmp_path / "v99.pt")
    torch.save({**payload, "tensors": {}}, tmp_path / "empty.pt")
    with pytest.raises(PadimError, match="empty.pt.*corrupt"):
        PaDiM.load(tmp_path / "empty.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(PadimError, match="truncated.pt"):
        PaDiM.load(truncated)


def test_estimator_protocol():
    est = PaDiM(backbone="no-such-net", layers=["x"], reduce="bad", eps=-1)  # no validation in __init__
    assert est.get_params()["layers"] == ["x"] and est.get_params()["reduce"] == "bad"
    twin = clone(model(reduce="random:10", seed=3))
    assert twin.get_params()["reduce"] == "random:10" and twin.get_params()["seed"] == 3
    with pytest.raises(PadimError, match="not fitted"):
        model().predict_features(batches([1]), IMAGE)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"backbone": "vgg"}, r"backbone='vgg'.*resnet18"),
        ({"layers": ("layer1", "layer9")}, r"no layer 'layer9'.*layer4"),
        ({"layer_mode": "mean"}, "layer_mode='mean'"),
        ({"reduce": "random:200"}, r"reduce='random:200'.*192"),
        ({"reduce": "pca:65", "layer_mode": "sum"}, r"reduce='pca:65'.*\['layer1'\].*64"),
        ({"reduce": "rand:10"}, "reduce='rand:10'"),
        ({"eps": -0.1}, "eps"),
        ({"sigma": float("nan")}, "sigma"),
        ({"batch_size": 0}, "batch_size"),
        ({"device": "tpu:x"}, "device"),
        ({"accumulate_dtype": "float16"}, "accumulate_dtype"),
    ],
)
def test_bad_parameters_are_named(kw, match):
    with pytest.raises(PadimError, match=match):
        model(**kw).fit_features(batches([2]))


def test_bad_training_data():
    with pytest.raises(PadimError, match="at least 2 training images, got 1"):
        model().fit_features(batches([1]))
    bad = batches([3, 3])
    bad[1]["layer2"][0, 5, 1, 1] = float("nan")
    with pytest.raises(PadimError, match="layer 'layer2'.*NaN"):
        model().fit_features(bad)
    with pytest.raises(PadimError, match="lacks layer 'layer3'"):
        model(layers=("layer1", "layer3")).fit_features(batches([3], layers=("layer1", "layer2")))


def test_finite_check_catches_inf_and_not_a_large_sum():
    from padim_lib.methods.streams import layer_maps

    big = {"layer1": torch.full((2, 3, 4, 4), 3e38)}  # the sum overflows, every value is finite
    assert layer_maps(big, ["layer1"])[0] is big["layer1"]
    big["layer1"][1, 2, 3, 0] = float("-inf")
    with pytest.raises(PadimError, match="layer 'layer1'.*inf"):
        layer_maps(big, ["layer1"])


def test_predict_rejects_another_grid_or_size(tmp_path):
    est = model(layers=("layer1",)).fit_features(batches([4]))
    other = {"layer1": torch.randn(2, 64, 6, 6)}
    with pytest.raises(PadimError, match="grid 6x6 differs from the 8x8"):
        est.predict_features([other], 24)


def test_parse_reduce():
    assert parse_reduce(None) == (None, None)
    assert parse_reduce("random:100") == ("random", 100)
    assert parse_reduce("pca:7") == ("pca", 7)
    for bad in ("pca", "pca:0", "random:-3", "svd:10"):
        with pytest.raises(PadimError, match="reduce"):
            parse_reduce(bad)


# ----------------------------------------------------------------- images through a real backbone
@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(10, 3, 64, 64, generator=g)


def test_images_through_resnet18(images, tmp_path):
    from padim_lib.features.extractor import FeatureExtractor

    # pretrained=False draws random backbone weights: seed each construction to get the same backbone.
    est = model(reduce="random:50", pretrained=False, batch_size=3)
    torch.manual_seed(0)
    est.fit(images[:7])
    assert est.image_size_ == (64, 64) and est.n_train_ == 7
    maps, scores = est.predict(images[7:])
    assert maps.shape == (3, 64, 64) and scores.shape == (3,)
    # predict(images) == predict_features(features of the same images); fit(images) == fit_features.
    torch.manual_seed(0)
    extractor = FeatureExtractor("resnet18", ("layer1", "layer2"), pretrained=False)
    feats = [extractor(images[7:])]
    np.testing.assert_allclose(est.predict_features(feats, 64)[0], maps, rtol=1e-5)
    twin = model(reduce="random:50").fit_features([extractor(images[:7])])
    np.testing.assert_allclose(twin.predict_features(feats, 64)[0], maps, rtol=1e-4)
    # A Dataset of dicts and a DataLoader give the same maps as the tensor.
    data = [{"image": im, "label": 0} for im in images[7:]]
    np.testing.assert_array_equal(est.predict(data)[0], maps)
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    np.testing.assert_allclose(est.predict(loader)[0], maps, rtol=1e-5)  # another batch size: BLAS rounding
    # Saved and loaded (the backbone is rebuilt from the saved parameters): identical maps.
    est.save(tmp_path / "m.pt")
    loaded = PaDiM.load(tmp_path / "m.pt", device="cpu")
    torch.manual_seed(0)
    np.testing.assert_array_equal(loaded.predict(images[7:])[0], maps)
    with pytest.raises(PadimError, match="images are 96x96 but the model expects 64x64"):
        est.predict(F.interpolate(images[7:], size=96))


def test_fast_backbone_options_are_saved_and_checked(images, tmp_path, monkeypatch):
    from padim_lib.features import extractor as features

    est = model(layers=("layer1", "layer2"), reduce="random:40", pretrained=False, batch_size=4)
    torch.manual_seed(0)
    ref_maps = est.fit(images[:7]).predict(images[7:])[0]
    fast = clone(est).set_params(channels_last=True, backbone_dtype="bfloat16")
    torch.manual_seed(0)
    maps = fast.fit(images[:7]).predict(images[7:])[0]
    assert fast._extractor().dtype == "bfloat16" and fast._extractor().channels_last
    assert 0 < np.abs(maps - ref_maps).max() < 0.1 * np.abs(ref_maps).max()
    fast.save(tmp_path / "fast.pt")
    loaded = PaDiM.load(tmp_path / "fast.pt", device="cpu")
    assert (loaded.channels_last, loaded.backbone_dtype) == (True, "bfloat16")
    torch.manual_seed(0)
    np.testing.assert_array_equal(loaded.predict(images[7:])[0], maps)
    with pytest.raises(PadimError, match="backbone_dtype='half'"):
        model(backbone_dtype="half").fit_features(batches([2]))
    with pytest.raises(PadimError, match="channels_last=1"):
        model(channels_last=1).fit_features(batches([2]))
    monkeypatch.setattr(features, "bfloat16_is_fast", lambda device: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        model(backbone_dtype="bfloat16").fit_features(batches([2]))


def test_max_train_and_too_few_images(images):
    est = model(layers=("layer3",), pretrained=False, max_train=4, batch_size=3).fit(images)
    assert est.n_train_ == 4
    with pytest.raises(PadimError, match="at least 2 training images, got 1"):
        model(layers=("layer3",), pretrained=False).fit(images[:1])
    with pytest.raises(PadimError, match=r"\(N, 3, H, W\)"):
        model(layers=("layer3",), pretrained=False).fit(images[:, :1])


# ----------------------------------------------------------------- postprocess
@pytest.mark.parametrize(("shape", "sigma"), [((3, 64, 48), 4.0), ((2, 5, 7), 4.0), ((1, 30, 9), 1.3)])
def test_gaussian_blur_equals_scipy(shape, sigma):
    # (2, 5, 7) with sigma 4: the 16-pixel radius exceeds the image, so the reflection repeats.
    x = np.random.default_rng(0).random(shape)
    ref = np.stack([ndi.gaussian_filter(m, sigma, mode="reflect", truncate=4.0) for m in x])
    np.testing.assert_allclose(gaussian_blur(torch.from_numpy(x), sigma).numpy(), ref, rtol=1e-12, atol=1e-14)
    got32 = gaussian_blur(torch.from_numpy(x).float(), sigma).numpy()
    np.testing.assert_allclose(got32, ref, rtol=1e-5, atol=1e-6)


def test_anomaly_maps_and_scores():
    dist = torch.rand(2, 7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    maps = anomaly_maps(dist, 28, sigma=0)
    assert maps.shape == (2, 28, 28)
    ref = F.interpolate(dist[:, None], size=(28, 28), mode="bicubic", align_corners=False)[:, 0]
    torch.testing.assert_close(maps, ref, rtol=1e-12, atol=1e-14)
    assert torch.equal(image_scores(maps), maps.amax(dim=(1, 2)))
    with pytest.raises(PadimError, match="sigma"):
        gaussian_blur(maps, -1.0)
    with pytest.raises(PadimError, match="sigma"):
        anomaly_maps(dist, 28, sigma=-1.0)
    with pytest.raises(PadimError, match=r"\(B, h, w\)"):
        anomaly_maps(dist[0], 28)


@pytest.mark.parametrize(("grid", "size", "sigma"), [((7, 7), 28, 4.0), ((5, 9), (20, 36), 2.5), ((56, 56), 224, 4.0)])
def test_anomaly_maps_equal_upsample_then_scipy_filter(grid, size, sigma):
    """The fused operator (upsample and filter folded into two matrices) against the two steps,
    the filter being scipy's; float64 to 1e-12, float32 to float32 precision."""
    dist = torch.rand(3, *grid, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 5
    big = size if isinstance(size, tuple) else (size, size)
    up = F.interpolate(dist[:, None], size=big, mode="bicubic", align_corners=False)[:, 0].numpy()
    ref = np.stack([ndi.gaussian_filter(m, sigma, mode="reflect", truncate=4.0) for m in up])
    np.testing.assert_allclose(anomaly_maps(dist, size, sigma).numpy(), ref, rtol=1e-12, atol=1e-12)
    got32 = anomaly_maps(dist.float(), size, sigma).numpy()
    np.testing.assert_allclose(got32, ref, rtol=1e-5, atol=1e-5)
