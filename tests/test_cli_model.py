"""End to end on a tiny synthetic set: PaDiM (EfficientNet-Lite0, shipped ImageNet weights) + evaluate,
and the `padim fit` / `padim evaluate` commands in-process."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from padim_lib.cli import main
from padim_lib.datasets import Preprocess, make_synthetic, open_dataset
from padim_lib.engine.evaluation import evaluate, metrics_from_maps
from padim_lib.methods.padim.detector import PaDiM

CATEGORY = "chip"
PRE = Preprocess(resize=72, crop=64)
PRE_ARGS = ["--resize", "72", "--crop", "64"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, seed=0, n_train=10, n_test_good=4, n_test_defect=6, size=80, categories=[CATEGORY])
    # The same class without ground_truth/: image-level labels only.
    shutil.copytree(root / CATEGORY, root / "nogt")
    shutil.rmtree(root / "nogt" / "ground_truth")
    return root


@pytest.fixture(scope="module")
def library_result(data_root):
    model = PaDiM(device="cpu", batch_size=4, progress=False).fit(
        open_dataset(data_root, CATEGORY, "train", PRE)
    )
    test = open_dataset(data_root, CATEGORY, "test", PRE)
    return model, test, evaluate(model, test, return_maps=True, progress=False)


def test_fit_and_evaluate_detect_synthetic_defects(library_result):
    model, test, res = library_result
    assert model.n_train_ == 10 and model.image_size_ == (64, 64)
    assert (res["n_test"], res["n_good"], res["n_defective"]) == (10, 4, 6)
    np.testing.assert_array_equal(res["labels"], test.labels)
    assert res["maps"].shape == (10, 64, 64) and res["masks"].shape == (10, 64, 64)
    np.testing.assert_array_equal(res["scores"], res["maps"].max(axis=(1, 2)))
    assert res["paths"] == test.paths
    # The metrics are those of the returned maps, and PaDiM finds the drawn defects.
    again = metrics_from_maps(res["labels"], res["scores"], res["masks"], res["maps"])
    assert again == {k: res[k] for k in ("image_auroc", "pixel_auroc", "pro")}
    # (the synthetic set is MVTec-hard, and this one is tiny: 80 px, 10 training images)
    assert res["image_auroc"] >= 0.75 and res["pixel_auroc"] >= 0.8 and res["pro"] >= 0.4
    assert res["timings"]["predict_s"] > 0 and res["timings"]["images_per_s"] > 0


def test_cli_fit_and_evaluate(data_root, library_result, tmp_path, capsys):
    model_file, metrics, maps = tmp_path / "m" / "washer.pt", tmp_path / "metrics.json", tmp_path / "maps.npz"
    common = ["--data", str(data_root), "--device", "cpu"]
    assert (
        main(
            ["fit", *common, "--category", CATEGORY, "--batch-size", "4", *PRE_ARGS, "--out", str(model_file)]
        )
        == 0
    )
    assert "fitted on 10 images" in capsys.readouterr().out
    saved = PaDiM.load(model_file, device="cpu")
    assert saved.meta["preprocess"] == {"resize": 72, "crop": 64, "normalize": True}
    assert saved.meta["category"] == CATEGORY and saved.meta["n_train"] == 10
    args = ["evaluate", *common, "--category", CATEGORY, "--model", str(model_file)]
    assert main([*args, "--json", str(metrics), "--save-maps", str(maps)]) == 0
    res = json.loads(metrics.read_text())
    assert json.loads(capsys.readouterr().out) == res
    _, _, lib = library_result
    # Same data, parameters and weights as the library run: the same numbers.
    for key in ("image_auroc", "pixel_auroc", "pro", "n_test", "n_good", "n_defective"):
        assert res[key] == pytest.approx(lib[key], abs=1e-6), key
    assert res["category"] == CATEGORY and res["timings"]["fit_s"] == saved.meta["fit_s"]
    with np.load(maps) as arrays:
        assert arrays["maps"].shape == (10, 64, 64) and arrays["maps"].dtype == np.float32
        np.testing.assert_allclose(arrays["maps"], lib["maps"], rtol=1e-5)
        np.testing.assert_array_equal(arrays["labels"], lib["labels"])
        assert list(arrays["paths"]) == lib["paths"]


def test_cli_fit_with_the_fast_backbone_options(data_root, library_result, tmp_path, capsys):
    """--channels-last --backbone-dtype bfloat16: saved with the model, used again by evaluate, and
    with the real Lite0 weights the metrics stay close to float32's on this easy class."""
    model_file, metrics = tmp_path / "fast.pt", tmp_path / "fast.json"
    common = ["--data", str(data_root), "--device", "cpu", "--category", CATEGORY]
    fast = ["--channels-last", "--backbone-dtype", "bfloat16"]
    assert main(["fit", *common, "--batch-size", "4", *PRE_ARGS, *fast, "--out", str(model_file)]) == 0
    saved = PaDiM.load(model_file, device="cpu")
    assert (saved.channels_last, saved.backbone_dtype) == (True, "bfloat16")
    capsys.readouterr()
    assert main(["evaluate", *common, "--model", str(model_file), "--json", str(metrics)]) == 0
    res = json.loads(metrics.read_text())
    _, _, lib = library_result
    for key in ("image_auroc", "pixel_auroc", "pro"):
        assert res[key] == pytest.approx(lib[key], abs=0.05), key


def test_cli_evaluate_without_ground_truth(data_root, library_result, tmp_path, capsys):
    model, _, _ = library_result
    model_file, metrics = tmp_path / "washer.pt", tmp_path / "nogt.json"
    model.meta = {**(model.meta or {}), "preprocess": {"resize": 72, "crop": 64, "normalize": True}}
    model.save(model_file)
    args = ["evaluate", "--data", str(data_root), "--category", "nogt", "--model", str(model_file)]
    assert main([*args, "--device", "cpu", "--json", str(metrics)]) == 0
    res = json.loads(metrics.read_text())
    assert res["pixel_auroc"] is None and res["pro"] is None
    assert 0.0 <= res["image_auroc"] <= 1.0 and res["n_test"] == 10


def test_cli_errors_name_the_problem(data_root, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 64)
    args = ["evaluate", "--data", str(data_root), "--category", CATEGORY, "--model", str(junk)]
    assert main(args) == 2
    assert "junk.pt" in capsys.readouterr().err
    fit = ["fit", "--data", str(data_root), "--category", CATEGORY, "--out", str(tmp_path / "x.pt")]
    assert main([*fit, "--reduce", "random:9999"]) == 2
    assert "reduce='random:9999'" in capsys.readouterr().err
    assert main([*fit, "--layers", "layer1"]) == 2
    assert "no layer 'layer1'" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
