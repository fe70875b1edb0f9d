"""Drawing primitives of the synthetic set: pixel grids, anti-aliased coverage from signed
distances, curves, blobs, smooth noise, illumination, and the `Scene` record the defects draw on.

All geometry is in pixels (float32, image coordinates, y down); images are (H, W, 3) float32 in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Knobs:
    """A class's difficulty knobs (the only values calibrated toward the stated target).

    contrast: multiplies every defect's opacity (below 1: fainter defects, harder);
    extent: multiplies every defect's size (below 1: smaller defects, harder);
    variation: multiplies the normal images' nuisance variation (above 1: harder).
    """

    contrast: float = 1.0
    extent: float = 1.0
    variation: float = 1.0


# a class-specific defect: (rng, severity in [0, 1], knobs) -> the defective noise-free image
Special = Callable[[np.random.Generator, float, Knobs], np.ndarray]


@dataclass
class Scene:
    """A noise-free render plus what the defects need to know about it."""

    image: np.ndarray  # (H, W, 3) float32 in [0, 1]
    part: np.ndarray  # (H, W) float32 coverage of the surface where surface defects may lie
    unit: float  # pixels per unit of the 256 px design
    palette: dict[str, tuple[float, float, float]]  # colours of the shared defects, by defect type
    special: dict[str, Special] = field(default_factory=dict)  # the class's own defect types


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (y, x), each (size, size) float32."""
    c = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(c, c, indexing="ij")


def coverage(sdf: np.ndarray, soft: float = 1.0) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance (negative inside), edge `soft` px wide."""
    return np.clip(0.5 - sdf / soft, 0.0, 1.0).astype(np.float32)


def lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def log_lerp(lo: float, hi: float, t: float) -> float:
    """Geometric interpolation: sizes spread evenly over orders of magnitude."""
    return float(lo * (hi / lo) ** t)


def blend(img: np.ndarray, color: Sequence[float] | np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """img (H, W, 3) towards `color` ((3,) or (H, W, 3)) by alpha (H, W)."""
    a = alpha[..., None]
    return img * (1.0 - a) + np.asarray(color, dtype=np.float32) * a


def frame(
    yy: np.ndarray, xx: np.ndarray, center: tuple[float, float], phi: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Object coordinates (X, Y) in design units of an object at `center`, rotated by phi (rad)."""
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(phi), np.sin(phi)
    return (dx * c + dy * s) / scale, (-dx * s + dy * c) / scale


def polyline_distance(points: np.ndarray, yy: np.ndarray, xx: np.ndarray, reach: float) -> np.ndarray:
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


def curve(rng: np.random.Generator, center: tuple[float, float], length: float, bend: float) -> np.ndarray:
    """A random quadratic Bezier curve (K, 2) of about `length` px through `center`."""
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    d = direction * length / 2
    normal = np.array([direction[1], -direction[0]])
    c = np.asarray(center, dtype=np.float64)
    p1 = c + normal * rng.uniform(-bend, bend)
    t = np.linspace(0.0, 1.0, max(8, int(length / 3)))[:, None]
    return ((1 - t) ** 2 * (c - d) + 2 * (1 - t) * t * p1 + t**2 * (c + d)).astype(np.float32)


def blob_sdf(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, center: tuple[float, float], radius: float,
    wobble: float = 0.15,
) -> np.ndarray:
    """Approximate signed distance (H, W) of an irregular blob: a circle with a wobbly radius."""
    dy, dx = yy - center[0], xx - center[1]
    theta = np.arctan2(dy, dx)
    r = np.ones_like(theta)
    for k in (2, 3, 5):
        r += rng.uniform(0.0, wobble) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(dy, dx) - radius * r


def ellipse_sdf(
    yy: np.ndarray, xx: np.ndarray, center: tuple[float, float], a: float, b: float, angle: float
) -> np.ndarray:
    """Approximate signed distance (H, W) of an ellipse with semi-axes a, b (px), rotated by angle."""
    dy, dx = yy - center[0], xx - center[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    return (np.hypot(u / a, v / b) - 1.0) * min(a, b)


def rounded_rect_sdf(x: np.ndarray, y: np.ndarray, half_w: float, half_h: float, r: float) -> np.ndarray:
    """Exact signed distance of an axis-aligned rounded rectangle centred at the origin."""
    qx, qy = np.abs(x) - half_w + r, np.abs(y) - half_h + r
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float, amp: float) -> np.ndarray:
    """Gaussian-filtered white noise (H, W) float32 with standard deviation `amp` (grain, mottling)."""
    field_ = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    return field_ * (amp / max(float(field_.std()), 1e-6))


def light(rng: np.random.Generator, size: int, gain: float, ramp: float) -> np.ndarray:
    """Per-image illumination (H, W, 1): a global gain (1 +- gain) and a linear gradient (+- ramp/2)."""
    yy, xx = grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    slope = ((yy - size / 2) * np.sin(angle) + (xx - size / 2) * np.cos(angle)) / size
    return (1.0 + rng.uniform(-gain, gain) + rng.uniform(0.0, ramp) * slope)[..., None].astype(np.float32)


def jitter_color(rng: np.random.Generator, color: Sequence[float], amount: float) -> np.ndarray:
    """`color` with each channel scaled by 1 +- amount (colour variation between parts)."""
    return (np.asarray(color, np.float32) * rng.uniform(1 - amount, 1 + amount, size=3)).astype(np.float32)
