"""What a task costs before it runs: feature-cache bytes, peak memory and arithmetic, from shapes alone.

The cost of a sweep task (one class x one configuration, `engine.task.Task`) follows from a few
shapes: the images of its class (counted in the data), each backbone layer's map at the input size
(`backbone_shapes`: one forward pass on the meta device, no weights, no arithmetic), and the method's
parameters. The laws, per task, with N_train / N_test images of side S:

* feature cache (per distinct `FeatureSpec`, shared by every configuration that reads it):
  images x sum over layers of C x h x w x 2 B (float16 storage, `features.cache.STORAGE_DTYPE`);
* memory: the class's train and test features, held in memory while it fits and scores (float16),
  plus the method's working set:
  - PaDiM: per Gaussian group (one; one per layer in "sum" mode) the (P, d, d) accumulator, float64
    when it fits `gaussian.FLOAT64_BUDGET_BYTES` and then written into a float32 factor (1.5x), else
    float32 overwritten in place, and the means (`complexity.padim_bytes` is the fitted model's law);
  - SPADE: the gallery, every training image's pixel-layer maps in float32 (N_train x sum C h w x 4 B),
    its squared norms and the pooled features, plus one block of distances (`knn.block_bytes`);
  - the VAE: the network with its gradient and Adam's two moments (4 x parameters x 4 B), the training
    images at `aug_resize` (float32), one batch's activations and their gradients (measured per image
    by `vae_shapes`);
  - the maps and the pixel metrics of the test set: N_test x S^2 x METRIC_BYTES_PER_PIXEL;
* arithmetic (FLOPs, 2 per multiply-add): PaDiM fit N_train x P x d^2 x 2 (outer products) + P x d^3
  (Cholesky factor and its triangular inverse), predict N_test x P x d^2 (triangular products), PCA
  N_train x P x C^2 x 2 more; SPADE predict N_test x K x sum_l P_l^2 x C_l x 2 (pixel distances to
  the K nearest training images, each layer at its own grid, `spade.knn`); the VAE 3 x forward FLOPs
  per training draw (forward and backward) and 1 x per test image; a backbone's forward FLOPs are
  counted by `torch.utils.flop_counter` on the meta forward.

Times are not here: the plan (`report.plan`) turns FLOPs into seconds with rates measured on the
machine (`measure_rates`, `measure_backbone`). Every figure is an estimate; none is tested against
a measurement, except the shapes and the cache law (tests/test_plan.py).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.task import Task
from padim_lib.features.cache import FeatureSpec
from padim_lib.methods.params import layer_groups, parse_reduce
from padim_lib.paper.complexity import padim_bytes

FEATURE_BYTES = 2  # float16 feature cache
FLOAT32 = 4
# The test set's maps (float32), the pixel metrics' sort keys and order (float64 + int64) and the masks:
# PixelScores' working set per test pixel.
METRIC_BYTES_PER_PIXEL = 24
EXAMPLES = 4  # example images stored with a task's rows (engine.task.run_task's n_examples)
CURVE_POINTS = 1000


@dataclass(frozen=True)
class Shapes:
    """A backbone's maps at one input side: layer -> (C, h, w), and its forward FLOPs per image."""

    maps: dict[str, tuple[int, int, int]]
    flops: float


