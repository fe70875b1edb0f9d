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
