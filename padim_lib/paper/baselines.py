"""PaDiM against the paper's baselines as a Study: which configurations make the comparison, their roles.

The paper's "Localization vs other methods" table sets four models side by side on MVTec AD
(pixel AUROC and PRO per group; image AUROC appears in its detection table). Here each is a
configuration with a role, so a chapter reads the same on any backbone:

- "vae": the VAE baseline (the paper: a ResNet18 encoder);
- "spade": SPADE (the paper: Wide-ResNet-50-2);
- "padim_small": PaDiM-R18-Rd100 (ResNet18, 100 of 448 dimensions at random);
- "padim_large": PaDiM-WR50-Rd550 (Wide-ResNet-50-2, 550 of 1792 dimensions at random).

On another backbone (the embedded profile's EfficientNet-Lite0) the PaDiM models keep the
paper's *ratios* d / D (`catalog.rd_at_paper_ratio`), so "padim_small" and "padim_large" differ
there only in d. Every configuration is labelled after what it runs ("PaDiM-Lite0-Rd39") and keeps
the published row it stands for (`published_row`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.paper.catalog import catalogue, paper_model, rd_at_paper_ratio, short_name, vae_label
from padim_lib.paper.run import StudyRun
from padim_lib.paper.study import MAIN, DataVersion, Entry, Study, per_kind

TABLE = "Localization"  # published.csv's table of the comparison
ROLES: dict[str, str] = {
    "vae": "the VAE: reconstruction error of a per-class variational auto-encoder",
    "spade": "SPADE: k nearest neighbours of pooled and of pixel features",
    "padim_small": "PaDiM-R18-Rd100: the small PaDiM",
    "padim_large": "PaDiM-WR50-Rd550: the large PaDiM",
}
ROWS = {"vae": "VAE", "spade": "SPADE (WR50)", "padim_small": "PaDiM-R18-Rd100", "padim_large": "PaDiM-WR50-Rd550"}
# Further published tables with figures for these models, and what their rows are called there.
OTHER_TABLES: tuple[tuple[str, dict[str, str]], ...] = (
    ("Image AUROC", {"SPADE (WR50)": "SPADE"}),  # image AUROC, all classes
    ("Per-class pixel AUROC", {}),  # PaDiM-WR50-Rd550 per class
)


def paper_vae() -> dict[str, Any]:
    """The paper's VAE training parameters (catalogue)."""
    return dict(catalogue()["models"]["VAE"].params)


def vae_params(epochs: int, images_per_epoch: int, image_size: int = 256, batch_size: int = 32) -> dict[str, Any]:
    """The VAE's method parameters; the augmentation's sizes keep the paper's ratios to image_size
    (292 and 282 for 256), so a smaller VAE sees the same field of view."""
    paper = paper_vae()
    return {"epochs": int(epochs), "images_per_epoch": int(images_per_epoch), "image_size": int(image_size),
            "batch_size": int(batch_size), "aug_resize": round(image_size * paper["aug_resize"] / paper["image_size"]),
            "aug_crop": round(image_size * paper["aug_crop"] / paper["image_size"])}


def comparison_configs(
    *,
    small_backbone: str = "resnet18",
    large_backbone: str = "wide_resnet50_2",
    spade_backbone: str = "wide_resnet50_2",
    small_d: int | None = None,
    large_d: int | None = None,
    spade: Mapping[str, Any] | None = None,
    vae: Mapping[str, Any] | None = None,
    vae_backbone: str = "resnet18",
    vae_pretrained: bool = True,
    seed: int = 0,
    **common: Any,
) -> dict[str, ExperimentConfig]:
    """Role -> configuration, in ROLES order. `small_d` / `large_d`: None = the paper's ratio on the
    backbone. `spade` / `vae`: method parameters (e.g. `vae_params(...)`). `common`: ExperimentConfig
    fields shared by all (preprocess, sigma, eps, max_train, pretrained). The VAE does not read eps; its
    encoder is `vae_backbone` (the paper: ResNet18; another network is labelled a stand-in), with
    ImageNet weights only when both `vae_pretrained` and `common`'s `pretrained` (default True) say
    so (`vae_pretrained=False`: a random-init encoder)."""
    out: dict[str, ExperimentConfig] = {}
    no_eps = {k: v for k, v in common.items() if k != "eps"}
    vae_pretrained = bool(vae_pretrained and common.get("pretrained", True))
    out["vae"] = ExperimentConfig(method="vae", backbone=vae_backbone, params=dict(vae or {}), seed=seed,
                                  pretrained=vae_pretrained, label=vae_label(vae_backbone, vae_pretrained),
                                  published_row=ROWS["vae"], **{k: v for k, v in no_eps.items() if k != "pretrained"})
    out["spade"] = ExperimentConfig(method="spade", backbone=spade_backbone, params=dict(spade or {}),
                                    label=f"SPADE ({short_name(spade_backbone)})", published_row=ROWS["spade"], **no_eps)
    for role, backbone, d in (("padim_small", small_backbone, small_d), ("padim_large", large_backbone, large_d)):
        d = rd_at_paper_ratio(ROWS[role], backbone) if d is None else int(d)
        out[role] = ExperimentConfig(method="padim", backbone=backbone, reduce=f"random:{d}", seed=seed,
                                     label=f"PaDiM-{short_name(backbone)}-Rd{d}", published_row=ROWS[role], **common)
    if out["padim_small"].label == out["padim_large"].label:
        raise PadimError(f"small_d / large_d: both PaDiM models are {out['padim_small'].label}; give them different sizes")
    return out


