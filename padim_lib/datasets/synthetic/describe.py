"""Tables that describe a data set in the MVTec AD layout (the synthetic set, or MVTec AD itself):
what each class holds, its defect types and how large its defects are."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from padim_lib.datasets.catalog import category_kinds
from padim_lib.datasets.folder import AnomalyFolder


def mask_areas(root: str | os.PathLike) -> pd.DataFrame:
    """One row per defective test image: class, kind, defect_type, path, mask_path and `area`, the
    mask's share of the image (0..1)."""
    root = Path(root)
    rows = []
    for category, kind in category_kinds(root).items():
        for item in AnomalyFolder(root, category, "test", masks="require").items:
            if item.label == 0:
                continue
            with Image.open(item.mask_path) as m:
                mask = np.asarray(m.convert("L")) > 0
            rows.append({"class": category, "kind": kind, "defect_type": item.defect_type, "path": item.path,
                         "mask_path": item.mask_path, "area": float(mask.mean())})
    return pd.DataFrame(rows, columns=["class", "kind", "defect_type", "path", "mask_path", "area"])


def describe_synthetic(root: str | os.PathLike) -> pd.DataFrame:
    """Per class (index): kind, train / test good / test defective counts, its defect types, and the
    mask area as a percentage of the image (smallest, median, largest)."""
    root = Path(root)
    areas = mask_areas(root)
    rows = []
    for category, kind in category_kinds(root).items():
        test = AnomalyFolder(root, category, "test", masks="require")
        a = areas.loc[areas["class"] == category, "area"].to_numpy() * 100
        rows.append({
            "class": category,
            "kind": kind,
            "train": len(AnomalyFolder(root, category, "train")),
            "test good": int((test.labels == 0).sum()),
            "test defective": int((test.labels == 1).sum()),
            "defect types": ", ".join(sorted({t for t in test.defect_types if t != "good"})),
            "mask % min": float(a.min()) if a.size else np.nan,
            "mask % median": float(np.median(a)) if a.size else np.nan,
            "mask % max": float(a.max()) if a.size else np.nan,
        })
    return pd.DataFrame(rows).set_index("class")


def example_images(root: str | os.PathLike, per_class: int = 4) -> pd.DataFrame:
    """A few test images per class for a figure: the first good one, then `per_class` defective ones
    of different types (cycling through the types, the most visible first). Columns: class, kind,
    defect_type, path, mask_path (None for the good one), area."""
    root = Path(root)
    areas = mask_areas(root)
    rows = []
    for category, kind in category_kinds(root).items():
        good = [it for it in AnomalyFolder(root, category, "test").items if it.label == 0]
        if good:
            rows.append({"class": category, "kind": kind, "defect_type": "good", "path": good[0].path,
                         "mask_path": None, "area": 0.0})
        mine = areas[areas["class"] == category]
        # the last image of each type has the highest severity (writer: severity (i + 0.5) / n)
        by_type = [g.iloc[::-1] for _, g in mine.groupby("defect_type", sort=True)]
        picked = [g.iloc[k] for k in range(per_class) for g in by_type if k < len(g)][:per_class]
        rows += [dict(r) for r in picked]
    return pd.DataFrame(rows, columns=["class", "kind", "defect_type", "path", "mask_path", "area"])
