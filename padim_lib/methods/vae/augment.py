"""The paper's VAE training augmentation, driven by an explicit torch.Generator.

Section IV: "random rotation (-2deg, +2deg), 292x292 resize, random crop to 282x282, and finally
center crop to 256x256". `PaperAugment` applies exactly these four steps, in this order, with
torchvision.transforms.v2.functional. The random parameters (one angle and one crop offset per
image) are drawn from a caller-owned `torch.Generator` rather than torch's global RNG (which the
v2 transform classes use): the VAE saves the generator's state in its checkpoints, so a resumed
training draws the same augmentations as an uninterrupted one.

Choices the paper leaves open: bilinear interpolation for the rotation and antialiased bilinear
for the resize; the rotation keeps the input size (expand=False) and fills the uncovered corners
with 0, which for ImageNet-normalised input is the mean colour. At +-2 degrees those corners are
at most ~4% of the side deep and the two crops (>= 13 px of 292 from every border) remove them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from padim_lib.errors import PadimError


@dataclass(frozen=True)
class PaperAugment:
    """Rotation in [-degrees, +degrees] -> resize to `resize` -> random crop `crop` -> centre crop `size`.

    __call__(images (B, 3, H, W), generator) -> (B, 3, size, size), same dtype and device.
    Inputs of any size (and aspect) are accepted; the resize is square, like the preprocessing's.
    """

    degrees: float = 2.0
    resize: int = 292
    crop: int = 282
    size: int = 256

    def __post_init__(self) -> None:
        if not (isinstance(self.degrees, (int, float)) and 0 <= self.degrees <= 180):
            raise PadimError(f"rotation={self.degrees!r}; expected a number of degrees in [0, 180]")
        for name in ("resize", "crop", "size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PadimError(f"augmentation {name}={value!r}; expected a positive integer")
        if not self.size <= self.crop <= self.resize:
            raise PadimError(
                f"augmentation sizes resize={self.resize}, crop={self.crop}, size={self.size}; "
                "expected size <= crop <= resize"
            )

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The random parameters of n images: angles (n,) float64 in degrees, crop offsets (n, 2) int64 (top, left)."""
        angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * self.degrees
        offsets = torch.randint(0, self.resize - self.crop + 1, (n, 2), generator=generator)
        return angles, offsets

    def apply(self, images: torch.Tensor, angles: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """The four steps with given parameters: (B, 3, H, W) -> (B, 3, size, size)."""
        if images.ndim != 4:
            raise PadimError(f"augmentation expects images (B, C, H, W), got {tuple(images.shape)}")
        rotated = torch.stack([
            TF.rotate(img, float(a), interpolation=InterpolationMode.BILINEAR, fill=0.0)
            for img, a in zip(images, angles, strict=True)
        ])
        resized = TF.resize(rotated, [self.resize, self.resize], InterpolationMode.BILINEAR, antialias=True)
        cropped = torch.stack([
            TF.crop(img, int(top), int(left), self.crop, self.crop)
            for img, (top, left) in zip(resized, offsets, strict=True)
        ])
        return TF.center_crop(cropped, [self.size, self.size])

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        angles, offsets = self.draw(len(images), generator)
        return self.apply(images, angles, offsets)


class AugmentedSet:
    """The training set of augmented images: `count` draws (source image, angle, crop offset) of the
    training images, fixed for the whole training (the paper's "10 000 images" made by augmentation).

    Sources are shuffled passes over the N images, cut to `count`, so each image is drawn equally
    often (+-1). `batch(index)` returns the augmented images of draws `index` (B,) -> (B, 3, S, S);
    after `cache()` they are read from one tensor made once (epochs re-decode and re-augment
    nothing), otherwise augmented on the fly from the same parameters: the same batches either way.
    """

    CHUNK = 64  # images augmented per call while caching

    def __init__(self, images: torch.Tensor, count: int, augment: PaperAugment, generator: torch.Generator):
        n = len(images)
        passes = -(-count // n)
        self.images = images
        self.augment = augment
        self.source = torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])[:count]
        self.angles, self.offsets = augment.draw(count, generator)
        self.cached: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.source)

    def nbytes(self) -> int:
        """Bytes the cached tensor takes (count x 3 x S x S, the images' dtype)."""
        return len(self) * self.images.shape[1] * self.augment.size ** 2 * self.images.element_size()

    def _make(self, index: torch.Tensor) -> torch.Tensor:
        source = self.source[index].to(self.images.device)
        return self.augment.apply(self.images[source], self.angles[index], self.offsets[index])

    def cache(self) -> None:
        """Augment every draw once and keep the result (what `nbytes` says)."""
        if self.cached is None:
            self.cached = torch.cat([self._make(i) for i in torch.arange(len(self)).split(self.CHUNK)])

    def batch(self, index: torch.Tensor) -> torch.Tensor:
        if self.cached is not None:
            return self.cached[index.to(self.cached.device)]
        return self._make(index)
