"""Object classes "washer" and "tablet": aligned parts drawn with anti-aliased signed distances.

Normal variation (scaled by `Knobs.variation`): position (a few px), a small rotation or tilt,
light direction, gain and gradient, the part's colour, surface grain. Each scene carries its own
defects (`Scene.special`): material broken off the part, cracks, dents, faulty imprints.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from padim_lib.datasets.synthetic.defects import opacity, place
from padim_lib.datasets.synthetic.draw import (
    Knobs,
    Scene,
    blend,
    coverage,
    curve,
    frame,
    grid,
    jitter_color,
    lerp,
    light,
    log_lerp,
    polyline_distance,
    rounded_rect_sdf,
    smooth_noise,
)


def _shadow(cov: np.ndarray, blur: float, offset: float) -> np.ndarray:
    """A soft drop shadow (H, W) of a part's coverage, cast down-right."""
    return ndimage.shift(ndimage.gaussian_filter(cov, blur), (offset, offset), order=1)


def _bite(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, edge: np.ndarray, radius: float) -> np.ndarray:
    """Coverage (H, W) of a round bite of `radius` px centred on a random pixel of the `edge` mask."""
    ys, xs = np.nonzero(edge)
    k = int(rng.integers(0, ys.size))
    return coverage(np.hypot(yy - ys[k] - 0.5, xx - xs[k] - 0.5) - radius)


