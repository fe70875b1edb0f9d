"""run_task end to end on a tiny synthetic set; paired bootstrap; Table I / II configurations."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from padim_lib.datasets import Preprocess, make_synthetic, open_dataset
from padim_lib.engine import task as experiments
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.task import (
    ROW_COLUMNS,
    Task,
    bootstrap_weights,
    example_indices,
    label_rows,
    run_task,
)
from padim_lib.errors import PadimError
from padim_lib.features import cache as featcache
from padim_lib.metrics.image import image_auroc
from padim_lib.paper.tables import table1_configs, table2_configs

SMALL = dict(resize=72, crop=64)  # 16 x 16 finest grid: fast
B = 20


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return make_synthetic(root, seed=0, n_train=8, n_test_good=3, n_test_defect=4, size=64, categories=["washer"])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("features")


@pytest.fixture
def extractions(monkeypatch):
    calls = []
    real = featcache._make_extractor
    monkeypatch.setattr(featcache, "_make_extractor", lambda spec, device: calls.append(spec) or real(spec, device))
    return calls


def test_run_task_rows_and_artifacts(data, cache, tmp_path):
    cfg = ExperimentConfig(label="PaDiM-R18", published_row="PaDiM-R18", **SMALL)
    rows, art = run_task(Task(str(data), "washer", cfg), cache, device="cpu", bootstrap=B, n_examples=3)
    assert list(rows.columns) == ROW_COLUMNS
    assert set(rows["metric"]) == {"image_auroc", "pixel_auroc", "pro"}
    for _, g in rows.groupby("metric"):
        assert sorted(g["replicate"]) == list(range(-1, B))
    assert rows["value"].between(0, 1).all()
    assert (rows["kind"] == "object").all() and (rows["config_key"] == cfg.key()).all()
    assert (rows["label"] == "PaDiM-R18").all() and (rows["layers"] == "_blocks.2+_blocks.4+_blocks.10").all()
    full = rows[rows["replicate"] == -1].set_index("metric")["value"]
    assert full["image_auroc"] == pytest.approx(image_auroc(art["labels"], art["scores"]))
    # artifacts: curves, examples, no object arrays (the result store refuses those)
    n = len(art["labels"])
    assert art["paths"].shape == (n,) and art["pro_fpr"].shape == art["pro"].shape
    assert art["pro_fpr"][0] == 0 and art["pro_fpr"][-1] == pytest.approx(1.0) and art["pro"][-1] == pytest.approx(1.0)
    assert art["pixel_roc_tpr"][-1] == pytest.approx(1.0) and len(art["pixel_roc_fpr"]) <= 1000
    assert art["example_images"].shape == (3, 64, 64, 3) and art["example_images"].dtype == np.uint8
    assert art["example_maps"].shape == (3, 64, 64) and art["example_maps"].dtype == np.float16
    assert art["labels"][art["example_index"]].tolist() == [0, 1, 1]
    from padim_lib.engine.results import ResultStore

    store = ResultStore(tmp_path)
    store.write(Task(str(data), "washer", cfg).key(), rows, art)
    assert len(store.load()) == len(rows)


def test_run_task_agrees_with_the_model_on_images(data, cache):
    """Cached fp16 features + fit_features give the metrics of PaDiM.fit / evaluate on images."""
    from padim_lib.engine.evaluation import evaluate
    from padim_lib.methods.padim.detector import PaDiM

    cfg = ExperimentConfig(layers=("_blocks.2", "_blocks.4"), **SMALL)
    rows, _ = run_task(Task(str(data), "washer", cfg), cache, device="cpu", bootstrap=0)
    pre = Preprocess(72, 64)
    model = PaDiM(layers=cfg.layers, device="cpu", progress=False).fit(open_dataset(data, "washer", "train", pre))
    ref = evaluate(model, open_dataset(data, "washer", "test", pre), progress=False)
    got = rows.set_index("metric")["value"]
    for metric in ("image_auroc", "pixel_auroc", "pro"):
        assert got[metric] == pytest.approx(ref[metric], abs=2e-3)


def test_bootstrap_weights_are_stratified_and_depend_on_class_only():
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    w = bootstrap_weights("washer", labels, 50)
    assert w.shape == (50, 7)
    assert (w[:, :3].sum(1) == 3).all() and (w[:, 3:].sum(1) == 4).all()
    np.testing.assert_array_equal(w, bootstrap_weights("washer", labels, 50))
    assert (w != bootstrap_weights("brick", labels, 50)).any()
    np.testing.assert_array_equal(bootstrap_weights("washer", labels, 10), w[:10])  # replicate b is fixed


def test_configurations_share_resamples_and_features(data, cache, monkeypatch, extractions):
    seen = []
    real = experiments.bootstrap_weights
    monkeypatch.setattr(experiments, "bootstrap_weights", lambda *a: seen.append(real(*a)) or seen[-1])
    new_cache = cache / "shared"
    a, b = table1_configs("efficientnet_lite0", **SMALL)[0], table1_configs("efficientnet_lite0", **SMALL)[3]
    ra, _ = run_task(Task(str(data), "washer", a), new_cache, device="cpu", bootstrap=B)
    rb, _ = run_task(Task(str(data), "washer", b), new_cache, device="cpu", bootstrap=B)
    np.testing.assert_array_equal(seen[0], seen[1])
    assert len(extractions) == 2  # train + test, once for both configurations
    # a different preprocessing is a different feature file
    c = ExperimentConfig(layers=("_blocks.2",), resize=64, crop=56)
    run_task(Task(str(data), "washer", c), new_cache, device="cpu", bootstrap=0)
    assert len(extractions) == 4
    # precomputed files (the sweep's feature jobs) are used as given
    paths = [featcache.ensure_features(s, new_cache) for s in Task(str(data), "washer", a).feature_specs()]
    run_task(Task(str(data), "washer", a), new_cache, device="cpu", bootstrap=0, feature_paths=paths)
    assert len(extractions) == 4
    # paired differences: same replicate numbers on both sides, and the diff CI is computable
    from padim_lib.paper.stats import diff_ci

    rows = pd.concat([ra, rb])
    d = diff_ci(rows, b.label, a.label, "pixel_auroc", "washer")
    assert d["n_replicates"] == B and d["ci_low"] <= d["diff"] <= d["ci_high"]


def test_no_masks_means_no_pixel_rows(data, cache, tmp_path):
    root = tmp_path / "nogt"
    shutil.copytree(data, root)
    shutil.rmtree(root / "washer" / "ground_truth")
    rows, art = run_task(Task(str(root), "washer", ExperimentConfig(layers=("_blocks.4",), **SMALL)), cache,
                         device="cpu", bootstrap=5)
    assert set(rows["metric"]) == {"image_auroc"}
    assert "pro" not in art and art["example_masks"].sum() == 0


def test_task_key(data, tmp_path):
    cfg = ExperimentConfig(**SMALL)
    t = Task(str(data), "washer", cfg)
    assert t.key() == Task(str(data), "washer", cfg.replace(label="x")).key()
    assert t.key() != Task(str(data), "washer", cfg.replace(sigma=2.0)).key()
    other = make_synthetic(tmp_path / "other", seed=1, n_train=8, n_test_good=3, n_test_defect=4, size=64,
                           categories=["washer"])
    assert t.key() != Task(str(other), "washer", cfg).key()
    train, test = t.feature_specs()
    assert train.split == "train" and test.split == "test" and test.max_train is None
    assert train.layers == ("_blocks.2", "_blocks.4", "_blocks.10")
    single = Task(str(data), "washer", cfg.replace(layers=("_blocks.2",)))
    assert single.feature_specs() == t.feature_specs()  # Table I and II share one pass


def test_example_indices():
    labels = np.array([0, 0, 1, 1, 1, 1])
    types = ["good", "good", "crack", "crack", "hole", "hole"]
    assert example_indices(labels, types, 3).tolist() == [0, 2, 4]
    assert example_indices(labels, types, 10).tolist() == [0, 2, 3, 4, 5]
    assert example_indices(labels, types, 0).tolist() == []


def test_table1_configs():
    cfgs = table1_configs("resnet18", resize=300)
    assert [c.label for c in cfgs] == ["Layer 1", "Layer 2", "Layer 3", "Layer 1+2+3", "PaDiM-R18"]
    assert [c.published_row for c in cfgs] == [c.label for c in cfgs]  # on ResNet18 the names are the paper's
    assert [c.layers for c in cfgs[:3]] == [("layer1",), ("layer2",), ("layer3",)]
    assert cfgs[3].layer_mode == "sum" and cfgs[4].layer_mode == "concat"
    assert cfgs[3].layers == cfgs[4].layers == ("layer1", "layer2", "layer3")
    assert all(c.preprocess.resize == 300 and c.reduce is None for c in cfgs)
    assert len({c.key() for c in cfgs}) == 5
    lite = table1_configs("efficientnet_lite0")
    assert lite[0].layers == ("_blocks.2",) and lite[-1].label == "PaDiM-Lite0"  # named after what runs
    assert lite[-1].published_row == "PaDiM-R18"  # and set against the paper's figure
    with pytest.raises(PadimError, match="label"):
        table1_configs(label="x")
    with pytest.raises(PadimError, match="colour"):
        table1_configs(colour=1)


def test_table2_configs_published_rows():
    cfgs = table2_configs("resnet18", seeds=range(3))
    labels = [c.label for c in cfgs]
    assert labels == ["Rd 100"] * 3 + ["PCA 100"] + ["Rd 200"] * 3 + ["PCA 200", "all (448)"]
    assert [c.published_row for c in cfgs] == labels
    assert [c.seed for c in cfgs[:3]] == [0, 1, 2] and cfgs[0].reduce == "random:100" and cfgs[3].reduce == "pca:100"
    assert cfgs[-1].key() == table1_configs("resnet18")[-1].key()  # "all (448)" is "PaDiM-R18"
    lite = table2_configs("efficientnet_lite0", dims=(50, 100), seeds=[0])
    assert [(c.label, c.published_row) for c in lite] == [
        ("Rd 50", "Rd 100"), ("PCA 50", "PCA 100"), ("Rd 100", "Rd 200"), ("PCA 100", "PCA 200"), ("all (176)", "all (448)")]
    assert table2_configs("resnet18", dims=(200,), seeds=[0])[0].published_row == "Rd 200"  # by value
    with pytest.raises(PadimError, match="dims"):
        table2_configs("efficientnet_lite0", dims=(200,))
    with pytest.raises(PadimError, match="seeds"):
        table2_configs(seeds=[])


def test_label_rows_gives_each_table_its_names():
    t1, t2 = table1_configs("resnet18")[-1], table2_configs("resnet18", seeds=[0])[-1]
    rows = pd.DataFrame({"config_key": [t1.key()] * 2 + ["other"], "label": ["PaDiM-R18"] * 2 + ["x"],
                         "published_row": ["PaDiM-R18"] * 2 + ["x"], "seed": 0, "metric": "pro",
                         "replicate": [-1, 0, -1], "value": [0.9, 0.8, 0.1], "category": "c", "data_root": "d"})
    out = label_rows(rows, [t2])
    assert len(out) == 2 and set(out["label"]) == {"all (448)"} and set(out["published_row"]) == {"all (448)"}
    both = label_rows(rows, [t1, t2])
    assert sorted(set(both["label"])) == ["PaDiM-R18", "all (448)"] and len(both) == 4
