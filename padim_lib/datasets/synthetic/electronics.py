"""Object classes "chip" (an 8-pin IC on a circuit board) and "board" (a small board with SMD
parts): aligned, with placement, light, colour and grain variation scaled by `Knobs.variation`.
Their own defects: cut and bent leads, a damaged case, a faulty imprint; missing and misplaced parts.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from padim_lib.datasets.synthetic import defects
from padim_lib.datasets.synthetic.draw import (
    Knobs,
    Scene,
    blend,
    coverage,
    frame,
    grid,
    jitter_color,
    lerp,
    light,
    rounded_rect_sdf,
    smooth_noise,
)

_PIN_X = np.array([-33.0, -11.0, 11.0, 33.0], dtype=np.float32)
# the part number printed on every chip (fixed, whatever the seed): bar centres and half-widths
_PART_W = np.random.default_rng(7).uniform(4.0, 8.0, size=6)
_PART_X = -30.0 + np.concatenate([[0.0], np.cumsum(_PART_W[:-1] + 2.5)]) + _PART_W / 2


def _bars(X: np.ndarray, Y: np.ndarray, y0: float, centers: np.ndarray, half_w: np.ndarray, aa: float) -> np.ndarray:
    """Coverage of a row of printed bars (one per character) at height y0."""
    k = np.argmin(np.abs(X[..., None] - centers), axis=-1)
    return coverage(rounded_rect_sdf(X - centers[k], Y - y0, half_w[k], 3.0, 0.5) / aa)


def chip_scene(rng: np.random.Generator, size: int, knobs: Knobs) -> Scene:
    """An 8-pin IC (2 x 4 gull-wing pins) on a green circuit board; the board moves with the chip."""
    unit, v = size / 256, knobs.variation
    yy, xx = grid(size)
    center = (size / 2 + rng.uniform(-5, 5) * unit * v, size / 2 + rng.uniform(-5, 5) * unit * v)
    scale = 1.4 * unit  # design units: 1.4 px each at 256 px
    X, Y = frame(yy, xx, center, np.deg2rad(rng.uniform(-3, 3) * v), scale)
    aa = 1.0 / scale

    weave = (0.012 * np.sin(X / 2.1) * np.sin(Y / 2.3))[..., None]
    board = jitter_color(rng, (0.10, 0.36, 0.20), 0.05 * v) + weave
    nearest = np.argmin(np.abs(X[..., None] - _PIN_X), axis=-1)  # each pixel's pin column
    dxp, vv = X - _PIN_X[nearest], np.abs(Y)  # across the pin; outward along it
    pin_id = nearest + 4 * (Y < 0)
    traces = coverage((np.abs(dxp) - 2.5) / aa) * (vv > 50)
    pads = coverage(rounded_rect_sdf(dxp, vv - 49, 6.5, 6.0, 1.5) / aa)
    solder = rng.uniform(0.85, 1.1, size=8).astype(np.float32)[pin_id, None]  # uneven tinning
    board = blend(blend(board, (0.16, 0.46, 0.26), traces), np.float32((0.72, 0.64, 0.46)) * solder, pads)
    body_sdf = rounded_rect_sdf(X, Y, 50.0, 34.0, 3.0)
    shadow = ndimage.shift(ndimage.gaussian_filter(coverage(body_sdf / aa), 2.5 * scale), (2.5 * scale,) * 2, order=1)
    board = board * (1 - 0.5 * shadow[..., None])
    pin_color = (0.62 + 0.28 * np.cos(np.clip(dxp / 3.5, -1, 1) * 1.3))[..., None] * np.float32((0.93, 0.93, 0.95))
    pin_end = (52.0 + rng.uniform(-1.0, 1.0, size=8)).astype(np.float32)

    def pins(pin: int | None = None, cut: float = 0.0, bend: float = 0.0) -> np.ndarray:
        end = np.where(pin_id == pin, pin_end[pin_id] - cut * 19.0, pin_end[pin_id])
        # a bent lead leans sideways, more toward its tip
        dx = dxp - np.where(pin_id == pin, bend * np.clip((vv - 30.0) / 22.0, 0, 1), 0.0)
        return coverage(np.maximum(np.abs(dx) - 3.5, np.maximum(30.0 - vv, vv - end)) / aa)

    body = coverage(body_sdf / aa)
    edge = np.clip(1 + body_sdf / 2.5, 0, 1)  # 1 at the outline, 0 from 2.5 units inside
    grain = smooth_noise(rng, X.shape, 1.5 * unit, 0.015 * v)  # moulding grain, chip to chip
    body_color = np.stack([0.12 + 0.1 * edge + grain] * 3, axis=-1) + np.float32((0, 0, 0.01))
    body_color = blend(body_color, (0.22, 0.22, 0.23), coverage((np.hypot(X + 40, Y + 24) - 3.5) / aa))
    lot_w = rng.uniform(3.0, 8.0, size=4)  # the lot code varies; the part number does not
    lot_x = -30.0 + np.concatenate([[0.0], np.cumsum(lot_w[:-1] + 2.5)]) + lot_w / 2
    part_no = _bars(X, Y, -6.0, _PART_X, _PART_W / 2, aa)
    lot = _bars(X, Y, 8.0, lot_x, lot_w / 2, aa)
    ink = (0.62, 0.62, 0.60)
    lit = light(rng, size, gain=0.06 * v, ramp=0.06 * v)

    def compose(lead: np.ndarray | None = None, marking: np.ndarray | None = None,
                case: np.ndarray | None = None) -> np.ndarray:
        mark = np.maximum(part_no, lot) if marking is None else marking
        case_color = blend(body_color, ink, mark * 0.85) if case is None else case
        img = blend(blend(board, pin_color, pins() if lead is None else lead), case_color, body)
        return np.clip(img * lit, 0, 1).astype(np.float32)

    def cut_lead(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """The outer part of one pin broken off (all of it for the most severe cases)."""
        return compose(lead=pins(int(rng.integers(0, 8)), cut=lerp(0.15, 1.0, sev) * min(1.0, k.extent)))

    def bent_lead(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """One pin bent sideways at its tip by 1.5-7 units (a misplaced part)."""
        bend = lerp(1.5, 7.0, sev) * k.extent * rng.choice([-1.0, 1.0])
        return compose(lead=pins(int(rng.integers(0, 8)), bend=bend))

    def faulty_imprint(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """One character of the part number missing or faded."""
        keep = np.ones(len(_PART_X), bool)
        keep[int(rng.integers(0, len(_PART_X)))] = False
        faded = _bars(X, Y, -6.0, _PART_X[keep], _PART_W[keep] / 2, aa)
        gone = np.clip(part_no - faded, 0, 1) * defects.opacity(0.3, 1.0, sev, k)
        return compose(marking=np.maximum(part_no - gone, lot))

    def damaged_case(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """A scratch or scuff on the moulded body."""
        case_scene = Scene(blend(body_color, ink, np.maximum(part_no, lot) * 0.85), case_part, unit,
                           {"scratch": (0.55, 0.55, 0.57)})
        return compose(case=defects.scratch(case_scene, rng, sev, k))

    case_part = coverage((body_sdf + 2.0) / aa)
    palette = {"scratch": (0.60, 0.60, 0.62), "color": (0.85, 0.80, 0.58), "thread": (0.85, 0.85, 0.80),
               "contamination": (0.80, 0.78, 0.72)}
    special = {"bent_lead": bent_lead, "cut_lead": cut_lead, "damaged_case": damaged_case,
               "faulty_imprint": faulty_imprint}
    return Scene(compose(), case_part, unit, palette, special)


# the board's parts: (x, y, half length, half width, angle in degrees, body colour, cap colour)
_PARTS = [
    (-40.0, -38.0, 12.0, 6.0, 0.0, (0.08, 0.08, 0.09), (0.78, 0.78, 0.80)),  # resistor
    (28.0, -40.0, 12.0, 6.0, 0.0, (0.08, 0.08, 0.09), (0.78, 0.78, 0.80)),  # resistor
    (-45.0, 18.0, 10.0, 7.0, 90.0, (0.62, 0.48, 0.30), (0.80, 0.80, 0.82)),  # capacitor
    (0.0, 5.0, 16.0, 11.0, 0.0, (0.15, 0.15, 0.17), (0.75, 0.75, 0.77)),  # transistor (SOT)
    (42.0, 20.0, 10.0, 7.0, 90.0, (0.62, 0.48, 0.30), (0.80, 0.80, 0.82)),  # capacitor
    (5.0, 50.0, 9.0, 6.0, 0.0, (0.92, 0.90, 0.80), (0.85, 0.85, 0.87)),  # LED
]


def board_scene(rng: np.random.Generator, size: int, knobs: Knobs) -> Scene:
    """A blue board with traces, pads and silkscreen and six SMD parts; each part sits with its
    own small placement tolerance (+-0.8 units, +-2 degrees)."""
    unit, v = size / 256, knobs.variation
    yy, xx = grid(size)
    center = (size / 2 + rng.uniform(-4, 4) * unit * v, size / 2 + rng.uniform(-4, 4) * unit * v)
    phi = np.deg2rad(rng.uniform(-2, 2) * v)
    scale = 1.5 * unit  # design units: 1.5 px each at 256 px
    X, Y = frame(yy, xx, center, phi, scale)
    aa = 1.0 / scale
    board = jitter_color(rng, (0.10, 0.22, 0.45), 0.05 * v) + smooth_noise(rng, X.shape, 2 * unit, 0.01 * v)[..., None]
    traces = np.maximum(coverage((np.abs(Y + 12.0) - 1.5) / aa), coverage((np.abs(X - 12.0) - 1.5) / aa))
    board = blend(board, (0.14, 0.32, 0.58), traces)
    placements = [(p[0] + rng.uniform(-0.8, 0.8) * v, p[1] + rng.uniform(-0.8, 0.8) * v,
                   p[4] + rng.uniform(-2, 2) * v) for p in _PARTS]
    for x0, y0, hl, hw, ang, *_ in _PARTS:  # pads and silkscreen outlines stay where the design says
        u, w = frame(Y, X, (y0, x0), np.deg2rad(ang), 1.0)
        pads = coverage((rounded_rect_sdf(np.abs(u) - hl, w, 3.5, hw + 1.0, 0.8)) / aa)
        board = blend(board, jitter_color(rng, (0.80, 0.76, 0.66), 0.04), pads)
        outline = np.abs(rounded_rect_sdf(u, w, hl + 6.0, hw + 4.0, 1.0)) - 0.6
        board = blend(board, (0.90, 0.92, 0.92), coverage(outline / aa) * 0.9)
    lit = light(rng, size, gain=0.06 * v, ramp=0.08 * v)

    def draw_part(img: np.ndarray, k: int, dx: float = 0.0, dy: float = 0.0, dang: float = 0.0) -> np.ndarray:
        x0, y0, ang = placements[k]
        _, _, hl, hw, _, body_c, cap_c = _PARTS[k]
        u, w = frame(Y, X, (y0 + dy, x0 + dx), np.deg2rad(ang + dang), 1.0)
        sdf = rounded_rect_sdf(u, w, hl, hw, 0.8)
        img = img * (1 - 0.35 * coverage((sdf - 1.5) / (2 * aa)))[..., None]  # contact shadow
        caps = coverage((hl - 3.0 - np.abs(u)) / aa)  # metal end caps
        shade = (1.0 - 0.25 * np.clip(np.abs(w) / hw, 0, 1) ** 2)[..., None]
        color = blend(np.broadcast_to(np.float32(body_c), img.shape), cap_c, caps) * shade
        return blend(img, color, coverage(sdf / aa))

    def compose(skip: int | None = None, moved: tuple[int, float, float, float] | None = None) -> np.ndarray:
        img = board
        for k in range(len(_PARTS)):
            if k == skip:
                continue
            img = draw_part(img, *moved) if moved is not None and moved[0] == k else draw_part(img, k)
        return np.clip(img * lit, 0, 1).astype(np.float32)

    def missing(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """One part absent: its pads and outline show (the smaller parts for the lower severities)."""
        order = np.argsort([p[2] * p[3] for p in _PARTS])  # parts from small to large
        return compose(skip=int(order[min(int(sev * len(order) + rng.random()), len(order) - 1)]))

    def misplaced(rng: np.random.Generator, sev: float, k: Knobs) -> np.ndarray:
        """One part shifted (1-6 units) and turned (3-25 degrees) off its pads."""
        shift, turn = lerp(1.0, 6.0, sev) * k.extent, lerp(3.0, 25.0, sev) * k.extent
        a = rng.uniform(0, 2 * np.pi)
        return compose(moved=(int(rng.integers(0, len(_PARTS))), shift * np.cos(a), shift * np.sin(a),
                              turn * rng.choice([-1.0, 1.0])))

    part = coverage(rounded_rect_sdf(X, Y, 70.0, 70.0, 4.0) / aa)
    palette = {"scratch": (0.70, 0.52, 0.30), "color": (0.55, 0.45, 0.20), "thread": (0.85, 0.85, 0.80),
               "contamination": (0.80, 0.80, 0.82)}
    return Scene(compose(), part, unit, palette, {"missing": missing, "misplaced": misplaced})
