"""ShanghaiTech Campus (STC; Liu et al., CVPR 2018), read scene by scene.

    <root>/training/videos/<scene>_<clip>.avi              normal clips only
    <root>/testing/frames/<scene>_<clip>/*.jpg              one file per frame, natural order
    <root>/testing/test_pixel_mask/<scene>_<clip>.npy       (T, H, W) per-frame masks (0 / non-zero)
    <root>/testing/test_frame_mask/<scene>_<clip>.npy       (T,) frame labels (0 normal, 1 anomalous)

The paper trains one model per scene (13 scenes, "01".."13") on frames resized to 256 x 256
without a crop (`STC_PREPROCESS`). `STCScene` items are the dicts AnomalyFolder yields (image,
mask, label, defect_type, path) plus the clip name and the frame index, so detectors, the feature
cache and the metrics use them unchanged; `labels` are the frame labels for frame-level AUROC.

Training frames are decoded with PyAV (FFmpeg). Frame counts come from demuxing each video
(packets, no decoding) when the data set is opened; a video with fewer packets than its header
announces is reported as truncated there, and one that stops decoding early fails when read.
Items are decoded forward through a video, so reading in order decodes each video once.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from padim_lib.datasets.folder import _open_image, image_files, subdirs
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.errors import PadimError

STC_SCENES = tuple(f"{i:02d}" for i in range(1, 14))
STC_URL = "https://svip-lab.github.io/dataset/campus_dataset.html"
STC_PREPROCESS = Preprocess(resize=256, crop=None)
SPLITS = ("train", "test")
VIDEO_EXTENSIONS = (".avi",)
NORMAL, ABNORMAL = "good", "abnormal"
_CLIP_NAME = re.compile(r"(\d+)_(\d+)")
LAYOUT_HINT = (
    "expected <root>/training/videos/<scene>_<clip>.avi, <root>/testing/frames/<scene>_<clip>/*.jpg, "
    "<root>/testing/test_pixel_mask/<scene>_<clip>.npy and <root>/testing/test_frame_mask/<scene>_<clip>.npy"
)


class Frame(NamedTuple):
    """One frame: its file (video or image), index in the clip, clip name, label, mask file."""

    source: str
    index: int
    clip: str
    label: int
    mask_path: str | None


# -- listing ----------------------------------------------------------------------------------
def _clips(folder: Path, videos: bool) -> dict[str, Path]:
    """<scene>_<clip> name -> video file (videos=True) or frame folder, for names in that form."""
    if not folder.is_dir():
        return {}
    if videos:
        entries = [
            p for p in sorted(folder.iterdir()) if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
        ]
        return {p.stem: p for p in entries if _CLIP_NAME.fullmatch(p.stem)}
    return {n: folder / n for n in subdirs(folder) if _CLIP_NAME.fullmatch(n)}


def _scene_of(clip: str) -> str:
    return clip.split("_", 1)[0]


def list_train_videos(root: str | os.PathLike) -> dict[str, Path]:
    """Every training video under `root`: clip name -> path."""
    return _clips(Path(root) / "training" / "videos", videos=True)


def list_test_clips(root: str | os.PathLike) -> dict[str, Path]:
    """Every test clip under `root`: clip name -> its frame folder."""
    return _clips(Path(root) / "testing" / "frames", videos=False)


def list_scenes(root: str | os.PathLike) -> list[str]:
    """Sorted names of the scenes that have training videos (one model each)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"STC root {root} does not exist or is not a folder; {LAYOUT_HINT}")
    return sorted({_scene_of(c) for c in list_train_videos(root)})


def scene_identity(root: str | os.PathLike, scene: str) -> str:
    """Fingerprint of a scene's files (names, sizes) and dataset.json: a cache key part, move-proof."""
    root = Path(root).expanduser().resolve()
    entries = [
        f"{p.relative_to(root).as_posix()}\t{p.stat().st_size}"
        for c, p in list_train_videos(root).items()
        if _scene_of(c) == scene
    ]
    for clip, folder in list_test_clips(root).items():
        if _scene_of(clip) != scene:
            continue
        masks = [root / "testing" / k / f"{clip}.npy" for k in ("test_pixel_mask", "test_frame_mask")]
        files = image_files(folder) + masks
        entries += [
            f"{p.relative_to(root).as_posix()}\t{p.stat().st_size if p.is_file() else -1}" for p in files
        ]
    h = hashlib.sha256(root.name.encode())
    if (root / "dataset.json").is_file():
        h.update(b"\0manifest\0" + (root / "dataset.json").read_bytes())
    h.update("\n".join(sorted(entries)).encode())
    return h.hexdigest()[:16]


