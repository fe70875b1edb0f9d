"""A small synthetic data set in the ShanghaiTech Campus layout, with exact per-frame masks.

Each scene is a fixed camera over a lawn (skimage.data.grass, tinted) crossed by a paved walkway
(skimage.data.gravel, tinted grey) at a scene-specific angle and position. Normal activity:
pedestrians (a body ellipse and a head, in muted clothes colours) walking along the walkway in
both directions at walking speed, with a slight gait bob; every frame has a mild lighting flicker
and sensor noise. Test clips add one anomaly per clip that enters the view during the clip:

* "cyclist": a wider shape with two wheels, along the walkway, about four times walking speed;
* "vehicle": a large saturated box crossing along the walkway;
* "lawn": a pedestrian walking on the grass, away from the walkway;
* "runner": a pedestrian running along the walkway, three times walking speed - a motion
  anomaly that looks like a walker in any single frame, as several of STC's do (running,
  chasing): a per-frame detector such as PaDiM should miss it.

Anomalies wear ordinary colours (clothes, car paint): their shape, size, speed or place
is what is new. The anomaly is drawn last (nothing occludes it) on the frame's noise-free render, and the
frame's lighting and noise are applied to the render with and without it: a pixel is in the mask
iff the anomaly changed its 8-bit value, and a frame is anomalous iff its mask is not empty. Training clips are .avi
(MPEG-4 Part 2, single-threaded, so byte-identical for a seed), test frames .jpg (quality 95).
Every clip has its own random stream from (seed, scene, split, clip); the scene from (seed, scene).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from padim_lib.datasets.synthetic.draw import coverage, ellipse_sdf, rounded_rect_sdf
from padim_lib.datasets.treeio import atomic_tree, check_replaceable, read_manifest
from padim_lib.errors import PadimError

GENERATOR = "padim_lib.datasets.synthetic_stc"
GENERATOR_VERSION = 1
ANOMALY_TYPES = ("cyclist", "vehicle", "lawn", "runner")
FPS = 25
NOISE_SIGMA = 2.0 / 255
CLOTHES = np.array(
    [
        (0.20, 0.22, 0.30),
        (0.45, 0.15, 0.15),
        (0.75, 0.72, 0.65),
        (0.15, 0.30, 0.20),
        (0.35, 0.30, 0.25),
        (0.10, 0.10, 0.12),
        (0.55, 0.55, 0.60),
    ],
    np.float32,
)
CARS = np.array([(0.85, 0.85, 0.83), (0.25, 0.27, 0.30), (0.55, 0.10, 0.10), (0.15, 0.20, 0.40)], np.float32)


def _stream(seed: int, *names: str | int) -> np.random.Generator:
    keys = [n if isinstance(n, int) else zlib.crc32(n.encode()) for n in names]
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


@lru_cache(maxsize=4)
def _photo(name: str) -> np.ndarray:
    """skimage.data.<name>() as grey float32 in [0, 1] (bundled CC0 photos, no download)."""
    import skimage.data

    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
    return (img[..., :3].mean(axis=-1) if img.ndim == 3 else img) / 255.0


def _patch(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """A random crop of a photo, resized to (h, w)."""
    photo = _photo(name)
    side = min(photo.shape) // 2
    oy, ox = (int(rng.integers(0, n - side + 1)) for n in photo.shape)
    crop = Image.fromarray(np.ascontiguousarray(photo[oy : oy + side, ox : ox + side]))
    return np.asarray(crop.resize((w, h), Image.BICUBIC), dtype=np.float32)


@dataclass(frozen=True)
class _Scene:
    background: np.ndarray  # (H, W, 3) float32 in [0, 1]
    origin: np.ndarray  # (2,) (x, y) a point on the walkway's centre line
    direction: np.ndarray  # (2,) unit vector along the walkway
    half_width: float  # walkway half width, px
    length: float  # half the length of the walkway's centre line across the frame (with margin)


def _scene(seed: int, scene: str, h: int, w: int) -> _Scene:
    rng = _stream(seed, "scene", scene)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    angle = np.radians(rng.uniform(-25, 25))
    direction = np.array([np.cos(angle), np.sin(angle)], np.float32)
    origin = np.array([w / 2, h * rng.uniform(0.4, 0.6)], np.float32)
    half_width = h * rng.uniform(0.13, 0.17)
    # signed distance across the walkway: |offset| < half_width is pavement
    offset = -(xx - origin[0]) * direction[1] + (yy - origin[1]) * direction[0]
    lawn = _patch(rng, "grass", h, w)[..., None] * np.array([0.55, 0.85, 0.40], np.float32) * 0.9
    pave = (0.55 + 0.35 * _patch(rng, "gravel", h, w))[..., None] * np.array([0.78, 0.76, 0.72], np.float32)
    on_path = coverage(np.abs(offset) - half_width, soft=1.5)[..., None]
    background = np.clip(lawn * (1 - on_path) + pave * on_path, 0, 1).astype(np.float32)
    return _Scene(background, origin, direction, float(half_width), float(np.hypot(h, w) / 2 + 20))


@dataclass(frozen=True)
class _Mover:
    """Something moving along the walkway's direction at lateral `offset` from its centre line."""

    kind: str  # "pedestrian" | "cyclist" | "vehicle"
    start: float  # position along the line at frame `t0`, px from the origin
    speed: float  # px per frame, signed
    offset: float
    size: float  # height scale, px
    color: tuple[float, float, float]
    t0: int = 0  # first frame it exists in
    phase: float = 0.0

    def centre(self, scene: _Scene, t: int) -> np.ndarray:
        s = self.start + self.speed * (t - self.t0)
        normal = np.array([-scene.direction[1], scene.direction[0]], np.float32)
        return scene.origin + scene.direction * s + normal * self.offset


