"""Non-aligned MVTec AD (the PaDiM paper's Sec. V-C, the data described in its Sec. IV-A).

Every train and test image gets a random rotation in (-10, +10) degrees and a random 256 -> 224
crop; its mask goes through exactly the same geometry (nearest neighbour, kept binary). The
random crop *replaces* the paper's centre crop, so the tree written by `make_nonaligned` holds
images already at the final 224 x 224 geometry and must be read without a second crop:

    Preprocess(resize=224, crop=None)          (= NONALIGNED_PREPROCESS; resize 224 -> 224 is a no-op)

Other sizes keep the same rule: `NonAligned(resize=R, crop=C)` pairs with the aligned protocol
Preprocess(resize=R, crop=C) and is read with `NonAligned.read_with` = Preprocess(resize=C, crop=None).

which keeps the pixel scale of the aligned protocol (resize 256, crop 224): a defect covers the
same number of pixels in both, only its position and orientation change. Reading the tree with
the default Preprocess (resize 256, crop 224) would instead up-scale by 256/224 and cut 12 more
pixels from each border - a different experiment.

Each image draws its angle and crop offset from its own stream, seeded by (seed, its path
relative to the root), so version `seed` is reproducible and independent of which classes are
generated or in which order. Rotated-in corners are filled with black (`fill`), as
torchvision's RandomRotation does.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from padim_lib.datasets.catalog import category_kinds
from padim_lib.datasets.folder import AnomalyFolder, list_categories
from padim_lib.datasets.preprocess import Preprocess, binarize_mask, to_rgb
from padim_lib.datasets.treeio import atomic_tree, check_replaceable, read_manifest
from padim_lib.errors import PadimError

GENERATOR = "padim_lib.datasets.nonaligned"
GENERATOR_VERSION = 1
NONALIGNED_PREPROCESS = Preprocess(resize=224, crop=None)
DEFAULT_SEEDS = range(5)


class Placement(NamedTuple):
    """Where one image was put: rotation in degrees (counter-clockwise) and the crop's top-left."""

    angle: float
    top: int
    left: int


@dataclass(frozen=True)
class NonAligned:
    """Resize to `resize` (bicubic), rotate by U(-max_angle, max_angle) about the centre, crop a
    random `crop` x `crop` window. Image: bilinear rotation; mask: nearest, stays {0, 255}."""

    resize: int = 256
    crop: int = 224
    max_angle: float = 10.0
    fill: int = 0

    def __post_init__(self) -> None:
        if not (
            isinstance(self.resize, int) and isinstance(self.crop, int) and 1 <= self.crop <= self.resize
        ):
            raise PadimError(
                f"NonAligned: expected integers 1 <= crop <= resize, got resize={self.resize!r}, crop={self.crop!r}"
            )
        if not 0 <= float(self.max_angle) <= 180:
            raise PadimError(f"NonAligned.max_angle must be in [0, 180] degrees, got {self.max_angle!r}")
        if not (isinstance(self.fill, int) and 0 <= self.fill <= 255):
            raise PadimError(f"NonAligned.fill must be an integer in [0, 255], got {self.fill!r}")

    @property
    def read_with(self) -> Preprocess:
        """How to read the images it writes: at their `crop` size, no second crop (the aligned
        protocol's pixel scale, Preprocess(resize, crop))."""
        return Preprocess(resize=self.crop, crop=None)

    def is_default(self) -> bool:
        """Whether this is the paper's transform (256 -> 224, +-10 degrees, black fill)."""
        return self == NonAligned()

    def draw(self, seed: int, key: str) -> Placement:
        """The placement of the image called `key` (its path relative to the root) in version `seed`."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(key.encode())]))
        angle = float(rng.uniform(-self.max_angle, self.max_angle))
        top, left = (int(v) for v in rng.integers(0, self.resize - self.crop + 1, size=2))
        return Placement(round(angle, 6), top, left)

    def apply(
        self, image: Image.Image, mask: Image.Image | None, place: Placement
    ) -> tuple[Image.Image, Image.Image | None]:
        """Image (any mode) -> RGB crop x crop; mask (any mode, binarised) -> "L" crop x crop in {0, 255}."""
        out = self._geometry(
            to_rgb(image), place, InterpolationMode.BICUBIC, InterpolationMode.BILINEAR, (self.fill,) * 3
        )
        if mask is None:
            return out, None
        if mask.size != image.size:
            raise PadimError(f"NonAligned: mask size {mask.size} differs from its image's {image.size}")
        binary = Image.fromarray(binarize_mask(mask) * 255)
        m = self._geometry(binary, place, InterpolationMode.NEAREST, InterpolationMode.NEAREST, 0)
        # nearest steps cannot create new values; the threshold only guards the invariant
        return out, Image.fromarray(((np.asarray(m) > 127) * 255).astype(np.uint8))

    def _geometry(
        self,
        img: Image.Image,
        place: Placement,
        resize_mode: InterpolationMode,
        rotate_mode: InterpolationMode,
        fill,
    ) -> Image.Image:
        img = TF.resize(img, [self.resize, self.resize], interpolation=resize_mode)
        img = TF.rotate(img, place.angle, interpolation=rotate_mode, fill=fill)
        return TF.crop(img, place.top, place.left, self.crop, self.crop)


class _Job(NamedTuple):
    key: str  # image path relative to the source root, POSIX separators
    src: str
    src_mask: str | None
    dst: str  # relative to the output root
    dst_mask: str | None


def _jobs(src: Path, classes: Sequence[str]) -> list[_Job]:
    """Every image of every split of `classes`, listed with the MVTec-layout reader's rules."""
    jobs = []
    for cat in classes:
        for split in ("train", "test"):
            for item in AnomalyFolder(src, cat, split).items:
                path = Path(item.path)
                key = path.relative_to(src).as_posix()
                dst = f"{cat}/{split}/{item.defect_type}/{path.stem}.png"
                dst_mask = None
                if item.mask_path is not None:
                    dst_mask = f"{cat}/ground_truth/{item.defect_type}/{path.stem}_mask.png"
                jobs.append(_Job(key, item.path, item.mask_path, dst, dst_mask))
    return jobs