# -- video --------------------------------------------------------------------------------------
def open_video(path: str | os.PathLike):
    """An open PyAV container with a video stream; anything else -> PadimError naming the file."""
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise PadimError(f"cannot read video file {path}: {exc}") from exc
    if not container.streams.video:
        container.close()
        raise PadimError(f"video file {path} has no video stream")
    return container


def count_frames(path: str | os.PathLike) -> int:
    """Frames in a video, counted by demuxing (no decoding); truncation -> PadimError naming the file."""
    import av

    with open_video(path) as container:
        stream = container.streams.video[0]
        announced = int(stream.frames or 0)
        try:
            sizes = [packet.size for packet in container.demux(stream)]
        except av.error.FFmpegError as exc:
            raise PadimError(f"cannot read video file {path}: {exc}") from exc
    # empty packets (dropped frames in AVI, the flush packet) count towards the header's total but
    # decode to nothing
    n = sum(1 for size in sizes if size)
    if n == 0 or len(sizes) < announced:
        raise PadimError(
            f"video file {path} is truncated or corrupt: its header announces {announced} frames, "
            f"{len(sizes)} are present"
        )
    return n


class _Decoder:
    """Forward-only frame reader for one video; reopening only when asked for an earlier frame."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._container = open_video(path)
        self._frames = self._container.decode(video=0)
        self.next_index = 0

    def read(self, index: int) -> Image.Image:
        import av

        try:
            while True:
                frame = next(self._frames, None)
                if frame is None:
                    raise PadimError(
                        f"video file {self.path} ended after {self.next_index} frames while frame {index} "
                        "was asked for (truncated or corrupt?)"
                    )
                self.next_index += 1
                if self.next_index - 1 == index:
                    return frame.to_image()
        except av.error.FFmpegError as exc:
            raise PadimError(f"cannot decode frame {index} of video file {self.path}: {exc}") from exc

    def close(self) -> None:
        self._container.close()


# -- the data set ------------------------------------------------------------------------------
def _subsample(frames: list[Frame], frame_step: int, max_frames: int | None) -> list[Frame]:
    """Every `frame_step`-th frame of each clip, then at most `max_frames` spread evenly over all."""
    kept = [f for f in frames if f.index % frame_step == 0]
    if max_frames is not None and len(kept) > max_frames:
        pick = np.unique(np.linspace(0, len(kept) - 1, max_frames).round().astype(int))
        kept = [kept[i] for i in pick]
    return kept


def _load_npy(path: Path, mmap: bool = True) -> np.ndarray:
    if not path.is_file():
        raise PadimError(f"mask file {path} is missing; {LAYOUT_HINT}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise PadimError(f"cannot read mask file {path}: {exc}") from exc


class STCScene(torch.utils.data.Dataset):
    """The training (videos) or test (frames) split of one STC scene.

    Item i is a dict: image (3, S, S) float32, mask (S, S) uint8 in {0, 1}, label int (frame
    label), defect_type "good" | "abnormal", path str (the .jpg, or "<video>#<index>"), clip str,
    frame int. frame_step keeps every n-th frame of each clip; max_frames then caps the total,
    spread evenly over the scene's clips (None: no cap).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        scene: str,
        split: str = "train",
        preprocess: Preprocess | None = None,
        frame_step: int = 1,
        max_frames: int | None = None,
    ) -> None:
        if split not in SPLITS:
            raise PadimError(f"split must be one of {SPLITS}, got {split!r}")
        for name, value in (("frame_step", frame_step), ("max_frames", max_frames)):
            if value is None and name == "max_frames":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                expected = "a positive integer" + (" or None" if name == "max_frames" else "")
                raise PadimError(f"STCScene.{name} must be {expected}, got {value!r}")
        self.root = Path(root)
        self.scene = str(scene)
        self.split = split
        self.preprocess = preprocess if preprocess is not None else STC_PREPROCESS
        self.frame_step = int(frame_step)
        self.max_frames = None if max_frames is None else int(max_frames)
        scenes = list_scenes(self.root)
        if split == "train" and self.scene not in scenes:
            raise FileNotFoundError(
                f"no training videos for scene {self.scene!r} in {self.root / 'training' / 'videos'}; "
                f"scenes found: {', '.join(scenes) or 'none'}; {LAYOUT_HINT}"
            )
        frames = self._scan_train() if split == "train" else self._scan_test()
        self.items: list[Frame] = _subsample(frames, self.frame_step, self.max_frames)
        self.has_masks = split == "test"
        # a test frame is its own .jpg; a training frame is named <video>#<index>
        self.paths = [f.source if f.mask_path else f"{f.source}#{f.index}" for f in self.items]
        self.labels = np.array([f.label for f in self.items], dtype=np.int64)
        self.defect_types = [ABNORMAL if f.label else NORMAL for f in self.items]
        self.clips = [f.clip for f in self.items]
        self.frame_indices = np.array([f.index for f in self.items], dtype=np.int64)
        self._decoder: _Decoder | None = None

    def _scan_train(self) -> list[Frame]:
        videos = {c: p for c, p in list_train_videos(self.root).items() if _scene_of(c) == self.scene}
        return [Frame(str(p), i, c, 0, None) for c, p in videos.items() for i in range(count_frames(p))]

    def _scan_test(self) -> list[Frame]:
        clips = {c: p for c, p in list_test_clips(self.root).items() if _scene_of(c) == self.scene}
        if not clips:
            raise FileNotFoundError(
                f"no test clips for scene {self.scene!r} in {self.root / 'testing' / 'frames'}; {LAYOUT_HINT}"
            )
        frames: list[Frame] = []
        for clip, folder in clips.items():
            files = image_files(folder)
            pixel = self.root / "testing" / "test_pixel_mask" / f"{clip}.npy"
            labels_path = self.root / "testing" / "test_frame_mask" / f"{clip}.npy"
            masks = _load_npy(pixel)
            labels = np.asarray(_load_npy(labels_path, mmap=False)).reshape(-1)
            if masks.ndim != 3 or masks.shape[0] != len(files):
                raise PadimError(
                    f"mask file {pixel} has shape {masks.shape}; expected ({len(files)}, H, W) for the "
                    f"{len(files)} frames in {folder}"
                )
            if labels.shape[0] != len(files):
                raise PadimError(
                    f"frame label file {labels_path} has {labels.shape[0]} entries; expected {len(files)} "
                    f"for the frames in {folder}"
                )
            frames += [Frame(str(f), i, clip, int(labels[i] > 0), str(pixel)) for i, f in enumerate(files)]
        return frames

    def __len__(self) -> int:
        return len(self.items)

    def _train_frame(self, f: Frame) -> Image.Image:
        dec = self._decoder
        if dec is None or dec.path != f.source or dec.next_index > f.index:
            if dec is not None:
                dec.close()
            dec = self._decoder = _Decoder(f.source)
        return dec.read(f.index)

    def _mask(self, f: Frame, size: tuple[int, int]) -> Image.Image:
        frame_mask = np.asarray(_load_npy(Path(f.mask_path))[f.index])
        if frame_mask.shape != (size[1], size[0]):
            raise PadimError(
                f"mask {f.index} of {f.mask_path} is {frame_mask.shape[1]}x{frame_mask.shape[0]} but frame "
                f"{f.source} is {size[0]}x{size[1]}; expected the same size"
            )
        return Image.fromarray((frame_mask > 0).astype(np.uint8) * 255)

    def __getitem__(self, index: int) -> dict[str, Any]:
        f = self.items[index]
        image = self._train_frame(f) if self.split == "train" else _open_image(f.source)
        mask = self._mask(f, image.size) if f.mask_path is not None else None
        return {
            "image": self.preprocess.image(image),
            "mask": self.preprocess.mask(mask),
            "label": f.label,
            "defect_type": ABNORMAL if f.label else NORMAL,
            "path": self.paths[index],
            "clip": f.clip,
            "frame": f.index,
        }

    def __getstate__(self) -> dict:
        # an open FFmpeg container does not pickle (DataLoader workers): each copy opens its own
        return {**self.__dict__, "_decoder": None}

    def __repr__(self) -> str:
        n_bad = int(self.labels.sum())
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, scene={self.scene!r}, split={self.split!r}, "
            f"n={len(self)}, clips={len(dict.fromkeys(self.clips))}, normal={len(self) - n_bad}, abnormal={n_bad})"
        )


