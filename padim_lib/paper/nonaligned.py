"""Non-aligned MVTec AD (the paper's Sec. IV-E): each method on aligned data and on seeded non-aligned versions.

The paper rotates every train and test image by U(-10, 10) degrees and crops a random 224 window
out of the 256 resize, in 5 seeded versions of the data set, and reports how much each method's
pixel AUROC drops from aligned MVTec AD (published.csv, table "Non-aligned": PaDiM 5.3, SPADE
8.8, VAE 12.2 p.p.; PaDiM-WR50-Rd550's own pixel AUROC and PRO 92.2 / 73.1).

`versions` writes (once; atomically; reused while source and transform are unchanged) the
versions of any MVTec-layout tree with `datasets.nonaligned_versions`. `run_nonaligned` runs
every configuration on the aligned tree (the paper's resize 256 + centre crop 224) and on each
version (read with NONALIGNED_PREPROCESS: the random crop replaces the centre crop) through one
sweep, and `NonAlignedRun` averages the versions with their spread and computes each method's
drop: aligned minus the mean over versions, per version as well, so the drop has a spread too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from padim_lib.datasets.nonaligned import NONALIGNED_PREPROCESS, nonaligned_versions
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.studyfile import make_tasks
from padim_lib.errors import PadimError
from padim_lib.paper.study import StudyRun, run_study, spread_over_versions

TABLE = "Non-aligned"
ALIGNED = "aligned"
DROP_METRIC = "pixel_auroc_drop"


def versions_dir(out_dir: str | os.PathLike, data_root: str | os.PathLike) -> Path:
    """Where the versions of `data_root` live: <out_dir>/<data root's folder name>/seed<k>."""
    return Path(out_dir) / Path(data_root).resolve().name


def versions(data_root: str | os.PathLike, out_dir: str | os.PathLike, n_versions: int,
             classes: Sequence[str] | None = None, workers: int = 1) -> list[Path]:
    """The non-aligned versions 0..n_versions-1 of `data_root` (made if missing or stale)."""
    if isinstance(n_versions, bool) or not isinstance(n_versions, int) or n_versions < 1:
        raise PadimError(f"n_versions={n_versions!r}; expected a positive integer (the paper: 5)")
    return nonaligned_versions(data_root, versions_dir(out_dir, data_root), range(n_versions), classes, workers=workers)


def method_configs(
    *,
    padim_backbone: str,
    rd: int | None,
    spade_backbone: str | None,
    vae_params: dict[str, Any] | None,
    vae_pretrained: bool = True,
    seed: int = 0,
    spade_params: dict[str, Any] | None = None,
    **common: Any,
) -> list[ExperimentConfig]:
    """PaDiM (Rd `rd` on `padim_backbone`), SPADE and the VAE (None: left out). Labels "PaDiM",
    "SPADE", "VAE" are the published drops' rows; `common` (sigma, eps, max_train) is shared."""
    configs = [ExperimentConfig(backbone=padim_backbone, reduce=f"random:{int(rd)}" if rd else None, seed=seed,
                                label="PaDiM", published_row="PaDiM", **common)]
    if spade_backbone:
        configs.append(ExperimentConfig(method="spade", backbone=spade_backbone, params=spade_params or {}, label="SPADE",
                                        published_row="SPADE", **common))
    if vae_params is not None:
        configs.append(ExperimentConfig(method="vae", backbone="resnet18", params=vae_params, seed=seed,
                                        pretrained=vae_pretrained, label="VAE", published_row="VAE", **common))
    return configs


