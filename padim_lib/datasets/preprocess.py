"""The paper's preprocessing: square bicubic resize, centre crop, ImageNet normalisation.

Images and masks go through the same geometric steps (resize to `resize` x `resize`, then a
centre crop of `crop`), so a mask pixel stays on top of the image pixel it describes. Masks are
resized with nearest neighbour and kept binary.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from padim_lib.errors import PadimError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Grey, grey+alpha, RGBA and palette images are common in
    hand-made data sets; 16/32-bit grey is scaled to 8 bits instead of being clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    return img.convert("RGB")


def binarize_mask(img: Image.Image) -> np.ndarray:
    """A mask image -> (H, W) uint8 in {0, 1}.

    MVTec AD masks are 0/255; hand-made ones are often 0/1. Half-scale thresholding keeps
    anti-aliased 0/255 masks from growing, and a 0/1 mask is recognised by its maximum.
    """
    arr = np.asarray(img.convert("L"))
    threshold = 0 if arr.max(initial=0) <= 1 else 127
    return (arr > threshold).astype(np.uint8)


@dataclass(frozen=True)
class Preprocess:
    """Resize (bicubic, square) -> optional centre crop -> tensor -> optional ImageNet normalisation.

    The default is the paper's: 256 -> 224. `crop=None` keeps the whole resized image (STC).
    """

    resize: int = 256
    crop: int | None = 224
    normalize: bool = True

    def __post_init__(self) -> None:
        # accept numpy/pandas integers (configs, result tables) but store plain ints: they go into
        # JSON metadata and cache keys
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is None and name == "crop":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                expected = "a positive integer" + (" or None" if name == "crop" else "")
                raise PadimError(f"Preprocess.{name} must be {expected}, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.crop is not None and self.crop > self.resize:
            raise PadimError(
                f"Preprocess.crop ({self.crop}) must not exceed Preprocess.resize ({self.resize})"
            )
        object.__setattr__(self, "normalize", bool(self.normalize))

    @property
    def size(self) -> int:
        """Side S of the square output."""
        return self.crop if self.crop is not None else self.resize

    def key(self) -> str:
        """Short stable text for cache keys, e.g. "r256-c224-n1" (c0 = no crop)."""
        return f"r{self.resize}-c{self.crop or 0}-n{int(self.normalize)}"

    def _geometry(self, img: Image.Image, interpolation: InterpolationMode) -> Image.Image:
        img = TF.resize(img, [self.resize, self.resize], interpolation=interpolation)
        if self.crop is not None:
            img = TF.center_crop(img, [self.crop, self.crop])
        return img

    def image(self, img: Image.Image) -> torch.Tensor:
        """PIL image (any mode) -> (3, S, S) float32; normalised with ImageNet mean/std if `normalize`,
        else in [0, 1]."""
        x = TF.to_tensor(self._geometry(to_rgb(img), InterpolationMode.BICUBIC))
        if self.normalize:
            x = TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD)
        return x

    def mask(self, img: Image.Image | None) -> torch.Tensor:
        """PIL mask or None -> (S, S) uint8 in {0, 1}; None (a good image) -> zeros."""
        if img is None:
            return torch.zeros((self.size, self.size), dtype=torch.uint8)
        # Binarise before resizing: nearest resize then cannot create in-between values anyway,
        # and an "L" image of {0, 255} resizes in PIL's fast path.
        binary = Image.fromarray(binarize_mask(img) * 255)
        out = np.asarray(self._geometry(binary, InterpolationMode.NEAREST))
        return torch.from_numpy((out > 127).astype(np.uint8))


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet normalisation for plotting: (..., 3, H, W) -> same shape, clamped to [0, 1]."""
    if images.ndim < 3 or images.shape[-3] != 3:
        raise PadimError(f"denormalize expects images of shape (..., 3, H, W), got {tuple(images.shape)}")
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images * std + mean).clamp(0.0, 1.0)
