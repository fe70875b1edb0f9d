"""padim_lib: a reference reproduction of PaDiM (Defard et al., ICPR 2020).

The sub-packages are the layers, lowest first: errors and io (atomic writes, model files, code
digests) -> datasets -> features (backbones, extraction, cache) -> metrics (pure numerics) ->
methods (the detectors: padim/, spade/, vae/) -> engine (configurations, tasks, results, sweeps) ->
paper (the paper's studies, claims and published figures) -> report (the book) -> cli. A layer
imports only the layers below it (tests/test_imports.py). `PaDiM`, `open_dataset` and `evaluate`
are importable from here for interactive use; they are loaded on first use, so `import padim_lib`
stays cheap (no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.3.0"

from padim_lib.errors import PadimError  # noqa: E402

_LAZY = {
    "PaDiM": "padim_lib.methods.padim.detector",
    "open_dataset": "padim_lib.datasets",
    "evaluate": "padim_lib.engine.evaluation",
}

__all__ = ["PaDiM", "PadimError", "__version__", "evaluate", "open_dataset"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'padim_lib' has no attribute {name!r}")
