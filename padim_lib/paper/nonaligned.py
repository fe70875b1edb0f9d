"""Non-aligned MVTec AD (the paper's Sec. V-C; the data described in Sec. IV-A): aligned and non-aligned runs.

The paper rotates every train and test image by U(-10, 10) degrees and crops a random 224 window
out of the 256 resize, in 5 seeded versions of the data set, and reports how much each method's
pixel AUROC drops from aligned MVTec AD (published.csv, table "Non-aligned": PaDiM 5.3, SPADE
8.8, VAE 12.2 p.p.; PaDiM-WR50-Rd550's own pixel AUROC and PRO 92.2 / 73.1).

`versions` writes (once; atomically; reused while source and transform are unchanged) the
versions of any MVTec-layout tree with `datasets.nonaligned_versions`. The study runs every
configuration on the aligned tree (its main data version; the chapter's resize + centre crop, the
paper's 256 and 224) and on each version, written with that same resize and a random crop of that
size (read at the crop size: the random crop replaces the centre crop, so both show the pixel scale
of one protocol); its run averages the versions with their spread (`StudyRun.spread`) and computes each
method's drop (`StudyRun.drops`): aligned minus the mean over versions, per version as well, so
the drop has a spread too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from padim_lib.datasets.nonaligned import NonAligned, nonaligned_versions
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.paper.catalog import vae_label
from padim_lib.paper.study import DataVersion, Entry, Study, one_of_each

TABLE = "Non-aligned"
ALIGNED = "aligned"
ROLES = {"padim": "PaDiM with d random dimensions (the paper: PaDiM-WR50-Rd550)",
         "spade": "SPADE (the paper: Wide-ResNet-50-2)", "vae": "the VAE (the paper: a ResNet18 encoder)"}
ROWS = {"padim": "PaDiM", "spade": "SPADE", "vae": "VAE"}


def versions_dir(out_dir: str | os.PathLike, data_root: str | os.PathLike, transform: NonAligned | None = None) -> Path:
    """Where the versions of `data_root` live: <out_dir>/<data root's folder name>/seed<k>; with a
    transform other than the paper's, <out_dir>/<name>-<resize>to<crop>/seed<k> (kept apart)."""
    name = Path(data_root).resolve().name
    if transform is not None and not transform.is_default():
        name += f"-{transform.resize}to{transform.crop}"
    return Path(out_dir) / name


def transform_for(resize: int, crop: int | None) -> NonAligned:
    """The non-aligned transform that pairs with the aligned protocol Preprocess(resize, crop)."""
    if crop is None or isinstance(crop, bool) or not isinstance(crop, int) or not 1 <= crop < resize:
        raise PadimError(f"crop={crop!r}: the non-aligned versions need a random crop smaller than resize={resize!r} "
                         "(the paper: resize 256, crop 224)")
    return NonAligned(resize=int(resize), crop=int(crop))


def versions(data_root: str | os.PathLike, out_dir: str | os.PathLike, n_versions: int,
             classes: Sequence[str] | None = None, workers: int = 1, write: bool = True,
             transform: NonAligned | None = None) -> list[Path]:
    """The non-aligned versions 0..n_versions-1 of `data_root` made with `transform` (None: the
    paper's), written if missing or stale; with `write=False` only their paths, nothing written:
    what a plan reads."""
    if isinstance(n_versions, bool) or not isinstance(n_versions, int) or n_versions < 1:
        raise PadimError(f"n_versions={n_versions!r}; expected a positive integer (the paper: 5)")
    where = versions_dir(out_dir, data_root, transform)
    if not write:
        return [where / f"seed{k}" for k in range(n_versions)]
    return nonaligned_versions(data_root, where, range(n_versions), classes, workers=workers, transform=transform)


