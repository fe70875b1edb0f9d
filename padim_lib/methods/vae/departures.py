"""How a VAE configuration departs from the paper's VAE, as rows and sentences a chapter can print.

The paper's VAE (section IV): "a ResNet18 as encoder and a 8x8 convolutional latent variable",
trained per class "with 10 000 images" made by augmentation (rotation +-2 deg, resize 292, random
crop 282, centre crop 256), "100 epochs with the Adam optimizer ... initial learning rate of 1e-4
and a batch size of 32 images"; the map is "the pixel-wise L2 error for reconstruction". It does
not say how the encoder is initialised, nor what the decoder, the latent's channels or the loss
weights are: those are this project's choices and are listed as such, whatever the configuration.

`departures(backbone, pretrained, weights, params)` -> list of `Departure` (what, here, paper,
sentence); `departures_of(config)` reads them from an ExperimentConfig (or anything with
backbone, pretrained, weights, params). A sentence about a short budget appears only when the
configuration trains for fewer optimisation steps than the paper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from padim_lib.features.backbones import BACKBONES
from padim_lib.methods.vae.net import STRIDE

PAPER = {
    "backbone": "resnet18", "epochs": 100, "images_per_epoch": 10_000, "batch_size": 32, "lr": 1e-4,
    "image_size": 256, "aug_resize": 292, "aug_crop": 282, "rotation": 2.0,
}


class Departure(NamedTuple):
    """One way a configuration differs from the paper (or fills in what the paper leaves open)."""

    what: str
    here: str
    paper: str
    sentence: str


def steps(params: Mapping[str, Any]) -> int:
    """Optimisation steps of a training: epochs x ceil(images_per_epoch / batch_size)."""
    return int(params["epochs"]) * math.ceil(int(params["images_per_epoch"]) / int(params["batch_size"]))


PAPER_STEPS = steps(PAPER)  # 100 x 313 = 31,300


def _grid(size: int) -> str:
    return f"{size // STRIDE}x{size // STRIDE}"


def departures(backbone: str, pretrained: bool, weights: str | None, params: Mapping[str, Any]) -> list[Departure]:
    """Every departure of a VAE configuration from the paper's VAE, and the choices the paper leaves
    open, in reading order. `params`: the VAE's method parameters with defaults filled in."""
    p = {**PAPER, **dict(params)}
    out: list[Departure] = []
    if backbone != PAPER["backbone"]:
        out.append(Departure(
            "encoder", backbone, "resnet18",
            f"The encoder is {backbone} (up to its stride-32 stage), a stand-in for the paper's ResNet18: "
            "the network whose ImageNet weights this profile has at hand.",
        ))
    if weights is not None:
        init = f"weights file {weights}"
        why = "a file given by the user"
    elif pretrained:
        init = f"ImageNet ({BACKBONES[backbone].weights})"
        why = "the project's choice"
    else:
        init = "random"
        why = "a random start, asked for with pretrained=False"
    out.append(Departure(
        "encoder weights", init, "not stated",
        f"The encoder starts from {init} weights: {why}; the paper does not say how its encoder was initialised.",
    ))
    size = int(p["image_size"])
    if size != PAPER["image_size"]:
        out.append(Departure(
            "image size and latent grid", f"{size} px, {_grid(size)}", f"256 px, {_grid(256)}",
            f"The VAE works at {size} px, so its latent grid is {_grid(size)}, not the paper's 8x8 at 256 px.",
        ))
    aug = (int(p["aug_resize"]), int(p["aug_crop"]), float(p["rotation"]))
    if aug != (PAPER["aug_resize"], PAPER["aug_crop"], PAPER["rotation"]):
        scaled = (round(size * 292 / 256), round(size * 282 / 256), 2.0)
        how = f"the paper's sizes scaled to {size} px" if aug == scaled else "not the paper's ratios"
        out.append(Departure(
            "augmentation", f"resize {aug[0]}, crop {aug[1]}, rotation {aug[2]:g} deg",
            "resize 292, crop 282, rotation 2 deg",
            f"Augmentation: resize {aug[0]}, random crop {aug[1]}, rotation +-{aug[2]:g} deg ({how}).",
        ))
    if int(p["batch_size"]) != PAPER["batch_size"]:
        out.append(Departure("batch size", str(p["batch_size"]), "32",
                             f"Batch size {p['batch_size']}, not the paper's 32."))
    n = steps(p)
    if (int(p["epochs"]), int(p["images_per_epoch"])) != (PAPER["epochs"], PAPER["images_per_epoch"]) or n != PAPER_STEPS:
        out.append(Departure(
            "training budget", f"{p['epochs']} epochs x {p['images_per_epoch']:,} images = {n:,} steps",
            f"100 epochs x 10,000 images = {PAPER_STEPS:,} steps",
            f"Training: {p['epochs']} epochs over {p['images_per_epoch']:,} augmented images, {n:,} optimisation "
            f"steps in total (the paper: 100 epochs over 10,000 images, {PAPER_STEPS:,} steps).",
        ))
    if n < PAPER_STEPS:
        out.append(Departure(
            "short budget", f"{100 * n / PAPER_STEPS:.2g} % of the paper's steps", "100 %",
            f"That is {100 * n / PAPER_STEPS:.2g} % of the paper's optimisation steps: this VAE is trained far less "
            "than the paper's, so its figures describe this short training, not the paper's VAE.",
        ))
    if float(p["lr"]) != PAPER["lr"]:
        out.append(Departure("learning rate", f"{p['lr']:g}", "1e-4", f"Learning rate {p['lr']:g}, not 1e-4."))
    if p.get("amp"):
        out.append(Departure("precision", "bfloat16 autocast", "not stated",
                             "The network runs under bfloat16 autocast (mixed precision)."))
    z = p.get("latent_channels", "?")
    beta = p.get("beta", "?")
    out.append(Departure(
        "left open by the paper", f"decoder, {z} latent channels, beta {beta}", "not stated",
        f"Not given by the paper and chosen here: the decoder (mirrored widths, nearest upsampling), {z} latent "
        f"channels, the loss (summed squared error + {beta} x KL), the paper's \"10 000 images\" read as one "
        "augmented set made once and reused every epoch, and the image score (the map's maximum).",
    ))
    return out


def departures_of(config: Any) -> list[Departure]:
    """`departures` of an ExperimentConfig of method "vae" (its params hold every VAE parameter)."""
    return departures(config.backbone, config.pretrained, config.weights, config.params)
