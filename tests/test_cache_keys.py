"""Caches never serve stale numbers: keys follow the library's source, and a stored result carries
the bootstrap count it was computed with."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import padim_lib
from padim_lib.engine.results import ResultStore

LIB = Path(padim_lib.__file__).resolve().parent

KEYS = """
import json
from padim_lib.engine.config import ExperimentConfig
from padim_lib.features.cache import FeatureSpec
import padim_lib
assert padim_lib.__file__.startswith({root!r}), padim_lib.__file__
spec = FeatureSpec(data_root={data!r}, category="c", split="train", backbone="resnet18", layers=("layer1",))
print(json.dumps({{"task": ExperimentConfig().key(), "features": spec.key()}}))
"""


@pytest.fixture
def copy(tmp_path):
    root = tmp_path / "lib"
    shutil.copytree(LIB, root / "padim_lib", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "data" / "c").mkdir(parents=True)
    (tmp_path / "data" / "c" / "x.png").write_bytes(b"x")
    return root


def _keys(root: Path) -> dict[str, str]:
    code = KEYS.format(root=str(root), data=str(root.parent / "data"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _touch(root: Path, module: str) -> None:
    path = root / "padim_lib" / module
    path.write_text(path.read_text() + "\n# a student's edit\n")


def test_editing_a_module_that_computes_numbers_changes_the_keys(copy):
    before = _keys(copy)
    _touch(copy, "padim.py")
    after = _keys(copy)
    assert after["task"] != before["task"]
    assert after["features"] == before["features"]  # the backbone pass does not depend on padim.py
    _touch(copy, "features.py")
    assert _keys(copy)["features"] != after["features"]


def test_editing_presentation_keeps_the_keys(copy, tmp_path):
    before = _keys(copy)
    _touch(copy, "plots.py")
    _touch(copy, "cli.py") if (copy / "padim_lib" / "cli.py").exists() else None
    (tmp_path / "chapter.ipynb").write_text("{}")  # notebooks are not part of the library at all
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
