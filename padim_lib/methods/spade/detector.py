"""SPADE (Cohen & Hoshen, 2020) as the PaDiM paper reproduced it: k-NN on pretrained deep features.

Shapes: N training images; pixel layers (finest first) with maps (B, C_l, h_l, w_l); the global
layer's map average-pooled to (B, C_g).

* Image score: mean Euclidean distance from the test image's average-pooled global feature to
  its k nearest training images' (k = 50, the SPADE paper's value).
* Pixel map: the K nearest training images in that same global space (K = 50 by default) form the
  gallery; each test position's score is the mean distance to its kappa nearest gallery pixel
  features (kappa = 1: the nearest). The grid is upsampled bicubically to the image size and
  smoothed with a Gaussian of sigma = 4, as PaDiM's (padim_lib.methods.postprocess.anomaly_maps).
* k or K larger than the training set: capped at its size, with a warning naming both numbers
  (the SPADE paper's k = 50 exceeds some small classes; capping keeps the method usable there).

Pixel distances, `layer_mode`:
* "concat" (default): distances between the aligned, concatenated layer 1-3 features. The SPADE
  paper describes one feature pyramid (features of several resolutions concatenated per
  location) and the PaDiM paper says it reproduced SPADE "as described in the original
  publication", so this is the reading of the published text.
* "sum": per-layer nearest-neighbour distances, each grid upsampled and smoothed, the maps summed.
  The most-used public SPADE code takes the mean of the per-layer maps instead: the mean is the
  sum divided by the number of layers, so rankings, AUROC and PRO are the same.

The gallery is kept at each layer's own resolution, float32, position-major (N, h_l, w_l, C_l):
with WR50 on MVTec AD (~250 training images of a class) about 1.4 GB, the paper's figure. The
distances are computed in bounded blocks (padim_lib.methods.spade.knn), never as one all-pairs matrix.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from padim_lib.errors import PadimError
from padim_lib.io import modelfile
from padim_lib.methods.base import FeatureDetector
from padim_lib.methods.params import Param, at_least, check_layer_mode, check_sigma
from padim_lib.methods.postprocess import anomaly_maps
from padim_lib.methods.registry import method
from padim_lib.methods.spade import knn
from padim_lib.methods.streams import layer_maps, progress_bar

FORMAT = "padim_lib.spade"
FORMAT_VERSION = 1

FeatureBatch = Mapping[str, torch.Tensor]


def default_global_layer(backbone: str) -> str:
    """The deepest layer the backbone names (BackboneSpec.channels is ordered shallow to deep):
    layer4 for the ResNets, _blocks.15 (the last MBConv block) for efficientnet_lite0, features.8
    (the 2048-channel head) for efficientnet_b5."""
    from padim_lib.features.backbones import BACKBONES

    return list(BACKBONES[backbone].channels)[-1]


@method(
    "spade",
    file_format=FORMAT,
    reads=("layers", "layer_mode"),
    params={
        "k": Param((int,), "image score: mean distance to the k nearest training images (pooled global "
                   "features); capped at the training-set size", at_least(1)),
        "n_gallery": Param((int,), "K: the pixel gallery is the feature maps of the K nearest training "
                           "images; capped at the training-set size", at_least(1)),
        "kappa": Param((int,), "pixel score: mean distance to the kappa nearest gallery pixel features "
                       "(1 = the nearest)", at_least(1)),
        "global_layer": Param((str,), "layer average-pooled for the image k-NN; None = the backbone's "
                              "deepest layer", none_ok=True),
    },
    description="SPADE: k-NN on pooled deep features, pixel k-NN over the K nearest training images' "
    "feature maps (Cohen & Hoshen 2020)",
)
class SPADE(FeatureDetector):
    """SPADE anomaly detector (sklearn-style: parameters as given, validated in fit).

    backbone: a name from padim_lib.features.backbones.BACKBONES; layers: pixel layers, None = the backbone's
    default layers; layer_mode: "concat" | "sum" (see the module docstring); global_layer: the layer
    average-pooled for the image k-NN, None = the backbone's deepest. k: image neighbours; n_gallery
    (the paper's K): training images whose pixel features form the gallery; kappa: pixel neighbours
    averaged. sigma: map smoothing (0 = none). max_train: use the first N training images.
    meta: JSON-able dict the caller may fill; saved and loaded verbatim.
    """

    fitted_attribute = "gallery_"

    def __init__(
        self,
        backbone: str = "wide_resnet50_2",
        layers: Sequence[str] | None = None,
        layer_mode: str = "concat",
        global_layer: str | None = None,
        k: int = 50,
        n_gallery: int = 50,
        kappa: int = 1,
        sigma: float = 4.0,
        device: str = "auto",
        batch_size: int = 16,
        max_train: int | None = None,
        pretrained: bool = True,
        weights: str | os.PathLike | None = None,
        channels_last: bool = True,
        backbone_dtype: str = "float32",
        progress: bool = True,
        meta: dict | None = None,
    ):
        self.backbone = backbone
        self.layers = layers
        self.layer_mode = layer_mode
        self.global_layer = global_layer
        self.k = k
        self.n_gallery = n_gallery
        self.kappa = kappa
        self.sigma = sigma
        self.device = device
        self.batch_size = batch_size
        self.max_train = max_train
        self.pretrained = pretrained
        self.weights = weights
        self.channels_last = channels_last
        self.backbone_dtype = backbone_dtype
        self.progress = progress
        self.meta = meta

    # ----------------------------------------------------------------- parameters
    def _check_params(self) -> None:
        """Validate the parameters; set layers_, global_layer_, device_. Errors name the parameter."""
        from padim_lib.features.backbones import BACKBONES, resolve_layers

        layers = resolve_layers(self.backbone, self.layers)  # the rules every detector and the config share
        glob = default_global_layer(self.backbone) if self.global_layer is None else self.global_layer
        if glob not in BACKBONES[self.backbone].channels:
            raise PadimError(f"global_layer={glob!r}: backbone {self.backbone!r} has no such layer; "
                             f"expected names among {list(BACKBONES[self.backbone].channels)}")
        check_layer_mode(self.layer_mode)
        for name in ("k", "n_gallery", "kappa"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise PadimError(f"{name}={value!r}; expected an integer >= 1")
        check_sigma(self.sigma)
        self._check_common()
        self.layers_ = layers
        self.global_layer_ = glob

    def feature_layers(self) -> tuple[str, ...]:
        """The pixel layers, then the global layer (once, if it is also a pixel layer)."""
        self._check_params()
        return tuple(dict.fromkeys((*self.layers_, self.global_layer_)))

    def _fit_stream(self, batches: Iterable[FeatureBatch]) -> None:
        parts: list[list[torch.Tensor]] = [[] for _ in self.layers_]
        pooled: list[torch.Tensor] = []
        count = 0
        with torch.no_grad():
            for feats in progress_bar(batches, "SPADE fit", self.progress):
                if self.max_train is not None and count >= self.max_train:
                    break
                take = None if self.max_train is None else self.max_train - count
                maps = [m[:take] for m in self._pixel_maps(feats, parts)]
                glob = layer_maps(feats, (self.global_layer_,))[0][:take]
                for part, m in zip(parts, maps, strict=True):
                    # Position-major (B, h, w, C): a gallery image's pixel features are one (P, C) block.
                    part.append(m.to(self.device_, torch.float32).permute(0, 2, 3, 1).contiguous())
                pooled.append(glob.to(self.device_, torch.float32).mean(dim=(2, 3)))
                count += glob.shape[0]
        if count < 1:
            raise PadimError("fit needs at least 1 training image, got none")
        gallery = []
        for i in range(len(parts)):  # one layer at a time: the transient copy is one layer's
            gallery.append(torch.cat(parts[i]))
            parts[i] = []
        self._set_state(gallery, torch.cat(pooled))

    def _pixel_maps(self, feats: FeatureBatch, parts: Sequence[Sequence[torch.Tensor]]) -> list[torch.Tensor]:
        """The pixel layers' maps of a batch, checked: finest first, same grids as the gallery's."""
        from padim_lib.features.extractor import check_layer_maps

        maps = layer_maps(feats, self.layers_)
        check_layer_maps(maps)
        if parts and parts[0]:
            for name, m, part in zip(self.layers_, maps, parts, strict=True):
                if tuple(m.shape[1:]) != (part[0].shape[3], *part[0].shape[1:3]):
                    raise PadimError(
                        f"features of layer {name!r} are {tuple(m.shape[1:])} but earlier training batches "
                        f"were {(part[0].shape[3], *part[0].shape[1:3])}; all training images must have one size"
                    )
        return maps

    def _set_state(self, gallery: list[torch.Tensor], pooled: torch.Tensor) -> None:
        """Fitted state from the gallery [(N, h_l, w_l, C_l)] and the pooled features (N, C_g);
        caps k and K at N (with a warning) and checks kappa against the gallery's size."""
        n = pooled.shape[0]
        grids = [tuple(g.shape[1:3]) for g in gallery]
        n_gallery = min(self.n_gallery, n)
        candidates = n_gallery * min(h * w for h, w in (grids[:1] if self.layer_mode == "concat" else grids))
        if self.kappa > candidates:  # checked before any state is set: a failed fit leaves none
            raise PadimError(
                f"kappa={self.kappa} is larger than the {candidates} pixel features of the gallery "
                f"({n_gallery} images); expected kappa <= {candidates}"
            )
        for name, value in (("k", self.k), ("n_gallery", self.n_gallery)):
            if value > n:
                warnings.warn(
                    f"{name}={value} is larger than the {n} training images; using {name}={n}", stacklevel=4
                )
        self.k_, self.n_gallery_ = min(self.k, n), n_gallery
        self.gallery_ = gallery
        self.gallery_sq_ = [g.flatten(1, 2).pow(2).sum(-1) for g in gallery]  # (N, P_l)
        self.global_ = pooled
        self.grids_ = grids
        self.n_train_ = n

    def fitted_statistics(self) -> list[Any]:
        return [*self.gallery_, self.global_]  # the stored training features (gallery_sq_ is derived)

    # ----------------------------------------------------------------- predict
    def _batch(self, feats: FeatureBatch, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, H, W) and scores (B,) of one feature batch."""
        maps = [m.to(self.device_, torch.float32) for m in layer_maps(feats, self.layers_)]
        grids = [tuple(m.shape[2:]) for m in maps]
        if grids != self.grids_:
            raise PadimError(
                f"feature grids {grids} differ from the {self.grids_} the model was fitted on; "
                "predict on images of the size used for fitting"
            )
        pooled = layer_maps(feats, (self.global_layer_,))[0].to(self.device_, torch.float32).mean(dim=(2, 3))
        dist, index = knn.image_knn(pooled, self.global_, max(self.k_, self.n_gallery_))
        scores = dist[:, : self.k_].mean(dim=1)
        budget = knn.block_bytes(self.device_)
        gallery = [g.flatten(1, 2) for g in self.gallery_]  # (N, P_l, C_l) views
        # One distance grid per map to smooth: the concatenation's, or each layer's ("sum").
        out_grids = grids[:1] if self.layer_mode == "concat" else grids
        dists: list[list[torch.Tensor]] = [[] for _ in out_grids]  # per grid, (P_l,) per image
        for i in range(len(pooled)):
            xs = [m[i].flatten(1).T for m in maps]  # (P_l, C_l)
            near = index[i, : self.n_gallery_]
            if self.layer_mode == "concat":
                d = [knn.pixel_distances_concat(xs, grids, gallery, self.gallery_sq_, near, self.kappa, budget)]
            else:
                d = knn.pixel_distances_per_layer(xs, gallery, self.gallery_sq_, near, self.kappa, budget)
            for acc, dl in zip(dists, d, strict=True):
                acc.append(dl)
        total = None
        for acc, grid in zip(dists, out_grids, strict=True):
            m = anomaly_maps(torch.stack(acc).view(-1, *grid), size, float(self.sigma))
            total = m if total is None else total.add_(m)
        return total, scores

    def _predict_stream(self, batches: Iterable[FeatureBatch], size: tuple[int, int] | None
                        ) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = [], []
        with torch.no_grad():
            for feats in progress_bar(batches, "SPADE predict", self.progress):
                m, s = self._batch(feats, size or batches.image_size)
                maps.append(m.to("cpu", torch.float32))
                scores.append(s.to("cpu", torch.float32))
        if not maps:
            return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.float32)
        return torch.cat(maps).numpy(), torch.cat(scores).numpy()

    # ----------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model (the gallery, float32, and JSON metadata) to one file, atomically."""
        self._check_fitted()
        params = self.get_params()
        params.pop("meta")  # saved on its own below
        params["layers"] = list(self.layers_)
        params["weights"] = None if self.weights is None else str(self.weights)
        meta = {
            "params": params,
            "image_size": None if self.image_size_ is None else list(self.image_size_),
            "versions": modelfile.versions(),
            "meta": self.meta or {},
        }
        tensors = {f"gallery.{name}": g for name, g in zip(self.layers_, self.gallery_, strict=True)}
        tensors["global"] = self.global_
        modelfile.write(path, FORMAT, FORMAT_VERSION, meta, tensors)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> SPADE:
        """Read a model written by save(); `device` overrides the saved one."""
        meta, tensors = modelfile.read(path, FORMAT, FORMAT_VERSION, "SPADE model")
        try:
            est = cls(**dict(meta["params"], device=device, layers=tuple(meta["params"]["layers"])))
            est._check_params()
            gallery = [tensors[f"gallery.{name}"].to(est.device_, torch.float32) for name in est.layers_]
            pooled = tensors["global"].to(est.device_, torch.float32)
            n = pooled.shape[0]
            if pooled.ndim != 2 or any(g.ndim != 4 or g.shape[0] != n for g in gallery):
                raise ValueError(f"gallery shapes {[tuple(g.shape) for g in gallery]} for {n} images")
            with warnings.catch_warnings():  # the caps were announced when the model was fitted
                warnings.simplefilter("ignore")
                est._set_state(gallery, pooled)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PadimError(f"{path}: corrupt SPADE model file ({type(exc).__name__}: {exc})") from exc
        est.image_size_ = None if meta["image_size"] is None else tuple(meta["image_size"])
        est.meta = meta["meta"]
        return est
