"""A data set in the MVTec AD layout, read from any folder.

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect type>/*.png
    <root>/<category>/ground_truth/<defect type>/<stem>_mask.png     (optional)

The layout is checked when the data set is opened (file listing only, nothing decoded), so a
broken download fails at once with a message that names the path, not halfway through a run.
Sizes and readability of individual files are checked when an item is loaded, or up front with
`AnomalyFolder.verify()` (reads file headers only).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.errors import PadimError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GOOD = "good"
SPLITS = ("train", "test")
MASK_MODES = ("auto", "require")
LAYOUT_HINT = (
    "expected <root>/<category>/train/good/*.png, <root>/<category>/test/<good|defect type>/*.png "
    "and optionally <root>/<category>/ground_truth/<defect type>/<stem>_mask.png"
)


class Item(NamedTuple):
    """One image of a split: its path, label (0 good, 1 defective), defect type and mask path."""

    path: str
    label: int
    defect_type: str
    mask_path: str | None


def _natural_key(name: str) -> tuple:
    """Sort key putting "2.png" before "10.png"; the name itself breaks ties, so the order is total."""
    parts = re.split(r"(\d+)", name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts), name


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, in natural name order (hidden files ignored)."""
    with os.scandir(folder) as it:
        names = [
            e.name
            for e in it
            if _visible(e) and e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        ]
    return [folder / n for n in sorted(names, key=_natural_key)]


def subdirs(folder: Path) -> list[str]:
    """Names of the visible subfolders of `folder`, in natural order."""
    with os.scandir(folder) as it:
        return sorted((e.name for e in it if _visible(e) and e.is_dir()), key=_natural_key)


