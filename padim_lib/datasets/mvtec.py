"""MVTec AD (Bergmann et al., CVPR 2019): its 15 classes, their split sizes and a strict reader."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from padim_lib.datasets.folder import GOOD, AnomalyFolder, find_mask, image_files, subdirs
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.errors import PadimError

TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = (
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
CLASSES = TEXTURES + OBJECTS

# (train good, test good, test defective) per class, as published with the data set
# (see /work/shared/paper/published-numbers.md). Total 3629 / 467 / 1258.
SPLIT_COUNTS: dict[str, tuple[int, int, int]] = {
    "bottle": (209, 20, 63),
    "cable": (224, 58, 92),
    "capsule": (219, 23, 109),
    "carpet": (280, 28, 89),
    "grid": (264, 21, 57),
    "hazelnut": (391, 40, 70),
    "leather": (245, 32, 92),
    "metal_nut": (220, 22, 93),
    "pill": (267, 26, 141),
    "screw": (320, 41, 119),
    "tile": (230, 33, 84),
    "toothbrush": (60, 12, 30),
    "transistor": (213, 60, 40),
    "wood": (247, 19, 60),
    "zipper": (240, 32, 119),
}


def _check_class(category: str) -> None:
    if category not in CLASSES:
        raise PadimError(f"unknown MVTec AD class {category!r}; valid classes: {', '.join(CLASSES)}")


class MVTecAD(AnomalyFolder):
    """One class and split of MVTec AD; every defective test image must have its mask."""

    def __init__(
        self,
        root: str | os.PathLike,
        category: str,
        split: str = "train",
        preprocess: Preprocess | None = None,
    ) -> None:
        _check_class(category)
        super().__init__(root, category, split, preprocess, masks="require")


def check_split_counts(root: str | os.PathLike, categories: Iterable[str] | None = None) -> list[str]:
    """Compare an MVTec AD tree with the published split sizes; return the problems found
    (empty = the tree is complete). Counts files only; nothing is decoded."""
    root = Path(root)
    if not root.is_dir():
        return [f"data root {root} does not exist or is not a directory"]
    cats = list(CLASSES if categories is None else categories)
    for c in cats:
        _check_class(c)
    problems: list[str] = []
    for c in cats:
        class_dir = root / c
        if not class_dir.is_dir():
            problems.append(f"{c}: class folder {class_dir} is missing")
            continue
        n_train = _count(class_dir / "train" / GOOD)
        test_dir = class_dir / "test"
        types = subdirs(test_dir) if test_dir.is_dir() else []
        n_test_good = _count(test_dir / GOOD)
        defective = [(t, p) for t in types if t != GOOD for p in image_files(test_dir / t)]
        found = (n_train, n_test_good, len(defective))
        want = SPLIT_COUNTS[c]
        for name, f, w in zip(("train good", "test good", "test defective"), found, want, strict=True):
            if f != w:
                problems.append(f"{c}: {f} {name} images, expected {w}")
        missing = [p for t, p in defective if find_mask(class_dir / "ground_truth" / t, p) is None]
        if missing:
            problems.append(f"{c}: {len(missing)} defective test images without a mask, e.g. {missing[0]}")
    return problems


def _count(folder: Path) -> int:
    return len(image_files(folder)) if folder.is_dir() else 0
