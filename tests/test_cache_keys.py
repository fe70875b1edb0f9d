"""Caches never serve stale numbers: keys follow the library's source, and a stored result carries
the bootstrap count it was computed with."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import padim_lib
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.results import ResultStore
from padim_lib.features.cache import FeatureSpec
from padim_lib.io import digest

LIB = Path(padim_lib.__file__).resolve().parent
LAYERS = sorted(p.name for p in LIB.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
COMPUTING = [name for name in LAYERS if name not in digest.READING_LAYERS]


@pytest.fixture
def copy(tmp_path, monkeypatch) -> Path:
    """A copy of the library's source tree (only what the digest reads: *.py) that the key functions
    hash instead of the installed one; returns the copy's package folder."""
    lib = tmp_path / "lib" / "padim_lib"
    shutil.copytree(LIB, lib, ignore=lambda d, names: [n for n in names if n == "__pycache__" or (
        (Path(d) / n).is_file() and not n.endswith(".py"))])
    monkeypatch.setattr(digest, "LIBRARY", lib)
    (tmp_path / "data" / "c").mkdir(parents=True)
    (tmp_path / "data" / "c" / "x.png").write_bytes(b"x")
    return lib


def _keys(lib: Path) -> dict[str, str]:
    spec = FeatureSpec(data_root=str(lib.parents[1] / "data"), category="c", split="train", backbone="resnet18",
                       layers=("layer1",))
    return {"task": ExperimentConfig().key(), "features": spec.key()}


def _touch(lib: Path, module: str) -> None:
    path = lib / module
    path.write_text(path.read_text() + "\n# a student's edit\n")


def _a_module(lib: Path, layer: str) -> str:
    """The first module of a layer (sub-packages included), relative to the package."""
    return min(p.relative_to(lib).as_posix() for p in (lib / layer).rglob("*.py") if p.name != "__init__.py")


def test_the_keys_hash_this_very_library_and_its_layers_are_known():
    assert digest.LIBRARY == LIB
    assert set(digest.READING_LAYERS) < set(LAYERS) and set(digest.FEATURE_LAYERS) <= set(COMPUTING)
    assert {"features", "methods", "engine", "report"} <= set(LAYERS)


def test_editing_a_module_that_computes_numbers_changes_the_keys(copy):
    keys = _keys(copy)
    _touch(copy, "methods/padim/detector.py")
    after = _keys(copy)
    assert after["task"] != keys["task"]
    assert after["features"] == keys["features"]  # the backbone pass does not depend on the detector
    _touch(copy, "features/extractor.py")
    assert _keys(copy)["features"] != after["features"]


@pytest.mark.parametrize("layer", COMPUTING)
def test_every_computing_layer_is_in_the_task_key(copy, layer):
    before = _keys(copy)
    _touch(copy, _a_module(copy, layer))
    after = _keys(copy)
    assert after["task"] != before["task"], layer
    assert (after["features"] != before["features"]) == (layer in digest.FEATURE_LAYERS), layer


def test_a_top_level_module_and_a_new_module_are_in_the_key(copy):
    before = _keys(copy)
    _touch(copy, "errors.py")
    after = _keys(copy)
    assert after["task"] != before["task"] and after["features"] == before["features"]
    (copy / "methods" / "newmethod.py").write_text("X = 1\n")  # a file that did not exist counts too
    assert _keys(copy)["task"] != after["task"]


@pytest.mark.parametrize("layer", digest.READING_LAYERS)
def test_editing_a_reading_layer_keeps_the_keys(copy, layer):
    before = _keys(copy)
    for path in sorted((copy / layer).rglob("*.py")):
        _touch(copy, path.relative_to(copy).as_posix())
    (copy / layer / "new_helper.py").write_text("X = 1\n")
    assert _keys(copy) == before


def test_notebooks_are_not_part_of_the_library(copy, tmp_path):
    before = _keys(copy)
    (tmp_path / "lib" / "chapter.ipynb").write_text("{}")
    (copy / "report" / "chapter.ipynb").write_text("{}")  # not a .py file: never hashed
    assert _keys(copy) == before


def _rows(replicates: int) -> pd.DataFrame:
    reps = [-1] + list(range(replicates))
    return pd.DataFrame({"metric": ["image_auroc"] * len(reps), "value": np.linspace(0.5, 1, len(reps)),
                         "replicate": reps})


def test_a_stored_result_knows_its_bootstrap_count(tmp_path):
    store = ResultStore(tmp_path)
    store.write("k", _rows(100))
    assert store.replicates("k") == 100
    assert store.has("k") and store.has("k", 100) and not store.has("k", 500)
    store.write("k0", _rows(0))
    assert store.replicates("k0") == 0 and store.has("k0", 0)
    assert store.replicates("missing") is None and not store.has("missing", 0)
