"""Fixtures shared by test_book.py and test_browser.py (loaded with `pytest_plugins`).

`built_book` runs the whole book once per session, with tiny parameters, in a copy of the
project under a temporary folder: every chapter through papermill, then jupyter-book in strict
mode (a Sphinx warning fails the build). The repository's own book/_executed and _build are
never touched.

`dry_run_book` runs every chapter once more, under the `paper` profile (its backbones ResNet18,
Wide-ResNet-50-2 and EfficientNet-B5, its methods and parameters) with `pretrained=False`, on a
tiny tree with MVTec AD's class names and a tiny STC tree: the paper profile's code path, on
random weights, in a minute or two (no HTML).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_CLASSES = ["brick", "washer"]  # one texture, one object: every group (textures/objects/all) exists


# complexity.ipynb's timing runs, the same in both books: no warm-up, one repeat, two points per sweep
TIMING = {"warmup": 0, "repeats": 1, "scale_dims": [4, 8], "scale_n_train": [2, 3], "scale_sizes": [32, 64],
          "scale_d": 4}


def tiny_parameters(data_root: Path, results_dir: Path, stc_root: Path | None = None) -> dict:
    """Small enough for seconds per chapter, large enough for every figure and statistic."""
    stc = {} if stc_root is None else {"stc_root": str(stc_root), "stc_resize": 64}
    return {
        **stc,
        "det_rd": 8,
        "na_versions": 2,
        "na_versions_dir": str(results_dir.parent / "data" / "nonaligned"),
        "na_rd": 8,
        "na_vae_params": {"epochs": 1, "images_per_epoch": 8, "batch_size": 8, "image_size": 64, "aug_resize": 73,
                          "aug_crop": 70},
        "stc_rd": 8,
        "data_root": str(data_root),
        "classes": None,
        "dims": [8, 16],
        "seeds": 2,
        "bootstrap": 5,
        "results_dir": str(results_dir),
        "resize": 72,
        "crop": 64,
        "device": "cpu",
        # baselines.ipynb and complexity.ipynb
        "vae_epochs": 1,
        "vae_images_per_epoch": 8,
        "vae_image_size": 64,
        "vae_batch_size": 8,
        "spade_k": 3,
        "spade_gallery": 3,
        "n_train": 3,
        "n_test": 2,
        "image_size": 64,
        **TIMING,
    }


def copy_project(dest: Path) -> Path:
    """The book's sources (config, toc, book/*) copied to `dest`; returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(REPO / name, dest / name)
    (dest / "book").mkdir(exist_ok=True)
    for path in (REPO / "book").iterdir():
        if path.is_file() and path.suffix in (".ipynb", ".md", ".bib"):
            shutil.copy2(path, dest / "book" / path.name)
    return dest


def make_tiny_stc(dest: Path) -> Path:
    from padim_lib.datasets import make_synthetic_stc

    # two test clips: a short clip of scene 02 shows no anomaly yet (its pixel AUROC would be undefined)
    return make_synthetic_stc(dest, seed=0, scenes=2, train_clips=2, test_clips=2, train_frames=6, test_frames=10,
                              height=48, width=64)


def make_tiny_data(dest: Path) -> Path:
    from padim_lib.datasets import make_synthetic

    return make_synthetic(dest, seed=0, n_train=6, n_test_good=2, n_test_defect=4, size=72,
                          categories=TINY_CLASSES)


# MVTec AD's names (a texture and an object: every group exists), drawn by the synthetic generator
DRY_RUN_CLASSES = ["carpet", "bottle"]


def make_dry_run_data(dest: Path) -> Path:
    """A tree in MVTec AD's layout with MVTec AD's class names: 3 training, 1 good and 2 defective
    test images of 40 px per class."""
    from padim_lib.datasets import make_synthetic

    return make_synthetic(dest, seed=0, n_train=3, n_test_good=1, n_test_defect=2, size=40,
                          categories=DRY_RUN_CLASSES)


def dry_run_parameters(data_root: Path, results_dir: Path, stc_root: Path) -> dict:
    """The paper profile's values, changed only where its budget is (images, seeds, versions, the
    VAE's training, the timing runs); the networks, methods and class selection stay the profile's."""
    return {
        "pretrained": False,
        "data_root": str(data_root),
        "stc_root": str(stc_root),
        "results_dir": str(results_dir),
        "na_versions_dir": str(results_dir.parent / "data" / "nonaligned"),
        "device": "cpu",
        "resize": 40,
        "crop": 32,
        "stc_resize": 32,
        "seeds": 1,
        "bootstrap": 2,
        "na_versions": 1,
        "na_vae_params": {"epochs": 1, "images_per_epoch": 4, "batch_size": 4, "image_size": 64, "aug_resize": 73,
                          "aug_crop": 70},
        "vae_epochs": 1,
        "vae_images_per_epoch": 4,
        "vae_image_size": 64,
        "vae_batch_size": 4,
        # complexity.ipynb: its timing runs
        "n_train": 2,
        "n_test": 1,
        "image_size": 64,
        **TIMING,
    }


@dataclass
class BuiltBook:
    root: Path
    index: Path
    params: dict
    log: list[str]
    plan: Any = None  # the dry run's `report.plan.BookPlan`, made before it ran

    def executed(self, stem: str) -> Path:
        return self.root / "book" / "_executed" / f"{stem}.ipynb"

    def page(self, stem: str) -> Path:
        return self.root / "_build" / "html" / "book" / "_executed" / f"{stem}.html"


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> BuiltBook:
    from padim_lib.report.runner import build_book

    root = copy_project(tmp_path_factory.mktemp("book"))
    data = make_tiny_data(root / "data" / "tiny")
    params = tiny_parameters(data, root / "results", make_tiny_stc(root / "data" / "tiny_stc"))
    log: list[str] = []
    # two chapters at once (2 cores): a kernel's start and imports leave a core idle
    index = build_book("embedded", params=params, root=root, log=log.append, stream_output=False, strict=True,
                       jobs=2)
    return BuiltBook(root, index, params, log)


@pytest.fixture(scope="session")
def dry_run_book(tmp_path_factory) -> BuiltBook:
    import time

    from padim_lib.report.runner import build_book, plan_book

    root = copy_project(tmp_path_factory.mktemp("dry_run"))
    params = dry_run_parameters(make_dry_run_data(root / "data" / "mvtec_named"), root / "results",
                                make_tiny_stc(root / "data" / "tiny_stc"))
    log: list[str] = []
    t0 = time.perf_counter()
    plan = plan_book("paper", params=params, root=root, log=log.append)
    index = build_book("paper", params=params, root=root, log=log.append, stream_output=False, html=False,
                       jobs=2)
    log.append(f"dry run: {time.perf_counter() - t0:.1f} s")
    return BuiltBook(root, index, params, log, plan)
