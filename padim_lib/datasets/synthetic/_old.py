"""A small synthetic data set in the MVTec AD layout, with exact pixel masks.

Four classes, so that everything downstream can run without MVTec AD:

* textures "brick" and "gravel": random crops (half the photo's side, plus flips and a small
  gain/offset/gamma jitter) of the CC0 texture photographs bundled with scikit-image,
  `skimage.data.brick()` and `skimage.data.gravel()` (fallback: `grass()`; the manifest records
  which), tinted to colour;
* objects "washer" and "chip": a steel washer on a matte surface and an 8-pin IC on a circuit
  board, drawn with anti-aliased signed distance functions. Aligned, with mild nuisance
  variation: +-6 px shifts, small size/tilt/rotation changes, light direction and gradient,
  dust on the surface (washer), solder, pin length, lot code and moulding grain (chip).

Every image gets the same kind of sensor noise. Defect types (5 of each with the defaults,
severities spread from subtle to obvious): textures "scratch", "hole", "stain", "foreign";
objects "scratch", "missing", "stain", "foreign". A defect is rendered on the noise-free scene
and the same noise is then added to the clean and the defective render; a pixel is in the mask
if and only if the defect changed its 8-bit value (`render_sample` returns both renders).

Every image has its own random stream derived from (seed, class, split, defect type, index), so
an image does not depend on which other classes or how many images are generated, and the same
seed gives byte-identical PNGs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from padim_lib.errors import PadimError

GENERATOR_VERSION = 1
TEXTURE_CLASSES = ("brick", "gravel")
OBJECT_CLASSES = ("washer", "chip")
CLASS_NAMES = TEXTURE_CLASSES + OBJECT_CLASSES
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "brick": ("scratch", "hole", "stain", "foreign"),
    "gravel": ("scratch", "hole", "stain", "foreign"),
    "washer": ("scratch", "missing", "stain", "foreign"),
    "chip": ("scratch", "missing", "stain", "foreign"),
}
# skimage.data photographs for the textures, in order of preference (all CC0, bundled with
# scikit-image, no download). The class name stays fixed whichever photo is used; the manifest
# records the photo.
PHOTOS: dict[str, tuple[str, ...]] = {"brick": ("brick", "grass"), "gravel": ("gravel", "grass")}
TINTS = {"brick": (1.06, 0.70, 0.56), "gravel": (0.96, 0.93, 0.86)}
NOISE_SIGMA = 1.5 / 255  # sensor noise, the same field on the clean and the defective render
MIN_CHANGE = 1.5 / 255  # a change this large always changes the 8-bit value (rounding moves < 0.5)
_SPLIT_CODE = {"train": 0, "test": 1}


# --------------------------------------------------------------------------------------------
# geometry helpers (all in pixels, float32, image coordinates y down)
# --------------------------------------------------------------------------------------------
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (size, size) float32."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(c, c, indexing="ij")


def _coverage(sdf: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance (negative inside), edge `soft` px wide."""
    return np.clip(0.5 - sdf / soft, 0.0, 1.0).astype(np.float32)


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _blend(img: np.ndarray, color: Sequence[float] | np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """img (H, W, 3) towards `color` ((3,) or (H, W, 3)) by alpha (H, W)."""
    a = alpha[..., None]
    return img * (1.0 - a) + np.asarray(color, dtype=np.float32) * a


def _polyline_distance(points: np.ndarray, yy: np.ndarray, xx: np.ndarray, reach: float) -> np.ndarray:
    """Distance (H, W) from each pixel centre to the polyline `points` (K, 2) as (y, x);
    +inf farther than `reach` outside the polyline's bounding box (keeps the work local)."""
    h, w = yy.shape
    y0 = max(int(points[:, 0].min() - reach), 0)
    y1 = min(int(points[:, 0].max() + reach) + 1, h)
    x0 = max(int(points[:, 1].min() - reach), 0)
    x1 = min(int(points[:, 1].max() + reach) + 1, w)
    out = np.full((h, w), np.inf, dtype=np.float32)
    if y0 >= y1 or x0 >= x1:
        return out
    py, px = yy[y0:y1, x0:x1], xx[y0:y1, x0:x1]
    best = np.full(py.shape, np.inf, dtype=np.float32)
    for (ay, ax), (by, bx) in zip(points[:-1], points[1:], strict=True):
        dy, dx = by - ay, bx - ax
        t = np.clip(((py - ay) * dy + (px - ax) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
        best = np.minimum(best, np.hypot(py - ay - t * dy, px - ax - t * dx))
    out[y0:y1, x0:x1] = best
    return out


def _curve(rng: np.random.Generator, center: tuple[float, float], length: float, bend: float) -> np.ndarray:
    """A random quadratic Bezier curve (K, 2) of about `length` px through `center`."""
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    d = direction * length / 2
    normal = np.array([direction[1], -direction[0]])  # unit length
    c = np.asarray(center, dtype=np.float64)
    p0, p2 = c - d, c + d
    p1 = c + normal * rng.uniform(-bend, bend)
    t = np.linspace(0.0, 1.0, max(8, int(length / 3)))[:, None]
    return ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32)


def _blob_sdf(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, center: tuple[float, float], radius: float
) -> np.ndarray:
    """Approximate signed distance (H, W) of an irregular blob: a circle with a wobbly radius."""
    dy, dx = yy - center[0], xx - center[1]
    theta = np.arctan2(dy, dx)
    r = np.ones_like(theta)
    for k in (2, 3, 5):
        r += rng.uniform(0.0, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) - radius * r


def _ellipse_sdf(
    yy: np.ndarray, xx: np.ndarray, center: tuple[float, float], a: float, b: float, angle: float
) -> np.ndarray:
    """Approximate signed distance (H, W) of an ellipse with semi-axes a, b (px), rotated by angle."""
    dy, dx = yy - center[0], xx - center[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (np.hypot(u / a, v / b) - 1.0) * min(a, b)


def _rounded_rect_sdf(x: np.ndarray, y: np.ndarray, half_w: float, half_h: float, r: float) -> np.ndarray:
    """Exact signed distance of an axis-aligned rounded rectangle centred at the origin."""
    qx, qy = np.abs(x) - half_w + r, np.abs(y) - half_h + r
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


# --------------------------------------------------------------------------------------------
# scenes: a noise-free render plus what the defects need to know about it
# --------------------------------------------------------------------------------------------
@dataclass
class _Scene:
    image: np.ndarray  # (H, W, 3) float32 in [0, 1], noise-free
    part: np.ndarray  # (H, W) float32 coverage of the inspected surface (ones for textures)
    unit: float  # pixels per unit of the 256 px design
    missing: Callable[[np.random.Generator, float], np.ndarray]  # remove material -> new image
    palette: dict[str, tuple[float, float, float]]
    faint: float = 1.0  # contrast of the subtlest defects relative to the default (objects: fainter)


@lru_cache(maxsize=4)
def _photo(category: str) -> tuple[str, np.ndarray]:
    """(name, grey image (H, W) float32 in [0, 1]) of the first available photo for a texture class."""
    import skimage.data

    errors = []
    for name in PHOTOS[category]:
        try:
            img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        except Exception as exc:  # noqa: BLE001 - any failure means: try the next photo
            errors.append(f"skimage.data.{name}: {exc}")
            continue
        if img.ndim == 3:
            img = img[..., :3].mean(axis=-1)
        return name, img / 255.0
    raise PadimError(f"no texture photo available for class {category!r}: {'; '.join(errors)}")


def _texture_scene(category: str, rng: np.random.Generator, size: int) -> _Scene:
    """A random crop (half the photo's side) of the class's photo, flipped, jittered, tinted."""
    _, photo = _photo(category)
    side = min(photo.shape) // 2
    oy, ox = rng.integers(0, photo.shape[0] - side + 1), rng.integers(0, photo.shape[1] - side + 1)
    patch = photo[oy : oy + side, ox : ox + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if category == "gravel":  # isotropic material: any of the 8 square symmetries is normal
        patch = np.rot90(patch, k=int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            patch = patch[::-1]
    if side != size:
        patch = np.asarray(Image.fromarray(np.ascontiguousarray(patch)).resize((size, size), Image.BICUBIC))
    gain, offset, gamma = rng.uniform(0.93, 1.07), rng.uniform(-0.03, 0.03), rng.uniform(0.93, 1.07)
    grey = np.clip(np.clip(patch, 0, 1) ** gamma * gain + offset, 0, 1)
    image = np.clip(grey[..., None] * np.asarray(TINTS[category], np.float32), 0, 1).astype(np.float32)
    yy, xx = _grid(size)
    unit = size / 256

    def hole(rng: np.random.Generator, sev: float) -> np.ndarray:
        center = _center(rng, np.ones((size, size), np.float32))
        a = _lerp(2.5, 11.0, sev) * unit
        b = a * rng.uniform(0.6, 1.0)
        sdf = _ellipse_sdf(yy, xx, center, a, b, rng.uniform(0, np.pi))
        inside = _coverage(sdf)
        # a dark pit with a lighter rim: the broken edge catches the light
        rim = _coverage(np.abs(sdf + 1.0 * unit) - 1.0 * unit) * 0.5
        out = _blend(image, (0.05, 0.04, 0.04), inside * 0.9)
        return _blend(out, (0.85, 0.8, 0.75), rim * (1 - inside * 0.9))

    palette = {
        "brick": {"scratch": (0.93, 0.88, 0.80), "stain": (0.20, 0.15, 0.12), "thread": (0.15, 0.30, 0.75)},
        "gravel": {"scratch": (0.98, 0.97, 0.92), "stain": (0.55, 0.30, 0.10), "thread": (0.80, 0.20, 0.15)},
    }[category]
    return _Scene(image, np.ones((size, size), np.float32), unit, hole, palette)


def _object_light(rng: np.random.Generator, size: int) -> np.ndarray:
    """Per-image illumination (H, W, 1): global gain and a gentle linear gradient."""
    yy, xx = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((yy - size / 2) * np.sin(angle) + (xx - size / 2) * np.cos(angle)) / size
    return (rng.uniform(0.94, 1.06) + rng.uniform(0.0, 0.06) * ramp)[..., None].astype(np.float32)


def _washer_scene(rng: np.random.Generator, size: int) -> _Scene:
    """A flat steel washer on a matte blue-grey surface. Normal variation: position (+-6 px),
    size and tilt (+-2 %), light direction, lathe-mark pitch, dust specks on the surface."""
    unit = size / 256
    yy, xx = _grid(size)
    cy, cx = size / 2 + rng.uniform(-6, 6) * unit, size / 2 + rng.uniform(-6, 6) * unit
    r_out, r_in = 84 * unit * rng.uniform(0.98, 1.02), 34 * unit * rng.uniform(0.98, 1.02)
    dy, dx = (yy - cy) * rng.uniform(0.98, 1.02), xx - cx  # a slightly tilted washer is an ellipse
    r, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
    light = rng.uniform(-0.5, 0.5) - np.pi / 4

    surface = 0.015 * np.sin(xx / (3.1 * unit)) * np.sin(yy / (2.7 * unit))  # fabric-like weave
    background = np.stack([0.30 + surface, 0.32 + surface, 0.36 + surface], axis=-1).astype(np.float32)
    for _ in range(rng.poisson(8)):  # dust on the surface (hidden where the washer lies)
        speck = np.hypot(yy - rng.uniform(0, size), xx - rng.uniform(0, size)) - rng.uniform(0.6, 1.6) * unit
        background = _blend(background, (0.55, 0.56, 0.58), _coverage(speck) * rng.uniform(0.3, 0.8))
    shadow = ndimage.gaussian_filter(_coverage(_ring_sdf(r, r_out, r_in)), 3 * unit)
    shadow = ndimage.shift(shadow, (3 * unit, 3 * unit), order=1)
    background = background * (1 - 0.45 * shadow[..., None])

    # brushed steel: a broad highlight from the light direction, fine concentric lathe marks,
    # and darker bevels at both edges
    dtheta = np.angle(np.exp(1j * (theta - light)))
    shade = 0.52 + 0.14 * np.cos(theta - light) + 0.22 * np.exp(-(dtheta**2) / 0.25)
    shade = shade + 0.03 * np.sin(2 * np.pi * r / (rng.uniform(2.1, 2.6) * unit) + rng.uniform(0, 2 * np.pi))
    bevel = np.minimum(np.abs(r - r_out), np.abs(r - r_in)) / (3 * unit)
    shade = shade - 0.18 * np.clip(1 - bevel, 0, 1)
    steel = shade[..., None] * np.asarray((0.97, 0.99, 1.0), np.float32)

    lit = _object_light(rng, size)

    def compose(cut: np.ndarray | None = None) -> np.ndarray:
        cov = _coverage(_ring_sdf(r, r_out, r_in))
        if cut is not None:
            cov = cov * (1 - cut)
        return np.clip(_blend(background, steel, cov) * lit, 0, 1).astype(np.float32)

    def missing(rng: np.random.Generator, sev: float) -> np.ndarray:
        # a bite out of the outer or the inner rim
        edge = r_out if rng.random() < 0.7 else r_in
        a = rng.uniform(0, 2 * np.pi)
        radius = _lerp(2.5, 16.0, sev) * unit
        center = (cy + edge * np.sin(a), cx + edge * np.cos(a))
        return compose(_coverage(np.hypot(yy - center[0], xx - center[1]) - radius))

    part = _coverage(_ring_sdf(r, r_out, r_in) + 1.5 * unit)  # inner part, away from the edge
    palette = {"scratch": (0.25, 0.25, 0.27), "stain": (0.50, 0.27, 0.10), "thread": (0.08, 0.08, 0.10)}
    return _Scene(compose(), part, unit, missing, palette, faint=0.4)


def _ring_sdf(r: np.ndarray, r_out: float, r_in: float) -> np.ndarray:
    return np.maximum(r - r_out, r_in - r)


def _text_row(row_y: float, widths: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """A row of printed "characters" (bars 2.5 units apart from x = -30): (y, centres, half-widths)."""
    starts = -30.0 + np.concatenate([[0.0], np.cumsum(widths[:-1] + 2.5)])
    return row_y, (starts + widths / 2).astype(np.float32), (widths / 2).astype(np.float32)


# the part number printed on every chip (fixed, whatever the seed)
_PART_NUMBER = _text_row(-6.0, np.random.default_rng(7).uniform(4.0, 8.0, size=6))


def _chip_scene(rng: np.random.Generator, size: int) -> _Scene:
    """An 8-pin IC (2 x 4 gull-wing pins) on a green circuit board; the board moves with the chip."""
    unit = size / 256
    yy, xx = _grid(size)
    cy, cx = size / 2 + rng.uniform(-6, 6) * unit, size / 2 + rng.uniform(-6, 6) * unit
    phi = np.deg2rad(rng.uniform(-3, 3))
    # object coordinates in design units; the chip is drawn at 1.4 px per unit at 256 px
    scale = 1.4 * unit
    X = ((xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi)) / scale
    Y = (-(xx - cx) * np.sin(phi) + (yy - cy) * np.cos(phi)) / scale
    aa = 1.0 / scale  # one pixel in design units: the anti-aliasing width

    weave = 0.012 * np.sin(X / 2.1) * np.sin(Y / 2.3)
    board = np.stack([0.10 + weave, 0.36 + weave, 0.20 + weave], axis=-1).astype(np.float32)
    # the pins never overlap, so one pass over the image handles all of them: each pixel is
    # drawn relative to its nearest pin column, on the upper (Y < 0) or the lower side
    pin_x = np.array([-33.0, -11.0, 11.0, 33.0], dtype=np.float32)
    nearest = np.argmin(np.abs(X[..., None] - pin_x), axis=-1)
    dxp = X - pin_x[nearest]
    v = np.abs(Y)  # distance from the chip's long axis, outward along the pins
    pin_id = nearest + 4 * (Y < 0)
    traces = _coverage((np.abs(dxp) - 2.5) / aa) * (v > 50)  # from each pad to the image border
    pads = _coverage(_rounded_rect_sdf(dxp, v - 49, 6.5, 6.0, 1.5) / aa)
    solder = rng.uniform(0.85, 1.1, size=8).astype(np.float32)[pin_id, None]  # uneven tinning
    board = _blend(_blend(board, (0.16, 0.46, 0.26), traces), np.float32((0.72, 0.64, 0.46)) * solder, pads)

    body_sdf = _rounded_rect_sdf(X, Y, 50.0, 34.0, 3.0)
    shadow = ndimage.gaussian_filter(_coverage(body_sdf / aa), 2.5 * scale)
    shadow = ndimage.shift(shadow, (2.5 * scale, 2.5 * scale), order=1)
    board = board * (1 - 0.5 * shadow[..., None])

    # pins: bars from under the body (v = 30) to their pads (v = 52), brighter along their axis
    pin_shade = 0.62 + 0.28 * np.cos(np.clip(dxp / 3.5, -1, 1) * 1.3)
    pin_color = pin_shade[..., None] * np.asarray((0.93, 0.93, 0.95), np.float32)

    pin_end = (52.0 + rng.uniform(-1.0, 1.0, size=8)).astype(np.float32)  # bent/trimmed a little

    def pins(cut_pin: int | None = None, cut: float = 0.0) -> np.ndarray:
        end = pin_end[pin_id]
        if cut_pin is not None:
            end = np.where(pin_id == cut_pin, end - cut * 19.0, end)
        return _coverage(np.maximum(np.abs(dxp) - 3.5, np.maximum(30.0 - v, v - end)) / aa)

    body = _coverage(body_sdf / aa)
    edge = np.clip(1 + body_sdf / 2.5, 0, 1)  # 1 at the outline, 0 from 2.5 units inside
    # matte moulded plastic: a grainy surface that differs from chip to chip
    grain = ndimage.gaussian_filter(rng.normal(size=X.shape).astype(np.float32), 1.5 * unit)
    grain *= 0.015 / max(float(grain.std()), 1e-6)
    body_color = np.stack([0.12 + 0.1 * edge + grain] * 3, axis=-1)
    body_color[..., 2] += 0.01
    dot = _coverage((np.hypot(X + 40, Y + 24) - 3.5) / aa)  # pin-1 marker
    body_color = _blend(body_color, (0.22, 0.22, 0.23), dot)
    marking = np.zeros_like(X)
    # printed text: a part number, the same on every chip, and a lot code that varies
    for row_y, centers, half_w in (_PART_NUMBER, _text_row(8.0, rng.uniform(3.0, 8.0, size=4))):
        k = np.argmin(np.abs(X[..., None] - centers), axis=-1)
        bar = _coverage(_rounded_rect_sdf(X - centers[k], Y - row_y, half_w[k], 3.0, 0.5) / aa)
        marking = np.maximum(marking, bar)
    body_color = _blend(body_color, (0.62, 0.62, 0.60), marking * 0.85).astype(np.float32)
    lit = _object_light(rng, size)

    def compose(cut_pin: int | None = None, cut: float = 0.0) -> np.ndarray:
        img = _blend(_blend(board, pin_color, pins(cut_pin, cut)), body_color, body)
        return np.clip(img * lit, 0, 1).astype(np.float32)

    def missing(rng: np.random.Generator, sev: float) -> np.ndarray:
        # the outer part of one pin is broken off (all of it for the most severe cases)
        return compose(int(rng.integers(0, 8)), _lerp(0.15, 1.0, sev))

    part = _coverage((body_sdf + 2.0) / aa)
    palette = {"scratch": (0.60, 0.60, 0.62), "stain": (0.85, 0.80, 0.58), "thread": (0.85, 0.85, 0.80)}
    return _Scene(compose(), part, unit, missing, palette, faint=0.25)


# --------------------------------------------------------------------------------------------
# defects shared by all classes
# --------------------------------------------------------------------------------------------
def _center(rng: np.random.Generator, part: np.ndarray) -> tuple[float, float]:
    """A random pixel centre on the part (coverage ~1) inside the central 70 % of the image,
    so the defect survives the 224 centre crop."""
    size = part.shape[0]
    lo, hi = int(0.15 * size), int(0.85 * size)
    for _ in range(10_000):
        y, x = rng.integers(lo, hi, size=2)
        if part[y, x] > 0.99:
            return float(y) + 0.5, float(x) + 0.5
    raise RuntimeError("no defect position found on the part")  # a design error, not user input


def _scratch(scene: _Scene, rng: np.random.Generator, sev: float) -> np.ndarray:
    size, u = scene.part.shape[0], scene.unit
    yy, xx = _grid(size)
    length = _lerp(14.0, 70.0, sev) * u
    width = _lerp(0.9, 2.6, sev) * u
    pts = _curve(rng, _center(rng, scene.part), length, bend=0.25 * length)
    d = _polyline_distance(pts, yy, xx, reach=width + 2)
    alpha = _coverage(d - width / 2) * _lerp(0.35 * scene.faint, 0.85, sev) * scene.part
    return _blend(scene.image, scene.palette["scratch"], alpha)


def _stain(scene: _Scene, rng: np.random.Generator, sev: float) -> np.ndarray:
    size, u = scene.part.shape[0], scene.unit
    yy, xx = _grid(size)
    radius = _lerp(5.0, 22.0, sev) * u
    sdf = _blob_sdf(rng, yy, xx, _center(rng, scene.part), radius)
    # a soft-edged discolouration; weak ones are the hardest defects of the set
    alpha = _coverage(sdf, soft=3.0 * u) * _lerp(0.2 * scene.faint, 0.6, sev) * scene.part
    return _blend(scene.image, scene.palette["stain"], alpha)


def _foreign(scene: _Scene, rng: np.random.Generator, sev: float) -> np.ndarray:
    """A thread/fibre lying on the part, or a small particle of foreign material."""
    size, u = scene.part.shape[0], scene.unit
    yy, xx = _grid(size)
    center = _center(rng, scene.part)
    if rng.random() < 0.5:
        length, width = _lerp(16.0, 70.0, sev) * u, _lerp(1.0, 2.2, sev) * u
        pts = _curve(rng, center, length, bend=0.5 * length)
        alpha = _coverage(_polyline_distance(pts, yy, xx, reach=width + 2) - width / 2)
        return _blend(scene.image, scene.palette["thread"], alpha * _lerp(0.9 * scene.faint, 0.9, sev))
    radius = _lerp(2.5, 8.0, sev) * u
    sdf = _blob_sdf(rng, yy, xx, center, radius)
    # a shiny bead: its own colour, lit from the top left
    shade = np.clip(
        1.0 - np.hypot(yy - center[0] + radius / 3, xx - center[1] + radius / 3) / (1.6 * radius), 0.3, 1
    )
    color = shade[..., None] * np.asarray((0.85, 0.82, 0.75), np.float32)
    return _blend(scene.image, color, _coverage(sdf))


_DEFECTS: dict[str, Callable[[_Scene, np.random.Generator, float], np.ndarray]] = {
    "scratch": _scratch,
    "stain": _stain,
    "foreign": _foreign,
    "hole": lambda scene, rng, sev: scene.missing(rng, sev),
    "missing": lambda scene, rng, sev: scene.missing(rng, sev),
}


# --------------------------------------------------------------------------------------------
# one sample
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """One generated image and the clean render it was made from."""

    image: np.ndarray  # (H, W, 3) uint8, with the defect (equal to `clean` for "good")
    clean: np.ndarray  # (H, W, 3) uint8, the same scene, lighting and noise without the defect
    mask: np.ndarray  # (H, W) bool, True exactly where image != clean (in any channel)
    defect_type: str


def _stream(seed: int, *names: str | int) -> np.random.Generator:
    """An independent random stream per (seed, names); crc32 keeps it stable across processes."""
    keys = [n if isinstance(n, int) else zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _scene(category: str, rng: np.random.Generator, size: int) -> _Scene:
    if category in TEXTURE_CLASSES:
        return _texture_scene(category, rng, size)
    return _washer_scene(rng, size) if category == "washer" else _chip_scene(rng, size)


def render_sample(
    category: str,
    seed: int,
    split: str,
    index: int,
    defect_type: str = "good",
    severity: float = 0.5,
    size: int = 256,
) -> Sample:
    """Render image `index` of (category, split, defect_type); severity in [0, 1] scales the
    defect's size and contrast (0 = subtle)."""
    _check_category(category)
    if defect_type != "good" and defect_type not in DEFECT_TYPES[category]:
        raise PadimError(
            f"unknown defect type {defect_type!r} for class {category!r}; expected one of "
            f"{', '.join(DEFECT_TYPES[category])}"
        )
    if split not in _SPLIT_CODE:
        raise PadimError(f"split must be 'train' or 'test', got {split!r}")
    rng = _stream(seed, category, _SPLIT_CODE[split], defect_type, index)
    scene = _scene(category, rng, size)
    noise = rng.normal(0.0, NOISE_SIGMA, size=scene.image.shape).astype(np.float32)
    clean_f = np.clip(scene.image + noise, 0, 1)
    clean = _to_uint8(clean_f)
    if defect_type == "good":
        return Sample(clean, clean, np.zeros((size, size), bool), defect_type)
    for _attempt in range(20):
        defect_f = np.clip(_DEFECTS[defect_type](scene, rng, float(severity)) + noise, 0, 1)
        # keep only changes that certainly survive 8-bit rounding: then the mask below is exactly
        # the set of changed pixels, without a fringe of rounding noise at soft edges
        mask = np.abs(defect_f - clean_f).max(axis=-1) >= MIN_CHANGE
        if mask.any():
            image = _to_uint8(np.where(mask[..., None], defect_f, clean_f))
            return Sample(image, clean, mask, defect_type)
    raise RuntimeError(f"could not place a visible {defect_type} defect on {category}")


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _check_category(category: str) -> None:
    if category not in CLASS_NAMES:
        raise PadimError(f"unknown synthetic class {category!r}; valid classes: {', '.join(CLASS_NAMES)}")


# --------------------------------------------------------------------------------------------
# the data set on disk
# --------------------------------------------------------------------------------------------
def _defect_counts(category: str, n_test_defect: int) -> dict[str, int]:
    """Spread the defective test images over the class's defect types, as evenly as possible."""
    types = DEFECT_TYPES[category]
    q, r = divmod(n_test_defect, len(types))
    return {t: q + (k < r) for k, t in enumerate(types) if q + (k < r) > 0}


def _name(i: int, n: int) -> str:
    return f"{i:0{max(3, len(str(n - 1)))}d}"


def _plan(params: dict) -> list[tuple[str, str, str, int, float, str, str | None]]:
    """Every file to write: (category, split, defect type, index, severity, image path, mask path)."""
    jobs = []
    for cat in params["categories"]:
        groups = [("train", "good", params["n_train"]), ("test", "good", params["n_test_good"])]
        groups += [("test", t, n) for t, n in _defect_counts(cat, params["n_test_defect"]).items()]
        for split, kind, n in groups:
            for i in range(n):
                stem = _name(i, n)
                image = f"{cat}/{split}/{kind}/{stem}.png"
                if kind == "good":
                    jobs.append((cat, split, kind, i, 0.0, image, None))
                else:
                    # evenly spread severities: every defect type has subtle and obvious cases
                    mask = f"{cat}/ground_truth/{kind}/{stem}_mask.png"
                    jobs.append((cat, split, kind, i, (i + 0.5) / n, image, mask))
    return jobs


def _manifest(params: dict) -> dict:
    cats = params["categories"]
    return {
        "name": "padim-synthetic",
        "generator": f"padim_lib.datasets.synthetic v{GENERATOR_VERSION}",
        "generator_version": GENERATOR_VERSION,
        "seed": params["seed"],
        "n_train": params["n_train"],
        "n_test_good": params["n_test_good"],
        "n_test_defect": params["n_test_defect"],
        "size": params["size"],
        "textures": [c for c in cats if c in TEXTURE_CLASSES],
        "objects": [c for c in cats if c in OBJECT_CLASSES],
        "defect_types": {c: list(_defect_counts(c, params["n_test_defect"])) for c in cats},
        "photos": {c: f"skimage.data.{_photo(c)[0]}" for c in cats if c in TEXTURE_CLASSES},
    }


def _is_complete(out: Path, manifest: dict, jobs: list) -> bool:
    try:
        existing = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    if existing != manifest:
        return False
    return all((out / p).is_file() and (m is None or (out / m).is_file()) for *_, p, m in jobs)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # fast zlib level: noisy images barely compress better at higher levels
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PadimError(f"make_synthetic: {name} must be an integer >= {minimum}, got {value!r}")


def make_synthetic(
    out: str | os.PathLike,
    seed: int = 0,
    n_train: int = 60,
    n_test_good: int = 10,
    n_test_defect: int = 20,
    size: int = 256,
    categories: Iterable[str] | None = None,
) -> Path:
    """Write the synthetic data set to `out` in the MVTec AD layout and return `out`.

    Also writes <out>/dataset.json (class kinds, parameters, generator version). Skips the work
    when `out` already holds a complete set made with the same parameters. The set is generated
    in a temporary folder beside `out` and renamed into place, so an interrupted run never
    leaves a half-written set at `out`.
    """
    _check_int("seed", seed, 0)
    _check_int("n_train", n_train, 1)
    _check_int("n_test_good", n_test_good, 1)
    _check_int("n_test_defect", n_test_defect, 1)
    _check_int("size", size, 32)
    cats = list(CLASS_NAMES if categories is None else dict.fromkeys(categories))
    for c in cats:
        _check_category(c)
    if not cats:
        raise PadimError("make_synthetic: categories is empty; expected some of " + ", ".join(CLASS_NAMES))
    params = dict(
        seed=int(seed),
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_defect=n_test_defect,
        size=size,
        categories=cats,
    )
    out = Path(out)
    manifest, jobs = _manifest(params), _plan(params)
    if _is_complete(out, manifest, jobs):
        return out
    if out.exists() and not _is_ours(out):
        raise PadimError(
            f"{out} exists and is not a synthetic data set (no dataset.json from this generator); "
            "choose another --out or remove it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for cat, split, dtype, i, sev, path, mask_path in jobs:
            sample = render_sample(cat, params["seed"], split, i, dtype, sev, size)
            _write_png(tmp / path, sample.image)
            if mask_path is not None:
                _write_png(tmp / mask_path, sample.mask.astype(np.uint8) * 255)
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if _is_complete(out, manifest, jobs):  # another process finished the same set meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not _is_complete(out, manifest, jobs):  # lost a race to a writer with other parameters
        raise PadimError(f"{out} was changed by another process while generating; run again")
    return out


def _is_ours(out: Path) -> bool:
    """True for a folder this generator wrote (or an empty one): safe to replace."""
    if out.is_dir() and not any(out.iterdir()):
        return True
    try:
        meta = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("generator", "")).startswith(
        "padim_lib.datasets.synthetic"
    )


def _replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`, replacing an older set there; the old one is deleted afterwards."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "set")
    try:
        os.replace(new, out)
    except OSError:
        # another process put a set at `out` in the meantime: keep theirs (checked by the caller)
        shutil.rmtree(new, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
