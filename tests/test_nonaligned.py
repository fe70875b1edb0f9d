"""Non-aligned MVTec AD: image and mask move together, masks stay binary, versions are seeded."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from padim_lib.datasets import AnomalyFolder, category_kinds
from padim_lib.datasets.nonaligned import (
    NONALIGNED_PREPROCESS,
    NonAligned,
    Placement,
    make_nonaligned,
    nonaligned_versions,
)
from padim_lib.errors import PadimError

SRC_SIZE = 320  # not 256: the resize step is part of the geometry under test
# disc centres (x, y) and radius in source pixels; off-centre, so a rotation moves them
DISCS = [(90.0, 110.0, 28.0), (230.0, 95.0, 22.0), (150.0, 235.0, 30.0)]


def _disc(cx: float, cy: float, r: float, size: int = SRC_SIZE) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    image = np.where(inside, 230, 20).astype(np.uint8)
    return np.stack([image] * 3, axis=-1), inside.astype(np.uint8) * 255


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """A two-class MVTec-layout tree of bright discs on a dark ground; mask = disc."""
    root = tmp_path_factory.mktemp("na") / "src"
    for cat in ("discs", "more"):
        for split, kind in (("train", "good"), ("test", "good"), ("test", "spot")):
            (root / cat / split / kind).mkdir(parents=True)
        (root / cat / "ground_truth" / "spot").mkdir(parents=True)
        for i, (cx, cy, r) in enumerate(DISCS):
            image, mask = _disc(cx, cy, r)
            Image.fromarray(np.full_like(image, 20)).save(root / cat / "train" / "good" / f"{i:03d}.png")
            Image.fromarray(np.full_like(image, 20)).save(root / cat / "test" / "good" / f"{i:03d}.png")
            Image.fromarray(image).save(root / cat / "test" / "spot" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / cat / "ground_truth" / "spot" / f"{i:03d}_mask.png")
    return root


def _expected_centre(cx: float, cy: float, place: Placement, t: NonAligned) -> tuple[float, float]:
    """Where rotation about the centre (counter-clockwise on screen, y down) then the crop put a point."""
    s = t.resize / SRC_SIZE
    x, y = cx * s - t.resize / 2, cy * s - t.resize / 2
    a = math.radians(place.angle)
    xr = x * math.cos(a) + y * math.sin(a) + t.resize / 2
    yr = -x * math.sin(a) + y * math.cos(a) + t.resize / 2
    return xr - place.left, yr - place.top


@pytest.mark.parametrize("seed", range(5))
def test_transform_keeps_image_and_mask_aligned(seed):
    t = NonAligned()
    for k, (cx, cy, r) in enumerate(DISCS):
        image, mask = _disc(cx, cy, r)
        place = t.draw(seed, f"test/spot/{k}.png")
        out, out_mask = t.apply(Image.fromarray(image), Image.fromarray(mask), place)
        assert out.size == out_mask.size == (224, 224) and out.mode == "RGB"
        m = np.asarray(out_mask)
        assert set(np.unique(m)) <= {0, 255}
        m = m > 0
        bright = np.asarray(out)[..., 0] > 125
        # the bright pixels are the mask, except within a pixel of its edge (interpolation)
        edge = ndimage.binary_dilation(m, iterations=1) & ~ndimage.binary_erosion(m, iterations=1)
        assert not ((bright ^ m) & ~edge).any()
        # and both sit where the geometry says: rotated about the centre, then cropped
        ey, ex = ndimage.center_of_mass(m)
        wx, wy = _expected_centre(cx, cy, place, t)
        assert abs(ex + 0.5 - wx) < 1.0 and abs(ey + 0.5 - wy) < 1.0
        assert abs(m.sum() - math.pi * (r * t.resize / SRC_SIZE) ** 2) < 0.1 * m.sum()


def test_draw_is_seeded_per_image_and_in_range():
    t = NonAligned()
    draws = [t.draw(s, f"c/test/x/{i}.png") for s in range(5) for i in range(40)]
    assert t.draw(3, "c/test/x/7.png") == t.draw(3, "c/test/x/7.png")
    assert t.draw(3, "c/test/x/7.png") != t.draw(4, "c/test/x/7.png")
    angles = np.array([d.angle for d in draws])
    offsets = np.array([(d.top, d.left) for d in draws])
    assert np.all(np.abs(angles) < 10) and angles.min() < -8 and angles.max() > 8
    assert offsets.min() == 0 and offsets.max() == 32


def test_generated_tree_is_aligned_binary_and_readable(src, tmp_path):
    out = make_nonaligned(src, tmp_path / "v0", seed=0)
    meta = json.loads((out / "dataset.json").read_text())
    t = NonAligned()
    for key, value in meta["placements"].items():
        assert Placement(*value) == t.draw(0, key)
    test = AnomalyFolder(out, "discs", "test", NONALIGNED_PREPROCESS, masks="require")
    assert len(test) == 6 and test.labels.sum() == 3
    for i in np.flatnonzero(test.labels):
        item = test[int(i)]
        assert item["image"].shape == (3, 224, 224) and item["mask"].shape == (224, 224)
        assert set(item["mask"].unique().tolist()) <= {0, 1} and item["mask"].sum() > 0
        path = Path(item["path"])
        key = f"discs/test/spot/{path.stem}.png"
        cx, cy, _ = DISCS[int(path.stem)]
        ey, ex = ndimage.center_of_mass(item["mask"].numpy())
        wx, wy = _expected_centre(cx, cy, t.draw(0, key), t)
        assert abs(ex + 0.5 - wx) < 1.0 and abs(ey + 0.5 - wy) < 1.0
    assert category_kinds(out) == {"discs": "other", "more": "other"}


def test_a_smaller_transform_writes_and_records_its_own_read_size(src, tmp_path):
    """NonAligned(R, C) pairs with the aligned Preprocess(R, C): its images are C px, read at C."""
    small = NonAligned(resize=72, crop=64)
    assert small.read_with.size == 64 and small.read_with.crop is None and not small.is_default()
    assert NonAligned().read_with == NONALIGNED_PREPROCESS and NonAligned().is_default()
    (out,) = nonaligned_versions(src, tmp_path / "small", seeds=[0], classes=["discs"], transform=small)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["transform"]["crop"] == 64 and meta["read_with"] == {"resize": 64, "crop": None}
    assert {Image.open(p).size for p in out.rglob("*.png")} == {(64, 64)}
    test = AnomalyFolder(out, "discs", "test", small.read_with, masks="require")
    assert test[int(np.flatnonzero(test.labels)[0])]["image"].shape == (3, 64, 64)


def test_versions_are_deterministic_and_independent_of_class_order(src, tmp_path):
    roots = nonaligned_versions(src, tmp_path / "all", seeds=range(2))
    assert roots == [tmp_path / "all" / "seed0", tmp_path / "all" / "seed1"]
    alone = make_nonaligned(src, tmp_path / "alone", seed=1, classes=["more"])
    again = make_nonaligned(src, tmp_path / "again", seed=1, classes=["more", "discs"])
    files = sorted(p.relative_to(alone) for p in alone.rglob("*.png"))
    assert files
    for rel in files:
        assert (alone / rel).read_bytes() == (roots[1] / rel).read_bytes() == (again / rel).read_bytes()
    rel = Path("more/test/spot/000.png")
    assert (roots[0] / rel).read_bytes() != (roots[1] / rel).read_bytes()


def test_rerun_keeps_a_complete_tree_and_respects_umask(src, tmp_path):
    old = os.umask(0o027)
    try:
        out = make_nonaligned(src, tmp_path / "u", seed=2, classes=["discs"])
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o750
    stamp = (out / "dataset.json").stat().st_mtime_ns
    make_nonaligned(src, out, seed=2, classes=["discs"])
    assert (out / "dataset.json").stat().st_mtime_ns == stamp
    make_nonaligned(src, out, seed=3, classes=["discs"])  # another version replaces it
    assert json.loads((out / "dataset.json").read_text())["seed"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_clear_errors(src, tmp_path):
    with pytest.raises(PadimError, match="nope"):
        make_nonaligned(src, tmp_path / "x", seed=0, classes=["nope"])
    with pytest.raises(PadimError, match="outside the source"):
        make_nonaligned(src, src / "inside", seed=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(PadimError, match="not written by"):
        make_nonaligned(src, foreign, seed=0)
    assert (foreign / "keep.txt").read_text() == "mine"
    with pytest.raises(PadimError, match="seed"):
        make_nonaligned(src, tmp_path / "y", seed=-1)
    with pytest.raises(PadimError, match="crop"):
        NonAligned(resize=200, crop=224)
