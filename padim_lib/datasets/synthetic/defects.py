"""Defects shared by all classes: scratches, colour stains, contamination and threads.

Each takes (scene, rng, severity, knobs) and returns the defective noise-free image. Severity in
[0, 1] sets the contrast (faint to obvious); the size is drawn log-uniformly over the type's range,
so every type has small and large cases independently of their contrast. `Knobs.contrast` and
`Knobs.extent` scale both per class. Class-specific defects (holes, missing or misplaced parts,
imprints) live with their scenes and are looked up in `Scene.special`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from padim_lib.datasets.synthetic.draw import (
    Knobs,
    Scene,
    blend,
    blob_sdf,
    coverage,
    curve,
    grid,
    lerp,
    log_lerp,
    polyline_distance,
)


def place(rng: np.random.Generator, part: np.ndarray) -> tuple[float, float]:
    """A random pixel centre on the part (coverage ~1) inside the central 70 % of the image, so
    the defect's centre survives the 224/256 centre crop."""
    size = part.shape[0]
    lo, hi = int(0.15 * size), int(0.85 * size)
    inner = part[lo:hi, lo:hi] > 0.99
    ys, xs = np.nonzero(inner)
    if ys.size == 0:
        raise RuntimeError("no defect position found on the part")  # a design error, not user input
    k = int(rng.integers(0, ys.size))
    return float(ys[k] + lo) + 0.5, float(xs[k] + lo) + 0.5


def opacity(lo: float, hi: float, sev: float, knobs: Knobs) -> float:
    """The defect's opacity at severity `sev`, scaled by the class's contrast knob (at most 1)."""
    return float(min(1.0, lerp(lo, hi, sev) * knobs.contrast))


def scratch(scene: Scene, rng: np.random.Generator, sev: float, knobs: Knobs) -> np.ndarray:
    """A thin curved line, 10-110 units long and about 1-2.5 units wide, lighter or darker."""
    size, u = scene.part.shape[0], scene.unit
    yy, xx = grid(size)
    t = rng.random()
    length = log_lerp(10.0, 110.0, t) * u * knobs.extent
    width = lerp(0.7, 2.5, t) * u
    pts = curve(rng, place(rng, scene.part), length, bend=0.25 * length)
    d = polyline_distance(pts, yy, xx, reach=width + 2)
    alpha = coverage(d - width / 2) * opacity(0.2, 0.85, sev, knobs) * scene.part
    return blend(scene.image, scene.palette["scratch"], alpha)


def color(scene: Scene, rng: np.random.Generator, sev: float, knobs: Knobs) -> np.ndarray:
    """A soft-edged discolouration of radius 3-40 units: the faint ones are the hardest defects."""
    size, u = scene.part.shape[0], scene.unit
    yy, xx = grid(size)
    radius = log_lerp(3.0, 40.0, rng.random()) * u * knobs.extent
    sdf = blob_sdf(rng, yy, xx, place(rng, scene.part), radius, wobble=0.2)
    alpha = coverage(sdf, soft=max(1.0, 0.25 * radius)) * opacity(0.12, 0.6, sev, knobs) * scene.part
    return blend(scene.image, scene.palette["color"], alpha)


def contamination(scene: Scene, rng: np.random.Generator, sev: float, knobs: Knobs) -> np.ndarray:
    """A particle of foreign material (radius 1.5-12 units), shaded as lit from the top left."""
    size, u = scene.part.shape[0], scene.unit
    yy, xx = grid(size)
    center = place(rng, scene.part)
    radius = log_lerp(1.5, 12.0, rng.random()) * u * knobs.extent
    sdf = blob_sdf(rng, yy, xx, center, radius, wobble=0.25)
    glint = np.hypot(yy - center[0] + radius / 3, xx - center[1] + radius / 3) / (1.6 * radius)
    shade = np.clip(1.1 - glint, 0.4, 1.1)[..., None] * np.asarray(scene.palette["contamination"], np.float32)
    return blend(scene.image, np.clip(shade, 0, 1), coverage(sdf) * opacity(0.35, 1.0, sev, knobs))


def thread(scene: Scene, rng: np.random.Generator, sev: float, knobs: Knobs) -> np.ndarray:
    """A fibre lying on the surface: a strongly bent curve 15-100 units long, 0.8-2 units wide."""
    size, u = scene.part.shape[0], scene.unit
    yy, xx = grid(size)
    t = rng.random()
    length, width = log_lerp(15.0, 100.0, t) * u * knobs.extent, lerp(0.8, 2.0, t) * u
    pts = curve(rng, place(rng, scene.part), length, bend=0.5 * length)
    alpha = coverage(polyline_distance(pts, yy, xx, reach=width + 2) - width / 2)
    return blend(scene.image, scene.palette["thread"], alpha * opacity(0.3, 0.95, sev, knobs))


SHARED: dict[str, Callable[[Scene, np.random.Generator, float, Knobs], np.ndarray]] = {
    "color": color,
    "contamination": contamination,
    "scratch": scratch,
    "thread": thread,
}


def apply(defect_type: str, scene: Scene, rng: np.random.Generator, sev: float, knobs: Knobs) -> np.ndarray:
    """The defective noise-free image: the scene's own defect of that name, else a shared one."""
    if defect_type in scene.special:
        return scene.special[defect_type](rng, sev, knobs)
    return SHARED[defect_type](scene, rng, sev, knobs)
