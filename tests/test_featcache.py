"""Feature cache: contents, reuse, keys, atomic writes, and the effect of float16 storage."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from padim_lib.datasets import Preprocess, make_synthetic, open_dataset
from padim_lib.errors import PadimError
from padim_lib.features import cache as featcache
from padim_lib.features.backbones import BACKBONES
from padim_lib.features.cache import FeatureSpec, data_identity, ensure_features, load_features
from padim_lib.features.extractor import FeatureExtractor

LAYERS = BACKBONES["efficientnet_lite0"].default_layers


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return make_synthetic(root, seed=0, n_train=8, n_test_good=3, n_test_defect=4, size=64, categories=["washer"])


def spec(root, split="train", **kw) -> FeatureSpec:
    pre = Preprocess(resize=kw.pop("resize", 72), crop=kw.pop("crop", 64))
    base = dict(data_root=str(root), category="washer", split=split, backbone="efficientnet_lite0", layers=LAYERS,
                preprocess=pre)
    return FeatureSpec(**(base | kw))


@pytest.fixture
def count_extractors(monkeypatch):
    calls = []
    real = featcache._make_extractor

    def counting(s, device):
        calls.append(s)
        return real(s, device)

    monkeypatch.setattr(featcache, "_make_extractor", counting)
    return calls


def test_contents_match_the_dataset_and_the_extractor(data, tmp_path):
    path = ensure_features(spec(data, "test"), tmp_path, device="cpu", progress=False)
    f = load_features(path)
    ds = open_dataset(data, "washer", "test", Preprocess(72, 64))
    assert f["paths"] == ds.paths and f["defect_types"] == ds.defect_types
    np.testing.assert_array_equal(f["labels"], ds.labels)
    assert f["image_size"] == 64
    assert f["masks"].dtype == np.uint8 and f["masks"].shape == (len(ds), 64, 64)
    np.testing.assert_array_equal(f["masks"][-1], ds[len(ds) - 1]["mask"].numpy())
    assert f["masks"][f["labels"] == 1].sum() > 0 and f["masks"][f["labels"] == 0].sum() == 0
    ref = FeatureExtractor("efficientnet_lite0", LAYERS)(ds[0]["image"][None])
    for layer in LAYERS:
        got = f["features"][layer]
        assert got.dtype == torch.float16 and got.shape[0] == len(ds)
        torch.testing.assert_close(got[:1].float(), ref[layer], rtol=2e-3, atol=2e-3)


def test_second_call_reuses_the_file(data, tmp_path, count_extractors):
    s = spec(data)
    p1 = ensure_features(s, tmp_path, device="cpu", progress=False)
    mtime = p1.stat().st_mtime_ns
    p2 = ensure_features(s, tmp_path, device="cpu", progress=False)
    assert p1 == p2 and p2.stat().st_mtime_ns == mtime
    assert len(count_extractors) == 1


def test_max_train_takes_the_first_images_in_order(data, tmp_path):
    f = load_features(ensure_features(spec(data, max_train=3), tmp_path, device="cpu", progress=False))
    assert f["paths"] == open_dataset(data, "washer", "train").paths[:3]
    assert all(t.shape[0] == 3 for t in f["features"].values())
    assert f["masks"] is None  # training images have no ground truth


def test_key_follows_preprocessing_and_data_not_location(data, tmp_path):
    s = spec(data)
    assert spec(data, crop=56).key() != s.key()
    assert spec(data, resize=80).key() != s.key()
    assert spec(data, max_train=3).key() != s.key()
    assert spec(data, split="test").key() != s.key()
    moved = tmp_path / data.name
    shutil.copytree(data, moved)
    assert spec(moved).key() == s.key()  # same files elsewhere: same features
    (moved / "washer" / "train" / "good" / "extra.png").write_bytes(b"x")
    assert spec(moved).key() != s.key()


def test_data_identity_needs_the_class(data):
    with pytest.raises(FileNotFoundError, match="nope"):
        data_identity(data, "nope")


def test_spec_validation(data):
    with pytest.raises(PadimError, match="max_train"):
        spec(data, split="test", max_train=3)
    with pytest.raises(PadimError, match="split"):
        spec(data, split="val")


def test_no_masks_without_ground_truth(data, tmp_path):
    root = tmp_path / "nogt"
    shutil.copytree(data, root)
    shutil.rmtree(root / "washer" / "ground_truth")
    f = load_features(ensure_features(spec(root, "test"), tmp_path / "cache", device="cpu", progress=False))
    assert f["masks"] is None and f["labels"].sum() == 4


def test_failed_write_leaves_no_file(data, tmp_path, monkeypatch):
    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(featcache.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ensure_features(spec(data, max_train=2), tmp_path, device="cpu", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_leave_one_complete_file(data, tmp_path):
    # Two writers of one key: each writes its own temporary file, the renames replace each other.
    s = spec(data, max_train=2)
    payload = featcache.extract(s, device="cpu", progress=False)
    target = featcache.feature_path(s, tmp_path)
    featcache.atomic_torch_save(payload, target)
    featcache.atomic_torch_save(payload, target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]
    assert load_features(target)["paths"] == payload["paths"]


def test_damaged_file_is_reported(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(PadimError, match="delete it"):
        load_features(bad)


def test_float16_storage_changes_metrics_negligibly(data, tmp_path):
    """PaDiM on fp16-stored features vs the same features in fp32: metrics differ by < 1e-3."""
    from padim_lib.engine.evaluation import metrics_from_maps
    from padim_lib.methods.padim.detector import PaDiM

    train = load_features(ensure_features(spec(data), tmp_path, device="cpu", progress=False))
    test = load_features(ensure_features(spec(data, "test"), tmp_path, device="cpu", progress=False))
    ext = FeatureExtractor("efficientnet_lite0", LAYERS)

    def fp32(split):
        ds = open_dataset(data, "washer", split, Preprocess(72, 64))
        return [ext(torch.stack([ds[i]["image"] for i in range(len(ds))]))]

    results = []
    for tr, te in (([train["features"]], [test["features"]]), (fp32("train"), fp32("test"))):
        model = PaDiM(progress=False, device="cpu").fit_features([{k: v.float() for k, v in b.items()} for b in tr])
        maps, scores = model.predict_features([{k: v.float() for k, v in b.items()} for b in te], 64)
        results.append((maps, metrics_from_maps(test["labels"], scores, test["masks"], maps)))
    (m16, r16), (m32, r32) = results
    assert np.abs(m16 - m32).max() / np.abs(m32).max() < 1e-2
    for k in ("image_auroc", "pixel_auroc", "pro"):
        assert abs(r16[k] - r32[k]) < 1e-3, (k, r16[k], r32[k])
