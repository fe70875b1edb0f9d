"""The paper's experiments by name: each builds its Study from a chapter's parameters.

`build("table1", data_root=..., backbone=...)` is what the chapter of that experiment runs; the
summary chapter builds the other chapters' studies by name from their parameters (the report layer
reads them from each notebook and the run log), so it reads the same cached results.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from padim_lib.errors import PadimError
from padim_lib.paper import baselines, detection, nonaligned, stc, tables
from padim_lib.paper.study import Study

BUILDERS: dict[str, Callable[..., Study]] = {
    "table1": tables.table1,
    "table2": tables.table2,
    "baselines": baselines.baselines,
    "detection": detection.detection,
    "nonaligned": nonaligned.nonaligned,
    "stc": stc.stc,
}


def names() -> list[str]:
    return list(BUILDERS)


def parameters(name: str) -> list[str]:
    """The parameters experiment `name` is built from."""
    return list(inspect.signature(_builder(name)).parameters)


def build(name: str, params: Mapping[str, Any]) -> Study:
    """The Study of experiment `name` from `params` (a chapter's parameters: those the experiment
    does not take, such as the device or the figures' classes, are left to the chapter)."""
    builder = _builder(name)
    wanted = inspect.signature(builder).parameters
    missing = [p for p, spec in wanted.items() if spec.default is inspect.Parameter.empty and p not in params]
    if missing:
        raise PadimError(f"experiment {name!r}: missing parameter(s) {missing}")
    return builder(**{k: v for k, v in params.items() if k in wanted})


def _builder(name: str) -> Callable[..., Study]:
    if name not in BUILDERS:
        raise PadimError(f"experiment={name!r}; expected one of {names()}")
    return BUILDERS[name]