def baselines(
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None = None,
    *,
    classes_per_kind: int | None = None,
    small_backbone: str = "resnet18",
    large_backbone: str = "wide_resnet50_2",
    spade_backbone: str = "wide_resnet50_2",
    small_d: int | None = None,
    large_d: int | None = None,
    spade_k: int = 50,
    spade_gallery: int = 50,
    spade_kappa: int = 1,
    vae_backbone: str = "resnet18",
    vae_pretrained: bool = True,
    vae_epochs: int = 100,
    vae_images_per_epoch: int = 10_000,
    vae_image_size: int = 256,
    vae_batch_size: int = 32,
    seed: int = 0,
    resize: int = 256,
    crop: int | None = 224,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    pretrained: bool = True,
) -> Study:
    """The method comparison on `classes` of `data_root` (cut to the first `classes_per_kind`
    textures and objects; None: all). `pretrained=False`: random weights for every network, the
    VAE's encoder too (a dry run: the numbers mean nothing)."""
    configs = comparison_configs(
        small_backbone=small_backbone, large_backbone=large_backbone, spade_backbone=spade_backbone,
        small_d=small_d, large_d=large_d, seed=seed, vae_backbone=vae_backbone, vae_pretrained=vae_pretrained,
        spade={"k": spade_k, "n_gallery": spade_gallery, "kappa": spade_kappa},
        vae=vae_params(vae_epochs, vae_images_per_epoch, vae_image_size, vae_batch_size),
        preprocess=Preprocess(resize=resize, crop=crop), sigma=sigma, eps=eps, max_train=max_train,
        pretrained=pretrained)
    chosen = per_kind(data_root, classes, classes_per_kind)
    return Study(name="baselines", table=TABLE, roles=ROLES,
                 entries=tuple(Entry(role, c) for role, c in configs.items()),
                 versions=(DataVersion(MAIN, str(data_root)),), classes=tuple(chosen) if chosen else None,
                 other_tables=OTHER_TABLES)


def undertrained(config: ExperimentConfig) -> bool:
    """Whether a VAE configuration trains on less than the paper's budget or from random weights."""
    paper = paper_model(TABLE, ROWS["vae"])
    assert paper is not None
    budget = ("epochs", "images_per_epoch", "image_size")
    return (not config.pretrained) or any(config.params.get(k, 0) < paper.params[k] for k in budget)


# ----------------------------------------------------------------------------- the VAE, looked at


def fitted_vae(run: StudyRun, category: str, device: str = "cpu"):
    """The VAE of `category` as the run trained it: rebuilt from the training's last checkpoint (the
    sweep keeps one per task under <results_dir>/features/checkpoints), so no epoch is re-run."""
    task = run.task("vae", category)
    vae = task.detector(device=device)
    folder = Path(run.results_dir).resolve() / "features" / "checkpoints" / task.key()
    if not folder.is_dir():
        raise PadimError(f"no VAE checkpoint for {category!r} in {folder}; run the comparison first")
    vae.use_work_dir(folder)
    return vae.fit(vae.training_data(task.data_root, category, task.config.preprocess))


def reconstructions(run: StudyRun, category: str, device: str = "cpu") -> dict[str, Any]:
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


def side_by_side(run: StudyRun, category: str) -> dict[str, Any]:
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
