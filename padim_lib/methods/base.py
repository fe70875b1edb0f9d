"""The detector interface, and one base class per kind of method.

A detector is an sklearn-style estimator (parameters in ``__init__``, no work there, fitted state
ending in ``_``) that turns images into ``(maps, scores)``:

* ``fit(X, y=None)`` on training images (a Dataset of dicts with key "image", a DataLoader, or a
  Tensor (N, 3, H, W), ImageNet-normalised); ``predict(X) -> (maps (N, H, W), scores (N,))``;
* ``save(path)`` / ``load(path, device)``, a format marker and version in the file;
* ``from_config(config, device=..., progress=...)``: the detector of an ``ExperimentConfig``;
* ``training_data(data_root, category, preprocess)``: the training images as the detector wants
  them (`training_preprocess`), the one fit path the CLI, the sweep and the book all take;
* ``use_work_dir(folder)``: where a detector that trains may keep resumable state (default: none);
* ``artifacts()`` and ``memory_terms()``: what the experiment stores and the complexity study counts;
* ``export_module()``: the fitted detector as one torch module (images -> maps, scores) for ONNX
  export; a method that cannot be exported keeps the default, which says so (PadimError).

`FeatureDetector` is the base of methods on a frozen backbone (PaDiM, SPADE): it builds the
extractor, streams images through it, and also fits and predicts on cached per-layer features
(``fit_features`` / ``predict_features``), so the sweep extracts a class's features once for every
configuration. A subclass implements ``_check_params``, ``_fit_stream`` and ``_predict_stream``.
`ImageDetector` is the base of methods trained on the images themselves (the VAE).
The method's spec (registry name, own parameters, file format) is declared on the class with
`padim_lib.methods.registry.method`.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from padim_lib.errors import PadimError

# Configuration fields passed to a detector's __init__ when it has an argument of that name.
COMMON_FIELDS = ("backbone", "layers", "layer_mode", "reduce", "eps", "sigma", "seed", "max_train",
                 "pretrained", "weights")


class Detector(BaseEstimator):
    """The interface every method implements (see the module docstring)."""

    method: ClassVar[str] = ""  # the registry name, set by `registry.method`
    spec: ClassVar[Any] = None  # the MethodSpec, set by `registry.method`
    uses_features: ClassVar[bool] = False
    fitted_attribute: ClassVar[str] = ""  # an attribute only a fitted detector has

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, config: Any, *, device: str = "auto", progress: bool = False) -> Detector:
        """The detector of an ExperimentConfig: its method parameters, the common fields the class's
        ``__init__`` takes (layers resolved to the backbone's), and `device` / `progress` if it takes them."""
        accepted = inspect.signature(cls.__init__).parameters
        kwargs: dict[str, Any] = {name: getattr(config, name) for name in COMMON_FIELDS if name in accepted}
        if "layers" in kwargs:
            kwargs["layers"] = config.resolved_layers()
        kwargs.update(config.params)
        kwargs.update({k: v for k, v in (("device", device), ("progress", progress)) if k in accepted})
        return cls(**kwargs)

    # ------------------------------------------------------------------ the interface
    def fit(self, X: Any, y: Any = None) -> Detector:
        raise NotImplementedError

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> Detector:
        raise NotImplementedError

    # ------------------------------------------------------------------ hooks with defaults
    def training_preprocess(self, preprocess: Any) -> Any:
        """The preprocessing of the training images, given the test images' (default: the same)."""
        return preprocess

    def training_data(self, data_root: str | os.PathLike, category: str, preprocess: Any) -> Any:
        """The class's training images as this detector is fitted on them: the data set opened with
        `training_preprocess(preprocess)`. The CLI, the sweep and the book all fit on this."""
        from padim_lib.datasets import open_dataset

        return open_dataset(data_root, category, "train", self.training_preprocess(preprocess))

    def use_work_dir(self, folder: str | os.PathLike) -> None:
        """Where the detector may keep state that outlives one fit (a trained one's checkpoints, to
        resume an interrupted training). Default: nothing to keep."""

    def artifacts(self) -> dict[str, np.ndarray]:
        """Extra arrays of the fitted detector that an experiment stores with its result rows.

        Default: the loss history of a trained detector (`loss_history_`, name -> list of numbers,
        e.g. the VAE's epoch_loss) as float32 arrays named "loss_<name>"; nothing for one without it.
        """
        history = getattr(self, "loss_history_", None) or {}
        return {f"loss_{name}": np.asarray(values, np.float32) for name, values in history.items()}

    def export_module(self) -> Any:
        """The fitted detector as one torch module for ONNX export: images (N, 3, H, W), preprocessed
        as for fitting -> (maps (N, H, W), scores (N,)), the numbers `predict` gives; it has an
        `image_size` (H, W) attribute. Default: this method cannot be exported."""
        raise PadimError(f"method {self.method or type(self).__name__!r} cannot export to ONNX")

    def memory_terms(self) -> dict[str, int]:
        """Bytes of the fitted model by part, as the paper counts a model's memory: the network it runs
        (parameters and buffers) and the fitted statistics (e.g. PaDiM's Gaussians, SPADE's gallery)."""
        raise NotImplementedError(f"{type(self).__name__} does not report its memory")

    def _check_fitted(self) -> None:
        if not hasattr(self, self.fitted_attribute):
            name = type(self).__name__
            raise PadimError(f"this {name} model is not fitted yet; call fit() or {name}.load() first")


class FeatureDetector(Detector):
    """Base of the methods on a frozen backbone's features (PaDiM, SPADE).

    The subclass's ``__init__`` takes at least backbone, pretrained, weights, device, batch_size,
    max_train, channels_last, backbone_dtype and progress. It implements ``_check_params()`` (sets
    ``device_`` and what ``feature_layers()`` needs), ``feature_layers()``, ``_fit_stream(batches)``
    and ``_predict_stream(batches, size)``, where batches yield {layer: (B, C_l, h_l, w_l)}.
    """

    uses_features: ClassVar[bool] = True
    min_train: ClassVar[int] = 1  # fewer training images is an error

    def feature_layers(self) -> tuple[str, ...]:
        """Backbone layers the feature cache must hold for `fit_features` / `predict_features`."""
        raise NotImplementedError

    def _check_params(self) -> None:
        raise NotImplementedError

    def _fit_stream(self, batches: Iterable[Mapping[str, Any]]) -> None:
        raise NotImplementedError

    def _predict_stream(self, batches: Iterable[Mapping[str, Any]], size: tuple[int, int] | None
                        ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _check_common(self) -> None:
        """The parameters every feature detector shares (batch_size, max_train, channels_last,
        backbone_dtype, meta), checked; sets `device_`. Errors name the parameter."""
        from padim_lib.features.device import resolve_device
        from padim_lib.features.extractor import BACKBONE_DTYPES, bfloat16_is_fast
        from padim_lib.methods.params import check_max_train

        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise PadimError(f"batch_size={self.batch_size!r}; expected an integer >= 1")
        check_max_train(self.max_train)
        if not isinstance(self.channels_last, bool):
            raise PadimError(f"channels_last={self.channels_last!r}; expected True or False")
        if self.backbone_dtype not in BACKBONE_DTYPES:
            raise PadimError(f"backbone_dtype={self.backbone_dtype!r}; expected one of {list(BACKBONE_DTYPES)}")
        if self.meta is not None and not isinstance(self.meta, dict):
            raise PadimError(f"meta={self.meta!r}; expected a dict or None")
        self.device_ = resolve_device(self.device)
        if self.backbone_dtype == "bfloat16" and bfloat16_is_fast(self.device_) is False:
            warnings.warn(
                f"backbone_dtype='bfloat16': {self.device_} has no native bfloat16 arithmetic; "
                "the backbone will run emulated, likely slower than float32",
                stacklevel=4,
            )

    def _extractor(self) -> Any:
        """The frozen backbone for `feature_layers()`, built once (lazily: a loaded model needs it only
        to predict images)."""
        from padim_lib.features.extractor import FeatureExtractor

        ext = getattr(self, "_extractor_", None)
        if ext is None:
            ext = FeatureExtractor(self.backbone, self.feature_layers(), pretrained=self.pretrained,
                                   weights=self.weights, channels_last=self.channels_last, dtype=self.backbone_dtype)
            ext = self._extractor_ = ext.to(self.device_).eval()
        return ext

    def fit(self, X: Any, y: Any = None) -> FeatureDetector:
        """Fit on training images X (a Dataset of dicts with key "image", a DataLoader, or a Tensor
        (N, 3, H, W)); `y` is ignored (defect-free training images only)."""
        from padim_lib.methods.streams import FeatureStream, ImageBatches

        self._check_params()
        images = ImageBatches(X, self.batch_size, self.max_train)
        n = images.num_images()
        if n is not None and n < self.min_train:
            raise PadimError(f"fit needs at least {self.min_train} training images, got {n}")
        stream = FeatureStream(self._extractor(), images, self.device_)
        self._fit_stream(stream)
        self.image_size_ = stream.image_size
        return self

    def fit_features(self, batches: Iterable[Mapping[str, Any]]) -> FeatureDetector:
        """Fit on precomputed per-layer features: an iterable of dicts layer -> (B, C_l, h_l, w_l)."""
        self._check_params()
        self._fit_stream(batches)
        self.image_size_ = None
        return self

    def predict(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, H, W) float32 and image scores (N,) float32 of test images X (same forms as fit)."""
        from padim_lib.methods.streams import FeatureStream, ImageBatches

        self._check_fitted()
        images = ImageBatches(X, self.batch_size)
        stream = FeatureStream(self._extractor(), images, self.device_, expected=self.image_size_)
        return self._predict_stream(stream, None)

    def predict_features(self, batches: Iterable[Mapping[str, Any]], image_size: int | tuple[int, int]
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Maps (N, H, W) float32 and scores (N,) float32 from per-layer feature batches of images
        of size `image_size` (H, W)."""
        self._check_fitted()
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if self.image_size_ is not None and size != self.image_size_:
            raise PadimError(f"image_size={size} differs from the {self.image_size_} images the model was fitted on")
        return self._predict_stream(batches, size)

    def backbone_bytes(self) -> int:
        """Bytes of the frozen backbone's parameters and buffers (the layers the model reads)."""
        return tensor_bytes(self._extractor())

    def fitted_statistics(self) -> list[Any]:
        """The tensors the fit learnt (e.g. PaDiM's Gaussians); a subclass names them."""
        raise NotImplementedError(f"{type(self).__name__} does not name its fitted statistics")

    def memory_terms(self) -> dict[str, int]:
        """Bytes by part: "network" (the frozen CNN) and "statistics" (what the fit learnt)."""
        self._check_fitted()
        return {"network": self.backbone_bytes(), "statistics": tensor_bytes(self.fitted_statistics())}


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in `value`: a tensor, a module (parameters and buffers), or a list of them."""
    import torch
    from torch import nn

    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, nn.Module):
        return sum(tensor_bytes(t) for t in (*value.parameters(), *value.buffers()))
    return sum(tensor_bytes(v) for v in value)


class ImageDetector(Detector):
    """Base of the methods trained on the images themselves (the VAE): no backbone features, no
    feature cache; `fit` and `predict` take images only, and `training_data` gives the images the
    detector's own preprocessing asks for. A detector whose training is resumable overrides
    `use_work_dir`."""

    uses_features: ClassVar[bool] = False
