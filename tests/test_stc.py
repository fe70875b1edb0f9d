"""ShanghaiTech Campus: the loader on real video files written by the synthetic STC generator."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from padim_lib.datasets.stc import (
    STC_PREPROCESS,
    STC_SCENES,
    STC_URL,
    STCScene,
    check_stc_layout,
    list_scenes,
    scene_identity,
    stc_download_help,
)
from padim_lib.datasets.synthetic_stc import ANOMALY_TYPES, make_synthetic_stc, render_clip
from padim_lib.errors import PadimError

SMALL = dict(scenes=2, train_clips=2, test_clips=2, train_frames=12, test_frames=24, height=64, width=96)


@pytest.fixture(scope="module")
def stc(tmp_path_factory) -> Path:
    return make_synthetic_stc(tmp_path_factory.mktemp("stc") / "set", seed=0, **SMALL)


@pytest.fixture
def copy(stc, tmp_path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(stc, tmp_path / "broken"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_manifest_and_check(stc):
    assert list_scenes(stc) == ["01", "02"]
    assert check_stc_layout(stc, count=True) == []
    missing = check_stc_layout(stc, scenes=STC_SCENES)
    assert len(missing) == 11 and "scene 03" in missing[0]
    meta = json.loads((stc / "dataset.json").read_text())
    assert set(meta["clips"]) == {"01_0001", "01_0002", "02_0001", "02_0002"}
    assert {c["anomaly"] for c in meta["clips"].values()} == set(ANOMALY_TYPES)
    for name, clip in meta["clips"].items():
        labels = np.load(stc / "testing" / "test_frame_mask" / f"{name}.npy")
        masks = np.load(stc / "testing" / "test_pixel_mask" / f"{name}.npy")
        assert masks.shape == (24, 64, 96) and set(np.unique(masks)) <= {0, 1}
        assert np.array_equal(labels, masks.any(axis=(1, 2)))
        assert 0 < labels.sum() < len(labels)  # normal and abnormal frames in every test clip
        assert clip["abnormal_frames"] == [
            int(np.flatnonzero(labels).min()),
            int(np.flatnonzero(labels).max()),
        ]
    assert scene_identity(stc, "01") == scene_identity(stc, "01") != scene_identity(stc, "02")
    assert STC_URL in stc_download_help("/data/stc") and "/data/stc/training/videos" in stc_download_help(
        "/data/stc"
    )


@pytest.mark.parametrize("kind", ANOMALY_TYPES)
def test_masks_are_exactly_where_the_anomaly_changed_the_clip(kind):
    clean, none = render_clip(3, "01", "test", 1, 24, 64, 96)
    video, masks = render_clip(3, "01", "test", 1, 24, 64, 96, kind)
    assert not none.any() and masks.any() and not masks.all(axis=(1, 2)).any()
    # the mask is exactly the set of pixels the anomaly changed (before JPEG compression)
    assert np.array_equal((video != clean).any(axis=-1), masks)
    # and it is the object, not a scatter of rounding flips: most of it is one blob per frame
    for t in np.flatnonzero(masks.any(axis=(1, 2))):
        labels, n = ndimage.label(masks[t], structure=np.ones((3, 3)))
        assert np.bincount(labels.ravel())[1:].max() >= 0.8 * masks[t].sum() or masks[t].sum() < 10
    with pytest.raises(PadimError, match="unknown anomaly"):
        render_clip(3, "01", "test", 1, 24, 64, 96, "meteor")


def test_train_frames_are_the_decoded_video_frames(stc):
    data = STCScene(stc, "01", "train")
    assert len(data) == 24 and data.labels.sum() == 0 and not data.has_masks
    assert data.clips == ["01_001"] * 12 + ["01_002"] * 12
    assert list(data.frame_indices) == list(range(12)) * 2
    video, _ = render_clip(0, "01", "train", 2, 12, 64, 96)
    rendered = [STC_PREPROCESS.image(Image.fromarray(f)) for f in video]
    for i in (20, 12, 23, 13):  # out of order too: the decoder reopens the video when needed
        item = data[i]
        assert item["image"].shape == (3, 256, 256) and item["mask"].shape == (256, 256)
        assert item["mask"].sum() == 0 and item["label"] == 0 and item["defect_type"] == "good"
        assert item["path"].endswith(f"01_002.avi#{i - 12}") and item["frame"] == i - 12
        errors = [float((item["image"] - r).abs().mean()) for r in rendered]
        # MPEG-4 at q=2 in yuv420p: within a few grey levels of its own render, nearest to it of all
        assert int(np.argmin(errors)) == i - 12 and min(errors) < 0.1


def test_subsampling(stc):
    every3 = STCScene(stc, "02", "train", frame_step=3)
    assert list(every3.frame_indices) == [0, 3, 6, 9] * 2
    capped = STCScene(stc, "02", "train", frame_step=1, max_frames=5)
    assert len(capped) == 5 and set(capped.clips) == {"02_001", "02_002"}  # spread over both clips
    test = STCScene(stc, "02", "test", frame_step=2, max_frames=1000)
    assert len(test) == 24 and np.all(test.frame_indices % 2 == 0)
    with pytest.raises(PadimError, match="frame_step"):
        STCScene(stc, "02", "train", frame_step=0)
    with pytest.raises(FileNotFoundError, match="scene '07'.*01, 02"):
        STCScene(stc, "07", "train")


def test_test_frames_masks_and_labels(stc):
    data = STCScene(stc, "01", "test")
    assert len(data) == 48 and data.has_masks
    labels = np.concatenate([np.load(stc / "testing" / "test_frame_mask" / f"01_000{c}.npy") for c in (1, 2)])
    assert np.array_equal(data.labels, labels)
    assert data.defect_types == ["abnormal" if v else "good" for v in labels]
    masks = np.load(stc / "testing" / "test_pixel_mask" / "01_0002.npy")
    for i in range(24, 48):
        item = data[i]
        assert Path(item["path"]).name == f"{i - 24:03d}.jpg" and item["clip"] == "01_0002"
        want = STC_PREPROCESS.mask(Image.fromarray(masks[i - 24] * 255))
        assert torch.equal(item["mask"], want)
        assert item["label"] == int(item["mask"].any())
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))  # the default collate copes
    assert batch["image"].shape == (4, 3, 256, 256) and batch["mask"].dtype == torch.uint8


def test_generator_is_deterministic_atomic_and_respects_umask(stc, tmp_path):
    old = os.umask(0o027)
    try:
        again = make_synthetic_stc(tmp_path / "again", seed=0, **SMALL)
    finally:
        os.umask(old)
    assert (again.stat().st_mode & 0o777) == 0o750
    assert _files(again) == _files(stc)  # byte-identical, videos included
    stamp = (again / "dataset.json").stat().st_mtime_ns
    make_synthetic_stc(again, seed=0, **SMALL)  # complete: left alone
    assert (again / "dataset.json").stat().st_mtime_ns == stamp
    other = make_synthetic_stc(tmp_path / "again", seed=1, **SMALL)  # other parameters: replaced
    assert (other / "training/videos/01_001.avi").read_bytes() != (
        stc / "training/videos/01_001.avi"
    ).read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(PadimError, match="not written by"):
        make_synthetic_stc(tmp_path / "mine", seed=0, **SMALL)
    with pytest.raises(PadimError, match="width"):
        make_synthetic_stc(tmp_path / "odd", width=95)


def test_truncated_or_garbage_video_is_a_clear_error(copy):
    video = copy / "training" / "videos" / "01_002.avi"
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    with pytest.raises(PadimError, match="01_002.avi"):
        STCScene(copy, "01", "train")
    assert any("01_002.avi" in p for p in check_stc_layout(copy, count=True))
    video.write_bytes(b"not a video" * 50)
    with pytest.raises(PadimError, match="01_002.avi"):
        STCScene(copy, "01", "train")
    assert any("01_002.avi" in p for p in check_stc_layout(copy))
    STCScene(copy, "02", "train")  # the other scene is unaffected


def test_missing_or_wrong_mask_is_a_clear_error(copy):
    pixel = copy / "testing" / "test_pixel_mask" / "02_0001.npy"
    masks = np.load(pixel)
    pixel.unlink()
    with pytest.raises(PadimError, match="02_0001.npy"):
        STCScene(copy, "02", "test")
    assert any("02_0001.npy" in p for p in check_stc_layout(copy))
    np.save(pixel, masks[:-1])  # one frame short
    with pytest.raises(PadimError, match="02_0001.npy.*23, 64, 96"):
        STCScene(copy, "02", "test")
    np.save(pixel, masks)
    (copy / "testing" / "test_frame_mask" / "02_0002.npy").unlink()
    with pytest.raises(PadimError, match="test_frame_mask/02_0002.npy"):
        STCScene(copy, "02", "test")
    STCScene(copy, "01", "test")
    before = scene_identity(copy, "01")
    np.save(copy / "testing" / "test_pixel_mask" / "01_0001.npy", np.zeros((24, 64, 96), np.uint16))
    assert scene_identity(copy, "01") != before  # a changed file changes the scene's identity