def _open_image(path: str) -> Image.Image:
    """Open and decode one file; a corrupt or non-image file -> PadimError naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PadimError(f"cannot read image file {path}: {exc}") from exc


def _image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            return img.size
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PadimError(f"cannot read image file {path}: {exc}") from exc


def _check_root(root: Path) -> None:
    if not root.exists():
        raise FileNotFoundError(f"data root {root} does not exist; {LAYOUT_HINT}")
    if not root.is_dir():
        raise PadimError(f"data root {root} is not a directory; {LAYOUT_HINT}")


def list_categories(root: str | os.PathLike) -> list[str]:
    """Sorted names of the folders under `root` that have train/good/ (the data set's classes)."""
    root = Path(root)
    _check_root(root)
    return [name for name in subdirs(root) if (root / name / "train" / GOOD).is_dir()]


def find_mask(gt_dir: Path, image: Path) -> Path | None:
    """The mask of a defective image: <stem>_mask.<ext> (MVTec AD) or else <stem>.<ext>."""
    for stem in (f"{image.stem}_mask", image.stem):
        for ext in IMAGE_EXTENSIONS:
            candidate = gt_dir / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    return None


class AnomalyFolder(torch.utils.data.Dataset):
    """One class and split of an MVTec-AD-like folder tree.

    Item i is a dict: image (3, S, S) float32 (preprocessed), mask (S, S) uint8 in {0, 1}
    (all zero for good images, and for every image when `has_masks` is False), label int
    (0 good, 1 defective), defect_type str, path str.

    masks: "auto" uses ground_truth/ when the class has one, else the test split is image-level
    only (`has_masks` False: pixel metrics are "not available"); "require" makes a missing
    ground_truth/ an error for the test split.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        category: str,
        split: str = "train",
        preprocess: Preprocess | None = None,
        masks: str = "auto",
    ) -> None:
        if split not in SPLITS:
            raise PadimError(f"split must be one of {SPLITS}, got {split!r}")
        if masks not in MASK_MODES:
            raise PadimError(f"masks must be one of {MASK_MODES}, got {masks!r}")
        if not isinstance(category, str) or not category or category != Path(category).name:
            raise PadimError(f"category must be a plain folder name, got {category!r}")
        self.root = Path(root)
        self.category = category
        self.split = split
        self.preprocess = preprocess if preprocess is not None else Preprocess()
        self.masks = masks
        self.class_dir = self.root / category
        self._check_category()
        gt_dir = self.class_dir / "ground_truth"
        if split == "test" and masks == "require" and not gt_dir.is_dir():
            raise FileNotFoundError(
                f"no ground_truth/ folder in {self.class_dir}: pixel masks are required; "
                f"expected {gt_dir}/<defect type>/<stem>_mask.png"
            )
        self.has_masks = gt_dir.is_dir()
        self.items: list[Item] = self._scan_train() if split == "train" else self._scan_test(gt_dir)
        self.paths: list[str] = [it.path for it in self.items]
        self.defect_types: list[str] = [it.defect_type for it in self.items]
        self.labels: np.ndarray = np.array([it.label for it in self.items], dtype=np.int64)

    # -- layout checks (listing only) -------------------------------------------------------
    def _check_category(self) -> None:
        _check_root(self.root)
        if self.class_dir.is_dir():
            train_good = self.class_dir / "train" / GOOD
            if not train_good.is_dir():
                found = ", ".join(subdirs(self.class_dir)) or "nothing"
                raise PadimError(
                    f"{self.class_dir} is not a class folder in the MVTec AD layout: {train_good} is "
                    f"missing (found: {found}); {LAYOUT_HINT}"
                )
            return
        available = list_categories(self.root)
        if available:
            raise FileNotFoundError(
                f"category {self.category!r} not found in {self.root}; available: {', '.join(available)}"
            )
        hint = ""
        if (self.root / "train" / GOOD).is_dir():
            hint = (
                f" ({self.root} itself looks like a class folder: pass its parent as the root "
                f"and category={self.root.name!r})"
            )
        raise FileNotFoundError(
            f"category {self.category!r} not found: {self.root} contains no class folders{hint}; {LAYOUT_HINT}"
        )

    def _scan_train(self) -> list[Item]:
        folder = self.class_dir / "train" / GOOD
        files = image_files(folder)
        if not files:
            raise PadimError(f"no training images ({'/'.join(IMAGE_EXTENSIONS)}) in {folder}")
        return [Item(str(p), 0, GOOD, None) for p in files]

    def _scan_test(self, gt_dir: Path) -> list[Item]:
        test_dir = self.class_dir / "test"
        if not test_dir.is_dir():
            raise PadimError(f"no test/ folder in {self.class_dir}; {LAYOUT_HINT}")
        types = subdirs(test_dir)
        if not types:
            raise PadimError(f"{test_dir} has no <good|defect type> subfolders; {LAYOUT_HINT}")
        types = ([GOOD] if GOOD in types else []) + [t for t in types if t != GOOD]
        items: list[Item] = []
        for defect_type in types:
            files = image_files(test_dir / defect_type)
            if not files:
                raise PadimError(f"no test images ({'/'.join(IMAGE_EXTENSIONS)}) in {test_dir / defect_type}")
            for path in files:
                if defect_type == GOOD:
                    items.append(Item(str(path), 0, GOOD, None))
                    continue
                mask = None
                if self.has_masks:
                    mask = find_mask(gt_dir / defect_type, path)
                    if mask is None:
                        raise FileNotFoundError(
                            f"defective test image {path} has no mask; expected "
                            f"{gt_dir / defect_type / (path.stem + '_mask.png')}"
                        )
                items.append(Item(str(path), 1, defect_type, None if mask is None else str(mask)))
        return items

    # -- loading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        image = _open_image(item.path)
        mask_img = None
        if item.mask_path is not None:
            mask_img = _open_image(item.mask_path)
            if mask_img.size != image.size:
                raise PadimError(
                    f"mask {item.mask_path} is {mask_img.size[0]}x{mask_img.size[1]} but its image "
                    f"{item.path} is {image.size[0]}x{image.size[1]}; expected the same size"
                )
        return {
            "image": self.preprocess.image(image),
            "mask": self.preprocess.mask(mask_img),
            "label": item.label,
            "defect_type": item.defect_type,
            "path": item.path,
        }

    def verify(self) -> None:
        """Read every file's header (no decoding): unreadable files and mask/image size
        mismatches raise here instead of during a run."""
        for item in self.items:
            size = _image_size(item.path)
            if item.mask_path is not None and _image_size(item.mask_path) != size:
                raise PadimError(
                    f"mask {item.mask_path} and its image {item.path} differ in size "
                    f"({_image_size(item.mask_path)} vs {size})"
                )

    def __repr__(self) -> str:
        n_bad = int(self.labels.sum())
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, category={self.category!r}, split={self.split!r}, "
            f"n={len(self)}, good={len(self) - n_bad}, defective={n_bad}, has_masks={self.has_masks})"
        )
