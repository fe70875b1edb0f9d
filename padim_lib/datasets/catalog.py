"""Opening a data set by its root: which loader a class needs, and what kind each class is.

Above both the generic folder layout (`folder`) and MVTec AD (`mvtec`), so neither imports the other's
user: `mvtec` builds on `folder`, and this module on both (no import cycle).

An STC root (`training/videos/` and `testing/frames/`, see `stc`) is a data set too: each scene is
a "class" (one model per scene, as the paper trains them), so tasks, sweeps and the result cache
handle ShanghaiTech Campus unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from padim_lib.datasets.folder import AnomalyFolder, list_categories
from padim_lib.datasets.mvtec import CLASSES, OBJECTS, TEXTURES, MVTecAD
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.datasets.stc import STCScene, list_scenes
from padim_lib.errors import PadimError


def is_stc_root(root: str | os.PathLike) -> bool:
    """Whether `root` is in the STC layout (has training/videos/ and testing/frames/)."""
    root = Path(root)
    return (root / "training" / "videos").is_dir() and (root / "testing" / "frames").is_dir()


def list_classes(root: str | os.PathLike) -> list[str]:
    """What one model is fitted on, sorted: the scenes of an STC root, else the class folders."""
    return list_scenes(root) if is_stc_root(root) else list_categories(root)


def category_kinds(root: str | os.PathLike) -> dict[str, str]:
    """Each class under `root` -> "texture" | "object" | "other".

    <root>/dataset.json {"textures": [...], "objects": [...]} decides when present (synthetic and
    custom data sets); otherwise MVTec AD's grouping is used and unknown classes are "other".
    """
    root = Path(root)
    categories = list_categories(root)
    manifest = root / "dataset.json"
    textures, objects = set(TEXTURES), set(OBJECTS)
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            textures = set(meta.get("textures", []))
            objects = set(meta.get("objects", []))
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            raise PadimError(
                f'cannot read {manifest}: expected JSON like {{"textures": [...], "objects": [...]}} ({exc})'
            ) from exc
    return {c: "texture" if c in textures else "object" if c in objects else "other" for c in categories}


def open_dataset(
    root: str | os.PathLike,
    category: str,
    split: str,
    preprocess: Preprocess | None = None,
    masks: str = "auto",
    max_train: int | None = None,
) -> AnomalyFolder | STCScene:
    """MVTecAD for an MVTec AD class in an MVTec AD tree (no dataset.json, has ground_truth/),
    STCScene for a scene of an STC root, else a generic AnomalyFolder.

    `max_train` (train split of an STC root only): at most that many training frames, spread
    evenly over the scene's clips (the first N frames would all come from its first clip). Folder
    data sets ignore it: their callers take the first N images.
    """
    root = Path(root)
    if is_stc_root(root):
        return STCScene(root, category, split, preprocess, max_frames=max_train if split == "train" else None)
    looks_mvtec = not (root / "dataset.json").exists() and (root / category / "ground_truth").is_dir()
    if category in CLASSES and looks_mvtec:
        return MVTecAD(root, category, split, preprocess)
    return AnomalyFolder(root, category, split, preprocess, masks=masks)
