"""PaDiM against the paper's baselines: which configurations make the comparison, their roles, a run.

The paper's "Localization vs other methods" table sets four models side by side on MVTec AD
(pixel AUROC and PRO per group; image AUROC appears in its detection table). Here each is a
configuration with a role, so a chapter reads the same on any backbone:

- "vae": the VAE baseline (ResNet18 encoder; random-init when ImageNet weights are not at hand);
- "spade": SPADE (the paper: Wide-ResNet-50-2);
- "padim_small": PaDiM-R18-Rd100 (ResNet18, 100 of 448 dimensions at random);
- "padim_large": PaDiM-WR50-Rd550 (Wide-ResNet-50-2, 550 of 1792 dimensions at random).

On another backbone (the embedded profile's EfficientNet-Lite0) the PaDiM models keep the
paper's *ratios* d / D (100/448 and 550/1792), so "padim_small" and "padim_large" differ there
only in d. Every configuration is labelled after what it runs ("PaDiM-Lite0-Rd39") and keeps the
published row it stands for (`published_row`). `run_comparison` computes (or reads from the
result cache) every class x configuration through padim_lib.engine.sweep, like `tables.run_table`, and
returns a `ComparisonRun`: a `tables.TableRun` whose rows are addressed by these roles.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from padim_lib.datasets import Preprocess, category_kinds
from padim_lib.engine import studyfile as study
from padim_lib.engine import sweep
from padim_lib.engine import task as experiments
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.features.backbones import embedding_size, resolve_layers
from padim_lib.paper import stats
from padim_lib.paper.tables import BACKBONE_SHORT, PAPER_PREPROCESS, TableRun, as_list, comparability

TABLE = "Localization"  # published.csv's table of the comparison
ROLES: dict[str, str] = {
    "vae": "the VAE: reconstruction error of a per-class variational auto-encoder",
    "spade": "SPADE: k nearest neighbours of pooled and of pixel features",
    "padim_small": "PaDiM-R18-Rd100: the small PaDiM",
    "padim_large": "PaDiM-WR50-Rd550: the large PaDiM",
}
PUBLISHED_ROWS = {"vae": "VAE", "spade": "SPADE (WR50)", "padim_small": "PaDiM-R18-Rd100",
                  "padim_large": "PaDiM-WR50-Rd550"}
ROLE_OF_ROW = {row: role for role, row in PUBLISHED_ROWS.items()}
# The paper's models: (backbone, d, D of its three default layers).
PAPER_PADIM = {"padim_small": ("resnet18", 100, 448), "padim_large": ("wide_resnet50_2", 550, 1792)}
PAPER_VAE = {"epochs": 100, "images_per_epoch": 10_000, "image_size": 256}
# Further published tables with figures for these models, and what their rows are called there.
OTHER_SOURCES: tuple[tuple[str, dict[str, str]], ...] = (
    ("Image AUROC", {"SPADE (WR50)": "SPADE"}),  # image AUROC, all classes
    ("Per-class pixel AUROC", {}),  # PaDiM-WR50-Rd550 per class
)


def config_role(config: ExperimentConfig) -> str:
    """The role (see ROLES) of a configuration made by `comparison_configs`, from its published row."""
    role = ROLE_OF_ROW.get(config.published_row)
    if role is None:
        raise PadimError(f"configuration {config.label!r}: published_row={config.published_row!r}; "
                         f"expected one of {sorted(ROLE_OF_ROW)}")
    return role


def rd_at_paper_ratio(role: str, backbone: str, layers: Sequence[str] | None = None) -> int:
    """d for `backbone` at the paper's ratio d / D of the PaDiM model `role` (e.g. Lite0: 100/448 of 176 = 39)."""
    if role not in PAPER_PADIM:
        raise PadimError(f"role={role!r}; expected one of {sorted(PAPER_PADIM)}")
    _, d, total = PAPER_PADIM[role]
    size = embedding_size(backbone, resolve_layers(backbone, layers))
    return max(1, min(size - 1, round(d * size / total)))


