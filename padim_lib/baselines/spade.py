"""SPADE (Cohen & Hoshen, 2020) as the PaDiM paper reproduced it: k-NN on pretrained deep features.

Shapes: N training images; pixel layers (finest first) with maps (B, C_l, h_l, w_l); the global
layer's map average-pooled to (B, C_g).

* Image score: mean Euclidean distance from the test image's average-pooled global feature to
  its k nearest training images' (k = 50, the SPADE paper's value).
* Pixel map: the K nearest training images in that same global space (K = 50 by default) form the
  gallery; each test position's score is the mean distance to its kappa nearest gallery pixel
  features (kappa = 1: the nearest). The grid is upsampled bicubically to the image size and
  smoothed with a Gaussian of sigma = 4, as PaDiM's (padim_lib.postprocess.anomaly_maps).
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
distances are computed in bounded blocks (padim_lib.baselines.knn), never as one all-pairs matrix.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

import padim_lib
from padim_lib.atomic import atomic_torch_save
from padim_lib.baselines import knn
from padim_lib.detectors import Detector, get_method
from padim_lib.errors import PadimError
from padim_lib.postprocess import anomaly_maps
from padim_lib.streams import FeatureStream as _FeatureStream
from padim_lib.streams import ImageBatches as _ImageBatches
from padim_lib.streams import layer_maps as _layer_maps
from padim_lib.streams import progress_bar as _progress
from padim_lib.streams import resolve_device

LAYER_MODES = ("concat", "sum")
FORMAT = "padim_lib.spade"
FORMAT_VERSION = 1

FeatureBatch = Mapping[str, torch.Tensor]


def default_global_layer(backbone: str) -> str:
    """The deepest layer the backbone names (BackboneSpec.channels is ordered shallow to deep):
    layer4 for the ResNets, _blocks.15 (the last MBConv block) for efficientnet_lite0, features.8
    (the 2048-channel head) for efficientnet_b5."""
    from padim_lib.features import BACKBONES

    return list(BACKBONES[backbone].channels)[-1]


class SPADE(BaseEstimator, Detector):
    """SPADE anomaly detector (sklearn-style: parameters as given, validated in fit).

    backbone: a name from padim_lib.features.BACKBONES; layers: pixel layers, None = the backbone's
    default layers; layer_mode: "concat" | "sum" (see the module docstring); global_layer: the layer
    average-pooled for the image k-NN, None = the backbone's deepest. k: image neighbours; n_gallery
    (the paper's K): training images whose pixel features form the gallery; kappa: pixel neighbours
    averaged. sigma: map smoothing (0 = none). max_train: use the first N training images.
    meta: JSON-able dict the caller may fill; saved and loaded verbatim.
    """

    method = "spade"
    uses_features = True

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
        progress: bool = True,
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
        self.progress = progress
        self.meta: dict = {}

    @classmethod
    def from_config(cls, config: Any, *, device: str = "auto", progress: bool = False) -> SPADE:
        """From an ExperimentConfig: backbone, layers, layer_mode, sigma, max_train, pretrained,
        weights, and the method parameters config.params (k, n_gallery, kappa, global_layer)."""
        params = get_method(cls.method).validate_params(
            dict(getattr(config, "params", None) or {}), where="params: "
        )
        return cls(
            backbone=config.backbone,
            layers=config.layers,
            layer_mode=config.layer_mode,
            sigma=float(config.sigma),
            max_train=config.max_train,
            pretrained=config.pretrained,
            weights=config.weights,
            device=device,
            progress=progress,
            **params,
        )

    # ----------------------------------------------------------------- parameters
    def _check_params(self) -> None:
        """Validate the parameters; set layers_, global_layer_, device_. Errors name the parameter."""
        from padim_lib.features import BACKBONES, available_backbones

        if self.backbone not in BACKBONES:
            raise PadimError(f"backbone={self.backbone!r} is unknown; expected one of {available_backbones()}")
        spec = BACKBONES[self.backbone]
        layers = spec.default_layers if self.layers is None else self.layers
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if not layers or len(set(layers)) != len(layers):
            raise PadimError(f"layers={self.layers!r}; expected distinct layer names")
        glob = default_global_layer(self.backbone) if self.global_layer is None else self.global_layer
        for name, value in (("layers", layers), ("global_layer", (glob,))):
            unknown = [x for x in value if x not in spec.channels]
            if unknown:
                raise PadimError(
                    f"{name}={self.layers if name == 'layers' else glob!r}: backbone {self.backbone!r} has no "
                    f"layer {unknown[0]!r}; expected names among {list(spec.channels)}"
                )
        if self.layer_mode not in LAYER_MODES:
            raise PadimError(f"layer_mode={self.layer_mode!r}; expected one of {list(LAYER_MODES)}")
        for name in ("k", "n_gallery", "kappa", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise PadimError(f"{name}={value!r}; expected an integer >= 1")
        if not (isinstance(self.sigma, (int, float)) and np.isfinite(self.sigma) and self.sigma >= 0):
            raise PadimError(f"sigma={self.sigma!r}; expected a finite number >= 0 (0 = no smoothing)")
        if self.max_train is not None and not (isinstance(self.max_train, int) and self.max_train >= 1):
            raise PadimError(f"max_train={self.max_train!r}; expected None or an integer >= 1")
        if not isinstance(self.meta, dict):
            raise PadimError(f"meta must be a dict, got {type(self.meta).__name__}")
        self.layers_ = layers
        self.global_layer_ = glob
        self.device_ = resolve_device(self.device)

    def feature_layers(self) -> tuple[str, ...]:
        """The pixel layers, then the global layer (once, if it is also a pixel layer)."""
        self._check_params()
        return tuple(dict.fromkeys((*self.layers_, self.global_layer_)))

    def _extractor(self) -> torch.nn.Module:
        """The frozen backbone, built once (lazily: a loaded model needs it only to predict images)."""
        from padim_lib.features import FeatureExtractor

        ext = getattr(self, "_extractor_", None)
        if ext is None:
            ext = FeatureExtractor(
                self.backbone, self.feature_layers(), pretrained=self.pretrained, weights=self.weights
            )
            ext = self._extractor_ = ext.to(self.device_).eval()
        return ext

    # ----------------------------------------------------------------- fit
    def fit(self, data: Any, y: Any = None) -> SPADE:
        """Fit on training images: a Dataset of dicts (key "image"), a DataLoader, or a Tensor (N, 3, H, W)."""
        self._check_params()
        images = _ImageBatches(data, self.batch_size, self.max_train)
        stream = _FeatureStream(self._extractor(), images, self.device_)
        self._fit_stream(stream)
        self.image_size_ = stream.image_size
        return self

    def fit_features(self, batches: Iterable[FeatureBatch]) -> SPADE:
        """Fit on precomputed features: an iterable of dicts layer -> (B, C_l, h_l, w_l)."""
        self._check_params()
        self._fit_stream(batches)
        self.image_size_ = None
        return self

    def _fit_stream(self, batches: Iterable[FeatureBatch]) -> None:
        parts: list[list[torch.Tensor]] = [[] for _ in self.layers_]
        pooled: list[torch.Tensor] = []
        count = 0
        with torch.no_grad():
            for feats in _progress(batches, "SPADE fit", self.progress):
                if self.max_train is not None and count >= self.max_train:
                    break
                take = None if self.max_train is None else self.max_train - count
                maps = [m[:take] for m in self._pixel_maps(feats, parts)]
                glob = _layer_maps(feats, (self.global_layer_,))[0][:take]
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
        from padim_lib.features import check_layer_maps

        maps = _layer_maps(feats, self.layers_)
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
        self.gallery_ = gallery
        self.gallery_sq_ = [g.flatten(1, 2).pow(2).sum(-1) for g in gallery]  # (N, P_l)
        self.global_ = pooled
        self.grids_ = [tuple(g.shape[1:3]) for g in gallery]
        self.n_train_ = n
        for name, value in (("k", self.k), ("n_gallery", self.n_gallery)):
            if value > n:
                warnings.warn(
                    f"{name}={value} is larger than the {n} training images; using {name}={n}", stacklevel=4
                )
        self.k_, self.n_gallery_ = min(self.k, n), min(self.n_gallery, n)
        grids = self.grids_[:1] if self.layer_mode == "concat" else self.grids_
        candidates = self.n_gallery_ * min(h * w for h, w in grids)
        if self.kappa > candidates:
            raise PadimError(
                f"kappa={self.kappa} is larger than the {candidates} pixel features of the gallery "
                f"({self.n_gallery_} images); expected kappa <= {candidates}"
            )

    # ----------------------------------------------------------------- predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "gallery_"):
            raise PadimError("this SPADE model is not fitted yet; call fit() or SPADE.load() first")

    def _batch(self, feats: FeatureBatch, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps (B, H, W) and scores (B,) of one feature batch."""
        maps = [m.to(self.device_, torch.float32) for m in _layer_maps(feats, self.layers_)]
        grids = [tuple(m.shape[2:]) for m in maps]
        if grids != self.grids_:
            raise PadimError(
                f"feature grids {grids} differ from the {self.grids_} the model was fitted on; "
                "predict on images of the size used for fitting"
            )
        pooled = _layer_maps(feats, (self.global_layer_,))[0].to(self.device_, torch.float32).mean(dim=(2, 3))
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

    def predict_features(
        self, batches: Iterable[FeatureBatch], image_size: int | tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, H, W) float32 and scores (N,) float32 from per-layer feature batches of images
        of size `image_size` (H, W)."""
        self._check_fitted()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if self.image_size_ is not None and size != self.image_size_:
            raise PadimError(f"image_size={size} differs from the {self.image_size_} images the model was fitted on")
        return self._predict_stream(batches, size)

    def predict(self, data: Any) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, H, W) float32 and image scores (N,) float32 of test images (same forms as fit)."""
        self._check_fitted()
        images = _ImageBatches(data, self.batch_size)
        stream = _FeatureStream(self._extractor(), images, self.device_, expected=self.image_size_)
        return self._predict_stream(stream, None)

    def _predict_stream(self, batches: Iterable[FeatureBatch], size) -> tuple[np.ndarray, np.ndarray]:
        maps, scores = [], []
        with torch.no_grad():
            for feats in _progress(batches, "SPADE predict", self.progress):
                m, s = self._batch(feats, size or batches.image_size)
                maps.append(m.to("cpu", torch.float32))
                scores.append(s.to("cpu", torch.float32))
        if not maps:
            return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.float32)
        return torch.cat(maps).numpy(), torch.cat(scores).numpy()

    # ----------------------------------------------------------------- save / load
    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model (the gallery, float32, and JSON metadata) to one file, atomically."""
        import torchvision

        self._check_fitted()
        params = self.get_params()
        params["layers"] = list(self.layers_)
        params["weights"] = None if self.weights is None else str(self.weights)
        meta = {
            "params": params,
            "image_size": None if self.image_size_ is None else list(self.image_size_),
            "versions": {"padim_lib": padim_lib.__version__, "torch": torch.__version__,
                         "torchvision": torchvision.__version__},
            "meta": self.meta,
        }
        try:
            metadata = json.dumps(meta, sort_keys=True)
        except TypeError as exc:
            raise PadimError(f"meta must hold JSON-serialisable values only: {exc}") from exc
        tensors = {f"gallery.{name}": g.detach().cpu() for name, g in zip(self.layers_, self.gallery_, strict=True)}
        tensors["global"] = self.global_.detach().cpu()
        atomic_torch_save(
            {"format": FORMAT, "format_version": FORMAT_VERSION, "metadata": metadata, "tensors": tensors}, path
        )

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> SPADE:
        """Read a model written by save(); `device` overrides the saved one."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged file (zip, pickle, EOF...)
            raise PadimError(f"{path}: not a readable SPADE model file ({type(exc).__name__}: {exc})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise PadimError(f"{path}: not a SPADE model file (no '{FORMAT}' format marker)")
        if payload.get("format_version") != FORMAT_VERSION:
            raise PadimError(
                f"{path}: SPADE file format version {payload.get('format_version')!r}; this padim_lib "
                f"{padim_lib.__version__} reads version {FORMAT_VERSION}; refit the model"
            )
        try:
            meta = json.loads(payload["metadata"])
            est = cls(**dict(meta["params"], device=device, layers=tuple(meta["params"]["layers"])))
            est._check_params()
            tensors = payload["tensors"]
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
