"""The VAE's training images: the field the test shows, at the scale the test shows it.

At test time the VAE resizes each test image (the protocol's view: `Preprocess(resize=r, crop=c)`,
side s = c, or r without a crop) to `image_size`: one original-image unit spans r * image_size / s
pixels and the field is the central s / r of the image. In training, the paper's augmentation
(`augment.PaperAugment`) resizes its input to `aug_resize`, crops `aug_crop` at random and keeps
the central `image_size`. For the two to agree, the augmentation's input must hold the image at
the test's scale on a side of `aug_resize` pixels:

    resize the original to R = round(r * image_size / s), then
    R >= aug_resize: centre-crop aug_resize (the augmentation's resize is then the identity);
    R <  aug_resize: reflect-pad the image to aug_resize (no margin beyond the test's field exists).

The augmentation's centre `image_size` pixels are then the test's field at the test's scale, up to
the rounding of R (< 0.5 px) and the augmentation's jitter (the random crop's offset and the
rotation). Examples (paper sizes 256 / 292 / 282, and 96 / 110 / 106 at the embedded size):

=============================== ======================== ========================
test view                       paper (image_size 256)   embedded (image_size 96)
=============================== ======================== ========================
aligned MVTec AD, 256 -> 224    resize 293, crop 292     resize 110
non-aligned versions, 224 only  resize 256, pad 18       resize 96, pad 7
STC, 256 only                   resize 256, pad 18       resize 96, pad 7
=============================== ======================== ========================

On aligned MVTec AD this is what the paper's numbers imply (292 / 256 = 1.14 = 256 / 224: the
augmentation's 256-of-292 view is the protocol's 224-of-256 field). A view that resized every
training image to 292 whatever the test shows would train on non-aligned 224-px images at
292 / 224 = 1.30x and test them at 256 / 224 = 1.14x.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.errors import PadimError


@dataclass(frozen=True)
class TrainingView:
    """Resize (bicubic, square) -> optional centre crop -> optional reflect padding of `pad` px per side.

    Reads images like a `Preprocess` (`image`, `mask`, `size`, `normalize`), so a data set opened
    with it gives the VAE's training images. image(PIL) -> (3, size, size) float32.
    """

    resize: int
    crop: int | None = None
    pad: int = 0
    normalize: bool = True

    def __post_init__(self) -> None:
        Preprocess(self.resize, self.crop, self.normalize)  # the same checks
        side = self.crop or self.resize
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or not 0 <= self.pad < side:
            raise PadimError(f"TrainingView.pad={self.pad!r}; expected an integer in [0, {side})")

    @property
    def base(self) -> Preprocess:
        return Preprocess(self.resize, self.crop, self.normalize)

    @property
    def size(self) -> int:
        return (self.crop or self.resize) + 2 * self.pad

    def key(self) -> str:
        return f"{self.base.key()}-p{self.pad}"

    def image(self, img: Image.Image) -> torch.Tensor:
        x = self.base.image(img)
        if not self.pad:
            return x
        return F.pad(x[None], (self.pad,) * 4, mode="reflect")[0]

    def mask(self, img: Image.Image | None) -> torch.Tensor:
        m = self.base.mask(img)
        return F.pad(m, (self.pad,) * 4) if self.pad else m


def training_view(preprocess: Preprocess, image_size: int, aug_resize: int) -> TrainingView:
    """The training images' view for test images read with `preprocess` (see the module docstring)."""
    side = preprocess.size
    resize = round(preprocess.resize * image_size / side)
    if resize >= aug_resize:
        return TrainingView(resize, None if resize == aug_resize else aug_resize, 0, preprocess.normalize)
    # ceil: an odd difference gives one pixel more, which the augmentation's resize to aug_resize
    # absorbs (a scale error of 1 / aug_resize)
    pad = -(-(aug_resize - resize) // 2)
    if pad >= resize:
        raise PadimError(f"aug_resize={aug_resize} is too large for image_size={image_size} (a training image of "
                         f"{resize} px would need {pad} px of padding per side); the paper's ratio is "
                         f"aug_resize={round(image_size * 292 / 256)}, aug_crop={round(image_size * 282 / 256)}")
    return TrainingView(resize, None, pad, preprocess.normalize)