# -- what a user placed -------------------------------------------------------------------------
def stc_download_help(root: str | os.PathLike | None = None) -> str:
    """Where to get STC and how to lay it out (it cannot be downloaded without accepting its terms)."""
    where = str(root) if root is not None else "<root>"
    return (
        "ShanghaiTech Campus is not downloaded automatically.\n"
        f"1. Get it from the official page: {STC_URL}\n"
        "   (follow the download links there and accept the terms of use).\n"
        f"2. Unpack it so that {where} holds training/ and testing/:\n"
        f"     {where}/training/videos/01_001.avi ...\n"
        f"     {where}/testing/frames/01_0014/000.jpg ...\n"
        f"     {where}/testing/test_pixel_mask/01_0014.npy   (T, H, W)\n"
        f"     {where}/testing/test_frame_mask/01_0014.npy   (T,)\n"
        f"3. Check it: padim download stc --root {where}\n"
        f"The paper uses all {len(STC_SCENES)} scenes ({STC_SCENES[0]}..{STC_SCENES[-1]}), one model each, "
        "frames resized to 256x256 without a crop."
    )


def check_stc_layout(
    root: str | os.PathLike, scenes: tuple[str, ...] | list[str] | None = None, count: bool = False
) -> list[str]:
    """Problems with the STC tree at `root` (empty list: usable). Reads headers only: every video
    is opened, every mask file's shape compared with its clip's frames and frame size.

    scenes: scenes that must be present (e.g. STC_SCENES for the full set); count=True also
    demuxes every video to find truncated ones (reads every byte of the videos).
    """
    root = Path(root)
    if not root.is_dir():
        return [f"{root} does not exist or is not a folder; {LAYOUT_HINT}"]
    problems: list[str] = []
    for sub in ("training/videos", "testing/frames", "testing/test_pixel_mask", "testing/test_frame_mask"):
        if not (root / sub).is_dir():
            problems.append(f"folder {root / sub} is missing; {LAYOUT_HINT}")
    videos, clips = list_train_videos(root), list_test_clips(root)
    train_scenes = {_scene_of(c) for c in videos}
    test_scenes = {_scene_of(c) for c in clips}
    for scene in sorted(set(scenes or ())):
        if scene not in train_scenes:
            problems.append(f"scene {scene}: no training videos {root}/training/videos/{scene}_*.avi")
    for scene in sorted(test_scenes - train_scenes):
        problems.append(f"scene {scene}: test clips but no training videos")
    for path in videos.values():
        try:
            count_frames(path) if count else open_video(path).close()
        except PadimError as exc:
            problems.append(str(exc))
    for clip, folder in clips.items():
        problems += _check_clip(root, clip, folder)
    return problems


def _check_clip(root: Path, clip: str, folder: Path) -> list[str]:
    files = image_files(folder)
    if not files:
        return [f"test clip folder {folder} holds no frames (*.jpg)"]
    out = []
    try:
        with Image.open(files[0]) as img:
            width, height = img.size
    except OSError as exc:
        return [f"cannot read image file {files[0]}: {exc}"]
    for kind, want in (("test_pixel_mask", (len(files), height, width)), ("test_frame_mask", (len(files),))):
        path = root / "testing" / kind / f"{clip}.npy"
        try:
            shape = _load_npy(path).shape
        except PadimError as exc:
            out.append(str(exc))
            continue
        if tuple(shape) != want:
            out.append(f"mask file {path} has shape {tuple(shape)}; expected {want} for {folder}")
    return out
