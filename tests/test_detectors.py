"""The detector interface: a third method defined only in this file runs through `run_task`, the
sweep (in-process and on a LocalCluster) and a papermill notebook, with no edit anywhere else.

The toy method scores each pixel by its distance to the mean training image (an image-based
detector: no backbone, no feature cache).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from padim_lib.datasets import make_synthetic
from padim_lib.engine import studyfile as study
from padim_lib.engine import sweep
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.task import Task, run_task
from padim_lib.errors import PadimError
from padim_lib.methods import registry as detectors
from padim_lib.methods.base import ImageDetector
from padim_lib.methods.params import Param, at_least
from padim_lib.methods.postprocess import anomaly_maps
from padim_lib.methods.registry import method

HERE = Path(__file__).resolve().parent


@method("mean_distance", description="toy: distance to the mean training image", register_now=False,
        params={"scale": Param((float,), "multiplies the map", at_least(0, strict=True))})
class MeanDistance(ImageDetector):
    """Map: scale * ||x - mean training image|| per pixel, smoothed; score: max of the map.

    Declared here and nowhere else: the fixture below registers it in this process; a kernel or a
    CLI process loads this module as a plugin ($PADIM_METHODS); sweep workers get its spec with the task.
    """

    fitted_attribute = "mean_"

    def __init__(self, scale: float = 1.0, sigma: float = 4.0):
        self.scale = scale
        self.sigma = sigma

    @staticmethod
    def _stack(X) -> torch.Tensor:
        return torch.stack([X[i]["image"] for i in range(len(X))])

    def fit(self, X, y=None):
        self.mean_ = self._stack(X).mean(0)
        return self

    def predict(self, X):
        self._check_fitted()
        images = self._stack(X)
        dist = (images - self.mean_).pow(2).sum(1).sqrt() * self.scale
        maps = anomaly_maps(dist, tuple(images.shape[-2:]), float(self.sigma))
        return maps.numpy(), maps.flatten(1).amax(1).numpy()


@pytest.fixture(autouse=True, scope="module")
def toy_registered():
    detectors.register(MeanDistance.spec)
    yield MeanDistance.spec
    detectors.unregister(MeanDistance.spec.name)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy") / "synthetic"
    return make_synthetic(root, seed=0, n_train=4, n_test_good=2, n_test_defect=2, size=72,
                          categories=["brick"])


def _config(**kw) -> ExperimentConfig:
    return ExperimentConfig(method="mean_distance", resize=72, crop=64, **kw)


# --------------------------------------------------------------------------- registry and configuration
def test_registry_validates_the_methods_own_parameters():
    assert "mean_distance" in detectors.method_names() and "padim" in detectors.method_names()
    assert _config().params == {"scale": 1.0}
    assert _config(params={"scale": 2}).params["scale"] == 2.0
    with pytest.raises(PadimError, match=r"params\.scale=-1.0; expected a value > 0"):
        _config(params={"scale": -1.0})
    with pytest.raises(PadimError, match=r"unknown parameter\(s\) \['k'\] for method 'mean_distance'"):
        _config(params={"k": 3})
    # a common field this method does not read is refused, not silently ignored
    with pytest.raises(PadimError, match="reduce='random:4': method 'mean_distance' has no such parameter"):
        _config(reduce="random:4")
    with pytest.raises(PadimError, match="method='nope' is unknown"):
        ExperimentConfig(method="nope")


def test_key_follows_the_methods_parameters_and_not_unread_fields():
    assert _config().key() != _config(params={"scale": 2.0}).key()
    assert _config().key() != ExperimentConfig(resize=72, crop=64).key()
    assert not _config().uses_seed() and _config(seed=3).key() == _config().key()
    # switching method drops the other method's parameters
    assert _config(params={"scale": 2.0}).replace(method="padim").params == {}


def test_config_round_trips_through_dict_and_json():
    cfg = _config(params={"scale": 3.0}, label="toy")
    back = ExperimentConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.key() == cfg.key()


# --------------------------------------------------------------------------- through the layers above
def test_run_task_runs_the_toy_method(data, tmp_path):
    rows, artifacts = run_task(Task(str(data), "brick", _config()), tmp_path / "cache", device="cpu", bootstrap=5)
    assert set(rows["method"]) == {"mean_distance"}
    assert set(rows["metric"]) == {"image_auroc", "pixel_auroc", "pro"}
    assert len(rows) == 3 * 6 and rows["value"].between(0, 1).all()
    assert artifacts["example_maps"].shape[-2:] == (64, 64)
    assert not (tmp_path / "cache").exists()  # an image-based detector makes no feature files


def test_sweep_in_process_on_a_local_pool_and_on_a_local_cluster_agree(data, tmp_path, monkeypatch):
    # Workers are new processes: the spec travels with each task, the module by its name.
    monkeypatch.syspath_prepend(str(HERE))
    tasks = study.make_tasks(data, ["brick"], [_config(), _config(params={"scale": 2.0})])
    assert all(t.feature_specs() == () for t in tasks)
    local = sweep.run(tasks, tmp_path / "a", device="cpu", bootstrap=3, progress=False)
    dask_rows = sweep.run(tasks, tmp_path / "b", device="cpu", bootstrap=3, progress=False, local_cluster=1)
    pool_rows = sweep.run(tasks, tmp_path / "c", device="cpu", bootstrap=3, progress=False, workers=2)

    def canonical(df: pd.DataFrame) -> pd.DataFrame:
        return df.sort_values(["config_key", "metric", "replicate"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(canonical(local), canonical(dask_rows))
    pd.testing.assert_frame_equal(canonical(local), canonical(pool_rows))
    assert local["config_key"].nunique() == 2
    # scaling a map changes no ranking: the two configurations give equal metrics
    a, b = (g.sort_values(["metric", "replicate"])["value"].to_numpy() for _, g in local.groupby("config_key"))
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_a_notebook_runs_the_toy_method_through_papermill(data, tmp_path, monkeypatch):
    import papermill

    from padim_lib.report.runner import private_kernel

    # The kernel is another process: $PADIM_METHODS names the module that registers the method.
    monkeypatch.setenv(detectors.PLUGINS_ENV, Path(__file__).stem)
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"},
                                            "language_info": {"name": "python"}})
    params = nbformat.v4.new_code_cell('method = "padim"\ndata_root = ""\nparams = {}')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from padim_lib.engine.config import ExperimentConfig\n"
        "from padim_lib.engine.task import Task, run_task\n"
        "cfg = ExperimentConfig(method=method, params=params, resize=72, crop=64)\n"
        "rows, _ = run_task(Task(data_root, 'brick', cfg), 'cache', device='cpu', bootstrap=0)\n"
        "print(sorted(set(rows['method'])), rows['value'].round(6).tolist())"
    )]
    src = tmp_path / "toy.ipynb"
    nbformat.write(nb, src)
    with private_kernel() as kernel:
        papermill.execute_notebook(str(src), str(tmp_path / "out.ipynb"), kernel_name=kernel, cwd=str(tmp_path),
                                   parameters={"method": "mean_distance", "data_root": str(data),
                                               "params": {"scale": 2.0}}, progress_bar=False)
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    text = "".join(o.get("text", "") for o in out.cells[-1].outputs)
    assert "['mean_distance']" in text


# --------------------------------------------------------------------------- sklearn conventions
def test_padim_follows_sklearn_conventions():
    from padim_lib.methods.padim.detector import PaDiM

    est = PaDiM(backbone="resnet18", reduce="random:10", eps=0.5, meta={"a": 1})
    params = est.get_params()
    assert params["reduce"] == "random:10" and params["meta"] == {"a": 1}
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    assert est.set_params(eps=0.1).eps == 0.1
    assert not [k for k in vars(PaDiM()) if k.endswith("_")]  # nothing fitted in __init__


def test_config_and_model_reject_the_same_values():
    from padim_lib.methods.padim.detector import PaDiM

    for bad in ({"eps": 0.0}, {"seed": -1}, {"max_train": 1}, {"sigma": -1.0}, {"reduce": "random:0"}):
        with pytest.raises(PadimError, match=next(iter(bad))):
            ExperimentConfig(**bad)
        with pytest.raises(PadimError, match=next(iter(bad))):
            PaDiM(**bad)._check_params()
    # PaDiM reduces per layer in "sum" mode: accepted by both, and d is checked per layer
    ExperimentConfig(layers=("_blocks.2", "_blocks.4"), layer_mode="sum", reduce="random:20")
    PaDiM(layers=("_blocks.2", "_blocks.4"), layer_mode="sum", reduce="random:20")._check_params()
    for make in (lambda: ExperimentConfig(layers=("_blocks.2", "_blocks.4"), layer_mode="sum", reduce="random:30"),
                 lambda: PaDiM(layers=("_blocks.2", "_blocks.4"), layer_mode="sum", reduce="random:30")._check_params()):
        with pytest.raises(PadimError, match="asks for 30 dimensions"):
            make()


def test_padim_from_config_matches_the_configuration():
    from padim_lib.methods.padim.detector import PaDiM

    cfg = ExperimentConfig(backbone="resnet18", layers=("layer2", "layer3"), reduce="pca:20", eps=0.2, seed=4,
                           max_train=9, pretrained=False)
    est = detectors.build_detector(cfg, device="cpu")
    assert isinstance(est, PaDiM)
    assert (est.layers, est.reduce, est.eps, est.seed, est.max_train, est.pretrained) == (
        ("layer2", "layer3"), "pca:20", 0.2, 4, 9, False)
    assert est.feature_layers() == ("layer2", "layer3")


def test_no_cycle_and_light_imports():
    import subprocess

    code = ("import sys, padim_lib.methods.padim.detector; heavy = {'dask', 'distributed', 'papermill', 'matplotlib', 'jupyter_book'};"
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_builtin_method_names_the_format_its_class_writes():
    import importlib

    for name in ("padim", "spade", "vae"):
        spec = detectors.get_method(name)
        module = importlib.import_module(spec.target.split(":")[0])
        assert spec.file_format == module.FORMAT, name