def method_entries(
    *,
    padim_backbone: str,
    rd: int | None,
    spade_backbone: str | None,
    vae_params: dict[str, Any] | None,
    vae_backbone: str = "resnet18",
    vae_pretrained: bool = True,
    seed: int = 0,
    spade_params: dict[str, Any] | None = None,
    **common: Any,
) -> list[Entry]:
    """PaDiM (Rd `rd` on `padim_backbone`), SPADE and the VAE (None: left out), on the aligned data.
    Their published drops' rows are "PaDiM", "SPADE", "VAE"; `common` (preprocess, sigma, eps,
    max_train, pretrained) is shared; the VAE's encoder is `vae_backbone` (the paper: ResNet18), with
    ImageNet weights only when both `vae_pretrained` and `common`'s `pretrained` (default True) say so."""
    out = [Entry("padim", ExperimentConfig(backbone=padim_backbone, reduce=f"random:{int(rd)}" if rd else None,
                                           seed=seed, label="PaDiM", published_row=ROWS["padim"], **common), ALIGNED)]
    if spade_backbone:
        out.append(Entry("spade", ExperimentConfig(method="spade", backbone=spade_backbone, params=spade_params or {},
                                                   label="SPADE", published_row=ROWS["spade"], **common), ALIGNED))
    if vae_params is not None:
        vae_common = {k: v for k, v in common.items() if k != "pretrained"}
        trained = bool(vae_pretrained and common.get("pretrained", True))
        out.append(Entry("vae", ExperimentConfig(method="vae", backbone=vae_backbone, params=vae_params, seed=seed,
                                                 pretrained=trained, label=vae_label(vae_backbone, trained),
                                                 published_row=ROWS["vae"], **vae_common), ALIGNED))
    return out


def study_on_versions(data_root: str | os.PathLike, classes: Sequence[str], entries: Sequence[Entry],
                      roots: Sequence[str | os.PathLike], transform: NonAligned | None = None) -> Study:
    """`entries` on the aligned `data_root` and on each version root, read as `transform` (None: the
    paper's) says (`NonAligned.read_with`)."""
    read_with = (transform or NonAligned()).read_with
    shifted = [DataVersion(Path(r).name, str(r), read_with) for r in roots]
    every = [*entries, *(Entry(e.role, e.config, v.name) for v in shifted for e in entries)]
    return Study(name="nonaligned", table=TABLE, roles=ROLES, entries=tuple(every),
                 versions=(DataVersion(ALIGNED, str(data_root)), *shifted), classes=tuple(classes))


def nonaligned(
    data_root: str | os.PathLike,
    na_classes: Sequence[str] | str | None = None,
    *,
    na_versions: int = 5,
    na_versions_dir: str | os.PathLike = "data/nonaligned",
    na_backbone: str = "wide_resnet50_2",
    na_rd: int | None = 550,
    na_spade_backbone: str | None = "wide_resnet50_2",
    na_spade_params: dict[str, Any] | None = None,
    na_vae_params: dict[str, Any] | None = None,
    na_vae_backbone: str = "resnet18",
    na_vae_pretrained: bool = True,
    resize: int = 256,
    crop: int | None = 224,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    pretrained: bool = True,
    write_versions: bool = True,
) -> Study:
    """The chapter's study: each method on `na_classes` (None: one texture and one object; "all")
    of `data_root`, aligned (`resize`, centre `crop`) and on `na_versions` non-aligned versions
    (`resize`, rotation, a random `crop`; written under `na_versions_dir` when missing or stale;
    `write_versions=False`: not written, the study of a plan). `pretrained=False`: random weights for every network (a dry run)."""
    transform = transform_for(resize, crop)
    chosen = one_of_each(data_root, na_classes)
    entries = method_entries(padim_backbone=na_backbone, rd=na_rd, spade_backbone=na_spade_backbone,
                             vae_params=na_vae_params, vae_backbone=na_vae_backbone, vae_pretrained=na_vae_pretrained,
                             spade_params=na_spade_params, preprocess=Preprocess(resize=resize, crop=crop), sigma=sigma,
                             eps=eps, max_train=max_train, pretrained=pretrained)
    roots = versions(data_root, na_versions_dir, na_versions, chosen, write=write_versions, transform=transform)
    return study_on_versions(data_root, chosen, entries, roots, transform)