def _draw(img: np.ndarray, m: _Mover, scene: _Scene, t: int) -> np.ndarray:
    """Blend mover `m` at frame t into img (H, W, 3) in place; return its coverage (H, W)."""
    h, w = img.shape[:2]
    cover = np.zeros((h, w), np.float32)
    if t < m.t0:
        return cover
    cx, cy = m.centre(scene, t)
    r = int(2 * m.size) + 3
    y0, y1, x0, x1 = max(int(cy) - r, 0), min(int(cy) + r, h), max(int(cx) - r, 0), min(int(cx) + r, w)
    if y0 >= y1 or x0 >= x1:
        return cover
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    s = m.size
    parts: list[tuple[np.ndarray, tuple[float, float, float]]] = []
    if m.kind == "pedestrian":
        bob = 0.06 * s * np.sin(0.5 * t + m.phase)
        parts.append(
            (coverage(ellipse_sdf(yy, xx, (cy + bob, cx), 0.42 * s, 0.16 * s, np.pi / 2)), m.color)
        )
        parts.append(
            (coverage(np.hypot(yy - (cy - 0.55 * s + bob), xx - cx) - 0.12 * s), (0.80, 0.62, 0.50))
        )
    elif m.kind == "cyclist":
        ang = float(np.arctan2(scene.direction[1], scene.direction[0]))
        for sign in (-1, 1):
            wx, wy = cx + sign * 0.35 * s * np.cos(ang), cy + sign * 0.35 * s * np.sin(ang) + 0.25 * s
            ring = np.abs(np.hypot(yy - wy, xx - wx) - 0.2 * s) - 0.05 * s
            parts.append((coverage(ring), (0.08, 0.08, 0.08)))
        parts.append((coverage(ellipse_sdf(yy, xx, (cy - 0.1 * s, cx), 0.45 * s, 0.18 * s, ang)), m.color))
        parts.append((coverage(np.hypot(yy - (cy - 0.45 * s), xx - cx) - 0.12 * s), (0.80, 0.62, 0.50)))
    else:  # vehicle: a box, longer than tall
        parts.append((coverage(rounded_rect_sdf(xx - cx, yy - cy, 0.9 * s, 0.45 * s, 0.12 * s)), m.color))
        parts.append(
            (
                coverage(rounded_rect_sdf(xx - cx, yy - cy + 0.15 * s, 0.55 * s, 0.15 * s, 0.05 * s)),
                (0.15, 0.20, 0.28),
            )
        )
    region = img[y0:y1, x0:x1]
    for alpha, color in parts:
        region[:] = region * (1 - alpha[..., None]) + np.asarray(color, np.float32) * alpha[..., None]
        cover[y0:y1, x0:x1] = np.maximum(cover[y0:y1, x0:x1], alpha)
    return cover