@functools.cache
def backbone_shapes(backbone: str, layers: tuple[str, ...], size: int) -> Shapes:
    """The maps of `layers` of `backbone` for one `size` x `size` image, from a forward pass on the
    meta device (shapes only: no weights are read, nothing is computed)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from padim_lib.features.extractor import FeatureExtractor

    with torch.device("meta"):
        extractor = FeatureExtractor(backbone, layers, pretrained=False)
    with FlopCounterMode(display=False) as counter:
        out = extractor(torch.empty(1, 3, size, size, device="meta"))
    return Shapes({k: tuple(int(s) for s in v.shape[1:]) for k, v in out.items()}, float(counter.get_total_flops()))


@dataclass(frozen=True)
class VAEShapes:
    """The VAE network at one image side: parameters, forward FLOPs and activation bytes per image."""

    params: int
    flops: float
    activation_bytes: int


def _vae_net(backbone: str, latent_channels: int) -> Any:
    """The VAE's network on `backbone`'s encoder, random weights (for shapes and timings only)."""
    from padim_lib.features.extractor import load_backbone
    from padim_lib.methods.vae.net import ENCODERS, VAENet, make_encoder

    return VAENet(make_encoder(backbone, load_backbone(backbone, pretrained=False)), ENCODERS[backbone],
                  latent_channels)


@functools.cache
def vae_shapes(image_size: int, latent_channels: int = 64, backbone: str = "resnet18") -> VAEShapes:
    """`VAEShapes` from a meta forward of the VAE's network (activations: every module's output)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = _vae_net(backbone, latent_channels)
    total = [0]

    def count(_module, _inputs, output) -> None:
        for t in output if isinstance(output, tuple) else (output,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * FLOAT32

    hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
    with FlopCounterMode(display=False) as counter:
        net(torch.empty(1, 3, image_size, image_size, device="meta"))
    for h in hooks:
        h.remove()
    return VAEShapes(sum(p.numel() for p in net.parameters()), float(counter.get_total_flops()), total[0])


def spec_shapes(spec: FeatureSpec) -> Shapes:
    """The maps a feature file holds per image."""
    return backbone_shapes(spec.backbone, tuple(spec.layers), spec.preprocess.size)


def spec_image_bytes(spec: FeatureSpec) -> int:
    """Bytes per image of a feature file (float16 maps of every layer)."""
    return sum(c * h * w for c, h, w in spec_shapes(spec).maps.values()) * FEATURE_BYTES


@dataclass
class TaskCost:
    """One task's estimated working set and arithmetic (see the module docstring)."""

    peak_bytes: int
    fit_flops: float
    predict_flops: float
    train_draws: int = 0  # VAE: augmented training images drawn (each a forward and a backward pass)
    store_bytes: int = 0  # its rows and arrays in the result store
    checkpoint_bytes: int = 0  # VAE: its training checkpoint


def _grid(maps: dict[str, tuple[int, int, int]], layers: tuple[str, ...]) -> tuple[int, int]:
    """(positions of the group's finest grid, channels of the concatenation)."""
    return max(maps[x][1] * maps[x][2] for x in layers), sum(maps[x][0] for x in layers)


def padim_cost(config: ExperimentConfig, maps: dict[str, tuple[int, int, int]], n_train: int, n_test: int
               ) -> tuple[int, float, float]:
    """(working bytes of the Gaussians, fit FLOPs, predict FLOPs) of a PaDiM configuration."""
    from padim_lib.methods.padim.gaussian import FLOAT64_BUDGET_BYTES

    kind, d_reduced = parse_reduce(config.reduce)
    work, fit, predict = 0, 0.0, 0.0
    for group in layer_groups(config.resolved_layers(), config.layer_mode):
        p, c = _grid(maps, tuple(group))
        d = min(int(d_reduced), c) if kind else c
        # the fitted model (factor, means, channel indices), and a float64 accumulator beside it when
        # one fits the budget (a float32 accumulator becomes the factor in place)
        float64 = p * d * d * 8 <= FLOAT64_BUDGET_BYTES
        work += padim_bytes(p, d, reduced=kind is not None) + (p * d * d * 8 if float64 else 0)
        fit += n_train * p * d * d * 2 + p * d**3
        predict += n_test * p * d * d
        if kind == "pca":
            fit += n_train * p * c * c * 2 + n_train * p * c * d * 2
            predict += n_test * p * c * d * 2
    return work, fit, predict


def spade_cost(config: ExperimentConfig, detector: Any, maps: dict[str, tuple[int, int, int]], n_train: int,
               n_test: int) -> tuple[int, float, float]:
    """(gallery and distance-block bytes, fit FLOPs, predict FLOPs) of a SPADE configuration."""
    from padim_lib.methods.spade.detector import default_global_layer
    from padim_lib.methods.spade.knn import CPU_BLOCK_BYTES

    pixel = config.resolved_layers()
    global_layer = detector.global_layer or default_global_layer(config.backbone)
    gallery = n_train * sum(c * h * w + h * w for c, h, w in (maps[x] for x in pixel)) * FLOAT32
    gallery += n_train * maps[global_layer][0] * FLOAT32
    k = min(int(config.params.get("n_gallery", 50)), n_train)
    predict = n_test * k * sum((h * w) ** 2 * c * 2 for c, h, w in (maps[x] for x in pixel))
    finest = maps[pixel[0]][1] * maps[pixel[0]][2]
    block = min(CPU_BLOCK_BYTES, k * finest * finest * FLOAT32)  # one block of pixel distances
    return gallery + block, float(gallery // FLOAT32), float(predict)


def task_cost(task: Task, n_train: int, n_test: int) -> TaskCost:
    """The estimated cost of `task` on a class with `n_train` / `n_test` images (already capped by
    max_train)."""
    cfg = task.config
    size = cfg.preprocess.size
    detector = task.detector("cpu")
    metrics = n_test * size * size * METRIC_BYTES_PER_PIXEL
    store = EXAMPLES * size * size * (3 + 2 + 1) + n_test * 200 + 6 * CURVE_POINTS * FLOAT32
    if not detector.uses_features:  # the VAE: trained on the images themselves
        shapes = vae_shapes(int(detector.image_size), int(detector.latent_channels), str(detector.backbone))
        net = shapes.params * FLOAT32
        images = n_train * 3 * int(detector.aug_resize) ** 2 * FLOAT32
        batch = int(detector.batch_size) * shapes.activation_bytes * 2  # activations and their gradients
        draws = int(detector.epochs) * int(detector.images_per_epoch)
        return TaskCost(peak_bytes=4 * net + images + batch + metrics, fit_flops=3.0 * draws * shapes.flops,
                        predict_flops=n_test * shapes.flops, train_draws=draws, store_bytes=store,
                        checkpoint_bytes=3 * net)
    train_spec, test_spec = task.feature_specs()
    maps = spec_shapes(train_spec).maps
    features = (n_train + n_test) * spec_image_bytes(train_spec)
    if cfg.method == "spade":
        work, fit, predict = spade_cost(cfg, detector, maps, n_train, n_test)
    else:  # PaDiM and every other Gaussian-per-position method on these features
        work, fit, predict = padim_cost(cfg, maps, n_train, n_test)
    return TaskCost(peak_bytes=features + work + metrics, fit_flops=fit, predict_flops=predict, store_bytes=store)


# ----------------------------------------------------------------------------- rates of this machine


@dataclass(frozen=True)
class Rates:
    """What this machine does per second: float32 matrix-product FLOPs (the methods' arithmetic), and
    seconds per test pixel of the pixel metrics and per bootstrap replicate of them."""

    flops: float
    pixel_s: float
    replicate_s: float


@functools.cache
def measure_rates(seconds: float = 0.3) -> Rates:
    """`Rates` measured here: a 512 x 512 float32 matrix product repeated for about `seconds`, and
    the pixel metrics (`metrics.pixel.PixelScores`) of 8 random 128 x 128 maps with 4 replicates."""
    import torch

    from padim_lib.metrics.pixel import PixelScores

    a = torch.randn(512, 512)
    a @ a  # warm-up: thread pool, allocator
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        a @ a
        n += 1
    flops = n * 2 * 512**3 / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    masks = rng.random((8, 128, 128)) > 0.97
    maps = rng.random((8, 128, 128)).astype(np.float32) + masks
    t0 = time.perf_counter()
    scores = PixelScores(masks, maps, fpr_limit=0.3)
    scores.pixel_auroc(), scores.pro_auc()
    pixel_s = (time.perf_counter() - t0) / masks.size
    weights = np.ones((4, 8), np.int64)
    t0 = time.perf_counter()
    for w in weights:
        scores.pixel_auroc(w), scores.pro_auc(w)
    return Rates(flops, pixel_s, (time.perf_counter() - t0) / len(weights))


@functools.cache
def measure_backbone(backbone: str, layers: tuple[str, ...], size: int, images: int = 2) -> float:
    """Seconds per image of `backbone`'s forward pass up to `layers` on this machine's CPU: a
    warm-up image, then `images` timed in one batch (random weights: the time does not depend on them)."""
    import torch

    from padim_lib.features.cache import CHANNELS_LAST
    from padim_lib.features.extractor import FeatureExtractor

    extractor = FeatureExtractor(backbone, layers, pretrained=False, channels_last=CHANNELS_LAST)
    extractor(torch.randn(1, 3, size, size))
    x = torch.randn(images, 3, size, size)
    t0 = time.perf_counter()
    extractor(x)
    return (time.perf_counter() - t0) / images


@functools.cache
def measure_vae(image_size: int, latent_channels: int = 64, backbone: str = "resnet18") -> float:
    """Seconds per image of the VAE network's forward pass on this machine (random weights)."""
    import torch

    net = _vae_net(backbone, latent_channels).eval()
    with torch.no_grad():
        net(torch.randn(1, 3, image_size, image_size))
        t0 = time.perf_counter()
        net(torch.randn(2, 3, image_size, image_size))
    return (time.perf_counter() - t0) / 2
