"""`padim fit --method NAME` / `padim evaluate` for every registered detector: a toy detector
registered only in this file goes through the same commands as PaDiM, and the JSON keys agree;
`detectors.load_detector` dispatches on the file's format marker; the help lists the methods."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from padim_lib.cli import main
from padim_lib.datasets import make_synthetic
from padim_lib.errors import PadimError
from padim_lib.io.atomic import atomic_torch_save
from padim_lib.methods import registry as detectors
from padim_lib.methods.base import ImageDetector
from padim_lib.methods.padim.detector import PaDiM
from padim_lib.methods.params import Param, at_least
from padim_lib.methods.postprocess import anomaly_maps
from padim_lib.methods.registry import load_detector, method

FORMAT = "tests.toy_mean"


@method("toy_mean", description="toy: distance to the mean training image", file_format=FORMAT, register_now=False,
        params={"scale": Param((float,), "multiplies the map", at_least(0, strict=True))})
class ToyMean(ImageDetector):
    """Map: scale * ||x - mean training image|| per pixel, smoothed; score: max of the map."""

    fitted_attribute = "mean_"

    def __init__(self, scale: float = 1.0, sigma: float = 4.0, meta: dict | None = None):
        self.scale = scale
        self.sigma = sigma
        self.meta = meta

    @staticmethod
    def _images(X) -> torch.Tensor:
        return X if isinstance(X, torch.Tensor) else torch.stack([X[i]["image"] for i in range(len(X))])

    def fit(self, X, y=None):
        self.mean_ = self._images(X).mean(0)
        return self

    def predict(self, X):
        images = self._images(X)
        maps = anomaly_maps((images - self.mean_).pow(2).sum(1).sqrt() * self.scale, tuple(images.shape[-2:]),
                            float(self.sigma))
        return maps.numpy(), maps.flatten(1).amax(1).numpy()

    def save(self, path):
        params = json.dumps({"scale": self.scale, "sigma": self.sigma, "meta": self.meta})
        atomic_torch_save({"format": FORMAT, "format_version": 1, "params": params, "mean": self.mean_}, path)

    @classmethod
    def load(cls, path, device="auto"):
        payload = torch.load(path, map_location="cpu", weights_only=True)
        est = cls(**json.loads(payload["params"]))
        est.mean_ = payload["mean"]
        return est


@pytest.fixture(autouse=True, scope="module")
def toy_registered():
    detectors.register(ToyMean.spec)
    yield ToyMean.spec
    detectors.unregister(ToyMean.spec.name)


CATEGORY = "washer"
COMMON = ["--data", None, "--category", CATEGORY, "--device", "cpu"]
SMALL = ["--resize", "64", "--crop", "0"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("methods") / "syn"
    make_synthetic(root, seed=0, n_train=3, n_test_good=2, n_test_defect=2, size=64, categories=[CATEGORY, "brick"])
    shutil.copytree(root / CATEGORY, root / "nogt")
    shutil.rmtree(root / "nogt" / "ground_truth")
    return root


def _args(data: Path, *extra: str, category: str = CATEGORY) -> list[str]:
    return ["--data", str(data), "--category", category, "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def padim_model(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("padim") / "padim.pt"
    assert main(["fit", *_args(data, *SMALL, "--out", str(out))]) == 0
    return out


def test_fit_and_evaluate_every_method_write_the_same_keys(data, padim_model, tmp_path, capsys):
    toy = tmp_path / "toy.pt"
    assert main(["fit", *_args(data, *SMALL, "--method", "toy_mean", "--param", "scale=2", "--out", str(toy))]) == 0
    assert "(toy_mean)" in capsys.readouterr().out
    model = load_detector(toy, device="cpu")
    assert isinstance(model, ToyMean) and model.scale == 2.0  # the YAML "2" validated to a float
    assert model.meta["category"] == CATEGORY and model.meta["n_train"] == 3 and model.meta["method"] == "toy_mean"
    assert model.meta["preprocess"] == {"resize": 64, "crop": None, "normalize": True}
    assert model.meta["config"]["params"] == {"scale": 2.0} and len(model.meta["data_identity"]) == 16
    assert isinstance(load_detector(padim_model, device="cpu"), PaDiM)
    results = {}
    for name, path in (("toy_mean", toy), ("padim", padim_model)):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", *_args(data, "--model", str(path), "--json", str(out))]) == 0
        results[name] = json.loads(out.read_text())
        assert json.loads(capsys.readouterr().out) == results[name]
    assert results["toy_mean"].keys() == results["padim"].keys()
    for res, name in ((results["toy_mean"], "toy_mean"), (results["padim"], "padim")):
        assert res["method"] == name and res["n_test"] == 4
        assert all(0.0 <= res[k] <= 1.0 for k in ("image_auroc", "pixel_auroc", "pro"))
    # without masks: the same keys, pixel metrics null
    out = tmp_path / "nogt.json"
    assert main(["evaluate", *_args(data, "--model", str(toy), "--json", str(out), category="nogt")]) == 0
    res = json.loads(out.read_text())
    assert res.keys() == results["toy_mean"].keys() and res["pixel_auroc"] is None and res["pro"] is None


def test_method_options_are_checked_by_the_configuration(data, tmp_path, capsys):
    fit = ["fit", *_args(data, *SMALL, "--method", "toy_mean", "--out", str(tmp_path / "t.pt"))]
    assert main([*fit, "--param", "scale=-1"]) == 2
    assert "--param scale=-1.0; expected a value > 0" in capsys.readouterr().err
    assert main([*fit, "--param", "scale=abc"]) == 2
    assert "--param scale='abc'; expected a number" in capsys.readouterr().err
    # a common option the method does not read is refused, not silently ignored
    assert main([*fit, "--reduce", "random:4"]) == 2
    assert "method 'toy_mean' has no such parameter" in capsys.readouterr().err
    assert main([*fit, "--no-channels-last"]) == 2
    assert "--channels-last False: method 'toy_mean' has no such option" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_load_detector_dispatches_on_the_format_marker(tmp_path):
    torch.save({"format": "nobody.knows"}, tmp_path / "x.pt")
    with pytest.raises(PadimError, match=r"format marker 'nobody.knows'; expected one of \[.*'padim_lib.model'"):
        load_detector(tmp_path / "x.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(PadimError, match="format marker None"):
        load_detector(tmp_path / "list.pt")
    assert detectors.get_method("padim").file_format == "padim_lib.model"


def test_fit_help_lists_methods_parameters_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "padim: PaDiM" in text and "toy_mean: toy: distance to the mean training image" in text
    assert "scale=1.0: multiplies the map" in text
    assert "(default: 256)" in text and "(default: efficientnet_lite0)" in text


def test_a_model_scored_on_other_data_is_a_warning_naming_both(data, tmp_path, capsys):
    toy = tmp_path / "toy.pt"
    assert main(["fit", *_args(data, *SMALL, "--method", "toy_mean", "--out", str(toy))]) == 0
    capsys.readouterr()
    assert main(["evaluate", *_args(data, "--model", str(toy))]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["evaluate", *_args(data, "--model", str(toy), category="brick")]) == 0
    err = [x for x in capsys.readouterr().err.splitlines() if "warning" in x]
    assert len(err) == 1 and "'washer'" in err[0] and "'brick'" in err[0] and "fitted on" in err[0]


@pytest.mark.parametrize("method, extra", [
    ("spade", ["--param", "k=2", "--param", "n_gallery=2"]),
    # the VAE's encoder with random weights (ImageNet ResNet18 is not available offline), a tiny budget
    ("vae", ["--backbone", "resnet18", "--no-pretrained", "--param", "epochs=1", "--param", "images_per_epoch=4",
             "--param", "batch_size=2", "--param", "image_size=64", "--param", "aug_resize=72",
             "--param", "aug_crop=68", "--param", "latent_channels=8"]),
])
def test_the_baselines_fit_and_evaluate_from_the_command_line(data, padim_model, method, extra, tmp_path, capsys):
    out = tmp_path / f"{method}.pt"
    assert main(["fit", *_args(data, *SMALL, "--method", method, *extra, "--out", str(out))]) == 0
    assert type(load_detector(out, device="cpu")).method == method
    res_json = tmp_path / f"{method}.json"
    assert main(["evaluate", *_args(data, "--model", str(out), "--json", str(res_json))]) == 0
    res = json.loads(res_json.read_text())
    padim = tmp_path / "padim.json"
    assert main(["evaluate", *_args(data, "--model", str(padim_model), "--json", str(padim))]) == 0
    assert res.keys() == json.loads(padim.read_text()).keys() and res["method"] == method
    assert all(0.0 <= res[k] <= 1.0 for k in ("image_auroc", "pixel_auroc", "pro"))