def _pedestrians(rng: np.random.Generator, scene: _Scene, n: int, h: int) -> list[_Mover]:
    out = []
    for _ in range(n):
        speed = float(rng.uniform(0.7, 1.5)) * (1 if rng.random() < 0.5 else -1)
        out.append(
            _Mover(
                "pedestrian",
                float(rng.uniform(-scene.length, scene.length)),
                speed,
                float(rng.uniform(-0.7, 0.7) * scene.half_width),
                h * float(rng.uniform(0.11, 0.14)),
                tuple(CLOTHES[rng.integers(len(CLOTHES))]),
                0,
                float(rng.uniform(0, 2 * np.pi)),
            )
        )
    return out


def _anomaly(rng: np.random.Generator, scene: _Scene, kind: str, frames: int, h: int) -> _Mover:
    """The clip's anomaly: it enters the view from one end of its line about a third into the clip."""
    sign = 1 if rng.random() < 0.5 else -1
    t0 = int(frames * rng.uniform(0.25, 0.4))
    # ordinary colours (clothes, car paint): what gives the anomaly away is its shape, size or place
    color = tuple(CLOTHES[rng.integers(len(CLOTHES))])
    if kind == "cyclist":
        speed, offset, size = rng.uniform(4.0, 5.5), rng.uniform(-0.4, 0.4) * scene.half_width, h * 0.13
    elif kind == "vehicle":
        speed, offset, size = rng.uniform(2.5, 3.5), 0.0, h * 0.13
        color = tuple(CARS[rng.integers(len(CARS))])
    elif kind == "runner":
        speed, offset, size = rng.uniform(3.5, 4.5), rng.uniform(-0.6, 0.6) * scene.half_width, h * 0.125
    else:  # a pedestrian on the grass, well off the walkway, walking at normal speed
        speed = rng.uniform(1.2, 1.6)
        offset = float(rng.choice([-1, 1])) * (scene.half_width + h * 0.16)
        size = h * 0.125
    return _Mover(
        "pedestrian" if kind in ("lawn", "runner") else kind,
        -sign * scene.length * 0.8,
        sign * float(speed),
        float(offset),
        float(size),
        tuple(float(c) for c in color),
        t0,
    )