def vae_params(epochs: int, images_per_epoch: int, image_size: int = 256, batch_size: int = 32) -> dict[str, Any]:
    """The VAE's method parameters; the augmentation's sizes keep the paper's ratios to image_size
    (292 and 282 for 256), so a smaller VAE sees the same field of view."""
    return {"epochs": int(epochs), "images_per_epoch": int(images_per_epoch), "image_size": int(image_size),
            "batch_size": int(batch_size), "aug_resize": round(image_size * 292 / 256),
            "aug_crop": round(image_size * 282 / 256)}


def comparison_configs(
    *,
    small_backbone: str = "resnet18",
    large_backbone: str = "wide_resnet50_2",
    spade_backbone: str = "wide_resnet50_2",
    small_d: int | None = None,
    large_d: int | None = None,
    spade: Mapping[str, Any] | None = None,
    vae: Mapping[str, Any] | None = None,
    vae_pretrained: bool = True,
    seed: int = 0,
    **common: Any,
) -> list[ExperimentConfig]:
    """The four configurations, in ROLES order. `small_d` / `large_d`: None = the paper's ratio on the
    backbone (`rd_at_paper_ratio`). `spade` / `vae`: method parameters (e.g. `vae_params(...)`).
    `common`: ExperimentConfig fields shared by all (preprocess, sigma, eps, max_train). The VAE does
    not read eps; it always runs on ResNet18 (`vae_pretrained=False`: a random-init encoder)."""
    dims = {"padim_small": small_d, "padim_large": large_d}
    backbones = {"padim_small": small_backbone, "padim_large": large_backbone}
    padims = []
    for role in ("padim_small", "padim_large"):
        backbone = backbones[role]
        d = rd_at_paper_ratio(role, backbone) if dims[role] is None else int(dims[role])
        label = f"PaDiM-{BACKBONE_SHORT.get(backbone, backbone)}-Rd{d}"
        padims.append(ExperimentConfig(method="padim", backbone=backbone, reduce=f"random:{d}", seed=seed, label=label,
                                       published_row=PUBLISHED_ROWS[role], **common))
    if padims[0].label == padims[1].label:
        raise PadimError(f"small_d / large_d: both PaDiM models are {padims[0].label}; give them different sizes")
    no_eps = {k: v for k, v in common.items() if k != "eps"}
    spade_cfg = ExperimentConfig(method="spade", backbone=spade_backbone, params=dict(spade or {}),
                                 label=f"SPADE ({BACKBONE_SHORT.get(spade_backbone, spade_backbone)})",
                                 published_row=PUBLISHED_ROWS["spade"], **no_eps)
    vae_cfg = ExperimentConfig(method="vae", backbone="resnet18", params=dict(vae or {}), seed=seed,
                               pretrained=vae_pretrained, label="VAE" if vae_pretrained else "VAE (random-init R18)",
                               published_row=PUBLISHED_ROWS["vae"],
                               **{k: v for k, v in no_eps.items() if k != "pretrained"})  # vae_pretrained says
    return [vae_cfg, spade_cfg, *padims]


class ComparisonRun(TableRun):
    """A `TableRun` of the method comparison: rows by role ("vae", "spade", "padim_small",
    "padim_large"); published figures from the Localization table, and where it has none, from
    the detection table (image AUROC) and the per-class pixel AUROC of PaDiM-WR50-Rd550."""

    def roles(self) -> list[str]:
        present = {config_role(c) for c in self.configs}
        return [r for r in ROLES if r in present]

    def _configs(self, role: str | None, dim: int | None = None) -> list[ExperimentConfig]:
        if role is not None and role not in ROLES:
            raise PadimError(f"{self.table}: role={role!r}; expected one of {list(ROLES)}")
        if dim is not None:
            raise PadimError(f"{self.table}: dim= does not apply to the method comparison")
        return [c for c in self.configs if role is None or config_role(c) == role]

    def comparison(self, summary: pd.DataFrame | None = None) -> pd.DataFrame:
        """stats.compare_published against every published source of these models (percent)."""
        summary = self.summary() if summary is None else summary
        out = stats.compare_published(summary, TABLE, comparable=self.comparable)
        for table, rename in OTHER_SOURCES:
            other = stats.compare_published(summary.assign(published_row=summary["published_row"].replace(rename)),
                                            table, comparable=self.comparable)
            fill = out["published"].isna() & other["published"].notna()
            for col in ("published", "difference", "source", "note"):
                out.loc[fill, col] = other.loc[fill, col]
        return out

    def published(self) -> pd.DataFrame:
        """The published figures of these models as (group, label, metric, value as a fraction)."""
        cmp = self.comparison().dropna(subset=["published"])
        return pd.DataFrame({"group": cmp["group"], "label": cmp["label"], "metric": cmp["metric"],
                             "value": cmp["published"] / 100}).drop_duplicates().reset_index(drop=True)

    def task(self, role: str, category: str) -> experiments.Task:
        """The task of `role` on `category` (the lowest seed)."""
        label = self.label(role)
        tasks = [t for t in self.tasks if t.config.label == label and t.category == category]
        if not tasks:
            raise PadimError(f"no task for {label!r} and class {category!r}; classes: {self.classes}")
        return min(tasks, key=lambda t: t.config.seed)


