"""ShanghaiTech Campus (the data: the paper's Sec. IV-A; its results: Sec. V-B): one model per scene.

The paper trains PaDiM-R18-Rd100 and SPADE on each of STC's 13 scenes (frames resized to 256 x
256, no crop) and reports one pixel AUROC per method (published.csv, table "STC": 91.2 and 89.9)
without saying how the scenes are combined: the mean over the scenes of each scene's AUROC, or
the AUROC of all scenes' pixels ranked together. `averages` gives both. An STC root is a data set
of `datasets.catalog` whose classes are the scenes, so the tasks, the sweep and the result cache
are the tables' own; a task's `image_auroc` is the frame-level AUROC (the image score of a frame
against its frame label).

Training frames: `max_train` caps a scene's training frames, spread evenly over its clips
(`datasets.catalog.open_dataset`); STC has about 21,000 per scene, whose feature maps would not fit
in memory at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from padim_lib.datasets.catalog import is_stc_root
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.metrics.pooled import pooled_auroc
from padim_lib.paper.catalog import short_name
from padim_lib.paper.detection import rd_label
from padim_lib.paper.run import StudyRun
from padim_lib.paper.study import MAIN, DataVersion, Entry, Study

TABLE = "STC"
ROLES = {"padim": "PaDiM with d random dimensions (the paper: PaDiM-R18-Rd100)",
         "spade": "SPADE (the paper reproduces it on Wide-ResNet-50-2)"}
ROWS = {"padim": "PaDiM-R18-Rd100", "spade": "SPADE"}
FRAME_METRIC = "image_auroc"  # on STC, the image score of a frame against the frame label


def stc_entries(
    *,
    backbone: str,
    rd: int | None,
    spade_backbone: str | None,
    preprocess: Preprocess,
    max_train: int | None = None,
    seed: int = 0,
    spade_params: dict[str, Any] | None = None,
    **common: Any,
) -> list[Entry]:
    """PaDiM (Rd `rd` on `backbone`) <-> "PaDiM-R18-Rd100" and SPADE <-> "SPADE" (None: left out)."""
    out = [Entry("padim", ExperimentConfig(backbone=backbone, reduce=f"random:{int(rd)}" if rd else None, seed=seed,
                                           max_train=max_train, preprocess=preprocess, label=rd_label(backbone, rd),
                                           published_row=ROWS["padim"], **common))]
    if spade_backbone:
        out.append(Entry("spade", ExperimentConfig(method="spade", backbone=spade_backbone, params=spade_params or {},
                                                   max_train=max_train, preprocess=preprocess,
                                                   label=f"SPADE-{short_name(spade_backbone)}",
                                                   published_row=ROWS["spade"], **common)))
    return out


def stc(
    stc_root: str | os.PathLike,
    stc_scenes: Sequence[str] | None = None,
    *,
    stc_backbone: str = "resnet18",
    stc_rd: int | None = 100,
    stc_spade_backbone: str | None = "wide_resnet50_2",
    stc_spade_params: dict[str, Any] | None = None,
    stc_max_train: int | None = None,
    stc_resize: int = 256,
    sigma: float = 4.0,
    eps: float = 0.01,
    pretrained: bool = True,
) -> Study:
    """The chapter's study: one model per scene (`stc_scenes` None: every scene) of the STC root,
    frames resized to `stc_resize` x `stc_resize` without a crop. `pretrained=False`: random
    weights (a dry run: the numbers mean nothing)."""
    if not is_stc_root(stc_root):
        raise PadimError(f"data_root {stc_root}: not in the STC layout (expected training/videos/ and testing/frames/)")
    entries = stc_entries(backbone=stc_backbone, rd=stc_rd, spade_backbone=stc_spade_backbone,
                          spade_params=stc_spade_params, max_train=stc_max_train,
                          preprocess=Preprocess(resize=stc_resize, crop=None), sigma=sigma, eps=eps,
                          pretrained=pretrained)
    return Study(name="stc", table=TABLE, roles=ROLES, entries=tuple(entries),
                 versions=(DataVersion(MAIN, str(stc_root)),), classes=tuple(stc_scenes) if stc_scenes else None,
                 dataset="stc")


def frame_counts(run: StudyRun) -> dict[str, int]:
    """Training and test frames the run's first configuration used, summed over its scenes."""
    label = run.labels()[0]
    arts = [run.artifacts(label, scene) for scene in run.classes]
    return {"train": sum(int(a["n_train"]) for a in arts), "test": sum(len(a["labels"]) for a in arts)}


AVERAGING = {
    "mean over scenes": "each scene's AUROC, then their mean (the summary's 'all' group, with its 95 % CI)",
    "pooled": "every test frame of every scene ranked together, one AUROC (pixels: from each scene's stored "
              "score quantiles, within about 0.1 p.p.; frames: exact)",
}


def averages(run: StudyRun) -> pd.DataFrame:
    """Both ways of combining the scenes (AVERAGING), per configuration, for the pixel AUROC (the
    paper's metric on STC) and the frame-level AUROC: columns label, metric, mean, ci_low, ci_high
    (the mean over scenes, fractions), pooled (NaN where a task stored no pixel score quantiles:
    re-run it), n_scenes. The paper states neither; its figure is one number per method."""
    from sklearn.metrics import roc_auc_score

    summary = run.summary()
    out = []
    for label in run.labels():
        arts = [run.artifacts(label, scene) for scene in run.classes]
        for metric in ("pixel_auroc", FRAME_METRIC):
            hit = summary[(summary["label"] == label) & (summary["metric"] == metric) & (summary["group"] == "all")]
            if hit.empty:
                continue
            if metric == "pixel_auroc":
                have = all("pixel_count_normal" in a for a in arts)
                pooled = pooled_auroc(arts) if have else float("nan")
            else:
                labels = np.concatenate([a["labels"] for a in arts])
                scores = np.concatenate([a["scores"] for a in arts])
                pooled = float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else float("nan")
            r = hit.iloc[0]
            out.append({"label": label, "metric": metric, "mean": float(r["value"]), "ci_low": float(r["ci_low"]),
                        "ci_high": float(r["ci_high"]), "pooled": pooled, "n_scenes": len(arts)})
    return pd.DataFrame(out, columns=["label", "metric", "mean", "ci_low", "ci_high", "pooled", "n_scenes"])