def render_clip(
    seed: int,
    scene: str,
    split: str,
    clip: int,
    frames: int,
    height: int,
    width: int,
    anomaly: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8 and masks (T, H, W) bool (all False without `anomaly`)."""
    rng = _stream(seed, scene, split, clip)
    sc = _scene(seed, scene, height, width)
    walkers = _pedestrians(rng, sc, int(rng.integers(3, 6)), height)
    # the anomaly has its own stream: with and without it, a clip is the same pixel for pixel
    # outside the anomaly's footprint (what the exact masks rest on)
    odd = None
    if anomaly is not None:
        if anomaly not in ANOMALY_TYPES:
            raise PadimError(f"unknown anomaly {anomaly!r}; expected one of {', '.join(ANOMALY_TYPES)}")
        odd = _anomaly(_stream(seed, scene, split, clip, "anomaly"), sc, anomaly, frames, height)
    flicker_phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(20, 40)
    video = np.empty((frames, height, width, 3), np.uint8)
    masks = np.zeros((frames, height, width), bool)
    for t in range(frames):
        img = sc.background.copy()
        for m in walkers:
            _draw(img, m, sc, t)
        gain = 1.0 + 0.03 * np.sin(2 * np.pi * t / period + flicker_phase) + rng.normal(0, 0.005)
        noise = rng.normal(0, NOISE_SIGMA, img.shape)
        video[t] = _to_uint8(img * gain + noise)
        if odd is not None and _draw(img, odd, sc, t).any():
            # the same lighting and noise with and without the anomaly: a pixel is in the mask
            # iff the anomaly changed its 8-bit value
            with_odd = _to_uint8(img * gain + noise)
            masks[t] = (with_odd != video[t]).any(axis=-1)
            video[t] = with_odd
    return video, masks


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _write_avi(path: Path, video: np.ndarray) -> None:
    import av

    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.codec_context.thread_count = 1  # one thread: the bitstream is the same on every run
        stream.codec_context.qmin = stream.codec_context.qmax = 2  # near-lossless: decode ~ render
        for frame in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _check_int(name: str, value: int, minimum: int, even: bool = False) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
        or (even and value % 2)
    ):
        kind = "an even integer" if even else "an integer"
        raise PadimError(f"make_synthetic_stc: {name} must be {kind} >= {minimum}, got {value!r}")


def make_synthetic_stc(
    out: str | os.PathLike,
    seed: int = 0,
    scenes: int = 2,
    train_clips: int = 2,
    test_clips: int = 2,
    train_frames: int = 64,
    test_frames: int = 64,
    height: int = 128,
    width: int = 192,
) -> Path:
    """Write a synthetic STC-layout set to `out` (see the module docstring) and return `out`.

    Scenes are "01", "02", ...; test clip k (from 0) of scene i (from 0) shows
    ANOMALY_TYPES[(2 i + k) % 4], so two scenes with two clips each show all four.
    <out>/dataset.json records the parameters and each test clip's anomaly and frame range.
    A complete set with the same parameters is left as it is; otherwise the set is built in a
    temporary folder and renamed into place.
    """
    for name, value, lo in (
        ("seed", seed, 0),
        ("scenes", scenes, 1),
        ("train_clips", train_clips, 1),
        ("test_clips", test_clips, 1),
        ("train_frames", train_frames, 2),
        ("test_frames", test_frames, 8),
    ):
        _check_int(name, value, lo)
    _check_int("height", height, 32, even=True)  # yuv420p needs even sides
    _check_int("width", width, 32, even=True)
    out = Path(out)
    params = dict(
        seed=int(seed),
        scenes=int(scenes),
        train_clips=int(train_clips),
        test_clips=int(test_clips),
        train_frames=int(train_frames),
        test_frames=int(test_frames),
        height=int(height),
        width=int(width),
    )
    manifest = {
        "name": "padim-synthetic-stc",
        "generator": f"{GENERATOR} v{GENERATOR_VERSION}",
        "generator_version": GENERATOR_VERSION,
        **params,
    }
    existing = read_manifest(out)
    if existing is not None and {k: v for k, v in existing.items() if k != "clips"} == manifest:
        return out
    check_replaceable(out, GENERATOR)
    names = [f"{i:02d}" for i in range(1, scenes + 1)]
    with atomic_tree(out) as tmp:
        videos = tmp / "training" / "videos"
        dirs = {k: tmp / "testing" / k for k in ("frames", "test_pixel_mask", "test_frame_mask")}
        for d in (videos, *dirs.values()):
            d.mkdir(parents=True)
        clips = {}
        for si, scene in enumerate(names):
            for c in range(1, train_clips + 1):
                video, _ = render_clip(seed, scene, "train", c, train_frames, height, width)
                _write_avi(videos / f"{scene}_{c:03d}.avi", video)
            for c in range(1, test_clips + 1):
                name, kind = f"{scene}_{c:04d}", ANOMALY_TYPES[(2 * si + c - 1) % len(ANOMALY_TYPES)]
                video, masks = render_clip(seed, scene, "test", c, test_frames, height, width, kind)
                (dirs["frames"] / name).mkdir()
                for t, frame in enumerate(video):
                    Image.fromarray(frame).save(dirs["frames"] / name / f"{t:03d}.jpg", quality=95)
                labels = masks.any(axis=(1, 2))
                np.save(dirs["test_pixel_mask"] / f"{name}.npy", masks.astype(np.uint8))
                np.save(dirs["test_frame_mask"] / f"{name}.npy", labels.astype(np.uint8))
                hit = np.flatnonzero(labels)
                clips[name] = {
                    "anomaly": kind,
                    "abnormal_frames": [int(hit.min()), int(hit.max())] if hit.size else [],
                }
        (tmp / "dataset.json").write_text(json.dumps({**manifest, "clips": clips}, indent=1) + "\n")
    return out
