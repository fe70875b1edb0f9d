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
from typing import Any

from padim_lib import sweep
from padim_lib.config import ExperimentConfig
from padim_lib.datasets.stc import STC_PREPROCESS
from padim_lib.errors import PadimError
from padim_lib.studies import StudyRun, rd_label, run_study, short_name

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
    **common: Any,
) -> list[ExperimentConfig]:
    """PaDiM (Rd `rd` on `backbone`) <-> "PaDiM-R18-Rd100" and SPADE <-> "SPADE", on the paper's
    STC preprocessing (256 x 256, no crop) unless `common` gives another."""
    common.setdefault("preprocess", STC_PREPROCESS)
    configs = [ExperimentConfig(backbone=backbone, reduce=f"random:{int(rd)}" if rd else None, seed=seed,
                                max_train=max_train, label=rd_label(backbone, rd),
                                published_row=PUBLISHED_ROWS["padim"], **common)]
    if spade_backbone:
        configs.append(ExperimentConfig(method="spade", backbone=spade_backbone, max_train=max_train,
                                        label=f"SPADE-{short_name(spade_backbone)}",
                                        published_row=PUBLISHED_ROWS["spade"], **common))
    return configs


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
    tasks = sweep.make_tasks(data_root, "all" if not scenes else list(scenes), configs)
    return run_study(TABLE, tasks, configs, **run_kwargs)
