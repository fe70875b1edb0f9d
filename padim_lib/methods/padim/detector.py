"""PaDiM (Defard et al., 2020): one Gaussian per patch position over pretrained CNN embeddings.

`PaDiM` is the estimator (parameters in __init__, work in fit/predict, sklearn-style);
`PaDiMModel` is the fitted torch state (buffers), saved and loaded by `PaDiM.save` / `PaDiM.load`.

Pipeline, with B images, layer maps (B, C_l, h_l, w_l), grid h x w = P positions, embedding D:
1. Embedding: the layers' maps aligned on the finest grid (nearest) and concatenated -> (B, C, h, w).
2. Reduction (optional): `reduce="random:d"` keeps d channels drawn once with torch.Generator(seed)
   (indices kept as a buffer); `reduce="pca:d"` projects on the top-d principal axes of all the
   training vectors (every image, every position).
3. Fit: per position, mean and covariance (N-1 divisor, + eps I) streamed batch by batch
   (`gaussian.StreamingGaussian`), then the inverse Cholesky factor L^-1 (float32).
4. Predict: Mahalanobis distance ||L^-1 (x - mu)|| per position -> (B, h, w); bicubic upsample to
   the input size, Gaussian filter sigma; image score = max of the map.

Steps 1-2 are done in position-major blocks (`padim_lib.methods.padim.embedding.position_blocks`: (Pc, B, D), a
few grid rows at a time) that feed the fit's statistics and the distances directly; step 4's
upsampling and filter are one matrix per axis (`padim_lib.methods.postprocess.anomaly_maps`). Why, with
timings: benchmarks/README.md.

Streaming and passes: memory does not grow with the number of training images. `reduce="pca:d"`
needs two passes over the training data: the first accumulates the C x C covariance of all
training vectors (float64) for the PCA basis, the second fits the per-position Gaussians in the
projected space. With `fit(images)` the backbone therefore runs twice; with `fit_features` the
feature batches must be re-iterable (a list, a DataLoader-backed iterable), not a one-shot generator.

Memory: the fit keeps per model one (P, D, D) accumulator and nothing per image (see
padim_lib.methods.padim.gaussian): float64 when P * D * D * 8 bytes <= 2 GiB (`accumulate_dtype="auto"`),
float32 above (WR50-Rd550: 3136 x 550^2 x 4 B = 3.8 GB); the covariance and then the factor
L^-1 are written over the accumulator, and the fitted model stores mean and factor in float32.

Layer modes: "concat" is PaDiM (one model on the concatenated embedding); "sum" fits one model
per layer and sums their maps (the paper's "Layer 1+2+3"): each distance grid is upsampled to
the input size and smoothed, then the maps are summed (upsampling, smoothing and the sum are all
linear, so this equals smoothing the sum of the upsampled grids).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from padim_lib.errors import PadimError
from padim_lib.io import modelfile
from padim_lib.methods.base import FeatureDetector
from padim_lib.methods.padim.embedding import embed, position_blocks
from padim_lib.methods.padim.gaussian import (
    CHUNK_BYTES,
    StreamingGaussian,
    choose_dtype,
    inverse_cholesky,
)
from padim_lib.methods.padim.model import PaDiMModel
from padim_lib.methods.params import (
    check_eps,
    check_layer_mode,
    check_reduce,
    check_seed,
    check_sigma,
    layer_groups,
    parse_reduce,
)
from padim_lib.methods.postprocess import anomaly_maps, image_scores
from padim_lib.methods.registry import method
from padim_lib.methods.streams import FeatureBatch, layer_maps, progress_bar

ACCUMULATE_DTYPES = ("auto", "float64", "float32")
FORMAT = "padim_lib.model"
FORMAT_VERSION = 1


def random_reduction(config: Any) -> bool:
    """Whether the seed changes a PaDiM configuration's numbers: only its random channel choice does."""
    return config.reduce is not None and config.reduce.startswith("random")


@method("padim", file_format=FORMAT, reads=("layers", "layer_mode", "reduce", "eps"), uses_seed=random_reduction,
        description="PaDiM: one Gaussian per patch position, Mahalanobis distance (Defard et al. 2020)")
