"""Data sets: the paper's preprocessing, MVTec-AD-like folders, MVTec AD itself, and a synthetic set.

`download` (network access) is deliberately not imported here; use
`from padim_lib.datasets import download` when needed.
"""

from padim_lib.datasets.catalog import category_kinds, open_dataset
from padim_lib.datasets.folder import AnomalyFolder, list_categories
from padim_lib.datasets.mvtec import CLASSES, OBJECTS, SPLIT_COUNTS, TEXTURES, MVTecAD, check_split_counts
from padim_lib.datasets.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, denormalize
from padim_lib.datasets.synthetic import make_synthetic

__all__ = [
    "CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OBJECTS",
    "SPLIT_COUNTS",
    "TEXTURES",
    "AnomalyFolder",
    "MVTecAD",
    "Preprocess",
    "category_kinds",
    "check_split_counts",
    "denormalize",
    "list_categories",
    "make_synthetic",
    "open_dataset",
]

# ShanghaiTech Campus, its synthetic stand-in and non-aligned MVTec AD (issue 11)
from padim_lib.datasets.nonaligned import (  # noqa: E402
    NONALIGNED_PREPROCESS,
    NonAligned,
    make_nonaligned,
    nonaligned_versions,
)
from padim_lib.datasets.stc import (  # noqa: E402
    STC_PREPROCESS,
    STC_SCENES,
    STCScene,
    check_stc_layout,
    list_scenes,
    stc_download_help,
)
from padim_lib.datasets.synthetic_stc import make_synthetic_stc  # noqa: E402

__all__ += [
    "NONALIGNED_PREPROCESS",
    "STC_PREPROCESS",
    "STC_SCENES",
    "NonAligned",
    "STCScene",
    "check_stc_layout",
    "list_scenes",
    "make_nonaligned",
    "make_synthetic_stc",
    "nonaligned_versions",
    "stc_download_help",
]
