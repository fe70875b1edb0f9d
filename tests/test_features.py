"""Backbones, weights loading (local download server, cache, offline errors) and patch-feature alignment."""

from __future__ import annotations

import hashlib
import re
import socket

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights, resnet18

from padim_lib.errors import PadimError
from padim_lib.features.backbones import BACKBONES, available_backbones
from padim_lib.features.extractor import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureExtractor,
    align_concat,
    load_backbone,
)


def _images(n: int = 1, size: int = 224, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _closed_port_url(filename: str) -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{filename}"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; returns the checkpoint cache directory torch.hub will use."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called torch.hub.set_dir
    return tmp_path / "torch_home" / "hub" / "checkpoints"


# ---------------------------------------------------------------- specs and extractors


def test_registry_lists_the_five_backbones():
    assert available_backbones() == [
        "efficientnet_b5", "efficientnet_lite0", "efficientnet_lite2", "resnet18", "wide_resnet50_2"
    ]
    dims = {
        name: sum(spec.channels[layer] for layer in spec.default_layers) for name, spec in BACKBONES.items()
    }
    # The paper's embedding sizes for R18 and WR50; B5 levels 2, 4, 5; Lite0 and Lite2 strides 4, 8, 16.
    assert dims == {
        "resnet18": 448,
        "wide_resnet50_2": 1792,
        "efficientnet_b5": 344,
        "efficientnet_lite0": 176,
        "efficientnet_lite2": 192,
    }


@pytest.mark.parametrize("backbone, pretrained", [("resnet18", False), ("efficientnet_lite0", True)])
def test_default_layers_shapes_at_224(backbone, pretrained):
    fe = FeatureExtractor(backbone, pretrained=pretrained)
    out = fe(_images(2))
    assert tuple(out) == fe.layers == BACKBONES[backbone].default_layers
    assert [tuple(v.shape) for v in out.values()] == [
        (2, fe.channels[layer], g, g) for layer, g in zip(fe.layers, (56, 28, 14), strict=True)
    ]
    assert not fe.training and not any(p.requires_grad for p in fe.parameters())
    assert all(not v.requires_grad for v in out.values())


def test_extractor_stays_frozen_and_in_eval_mode():
    fe = FeatureExtractor("resnet18", pretrained=False)
    fe.train()
    assert not fe.training and not any(m.training for m in fe.modules())
    before = {k: v.clone() for k, v in fe.state_dict().items()}
    fe(_images(2))
    # batch-norm running statistics untouched by a forward pass
    assert all(torch.equal(before[k], v) for k, v in fe.state_dict().items())


def test_resnet18_features_equal_a_direct_forward():
    torch.manual_seed(0)
    fe = FeatureExtractor("resnet18", pretrained=False)
    model = load_backbone("resnet18", pretrained=False)
    model.load_state_dict(fe.body.state_dict(), strict=False)  # same weights in the reference
    x = _images(1, 96)
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        l1 = model.layer1(h)
        l2 = model.layer2(l1)
        l3 = model.layer3(l2)
    out = fe(x)
    for got, ref in zip(out.values(), (l1, l2, l3), strict=True):
        torch.testing.assert_close(got, ref)


def test_lite0_layers_are_the_named_blocks_with_lite_input_scaling():
    fe = FeatureExtractor("efficientnet_lite0", layers=("_blocks.2", "_blocks.10"))
    model = load_backbone("efficientnet_lite0")
    x = _images(1, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        h = (x * std + mean) * 255.0  # back to 0..255 pixels, then TF Lite scaling
        h = model._swish(model._bn0(model._conv_stem((h - 127.0) / 128.0)))
        refs = {}
        for i, block in enumerate(model._blocks[:11]):
            h = block(h)
            refs[f"_blocks.{i}"] = h
    out = fe(x)
    torch.testing.assert_close(out["_blocks.2"], refs["_blocks.2"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["_blocks.10"], refs["_blocks.10"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientnet_lite2"])
def test_lite_every_layer_matches_its_spec_at_an_odd_size(backbone):
    spec = BACKBONES[backbone]
    fe = FeatureExtractor(backbone, layers=list(spec.channels))
    out = fe(_images(1, 100))  # 100 is not a multiple of 32: "SAME" padding must follow the input
    for layer, v in out.items():
        side = -(-100 // spec.strides[layer])  # ceil, as TF "SAME" convolutions give
        assert tuple(v.shape) == (1, spec.channels[layer], side, side), layer


@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_lite_pretrained_classifies_a_cat(backbone):
    """The shipped checkpoint is real ImageNet weights and our input scaling matches it."""
    from skimage import data

    img = Image.fromarray(data.chelsea()).convert("RGB").resize((256, 256), Image.BICUBIC)
    img = img.crop((16, 16, 240, 240))
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255.0)
    x = (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    model = load_backbone(backbone)
    with torch.no_grad():
        probs = model(x[None]).softmax(1)[0]
    top5 = probs.topk(5).indices.tolist()
    assert 281 <= top5[0] <= 285, top5  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert probs[281:286].sum() > 0.8


def test_wide_resnet50_2_channels():
    torch.manual_seed(0)
    fe = FeatureExtractor("wide_resnet50_2", pretrained=False)
    out = fe(_images(1, 64))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "layer1": (1, 256, 16, 16),
        "layer2": (1, 512, 8, 8),
        "layer3": (1, 1024, 4, 4),
    }


def test_efficientnet_b5_levels_and_block_names():
    torch.manual_seed(0)
    # the paper's literal blocks 7, 20, 26 and the stage (level) outputs used by default
    layers = ("features.2.4", "features.5.0", "features.5.6", "features.2", "features.4", "features.5")
    fe = FeatureExtractor("efficientnet_b5", layers=layers, pretrained=False)
    out = fe(_images(1, 64))
    assert {k: tuple(v.shape[1:]) for k, v in out.items()} == {
        "features.2.4": (40, 16, 16),
        "features.5.0": (176, 4, 4),
        "features.5.6": (176, 4, 4),
        "features.2": (40, 16, 16),
        "features.4": (128, 4, 4),
        "features.5": (176, 4, 4),
    }
    # a stage's output is its last block's output, residual included
    torch.manual_seed(0)
    model = load_backbone("efficientnet_b5", pretrained=False)  # the same random weights
    with torch.no_grad():
        stage2 = model.features[:3](_images(1, 64))
        stage4 = model.features[3:5](stage2)
        block20 = model.features[5][0](stage4)
        stage5 = model.features[5][1:](block20)
    for name, ref in [("features.2", stage2), ("features.2.4", stage2), ("features.4", stage4)]:
        torch.testing.assert_close(out[name], ref, msg=name)
    for name, ref in [("features.5.0", block20), ("features.5", stage5), ("features.5.6", stage5)]:
        torch.testing.assert_close(out[name], ref, msg=name)
    # 39 MBConv blocks in stages of 3, 5, 5, 7, 7, 9, 3 (lukemelas' _blocks 0..38)
    blocks = [n for n in BACKBONES["efficientnet_b5"].channels if n.count(".") == 2]
    assert len(blocks) == 39 and blocks[7] == "features.2.4" and blocks[19] == "features.4.6"
    assert blocks[20] == "features.5.0" and blocks[26] == "features.5.6"


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(PadimError, match="backbone='resnet19' is unknown.*resnet18.*wide_resnet50_2"):
        FeatureExtractor("resnet19", pretrained=False)
    with pytest.raises(PadimError, match="efficientnet_lite0"):
        load_backbone("vgg16", pretrained=False)


def test_unknown_layer_lists_the_backbone_layers():
    with pytest.raises(
        PadimError, match=r"has no layer 'layer5'.*'layer1', 'layer2', 'layer3', 'layer4'"
    ):
        FeatureExtractor("resnet18", layers=("layer1", "layer5"), pretrained=False)
    with pytest.raises(PadimError, match="_blocks.15"):
        FeatureExtractor("efficientnet_lite0", layers=("layer1",))
    with pytest.raises(PadimError, match="no duplicates"):
        FeatureExtractor("resnet18", layers=("layer1", "layer1"), pretrained=False)
    with pytest.raises(PadimError, match=r"\(B, 3, H, W\)"):
        FeatureExtractor("resnet18", layers="layer1", pretrained=False)(torch.zeros(3, 32, 32))


# ---------------------------------------------------------------- alignment


def _brute_force(features: list[torch.Tensor]) -> torch.Tensor:
    h, w = features[0].shape[2:]
    parts = []
    for f in features:
        r, c = h // f.shape[2], w // f.shape[3]
        parts.append(f.repeat_interleave(r, dim=2).repeat_interleave(c, dim=3))
    return torch.cat(parts, dim=1)


def test_align_concat_equals_block_replication():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, c, s, s, generator=g) for c, s in ((3, 24), (5, 12), (4, 6), (2, 3))]
    out = align_concat(feats)
    assert out.shape == (2, 14, 24, 24)
    assert torch.equal(out, _brute_force(feats))
    # rectangular grids too
    rect = [torch.randn(1, 2, 8, 12, generator=g), torch.randn(1, 3, 2, 3, generator=g)]
    assert torch.equal(align_concat(rect), _brute_force(rect))


def test_align_concat_on_extractor_output():
    fe = FeatureExtractor("efficientnet_lite0")
    out = fe(_images(1, 224))
    emb = align_concat(list(out.values()))
    assert emb.shape == (1, 176, 56, 56)
    assert torch.equal(emb, _brute_force(list(out.values())))


def test_align_concat_errors():
    with pytest.raises(PadimError, match="at least one"):
        align_concat([])
    with pytest.raises(PadimError, match="finest map first"):
        align_concat([torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 8, 8)])
    with pytest.raises(PadimError, match="batch size"):
        align_concat([torch.zeros(2, 2, 8, 8), torch.zeros(1, 2, 4, 4)])


# ---------------------------------------------------------------- weights


def _served_resnet18(folder) -> tuple[str, dict[str, torch.Tensor]]:
    """Save a seeded random resnet18 state dict as torchvision names files: <name>-<sha256 prefix>.pth."""
    torch.manual_seed(123)
    state = resnet18().state_dict()
    tmp = folder / "weights.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    tmp.rename(folder / name)
    return name, state


def test_pretrained_download_then_cache(tmp_path, torch_home, http_server, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    name, state = _served_resnet18(served)
    # torchvision's own download path (urllib, sha256 check, atomic move) runs against a local server
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{http_server(served)}/{name}")

    model = load_backbone("resnet18")
    assert (torch_home / name).read_bytes() == (served / name).read_bytes()
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    # second time: from the cache, with the server unreachable
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", _closed_port_url(name))
    again = FeatureExtractor("resnet18", layers=("layer1",))
    assert torch.equal(again.body.state_dict()["conv1.weight"], state["conv1.weight"])


def test_download_with_a_wrong_hash_is_refused(tmp_path, torch_home, http_server, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    name, _ = _served_resnet18(served)
    wrong = "resnet18-00000000.pth"
    (served / name).rename(served / wrong)
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", f"{http_server(served)}/{wrong}")
    with pytest.raises(PadimError, match="sha256"):
        load_backbone("resnet18")
    assert not (torch_home / wrong).exists()


def test_offline_and_uncached_names_the_cache_path(torch_home, monkeypatch):
    """No silent random fallback: pretrained=True without weights or network is an error."""
    filename = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", _closed_port_url(filename))
    with pytest.raises(PadimError) as info:
        FeatureExtractor("resnet18")
    message = str(info.value)
    assert str(torch_home / filename) in message
    assert "weights=PATH" in message


def test_damaged_cache_file_is_named(torch_home, monkeypatch):
    filename = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    monkeypatch.setattr(ResNet18_Weights.IMAGENET1K_V1.value, "url", _closed_port_url(filename))
    torch_home.mkdir(parents=True)
    (torch_home / filename).write_bytes(b"truncated")
    with pytest.raises(
        PadimError, match=re.escape(f"cached weights file {torch_home / filename}") + ".*delete it"
    ):
        load_backbone("resnet18")


def test_local_weights_file(tmp_path):
    torch.manual_seed(7)
    state = resnet18().state_dict()
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    model = load_backbone("resnet18", weights=path)
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])
    # a {"state_dict": ...} checkpoint works too
    torch.save({"state_dict": state, "epoch": 3}, path)
    assert torch.equal(load_backbone("resnet18", weights=path).state_dict()["fc.bias"], state["fc.bias"])


def test_local_weights_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_backbone("resnet18", weights=missing)
    wrong = tmp_path / "lite.pth"
    torch.save(load_backbone("efficientnet_lite0").state_dict(), wrong)
    with pytest.raises(PadimError, match=r"lite\.pth do not fit backbone 'resnet18'.*missing"):
        load_backbone("resnet18", weights=wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PadimError, match="garbage.pth"):
        load_backbone("resnet18", weights=garbage)
    with pytest.raises(PadimError, match="not both"):
        load_backbone("resnet18", pretrained=False, weights=wrong)


def test_pretrained_false_is_random_and_seeded():
    torch.manual_seed(0)
    a = load_backbone("efficientnet_lite0", pretrained=False).state_dict()["_conv_stem.weight"]
    torch.manual_seed(0)
    b = load_backbone("efficientnet_lite0", pretrained=False).state_dict()["_conv_stem.weight"]
    shipped = load_backbone("efficientnet_lite0").state_dict()["_conv_stem.weight"]
    assert torch.equal(a, b) and not torch.equal(a, shipped)


# ---------------------------------------------------------------- optional fast inference


def test_channels_last_and_bfloat16_keep_the_features():
    """channels_last changes the layout only (same maps to float32 rounding); bfloat16 autocast
    changes the values by bfloat16's precision but returns float32 maps of the same shapes."""
    torch.manual_seed(0)
    ref = FeatureExtractor("resnet18", pretrained=False)
    state = ref.body.state_dict()
    x = _images(2, 64)
    base = ref(x)
    for kw in ({"channels_last": True}, {"dtype": "bfloat16"}, {"channels_last": True, "dtype": "bfloat16"}):
        fe = FeatureExtractor("resnet18", pretrained=False, **kw)
        fe.body.load_state_dict(state)
        if kw.get("channels_last"):
            assert fe.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        out = fe(x)
        for name, t in out.items():
            assert t.dtype == torch.float32 and t.shape == base[name].shape
            err = (t - base[name]).norm() / base[name].norm()
            assert err < (1e-5 if "dtype" not in kw else 3e-2), (kw, name, float(err))
            if "dtype" in kw:
                assert err > 1e-5  # the forward really ran in bfloat16
    with pytest.raises(PadimError, match="dtype='float16'"):
        FeatureExtractor("resnet18", pretrained=False, dtype="float16")


def test_bfloat16_is_fast_reads_the_cpu_flags(monkeypatch, tmp_path):
    from padim_lib.features import extractor as features

    cpuinfo = tmp_path / "cpuinfo"
    real_path = features.Path
    monkeypatch.setattr(features, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert features.bfloat16_is_fast("cpu") is False
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert features.bfloat16_is_fast("cpu") is True
    cpuinfo.write_text("processor\t: 0\n")
    assert features.bfloat16_is_fast("cpu") is None