def pick_classes(data_root: str | os.PathLike, classes: Sequence[str] | str | None,
                 per_kind: int | None) -> list[str] | None:
    """`classes` (None/"all": every class under data_root), cut to the first `per_kind` textures
    and objects (None: all of them), in the data set's order."""
    chosen = as_list(classes)
    if per_kind is None:
        return chosen
    if isinstance(per_kind, bool) or not isinstance(per_kind, int) or per_kind < 1:
        raise PadimError(f"per_kind={per_kind!r}; expected an integer >= 1 or None")
    kinds = category_kinds(data_root)
    names = [c for c in kinds if chosen is None or c in chosen]
    out, counts = [], {}
    for name in names:
        kind = kinds[name]
        if counts.get(kind, 0) < per_kind:
            out.append(name)
            counts[kind] = counts.get(kind, 0) + 1
    return out


def run_comparison(
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None = None,
    *,
    preprocess: Preprocess = PAPER_PREPROCESS,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
    scheduler: str | None = None,
    bootstrap: int = 200,
    torch_threads: int | None = None,
    progress: bool = True,
    workers: int | str = "auto",
    **models: Any,
) -> ComparisonRun:
    """Compute (or read from the result cache) the method comparison on `data_root`.

    `models`: `comparison_configs`' arguments (backbones, dims, spade / vae parameters,
    vae_pretrained, seed). Tasks and cache as in `tables.run_table`.
    """
    configs = comparison_configs(preprocess=preprocess, sigma=sigma, eps=eps, max_train=max_train, **models)
    chosen = as_list(classes)
    tasks = study.make_tasks(data_root, "all" if chosen is None else chosen, configs)
    if progress:
        names = list(dict.fromkeys(t.category for t in tasks))
        print(f"{TABLE}: {len(tasks)} tasks ({len(configs)} configurations x {len(names)} classes: "
              f"{', '.join(names)})", flush=True)
    rows = sweep.run(tasks, results_dir, scheduler=scheduler, device=device, bootstrap=bootstrap,
                     torch_threads=torch_threads, progress=progress, workers=1 if scheduler else workers)
    ok, reasons = comparison_comparability(data_root, chosen, configs, preprocess=preprocess, max_train=max_train)
    return ComparisonRun(TABLE, configs, tasks, experiments.label_rows(rows, configs), Path(results_dir), ok, reasons)


def comparison_comparability(
    data_root: str | os.PathLike,
    classes: Sequence[str] | None,
    configs: Sequence[ExperimentConfig],
    *,
    preprocess: Preprocess = PAPER_PREPROCESS,
    max_train: int | None = None,
) -> tuple[bool, list[str]]:
    """`tables.comparability`'s data / classes / preprocessing reasons, plus each model that is not
    the paper's (backbone, d, the VAE's encoder weights and training budget)."""
    _, reasons = comparability(data_root, "resnet18", classes if classes is None else list(classes),
                               preprocess=preprocess, max_train=max_train)
    paper_backbone = {"vae": "resnet18", "spade": "wide_resnet50_2", "padim_small": "resnet18",
                      "padim_large": "wide_resnet50_2"}
    for c in configs:
        role = config_role(c)
        if c.backbone != paper_backbone[role]:
            reasons.append(f"{c.label} stands in for {c.published_row} (backbone {c.backbone})")
        elif role in PAPER_PADIM and c.reduce != f"random:{PAPER_PADIM[role][1]}":
            reasons.append(f"{c.label} stands in for {c.published_row} ({c.reduce})")
        if role == "vae":
            if not c.pretrained:
                reasons.append("the VAE's ResNet18 encoder starts from random weights, not ImageNet's")
            short = {k: c.params[k] for k, v in PAPER_VAE.items() if c.params.get(k) != v}
            if short:
                reasons.append("the VAE is trained with " + ", ".join(f"{k}={v}" for k, v in short.items())
                               + " (the paper: " + ", ".join(f"{k}={PAPER_VAE[k]}" for k in short) + ")")
    return not reasons, reasons