class PaDiM(FeatureDetector):
    """PaDiM anomaly detector (sklearn-style: parameters as given, validated in fit).

    backbone: a name from padim_lib.features.backbones.BACKBONES; layers: None = the backbone's defaults.
    layer_mode: "concat" (PaDiM) | "sum" (one model per layer, maps summed).
    reduce: None | "random:d" | "pca:d". eps: covariance regulariser. sigma: map smoothing (0 = none).
    device: "auto" (CUDA when available) | "cpu" | "cuda[:N]". max_train: use the first N training images.
    seed: seeds the random channel choice (one torch.Generator; in "sum" mode the layers draw in order).
    accumulate_dtype: "auto" | "float64" | "float32", the fit's accumulator (see padim_lib.methods.padim.gaussian).
    channels_last (on by default: the same maps to float32 rounding, 1.4-1.6x faster on CPU) and
    backbone_dtype ("float32" | "bfloat16", opt-in): backbone inference options
    (padim_lib.features.extractor.FeatureExtractor), used for fit and predict alike, since a model must score
    features made the way its Gaussians were fitted. The Gaussians stay float32/64.
    meta: JSON-able dict (preprocessing, data, timings) saved and loaded verbatim; the CLI fills it.
    """

    min_train = 2
    fitted_attribute = "model_"

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        layers: Sequence[str] | None = None,
        layer_mode: str = "concat",
        reduce: str | None = None,
        eps: float = 0.01,
        sigma: float = 4.0,
        device: str = "auto",
        batch_size: int = 16,
        seed: int = 0,
        pretrained: bool = True,
        weights: str | os.PathLike | None = None,
        max_train: int | None = None,
        accumulate_dtype: str = "auto",
        channels_last: bool = True,
        backbone_dtype: str = "float32",
        progress: bool = True,
        meta: dict | None = None,
    ):
        self.backbone = backbone
        self.layers = layers
        self.layer_mode = layer_mode
        self.reduce = reduce
        self.eps = eps
        self.sigma = sigma
        self.device = device
        self.batch_size = batch_size
        self.seed = seed
        self.pretrained = pretrained
        self.weights = weights
        self.max_train = max_train
        self.accumulate_dtype = accumulate_dtype
        self.channels_last = channels_last
        self.backbone_dtype = backbone_dtype
        self.progress = progress
        self.meta = meta

    def feature_layers(self) -> tuple[str, ...]:
        """The backbone layers `fit_features` / `predict_features` read."""
        from padim_lib.features.backbones import resolve_layers

        return resolve_layers(self.backbone, self.layers)

    # ----------------------------------------------------------------- parameters
    def _check_params(self) -> None:
        """Validate the parameters; set layers_, groups_, device_. Errors name the parameter."""
        from padim_lib.features.backbones import resolve_layers

        layers = resolve_layers(self.backbone, self.layers)
        check_layer_mode(self.layer_mode)
        groups = layer_groups(layers, self.layer_mode)
        check_reduce(self.reduce, self.backbone, groups)
        check_eps(self.eps)
        check_sigma(self.sigma)
        check_seed(self.seed)
        if self.accumulate_dtype not in ACCUMULATE_DTYPES:
            raise PadimError(
                f"accumulate_dtype={self.accumulate_dtype!r}; expected one of {list(ACCUMULATE_DTYPES)}"
            )
        self._check_common()
        self.layers_ = layers
        self.groups_ = groups

    def _fit_stream(self, batches: Iterable[FeatureBatch]) -> None:
        kind, dim = parse_reduce(self.reduce)
        if kind == "pca" and iter(batches) is batches:
            raise PadimError(
                f"reduce={self.reduce!r} needs two passes over the training features (PCA basis, then "
                "Gaussians); pass a re-iterable (a list, a Dataset-backed iterable), not a one-shot iterator"
            )
        reducers = self._fit_pca(batches, dim) if kind == "pca" else [{} for _ in self.groups_]
        generator = torch.Generator().manual_seed(int(self.seed))
        gaussians: list[StreamingGaussian | None] = [None] * len(self.groups_)
        grids: list[tuple[int, int]] = [(0, 0)] * len(self.groups_)
        dtypes: list[str] = [""] * len(self.groups_)
        indices: list[torch.Tensor | None] = [None] * len(self.groups_)
        count = 0
        with torch.no_grad():
            for feats in progress_bar(batches, "PaDiM fit", self.progress):
                for g, group in enumerate(self.groups_):
                    maps = layer_maps(feats, group)  # position_blocks moves only the kept channels
                    b, _, h, w = maps[0].shape
                    c = sum(t.shape[1] for t in maps)
                    if gaussians[g] is None:
                        if dim is not None and dim > c:
                            raise PadimError(
                                f"reduce={self.reduce!r} asks for {dim} dimensions but the embedding of "
                                f"{list(group)} has {c}"
                            )
                        if kind == "random":
                            index = torch.randperm(c, generator=generator)[:dim].sort().values
                            indices[g] = index.to(self.device_)
                        d = dim or c
                        dtype = choose_dtype(h * w, d, self.accumulate_dtype)
                        gaussians[g] = StreamingGaussian(h * w, d, dtype=dtype, device=self.device_)
                        dtypes[g] = str(dtype).removeprefix("torch.")
                        grids[g] = (h, w)
                    elif (h, w) != grids[g]:
                        raise PadimError(
                            f"feature grid of {list(group)} changed from {grids[g][0]}x{grids[g][1]} to {h}x{w} "
                            "between training batches; all training images must have the same size"
                        )
                    blocks = position_blocks(
                        maps, indices[g], **reducers[g], dtype=torch.float32, device=self.device_
                    )
                    gaussians[g].update_blocks(blocks, b)
                count += b
        if count < 2:
            raise PadimError(f"fit needs at least 2 training images, got {count}")
        models = []
        for g in range(len(self.groups_)):
            gauss = gaussians[g]
            mean = gauss.mean.to(torch.float32)
            cov = gauss.covariance(self.eps, inplace=True)  # reuses the accumulator's memory
            gaussians[g] = gauss = None  # drop the last reference so the buffer dies with the factor
            # float32 accumulator: overwrite in place (peak ~1x); float64: write into a float32 factor.
            out = (
                cov
                if cov.dtype == torch.float32
                else torch.empty(cov.shape, dtype=torch.float32, device=cov.device)
            )
            factor = inverse_cholesky(cov, out=out)
            del cov
            models.append(PaDiMModel(mean, factor, grids[g], channel_index=indices[g], **reducers[g]))
        self.model_ = nn.ModuleList(models)
        self.n_train_ = count
        self.accumulate_dtypes_ = dtypes

    def _fit_pca(self, batches: Iterable[FeatureBatch], dim: int) -> list[dict[str, torch.Tensor]]:
        """First pass for reduce="pca:d": the C x C covariance of all training vectors (every image and
        position, float64, streamed) -> per group pca_mean (C,) and pca_components (d, C)."""
        stats: list[StreamingGaussian | None] = [None] * len(self.groups_)
        with torch.no_grad():
            for feats in progress_bar(batches, "PaDiM PCA pass", self.progress):
                for g, group in enumerate(self.groups_):
                    emb = embed(layer_maps(feats, group)).to(self.device_)
                    c = emb.shape[1]
                    if stats[g] is None:
                        if dim > c:
                            raise PadimError(
                                f"reduce={self.reduce!r} asks for {dim} dimensions but the embedding of "
                                f"{list(group)} has {c}"
                            )
                        stats[g] = StreamingGaussian(1, c, dtype=torch.float64, device=self.device_)
                    vectors = emb.flatten(2).transpose(1, 2).reshape(-1, 1, c)  # (B*P, 1, C): samples
                    for chunk in vectors.split(max(1, CHUNK_BYTES // (8 * c))):
                        stats[g].update(chunk)
        reducers = []
        for st in stats:
            if st is None:
                raise PadimError("fit needs at least 2 training images, got none")
            _, vecs = torch.linalg.eigh(st.covariance(eps=0.0)[0])  # ascending eigenvalues
            comps = vecs[:, -dim:].flip(1).T  # (d, C), largest variance first
            # Deterministic signs: the largest-magnitude entry of each axis is positive (as sklearn does).
            signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
            reducers.append(
                {
                    "pca_mean": st.mean[0].to(torch.float32),
                    "pca_components": (comps * signs).to(torch.float32).contiguous(),
                }
            )
        return reducers

    # ----------------------------------------------------------------- predict
    def _maps(self, feats: FeatureBatch, size: tuple[int, int]) -> torch.Tensor:
        """Anomaly maps (B, H, W) float32 of one feature batch: per-model distances upsampled to
        `size` and smoothed, summed over the models ("sum" mode; one model in "concat" mode)."""
        total = None
        for group, model in zip(self.groups_, self.model_, strict=True):
            dist = model.score_layers(layer_maps(feats, group))  # (B, h, w)
            m = anomaly_maps(dist, size, float(self.sigma))
            total = m if total is None else total.add_(m)
        return total

    def _predict_stream(self, batches: Iterable[FeatureBatch], size: tuple[int, int] | None
                        ) -> tuple[np.ndarray, np.ndarray]:
        maps = []
        with torch.no_grad():
            for feats in progress_bar(batches, "PaDiM predict", self.progress):
                # With images, the stream knows the input size only once it has read a batch.
                m = self._maps(feats, size or batches.image_size)
                maps.append(m.to("cpu", torch.float32))
        if not maps:
            return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.float32)
        out = torch.cat(maps)
        return out.numpy(), image_scores(out).numpy()

    def fitted_statistics(self) -> list[Any]:
        return [t for m in self.model_ for t in m.buffers() if t is not None]

    def gaussian_shape(self) -> tuple[int, int]:
        """(patch positions, d) of the fitted Gaussians: the terms of PaDiM's memory law."""
        self._check_fitted()
        return int(sum(m.mean.shape[0] for m in self.model_)), int(self.model_[0].mean.shape[1])

    # ----------------------------------------------------------------- export
    def export_module(self) -> nn.Module:
        """The fitted model as `PaDiMGraph` (padim_lib.methods.padim.export): images (N, 3, H, W) at the
        fitting size -> (maps (N, H, W), scores (N,)) as predict computes them, on the CPU, in float32
        throughout: a bfloat16 backbone is exported in float32, so its maps differ from predict's by
        the backbone's rounding (a warning says so). This detector is left as it is."""
        from padim_lib.methods.padim.export import PaDiMGraph

        self._check_fitted()
        if self.image_size_ is None:
            raise PadimError("this model was fitted on cached features, so its input size is unknown; "
                             "fit it on images to export it")
        extractor = self._extractor()
        if self.device_.type != "cpu" or self.backbone_dtype != "float32":
            extractor = copy.deepcopy(extractor).to("cpu")  # the same weights (even random ones), moved
            extractor.dtype = "float32"
            if self.backbone_dtype != "float32":
                warnings.warn(f"backbone_dtype={self.backbone_dtype!r}: the backbone is exported in float32, so "
                              "the exported maps differ slightly from predict's", stacklevel=2)
        models = [m if self.device_.type == "cpu" else
                  PaDiMModel(grid=m.grid, **{k: v.cpu() for k, v in m.named_buffers()}) for m in self.model_]
        return PaDiMGraph(extractor, self.groups_, models, self.image_size_, float(self.sigma)).eval()

    # ----------------------------------------------------------------- save / load
    def _metadata(self) -> dict:
        params = self.get_params()
        params.pop("meta")  # saved on its own below
        params["layers"] = None if self.layers is None else list(self.layers_)
        params["weights"] = None if self.weights is None else str(self.weights)
        return {
            "params": params,
            "layers": list(self.layers_),
            "groups": [list(g) for g in self.groups_],
            "grids": [list(m.grid) for m in self.model_],
            "image_size": None if self.image_size_ is None else list(self.image_size_),
            "n_train": self.n_train_,
            "accumulate_dtypes": self.accumulate_dtypes_,
            "versions": modelfile.versions(),
            "meta": self.meta or {},
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model (tensors + JSON metadata) to one file, atomically (padim_lib.io.modelfile).
        Read it back with PaDiM.load (torch.load(weights_only=True))."""
        self._check_fitted()
        tensors = {
            f"{g}.{name}": buf
            for g, model in enumerate(self.model_)
            for name, buf in model.named_buffers()
        }
        modelfile.write(path, FORMAT, FORMAT_VERSION, self._metadata(), tensors)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> PaDiM:
        """Read a model written by save(); `device` overrides the saved one."""
        meta, tensors = modelfile.read(path, FORMAT, FORMAT_VERSION, "padim_lib model")
        try:
            params = dict(meta["params"], device=device)
            if params["layers"] is not None:
                params["layers"] = tuple(params["layers"])
            est = cls(**params)
            est._check_params()
            models = []
            for g, grid in enumerate(meta["grids"]):
                state = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(g)}
                mean, factor = state.pop("mean"), state.pop("factor")
                models.append(PaDiMModel(mean, factor, tuple(grid), **state))
            if len(models) != len(est.groups_):
                raise PadimError(f"{len(models)} fitted models for {len(est.groups_)} layer groups")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PadimError(f"{path}: corrupt padim_lib model file ({type(exc).__name__}: {exc})") from exc
        est.model_ = nn.ModuleList(models).to(est.device_)
        est.image_size_ = None if meta["image_size"] is None else tuple(meta["image_size"])
        est.n_train_ = meta["n_train"]
        est.accumulate_dtypes_ = meta["accumulate_dtypes"]
        est.meta = meta["meta"]
        return est
