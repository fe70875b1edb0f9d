"""Opening a data set by its root: which loader a class needs, and what kind each class is.

Above both the generic folder layout (`folder`) and MVTec AD (`mvtec`), so neither imports the other's
user: `mvtec` builds on `folder`, and this module on both (no import cycle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from padim_lib.datasets.folder import AnomalyFolder, list_categories
from padim_lib.datasets.mvtec import CLASSES, OBJECTS, TEXTURES, MVTecAD
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.errors import PadimError


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
) -> AnomalyFolder:
    """MVTecAD for an MVTec AD class in an MVTec AD tree (no dataset.json, has ground_truth/),
    else a generic AnomalyFolder."""
    root = Path(root)
    looks_mvtec = not (root / "dataset.json").exists() and (root / category / "ground_truth").is_dir()
    if category in CLASSES and looks_mvtec:
        return MVTecAD(root, category, split, preprocess)
    return AnomalyFolder(root, category, split, preprocess, masks=masks)