def _fingerprint(jobs: Sequence[_Job]) -> str:
    """Hash of the source files' names, sizes and modification times (stat only, no reading)."""
    h = hashlib.sha256()
    for job in jobs:
        for p in (job.src, job.src_mask):
            if p is not None:
                st = os.stat(p)
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _open(path: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except OSError as exc:
        raise PadimError(f"cannot read image file {path}: {exc}") from exc


def _write(job: _Job, tmp: Path, transform: NonAligned, place: Placement) -> bool:
    """Transform and write one image (and mask); True when a mask lost its whole defect to the crop."""
    image, mask = transform.apply(
        _open(job.src), None if job.src_mask is None else _open(job.src_mask), place
    )
    (tmp / job.dst).parent.mkdir(parents=True, exist_ok=True)
    image.save(tmp / job.dst, format="PNG", compress_level=1)
    if mask is None or job.dst_mask is None:
        return False
    (tmp / job.dst_mask).parent.mkdir(parents=True, exist_ok=True)
    mask.save(tmp / job.dst_mask, format="PNG", compress_level=1)
    return not np.asarray(mask).any()


def _complete(out: Path, manifest: dict, jobs: Sequence[_Job]) -> bool:
    existing = read_manifest(out)
    if existing is None or {k: v for k, v in existing.items() if k != "empty_masks"} != manifest:
        return False
    return all((out / j.dst).is_file() and (j.dst_mask is None or (out / j.dst_mask).is_file()) for j in jobs)


def make_nonaligned(
    src_root: str | os.PathLike,
    out_root: str | os.PathLike,
    seed: int,
    classes: Iterable[str] | None = None,
    transform: NonAligned | None = None,
    workers: int = 1,
) -> Path:
    """Write the non-aligned version `seed` of the MVTec-layout tree `src_root` to `out_root`.

    Images become crop x crop PNGs (224 by default; read them with `transform.read_with`), masks
    <class>/ground_truth/<type>/<stem>_mask.png. <out_root>/dataset.json records the source,
    the transform, every image's Placement, the class kinds of the source, and `empty_masks`:
    defective test images whose defect the crop cut away (they keep their label, as with the
    aligned centre crop). A complete tree with the same manifest is left as it is; otherwise the
    tree is written in a temporary folder and renamed into place.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise PadimError(f"make_nonaligned: seed must be an integer >= 0, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PadimError(f"make_nonaligned: workers must be an integer >= 1, got {workers!r}")
    transform = transform if transform is not None else NonAligned()
    src, out = Path(src_root).resolve(), Path(out_root)
    available = list_categories(src)
    if not available:
        raise PadimError(f"make_nonaligned: {src} holds no class folders in the MVTec AD layout")
    chosen = list(available if classes is None else dict.fromkeys(classes))
    unknown = [c for c in chosen if c not in available]
    if unknown or not chosen:
        raise PadimError(
            f"make_nonaligned: classes {unknown or '[]'} not in {src}; available: {', '.join(available)}"
        )
    if out.resolve() == src or src in out.resolve().parents:
        raise PadimError(f"make_nonaligned: the output {out} must lie outside the source tree {src}")
    jobs = _jobs(src, chosen)
    places = {j.key: transform.draw(int(seed), j.key) for j in jobs}
    kinds = category_kinds(src)
    manifest = {
        "name": "nonaligned",
        "generator": f"{GENERATOR} v{GENERATOR_VERSION}",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "transform": asdict(transform),
        "read_with": {"resize": transform.read_with.resize, "crop": transform.read_with.crop},
        "source": str(src),
        "source_fingerprint": _fingerprint(jobs),
        "classes": chosen,
        "textures": [c for c in chosen if kinds[c] == "texture"],
        "objects": [c for c in chosen if kinds[c] == "object"],
        "placements": {k: list(p) for k, p in places.items()},
    }
    if _complete(out, manifest, jobs):
        return out
    check_replaceable(out, GENERATOR)
    with atomic_tree(out) as tmp:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL releases the GIL while decoding
            empty = list(pool.map(lambda j: _write(j, tmp, transform, places[j.key]), jobs))
        manifest["empty_masks"] = sorted(j.dst for j, e in zip(jobs, empty, strict=True) if e)
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def nonaligned_versions(
    src_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    seeds: Iterable[int] = DEFAULT_SEEDS,
    classes: Iterable[str] | None = None,
    workers: int = 1,
    transform: NonAligned | None = None,
) -> list[Path]:
    """The paper's 5 seeded versions (or `seeds`): <out_dir>/seed<k>, each from make_nonaligned
    with `transform` (None: the paper's)."""
    classes = None if classes is None else list(classes)
    return [
        make_nonaligned(src_root, Path(out_dir) / f"seed{int(s)}", int(s), classes, transform, workers=workers)
        for s in seeds
    ]
