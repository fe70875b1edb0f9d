"""Image-level anomaly detection (the paper's Sec. IV-D): image AUROC of PaDiM and SPADE.

The paper reports image AUROC on MVTec AD (mean over classes) for PaDiM-WR50-Rd550,
PaDiM-EfficientNet-B5 and SPADE (published.csv, table "Image AUROC"). Here each is one
configuration whose `published_row` names that figure, so a stand-in network (the embedded
profile's EfficientNet-Lite models, whose ImageNet weights ship offline) sits beside the figure it
stands in for. EfficientNet-B5 is run under both readings of the excerpt's layers (see
padim_lib.features.extractor): the level outputs (the backbone's default layers) and the literal blocks 7,
20, 26 (`B5_LITERAL_LAYERS`). The image score of every detector is the maximum of its anomaly map
(PaDiM) or its k-NN image distance (SPADE); the row's metric is `image_auroc`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.features.backbones import embedding_size, resolve_layers
from padim_lib.paper.study import StudyRun, comparability, rd_label, run_study, short_name

TABLE = "Image AUROC"
B5_LITERAL_LAYERS = ("features.2", "features.5.0", "features.5")
PUBLISHED_ROWS = {"rd": "PaDiM-WR50-Rd550", "effnet": "PaDiM-EfficientNet-B5", "spade": "SPADE"}
# the network each published row ran (SPADE: WR50, as the PaDiM paper reproduced it)
PAPER_BACKBONES = {"PaDiM-WR50-Rd550": "wide_resnet50_2", "PaDiM-EfficientNet-B5": "efficientnet_b5",
                   "SPADE": "wide_resnet50_2"}


def scaled_rd(backbone: str, paper_rd: int = 550, paper_backbone: str = "wide_resnet50_2") -> int:
    """The Rd size keeping the paper's ratio on another backbone: 550 of WR50's 1792 d -> 54 of Lite0's 176."""
    full = embedding_size(backbone, resolve_layers(backbone, None))
    return max(1, round(paper_rd * full / embedding_size(paper_backbone, resolve_layers(paper_backbone, None))))


def detection_configs(
    *,
    rd_backbone: str,
    rd: int | None,
    effnet_backbones: Sequence[str],
    effnet_literal_layers: Sequence[str] | None = None,
    spade_backbone: str | None = None,
    seed: int = 0,
    spade_params: dict[str, Any] | None = None,
    **common: Any,
) -> list[ExperimentConfig]:
    """The chapter's configurations, in table order.

    rd_backbone / rd: PaDiM with `rd` random dimensions (None: all) <-> "PaDiM-WR50-Rd550".
    effnet_backbones: PaDiM on each backbone's default layers <-> "PaDiM-EfficientNet-B5"; with
    `effnet_literal_layers`, the first of them also runs on those layers (the literal reading).
    spade_backbone: SPADE <-> "SPADE" (None: no SPADE row), with `spade_params` (e.g. n_gallery;
    default: the SPADE paper's). `common`: ExperimentConfig fields
    shared by all (preprocess, sigma, eps, max_train).
    """
    if not effnet_backbones:
        raise PadimError("effnet_backbones is empty; expected at least one EfficientNet backbone")
    configs = [ExperimentConfig(backbone=rd_backbone, reduce=f"random:{int(rd)}" if rd else None, seed=seed,
                                label=rd_label(rd_backbone, rd), published_row=PUBLISHED_ROWS["rd"], **common)]
    for i, backbone in enumerate(dict.fromkeys(effnet_backbones)):
        name = f"PaDiM-{short_name(backbone)}"
        literal = effnet_literal_layers if i == 0 and effnet_literal_layers else None
        configs.append(ExperimentConfig(backbone=backbone, label=name + (" (levels)" if literal else ""),
                                        published_row=PUBLISHED_ROWS["effnet"], **common))
        if literal:
            configs.append(ExperimentConfig(backbone=backbone, layers=tuple(literal), label=name + " (literal)",
                                            published_row=PUBLISHED_ROWS["effnet"], **common))
    if spade_backbone:
        configs.append(ExperimentConfig(method="spade", backbone=spade_backbone, params=spade_params or {},
                                        label=f"SPADE-{short_name(spade_backbone)}",
                                        published_row=PUBLISHED_ROWS["spade"], **common))
    return configs


def run_detection(
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None,
    *,
    rd_backbone: str,
    rd: int | None,
    effnet_backbones: Sequence[str],
    effnet_literal_layers: Sequence[str] | None,
    spade_backbone: str | None,
    preprocess: Preprocess,
    spade_params: dict[str, Any] | None = None,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    **run_kwargs: Any,
) -> StudyRun:
    """The chapter's study: `detection_configs` on every class (`classes` None / "all": all) of
    `data_root`, through the sweep and result cache, with its comparability to the paper recorded.
    `run_kwargs`: studies.run_study's (results_dir, device, scheduler, bootstrap, torch_threads)."""
    from padim_lib.engine import studyfile as study
    from padim_lib.paper import tables

    configs = detection_configs(rd_backbone=rd_backbone, rd=rd, effnet_backbones=effnet_backbones,
                                effnet_literal_layers=effnet_literal_layers, spade_backbone=spade_backbone,
                                spade_params=spade_params, preprocess=preprocess, sigma=sigma, eps=eps, max_train=max_train)
    chosen = tables.as_list(classes)
    tasks = study.make_tasks(data_root, chosen or "all", configs)
    check = comparability(data_root, chosen, configs, PAPER_BACKBONES, preprocess=preprocess, max_train=max_train)
    return run_study(TABLE, tasks, configs, comparability=check, **run_kwargs)