def washer_scene(rng: np.random.Generator, size: int, knobs: Knobs) -> Scene:
    """A flat steel washer on a matte blue-grey surface with dust; brushed, bevelled, lathe-marked."""
    unit, v = size / 256, knobs.variation
    yy, xx = grid(size)
    cy, cx = size / 2 + rng.uniform(-5, 5) * unit * v, size / 2 + rng.uniform(-5, 5) * unit * v
    r_out, r_in = 84 * unit * rng.uniform(1 - 0.02 * v, 1 + 0.02 * v), 34 * unit * rng.uniform(0.98, 1.02)
    dy, dx = (yy - cy) * rng.uniform(1 - 0.02 * v, 1 + 0.02 * v), xx - cx  # a slight tilt: an ellipse
    r, theta = np.hypot(dy, dx), np.arctan2(dy, dx)
    ring = np.maximum(r - r_out, r_in - r)
    light_dir = rng.uniform(-0.5, 0.5) * v - np.pi / 4

    surface = (0.015 * np.sin(xx / (3.1 * unit)) * np.sin(yy / (2.7 * unit)))[..., None]
    background = (jitter_color(rng, (0.30, 0.32, 0.36), 0.04 * v) + surface).astype(np.float32)
    for _ in range(rng.poisson(8)):  # dust on the surface, hidden where the washer lies
        speck = np.hypot(yy - rng.uniform(0, size), xx - rng.uniform(0, size)) - rng.uniform(0.6, 1.6) * unit
        background = blend(background, (0.55, 0.56, 0.58), coverage(speck) * rng.uniform(0.3, 0.8))
    background = background * (1 - 0.45 * _shadow(coverage(ring), 3 * unit, 3 * unit)[..., None])

    # brushed steel: a broad highlight from the light, fine concentric lathe marks, dark bevels
    dtheta = np.angle(np.exp(1j * (theta - light_dir)))
    shade = 0.52 + 0.14 * np.cos(theta - light_dir) + 0.22 * np.exp(-(dtheta**2) / 0.25)
    shade = shade + 0.03 * np.sin(2 * np.pi * r / (rng.uniform(2.1, 2.6) * unit) + rng.uniform(0, 2 * np.pi))
    bevel = np.minimum(np.abs(r - r_out), np.abs(r - r_in)) / (3 * unit)
    shade = shade - 0.18 * np.clip(1 - bevel, 0, 1) + smooth_noise(rng, r.shape, 2 * unit, 0.012 * v)
    steel = shade[..., None] * jitter_color(rng, (0.97, 0.99, 1.0), 0.02 * v)
    lit = light(rng, size, gain=0.06 * v, ramp=0.08 * v)

    def compose(cut: np.ndarray | None = None) -> np.ndarray:
        cov = coverage(ring) if cut is None else coverage(ring) * (1 - cut)
        return np.clip(blend(background, steel, cov) * lit, 0, 1).astype(np.float32)

    def broken(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """A bite out of the outer (mostly) or the inner rim; the deeper, the more obvious."""
        rim = np.abs(r - (r_out if rng.random() < 0.7 else r_in)) < 0.7 * unit
        radius = log_lerp(2.0, 16.0, lerp(0.5 * rng.random(), 0.5 + 0.5 * rng.random(), sev)) * unit * k.extent
        return compose(_bite(rng, yy, xx, rim, radius))

    part = coverage(ring + 1.5 * unit)  # the washer's face, away from its edges
    palette = {"scratch": (0.25, 0.25, 0.27), "color": (0.50, 0.27, 0.10), "thread": (0.08, 0.08, 0.10),
               "contamination": (0.35, 0.30, 0.22)}
    return Scene(compose(), part, unit, palette, {"broken": broken})


# the tablet's imprint: two rows of "characters" (bars) either side of the score line, fixed
_IMPRINT = [(x, y, w) for y in (-9.0, 9.0) for x, w in zip((-52.0, -40.0, -28.0, 28.0, 40.0, 52.0),
                                                           np.random.default_rng(11).uniform(3.0, 4.5, 6), strict=True)]


def tablet_scene(rng: np.random.Generator, size: int, knobs: Knobs) -> Scene:
    """An oblong film-coated tablet with a score line and a printed imprint, on a dark tray."""
    unit, v = size / 256, knobs.variation
    yy, xx = grid(size)
    center = (size / 2 + rng.uniform(-4, 4) * unit * v, size / 2 + rng.uniform(-4, 4) * unit * v)
    X, Y = frame(yy, xx, center, np.deg2rad(rng.uniform(-3, 3) * v), unit)
    aa = 1.0 / unit
    half_w, half_h = 78.0 * rng.uniform(1 - 0.015 * v, 1 + 0.015 * v), 36.0 * rng.uniform(0.985, 1.015)
    body_sdf = rounded_rect_sdf(X, Y, half_w, half_h, half_h * 0.95)

    tray = jitter_color(rng, (0.16, 0.18, 0.24), 0.05 * v) + smooth_noise(rng, X.shape, 3 * unit, 0.01)[..., None]
    tray = tray * (1 - 0.5 * _shadow(coverage(body_sdf / aa), 3 * unit, 3 * unit))[..., None]
    # a dome lit from the top left, a mottled coating whose colour varies from lot to lot
    dome = np.clip(1 + body_sdf / half_h, 0, 1)
    shade = 0.80 + 0.12 * np.sqrt(dome) - 0.06 * (X / half_w + Y / half_h) + smooth_noise(rng, X.shape, unit, 0.01 * v)
    base = jitter_color(rng, (0.93, 0.86, 0.66), 0.03 * v)
    groove = coverage((np.abs(X) - 1.2) / aa) * 0.25  # the score line
    coat = (shade * (1 - groove))[..., None] * base
    ink = jitter_color(rng, (0.35, 0.15, 0.12), 0.05 * v)
    lit = light(rng, size, gain=0.06 * v, ramp=0.08 * v)

    def imprint(drop: int | None = None, fade: float = 1.0, smear: float = 0.0) -> np.ndarray:
        out = np.zeros_like(X)
        for i, (x0, y0, w) in enumerate(_IMPRINT):
            strength = (1 - fade) if i == drop else 1.0
            bar = coverage(rounded_rect_sdf(X - x0 - (smear if i == drop else 0.0), Y - y0, w, 5.0, 1.0) / aa)
            out = np.maximum(out, bar * strength)
        return out * 0.8

    def compose(cut: np.ndarray | None = None, ink_alpha: np.ndarray | None = None,
                extra: np.ndarray | None = None) -> np.ndarray:
        body = coverage(body_sdf / aa) if cut is None else coverage(body_sdf / aa) * (1 - cut)
        surface = blend(coat, ink, imprint() if ink_alpha is None else ink_alpha)
        if extra is not None:
            surface = surface * extra[..., None]
        return np.clip(blend(tray, surface, body) * lit, 0, 1).astype(np.float32)

    def broken(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """A chip broken off the tablet's rim."""
        rim = np.abs(body_sdf) < 0.7
        radius = log_lerp(2.5, 18.0, lerp(0.5 * rng.random(), 0.5 + 0.5 * rng.random(), sev)) * unit * k.extent
        return compose(cut=_bite(rng, yy, xx, rim, radius))

    def crack(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """A hairline crack: a thin dark curve, 10-70 units long."""
        length = log_lerp(10.0, 70.0, rng.random()) * unit * k.extent
        pts = curve(rng, place(rng, part), length, bend=0.3 * length)
        line = coverage(polyline_distance(pts, yy, xx, reach=3) - lerp(0.35, 0.8, sev) * unit)
        return compose(extra=1 - line * opacity(0.25, 0.7, sev, k) * part)

    def faulty_imprint(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """One character of the imprint faded out (faint) or missing and smeared sideways."""
        drop = int(rng.integers(0, len(_IMPRINT)))
        return compose(ink_alpha=imprint(drop, fade=opacity(0.3, 1.0, sev, k), smear=lerp(0, 4, sev)))

    def poke(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """A small dent: darker on the side facing the light, lighter on the other."""
        cy, cx = place(rng, part)
        radius = log_lerp(2.0, 12.0, rng.random()) * unit * k.extent
        d = np.hypot(yy - cy, xx - cx) / radius
        tilt = ((yy - cy) + (xx - cx)) / radius  # toward the bottom right, away from the light
        dent = np.where(d < 1, tilt * np.cos(d * np.pi / 2), 0.0)
        return compose(extra=1 + 0.6 * opacity(0.15, 0.6, sev, k) * dent)

    part = coverage((body_sdf + 3.0) / aa)
    palette = {"scratch": (0.55, 0.50, 0.42), "color": (0.60, 0.45, 0.25), "thread": (0.20, 0.20, 0.25),
               "contamination": (0.30, 0.25, 0.20)}
    special = {"broken": broken, "crack": crack, "faulty_imprint": faulty_imprint, "poke": poke}
    return Scene(compose(), part, unit, palette, special)
