"""Texture classes: random crops of real photographs bundled with scikit-image (brick, gravel and
grass are CC0; the immunohistochemistry photo has no known copyright restrictions).

A crop is half the photo's side (256 of 512 px; 3/4 for the tissue photo's large structures),
flipped at random, turned by a quarter turn for isotropic materials, then given an exposure (gain,
offset, gamma), colour-cast and lighting gradient jitter. `Knobs.variation` scales the jitter and,
below 1, narrows the window the crops are taken from (the tissue photo is not stationary: its
glands are about as large as a crop). The class's own defect is the "hole".
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from padim_lib.datasets.synthetic.draw import (
    Knobs,
    Scene,
    blend,
    coverage,
    ellipse_sdf,
    grid,
    light,
    log_lerp,
)
from padim_lib.errors import PadimError

# class -> skimage.data photograph (all bundled with scikit-image >= 0.21, no download)
PHOTOS = {"brick": "brick", "gravel": "gravel", "grass": "grass", "tissue": "immunohistochemistry"}
# share of the photo's side a crop covers: the tissue photo's glands are large, so its crops are
# wider (more, smaller structures per image, as in MVTec's textures)
CROP = {"brick": 0.5, "gravel": 0.5, "grass": 0.5, "tissue": 0.75}
ISOTROPIC = frozenset({"gravel"})  # any of the 8 square symmetries is a normal view
TINTS = {  # grey photos are tinted to a plausible colour; the tissue photo has its own
    "brick": (1.06, 0.70, 0.56),
    "gravel": (0.96, 0.93, 0.86),
    "grass": (0.70, 0.92, 0.50),
    "tissue": (1.0, 1.0, 1.0),
}
PALETTES = {  # colours of the shared defects on each material
    "brick": {"scratch": (0.93, 0.88, 0.80), "color": (0.20, 0.15, 0.12), "thread": (0.15, 0.30, 0.75),
              "contamination": (0.85, 0.82, 0.75)},
    "gravel": {"scratch": (0.98, 0.97, 0.92), "color": (0.55, 0.30, 0.10), "thread": (0.80, 0.20, 0.15),
               "contamination": (0.30, 0.32, 0.36)},
    "grass": {"scratch": (0.85, 0.80, 0.55), "color": (0.55, 0.45, 0.15), "thread": (0.90, 0.90, 0.85),
              "contamination": (0.45, 0.30, 0.20)},
    "tissue": {"scratch": (0.95, 0.93, 0.95), "color": (0.45, 0.25, 0.15), "thread": (0.20, 0.20, 0.30),
               "contamination": (0.25, 0.15, 0.30)},
}


@lru_cache(maxsize=8)
def photo(category: str) -> np.ndarray:
    """The class's photograph (H, W, 3) float32 in [0, 1] (grey photos repeated over 3 channels)."""
    import skimage.data

    name = PHOTOS[category]
    try:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32) / 255.0
    except Exception as exc:  # noqa: BLE001 - any failure is the same problem for the user
        raise PadimError(f"synthetic class {category!r} needs skimage.data.{name}(), which failed: {exc}") from exc
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return np.ascontiguousarray(img[..., :3])


def _resize(patch: np.ndarray, size: int) -> np.ndarray:
    if patch.shape[0] == size:
        return patch
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((size, size), Image.BICUBIC))
                for c in np.moveaxis(patch, -1, 0)]
    return np.stack(channels, axis=-1)


def texture_scene(category: str, rng: np.random.Generator, size: int, knobs: Knobs) -> Scene:
    """A random crop of the class's photo with flips and exposure, colour and lighting jitter."""
    img = photo(category)
    side = int(min(img.shape[:2]) * CROP[category])
    v = knobs.variation
    # the crop's position: anywhere for v >= 1, else within a centred window v times as wide
    span = [n - side for n in img.shape[:2]]
    oy, ox = (int(round((1 - min(v, 1)) * s / 2 + rng.integers(0, int(min(v, 1) * s) + 1))) for s in span)
    patch = img[oy : oy + side, ox : ox + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if category in ISOTROPIC:
        patch = np.rot90(patch, k=int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            patch = patch[::-1]
    patch = _resize(np.clip(patch, 0, 1).astype(np.float32), size)
    gain, offset = rng.uniform(1 - 0.07 * v, 1 + 0.07 * v), rng.uniform(-0.03 * v, 0.03 * v)
    gamma = rng.uniform(1 - 0.07 * v, 1 + 0.07 * v)
    tint = np.asarray(TINTS[category], np.float32) * rng.uniform(1 - 0.03 * v, 1 + 0.03 * v, size=3)
    image = np.clip(np.clip(patch, 0, 1) ** gamma * gain + offset, 0, 1) * tint
    image = np.clip(image * light(rng, size, gain=0.0, ramp=0.08 * v), 0, 1).astype(np.float32)
    yy, xx = grid(size)
    unit = size / 256
    part = np.ones((size, size), np.float32)

    def hole(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """A dark pit with a lighter rim (the broken edge catches the light)."""
        from padim_lib.datasets.synthetic.defects import place

        center = place(rng, part)
        a = log_lerp(2.0, 16.0, rng.random()) * unit * k.extent
        sdf = ellipse_sdf(yy, xx, center, a, a * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi))
        depth = min(1.0, (0.35 + 0.55 * sev) * k.contrast)
        inside = coverage(sdf) * depth
        rim = coverage(np.abs(sdf + unit) - unit) * 0.5 * depth
        out = blend(image, (0.05, 0.04, 0.04), inside)
        return blend(out, (0.85, 0.8, 0.75), rim * (1 - inside))

    return Scene(image, part, unit, PALETTES[category], {"hole": hole})