# ----------------------------------------------------------------------------- the VAE, looked at


def fitted_vae(run: ComparisonRun, category: str, device: str = "cpu"):
    """The VAE of `category` as the run trained it: rebuilt from the training's last checkpoint (the
    sweep keeps one per task under <results_dir>/features/checkpoints), so no epoch is re-run."""
    from padim_lib.datasets import open_dataset

    task = run.task("vae", category)
    vae = task.detector(device=device)
    folder = Path(run.results_dir).resolve() / "features" / "checkpoints" / task.key()
    if not folder.is_dir():
        raise PadimError(f"no VAE checkpoint for {category!r} in {folder}; run the comparison first")
    vae.set_params(checkpoint_dir=str(folder))
    train = open_dataset(task.data_root, category, "train", vae.training_preprocess(task.config.preprocess))
    return vae.fit(train)


def reconstructions(run: ComparisonRun, category: str, device: str = "cpu") -> dict[str, Any]:
    """The run's example test images of `category` and the VAE's reconstructions of them:
    {"inputs", "outputs": (k, S, S, 3) float in [0, 1], "titles"} (S: the VAE's image_size)."""
    import torch

    from padim_lib.datasets import denormalize, open_dataset

    art = run.artifacts(run.label("vae"), category)
    index = [int(i) for i in art["example_index"]]
    task = run.task("vae", category)
    test = open_dataset(task.data_root, category, "test", task.config.preprocess)
    images = torch.stack([test[i]["image"] for i in index])
    x, recon = fitted_vae(run, category, device).reconstruct(images)

    def show(t):
        return torch.stack([denormalize(v) for v in t]).clamp(0, 1).permute(0, 2, 3, 1).numpy()

    return {"inputs": show(x), "outputs": show(recon), "titles": [str(art["defect_types"][i]) for i in index]}


def side_by_side(run: ComparisonRun, category: str) -> dict[str, Any]:
    """The example test images of `category` with every role's anomaly map (the same images for all:
    `experiments.example_indices` depends on the test set only): {"images", "masks", "maps":
    {label: (k, S, S)}, "titles"}."""
    import numpy as np

    maps, base = {}, None
    for role in run.roles():
        art = run.artifacts(run.label(role), category)
        if base is None:
            base = art
        elif not np.array_equal(art["example_index"], base["example_index"]):
            raise PadimError(f"{category}: the methods' example images differ; re-run the comparison")
        maps[run.label(role)] = art["example_maps"].astype(np.float32)
    assert base is not None
    return {"images": base["example_images"].astype(np.float32) / 255.0, "masks": base["example_masks"],
            "maps": maps, "titles": [str(base["defect_types"][i]) for i in base["example_index"]]}


# ----------------------------------------------------------------------------- claims


def claim_rows(run: ComparisonRun) -> pd.DataFrame:
    """The run's rows for `claims.evaluate_claims`, also under the row names the other published
    tables use (SPADE (WR50) is "SPADE" in the detection table), so every claim finds its rows."""
    rows = run.rows()
    extra = [rows[rows["published_row"] == old].assign(published_row=new)
             for _, rename in OTHER_SOURCES for old, new in rename.items()]
    return pd.concat([rows, *extra], ignore_index=True)


def comparison_claims(all_claims: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The claims (claims.yaml) about this comparison: those whose configurations are all among
    the four models, in the Localization table or the other sources."""
    from padim_lib.paper.claims import claim_configs, load_claims

    names = set(PUBLISHED_ROWS.values()) | {new for _, rename in OTHER_SOURCES for new in rename.values()}
    tables = {TABLE} | {t for t, _ in OTHER_SOURCES}
    return [dict(c) for c in (load_claims() if all_claims is None else all_claims)
            if c["table"] in tables and set(claim_configs(c)) <= names]