@dataclass
class NonAlignedRun:
    """The aligned run and the runs on each version, as one StudyRun; summaries by data root."""

    study: StudyRun
    aligned_root: str
    version_roots: list[str]

    def summary(self, version: str = ALIGNED) -> pd.DataFrame:
        """stats.summarise of the aligned rows, or of version "seed<k>"."""
        return self.study.summary(self._root(version))

    def _root(self, version: str) -> str:
        if version == ALIGNED:
            return self.aligned_root
        roots = {Path(r).name: r for r in self.version_roots}
        if version not in roots:
            raise PadimError(f"version={version!r}; expected {ALIGNED!r} or one of {sorted(roots)}")
        return roots[version]

    def version_names(self) -> list[str]:
        return [Path(r).name for r in self.version_roots]

    def spread(self) -> pd.DataFrame:
        """Mean, std, sem, min, max over the versions of each (label, group, metric) value."""
        return spread_over_versions({v: self.summary(v) for v in self.version_names()})

    def drops(self, metric: str = "pixel_auroc", group: str = "all") -> pd.DataFrame:
        """Per method: aligned value, mean non-aligned value (spread over versions), and the drop
        aligned - mean in p.p. with its spread (std and sem of the per-version drops); the
        published drop (p.p.) beside it. One row per label."""
        from padim_lib.paper.published import load_published, published_value

        aligned = self.summary(ALIGNED)
        aligned = aligned[(aligned["metric"] == metric) & (aligned["group"] == group)].set_index("label")["value"]
        per_version = {v: self.summary(v) for v in self.version_names()}
        drops = {v: s[(s["metric"] == metric) & (s["group"] == group)].set_index("label")["value"]
                 for v, s in per_version.items()}
        drop_summaries = {v: pd.DataFrame({"label": d.index, "group": group, "metric": DROP_METRIC,
                                           "value": (aligned.reindex(d.index) - d).to_numpy()})
                          for v, d in drops.items()}
        spread = spread_over_versions(drop_summaries).set_index("label")
        values = spread_over_versions(per_version)
        values = values[(values["metric"] == metric) & (values["group"] == group)].set_index("label")
        published = load_published()
        rows = {c.label: c.published_row for c in self.study.configs}
        out = []
        for label in self.study.labels():
            if label not in spread.index or label not in aligned.index:
                continue
            pub = published_value(published, TABLE, rows[label], "all", DROP_METRIC) if rows[label] else None
            out.append({"label": label, "aligned": 100 * aligned[label], "nonaligned": 100 * values.loc[label, "mean"],
                        "nonaligned_std": 100 * values.loc[label, "std"], "drop": 100 * spread.loc[label, "mean"],
                        "drop_std": 100 * spread.loc[label, "std"], "drop_sem": 100 * spread.loc[label, "sem"],
                        "n_versions": int(spread.loc[label, "n_versions"]),
                        "published_drop": float("nan") if pub is None else float(pub)})
        return pd.DataFrame(out)


def run_nonaligned(
    data_root: str | os.PathLike,
    classes: Sequence[str] | None,
    configs: Sequence[ExperimentConfig],
    *,
    n_versions: int,
    out_dir: str | os.PathLike = "data/nonaligned",
    aligned_preprocess: Preprocess | None = None,
    **run_kwargs: Any,
) -> NonAlignedRun:
    """Every configuration on `data_root` (aligned: `aligned_preprocess`, default the paper's 256 ->
    224) and on `n_versions` non-aligned versions (NONALIGNED_PREPROCESS), through one sweep.

    `classes`: None for all. `run_kwargs`: studies.run_study's (results_dir, device, bootstrap, ...).
    """
    from padim_lib.datasets.catalog import list_classes

    chosen = list(classes) if classes else list_classes(data_root)
    roots = [str(p) for p in versions(data_root, out_dir, n_versions, chosen)]
    aligned = [c.replace(preprocess=aligned_preprocess or Preprocess()) for c in configs]
    shifted = [c.replace(preprocess=NONALIGNED_PREPROCESS) for c in configs]
    tasks = make_tasks(data_root, chosen, aligned)
    for root in roots:
        tasks += make_tasks(root, chosen, shifted)
    # the same label on both: the keys differ by preprocessing, and summaries are taken per data root
    study = run_study(TABLE, tasks, [*aligned, *shifted], **run_kwargs)
    return NonAlignedRun(study, str(data_root), roots)


def run_methods(
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None,
    *,
    n_versions: int,
    out_dir: str | os.PathLike,
    padim_backbone: str,
    rd: int | None,
    spade_backbone: str | None,
    vae_params: dict[str, Any] | None,
    vae_pretrained: bool,
    aligned_preprocess: Preprocess,
    spade_params: dict[str, Any] | None = None,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    **run_kwargs: Any,
) -> NonAlignedRun:
    """The chapter's study: `method_configs` on `classes` (studies.class_subset: None = one texture
    and one object, "all" = every class) of `data_root`, aligned and on `n_versions` versions."""
    from padim_lib.paper.study import class_subset

    configs = method_configs(padim_backbone=padim_backbone, rd=rd, spade_backbone=spade_backbone,
                             vae_params=vae_params, vae_pretrained=vae_pretrained, spade_params=spade_params,
                             sigma=sigma, eps=eps, max_train=max_train)
    return run_nonaligned(data_root, class_subset(data_root, classes), configs, n_versions=n_versions,
                          out_dir=out_dir, aligned_preprocess=aligned_preprocess, **run_kwargs)
