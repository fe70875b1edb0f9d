"""ShanghaiTech Campus (the paper's Sec. IV-F): one model per scene, pixel AUROC and frame-level AUROC.

The paper trains PaDiM-R18-Rd100 and SPADE on each of STC's 13 scenes (frames resized to 256 x
256, no crop) and reports the mean pixel AUROC over the scenes (published.csv, table "STC": 91.2
and 89.9). An STC root is a data set of `datasets.catalog` whose classes are the scenes, so the
tasks, the sweep and the result cache are the tables' own; a task's `image_auroc` is the
frame-level AUROC (the image score of a frame against its frame label).

Training frames: `max_train` caps a scene's training frames, spread evenly over its clips
(`datasets.catalog.open_dataset`); STC has about 21,000 per scene, whose feature maps would not fit
in memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.datasets.stc import STC_PREPROCESS, STC_SCENES
from padim_lib.engine import studyfile as study
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.paper.study import StudyRun, rd_label, run_study, short_name

TABLE = "STC"
PUBLISHED_ROWS = {"padim": "PaDiM-R18-Rd100", "spade": "SPADE"}
FRAME_METRIC = "image_auroc"  # on STC, the image score of a frame against the frame label


def stc_configs(
    *,
    backbone: str,
    rd: int | None,
    spade_backbone: str | None,
    max_train: int | None = None,
    seed: int = 0,
    spade_params: dict[str, Any] | None = None,
    **common: Any,
) -> list[ExperimentConfig]:
    """PaDiM (Rd `rd` on `backbone`) <-> "PaDiM-R18-Rd100" and SPADE <-> "SPADE", on the paper's
    STC preprocessing (256 x 256, no crop) unless `common` gives another."""
    common.setdefault("preprocess", STC_PREPROCESS)
    configs = [ExperimentConfig(backbone=backbone, reduce=f"random:{int(rd)}" if rd else None, seed=seed,
                                max_train=max_train, label=rd_label(backbone, rd),
                                published_row=PUBLISHED_ROWS["padim"], **common)]
    if spade_backbone:
        configs.append(ExperimentConfig(method="spade", backbone=spade_backbone, params=spade_params or {},
                                        max_train=max_train,
                                        label=f"SPADE-{short_name(spade_backbone)}",
                                        published_row=PUBLISHED_ROWS["spade"], **common))
    return configs


# the network each published row ran (SPADE: WR50, as the PaDiM paper reproduced it)
PAPER_BACKBONES = {"PaDiM-R18-Rd100": "resnet18", "SPADE": "wide_resnet50_2"}


def comparability(
    data_root: str | os.PathLike,
    scenes: Sequence[str] | None,
    configs: Sequence[ExperimentConfig],
    *,
    preprocess: Preprocess,
    max_train: int | None = None,
) -> tuple[bool, list[str]]:
    """Whether an STC run can be set against the paper's figures, and if not, why: the real STC
    (no dataset.json of a generated set, all 13 scenes), 256 x 256 without a crop, every training
    frame, each configuration on the paper's network (and PaDiM with Rd 100)."""
    from padim_lib.datasets.catalog import list_classes

    root = Path(data_root)
    reasons = []
    if (root / "dataset.json").is_file():
        reasons.append(f"the data at {data_root} is a generated set, not ShanghaiTech Campus")
    elif sorted(scenes or list_classes(root)) != list(STC_SCENES):
        reasons.append(f"{len(scenes or list_classes(root))} of STC's {len(STC_SCENES)} scenes")
    if (preprocess.resize, preprocess.crop) != (STC_PREPROCESS.resize, STC_PREPROCESS.crop):
        reasons.append(f"frames resized to {preprocess.resize} / crop {preprocess.crop}, not 256 without a crop")
    if max_train is not None:
        reasons.append(f"training frames capped at {max_train} per scene")
    for c in configs:
        wanted = PAPER_BACKBONES.get(c.published_row)
        if wanted and c.backbone != wanted:
            reasons.append(f"{c.label} runs {c.backbone}, not the paper's {wanted}")
        if c.published_row == PUBLISHED_ROWS["padim"] and c.reduce != "random:100":
            reasons.append(f"{c.label} keeps {c.reduce or 'all'} dimensions, not Rd 100")
    return not reasons, reasons


def frame_counts(run: StudyRun) -> dict[str, int]:
    """Training and test frames the run's first configuration used, summed over its scenes."""
    label = run.labels()[0]
    arts = [run.artifacts(label, scene) for scene in run.classes]
    return {"train": sum(int(a["n_train"]) for a in arts), "test": sum(len(a["labels"]) for a in arts)}


def run_stc(
    data_root: str | os.PathLike,
    scenes: Sequence[str] | None,
    configs: Sequence[ExperimentConfig],
    **run_kwargs: Any,
) -> StudyRun:
    """Every configuration on every scene of the STC root `data_root` (`scenes` None: all)."""
    from padim_lib.datasets.catalog import is_stc_root

    if not is_stc_root(data_root):
        raise PadimError(f"data_root {data_root}: not in the STC layout (expected training/videos/ and testing/frames/)")
    tasks = study.make_tasks(data_root, "all" if not scenes else list(scenes), configs)
    return run_study(TABLE, tasks, configs, **run_kwargs)


def run_scenes(
    stc_root: str | os.PathLike,
    scenes: Sequence[str] | None,
    *,
    backbone: str,
    rd: int | None,
    spade_backbone: str | None,
    max_train: int | None,
    resize: int = 256,
    spade_params: dict[str, Any] | None = None,
    sigma: float = 4.0,
    eps: float = 0.01,
    **run_kwargs: Any,
) -> StudyRun:
    """The chapter's study: `stc_configs` on frames resized to `resize` (no crop), every scene
    (`scenes` None) of `stc_root`, with its comparability to the paper recorded."""
    preprocess = Preprocess(resize=resize, crop=None)
    configs = stc_configs(backbone=backbone, rd=rd, spade_backbone=spade_backbone, max_train=max_train,
                          spade_params=spade_params, preprocess=preprocess, sigma=sigma, eps=eps)
    check = comparability(stc_root, scenes, configs, preprocess=preprocess, max_train=max_train)
    return run_stc(stc_root, scenes, configs, comparability=check, **run_kwargs)
