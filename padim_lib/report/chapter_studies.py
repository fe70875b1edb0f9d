"""A chapter's study, rebuilt by name: what the summary chapter reads instead of copying parameters.

A chapter's parameters are its notebook's defaults, with the profile's values on top, then the
values the run log recorded for its last execution under that profile (what papermill injected:
the profile's and the user's `-p` values), then the caller's overrides. `chapter_run` builds the chapter's experiment
(`paper.experiments`) from them and runs it: the same tasks, so the summary reads the chapter's
cached results.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Mapping
from typing import Any

from padim_lib.errors import PadimError
from padim_lib.paper import experiments
from padim_lib.paper.run import StudyRun, run
from padim_lib.paper.study import Study
from padim_lib.report import runlog
from padim_lib.report.chapters import CHAPTER_EXPERIMENTS, project_root, toc_chapters
from padim_lib.report.nbparams import parameter_specs
from padim_lib.report.runner import PROFILES

RUN_PARAMETERS = ("results_dir", "device", "scheduler", "bootstrap", "torch_threads")


def chapter_parameters(stem: str, profile: str | None = None, overrides: Mapping[str, Any] | None = None,
                       root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Chapter `stem`'s parameters: notebook defaults, then `profile`'s values (runner.PROFILES),
    then the run log's record of its last execution under `profile` (any profile when None), then
    `overrides`; each only for the parameters the chapter declares."""
    base = project_root(root)
    chapter = next((c for c in toc_chapters(base) if c.stem == stem), None)
    if chapter is None:
        raise PadimError(f"chapter={stem!r}: not in {base / '_toc.yml'}")
    params = {name: ast.literal_eval(p.default) for name, p in parameter_specs(chapter).items()}
    if profile is not None:
        if profile not in PROFILES:
            raise PadimError(f"profile={profile!r}; expected one of {sorted(PROFILES)}")
        params.update({k: v for k, v in PROFILES[profile].items() if k in params})
    record = runlog.load(base).get(stem)
    if record and (profile is None or record.get("profile") == profile):
        params.update({k: v for k, v in record.get("parameters", {}).items() if k in params})
    params.update({k: v for k, v in (overrides or {}).items() if k in params})
    return params


def chapter_study(stem: str, params: Mapping[str, Any]) -> Study:
    """The Study chapter `stem` runs with `params`."""
    if stem not in CHAPTER_EXPERIMENTS:
        raise PadimError(f"chapter={stem!r} runs no experiment; expected one of {sorted(CHAPTER_EXPERIMENTS)}")
    return experiments.build(CHAPTER_EXPERIMENTS[stem], params)


def chapter_run(stem: str, profile: str | None = None, overrides: Mapping[str, Any] | None = None,
                root: str | os.PathLike | None = None, progress: bool = True) -> StudyRun:
    """Chapter `stem`'s study with its parameters (`chapter_parameters`), run through the result cache."""
    params = chapter_parameters(stem, profile, overrides, root)
    kwargs = {k: params[k] for k in RUN_PARAMETERS if k in params}
    return run(chapter_study(stem, params), progress=progress, **kwargs)
