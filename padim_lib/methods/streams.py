"""Input streams shared by the detectors: images in batches, images through a frozen backbone,
the device, and progress bars.

`ImageBatches` accepts what `fit`/`predict` take (a Dataset of dicts with key "image", a
DataLoader, or a Tensor (N, 3, H, W)) and yields (B, 3, H, W) float32 batches; `FeatureStream`
runs them through a feature extractor and yields {layer: (B, C_l, h_l, w_l)}.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from padim_lib.errors import PadimError

FeatureBatch = Mapping[str, torch.Tensor]


def images_of(item: Any) -> torch.Tensor:
    """The image tensor of a data item or batch: a dict's "image", a tensor, or a tuple's first element."""
    if isinstance(item, Mapping):
        if "image" not in item:
            raise PadimError(f"data items are dicts without an 'image' key (keys: {sorted(item)})")
        return item["image"]
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]
    raise PadimError(f"cannot find images in a data item of type {type(item).__name__}")


def collate_images(items: list) -> torch.Tensor:
    # Only the images are needed for fit/predict: skip collating masks, paths and labels.
    return torch.stack([images_of(it) for it in items])


class ImageBatches:
    """Re-iterable batches of images (B, 3, H, W) from a Tensor (N, 3, H, W), a Dataset of dicts or
    tensors, or a DataLoader; at most `limit` images (the first ones)."""

    def __init__(self, data: Any, batch_size: int, limit: int | None = None):
        self.data, self.batch_size, self.limit = data, batch_size, limit
        if isinstance(data, torch.Tensor):
            if data.ndim != 4 or data.shape[1] != 3:
                raise PadimError(f"data: expected images of shape (N, 3, H, W), got {tuple(data.shape)}")
            self.kind = "tensor"
        elif isinstance(data, torch.utils.data.DataLoader):
            self.kind = "loader"
        elif hasattr(data, "__getitem__") and hasattr(data, "__len__"):
            self.kind = "dataset"
        else:
            raise PadimError(
                f"data: expected a Tensor (N, 3, H, W), a Dataset or a DataLoader, got {type(data).__name__}"
            )

    def num_images(self) -> int | None:
        try:
            n = len(self.data.dataset) if self.kind == "loader" else len(self.data)
        except TypeError:
            return None
        return n if self.limit is None else min(n, self.limit)

    def __len__(self) -> int:
        """Number of batches (for progress bars)."""
        if self.kind == "loader":
            return len(self.data)
        return -(-self.num_images() // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        if self.kind == "tensor":
            data = self.data if self.limit is None else self.data[: self.limit]
            yield from data.split(self.batch_size)
            return
        if self.kind == "loader":
            batches = (images_of(b) for b in self.data)
        else:
            n = self.num_images()
            subset = self.data if n == len(self.data) else torch.utils.data.Subset(self.data, range(n))
            batches = iter(
                torch.utils.data.DataLoader(
                    subset, batch_size=self.batch_size, shuffle=False, collate_fn=collate_images
                )
            )
        seen = 0
        for images in batches:
            if self.limit is not None:
                images = images[: self.limit - seen]
                if len(images) == 0:
                    return
            seen += len(images)
            yield images


class FeatureStream:
    """Re-iterable per-layer features of image batches: yields dict layer -> (B, C_l, h_l, w_l).
    Records the image size and rejects batches of another size."""

    def __init__(self, extractor: nn.Module, images: ImageBatches, device: torch.device, expected=None):
        self.extractor, self.images, self.device = extractor, images, device
        self.image_size: tuple[int, int] | None = expected

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for images in self.images:
            size = tuple(images.shape[-2:])
            if self.image_size is None:
                self.image_size = size
            elif size != self.image_size:
                raise PadimError(
                    f"images are {size[0]}x{size[1]} but the model expects {self.image_size[0]}x{self.image_size[1]} "
                    "(the size used for fitting); use the same preprocessing for fit and predict"
                )
            yield self.extractor(images.to(self.device))  # FeatureExtractor runs under no_grad


def progress_bar(iterable: Iterable, desc: str, enabled: bool):
    try:
        total = len(iterable)
    except TypeError:  # generators, iterable-style DataLoaders
        total = None
    # A single batch needs no bar (e.g. evaluate() calling predict batch by batch).
    return tqdm(iterable, desc=desc, total=total, disable=not enabled or total == 1, leave=False)


def layer_maps(feats: FeatureBatch, layers: Sequence[str]) -> list[torch.Tensor]:
    """The maps (B, C_l, h_l, w_l) of `layers` in one feature batch, checked (present, 4-D, finite)."""
    maps = []
    for name in layers:
        if name not in feats:
            raise PadimError(f"feature batch lacks layer {name!r} (has {sorted(feats)})")
        t = feats[name]
        if t.ndim != 4:
            raise PadimError(f"features of layer {name!r} must be (B, C, h, w), got {tuple(t.shape)}")
        # One reduction first: a sum is finite unless a value is NaN/inf (or the sum overflows).
        if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
            raise PadimError(f"features of layer {name!r} contain NaN or inf values")
        maps.append(t)
    return maps
