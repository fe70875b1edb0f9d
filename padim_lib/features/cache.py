"""On-disk cache of backbone feature maps, one file per (data, class, split, backbone, preprocessing).

The backbone pass is the expensive part of every PaDiM configuration, and all of Table I and
Table II need the same maps (single layers, their sum, the concatenation, Rd and PCA are all
computed from layer1..3). So features are extracted once per `FeatureSpec` and every
configuration of that class reads them from the file.

Storage: each layer's maps are stored as float16, halving the disk and memory footprint (R18
at 224 px: 0.7 MB instead of 1.4 MB per image). Backbone activations are O(1..50) and fp16
keeps 11 significant bits (relative error <= 2^-11 ~ 5e-4). The Gaussian adds eps = 0.01 to
every covariance diagonal, far above the rounding noise this adds, and measured on the
synthetic set (efficientnet_lite0, 60 train / 30 test images, classes brick and washer) the
image AUROC, pixel AUROC and PRO of fp16-stored vs fp32 features differ by at most 2e-5, with no
reduction, Rd 50 and PCA 50 (tests/test_featcache.py checks < 1e-3 on a tiny set). A layer
that would overflow fp16 (|x| > 65504) is kept in float32 instead.

Files are written to a temporary name in the cache folder and renamed (`os.replace`), so a
reader never sees a partial file and two processes writing the same key leave one complete,
identical file (the last rename wins).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from padim_lib.errors import PadimError
from padim_lib.features.device import resolve_device
from padim_lib.io.atomic import atomic_torch_save
from padim_lib.io.digest import code_versions, file_digest, stable_hash

STORAGE_DTYPE = torch.float16
# Backbones run channels-last: the same maps to float32 rounding (within 1e-6 of their range,
# tests/test_features.py), 1.4-1.6x faster on CPU. A runtime choice, not part of any key
# (benchmarks/bench_book.py switches it off to measure the difference).
CHANNELS_LAST = True
FORMAT_VERSION = 1
SPLITS = ("train", "test")


def data_identity(data_root: str | os.PathLike, category: str) -> str:
    """A short fingerprint of one class's files: root folder name, dataset.json, listing.

    The listing (relative path and size of every file under <root>/<category>) changes when
    the data changes (a regenerated synthetic set, a repaired download) but not when the tree
    is moved, so caches survive a move and a Dask worker with the data elsewhere gets the same
    keys. Listing only: nothing is read, so it costs milliseconds even for MVTec AD.
    An STC root's scene: `stc.scene_identity` (its videos, frames and mask files, listed likewise).
    """
    from padim_lib.datasets.catalog import is_stc_root, list_classes
    from padim_lib.datasets.stc import scene_identity

    root = Path(data_root).expanduser().resolve()
    if is_stc_root(root):
        if category not in list_classes(root):
            raise FileNotFoundError(f"scene {category!r} has no training videos in {root} (data_root={str(data_root)!r})")
        return scene_identity(root, category)
    class_dir = root / category
    if not class_dir.is_dir():
        raise FileNotFoundError(f"category folder {class_dir} does not exist (data_root={str(data_root)!r})")
    h = hashlib.sha256()
    h.update(root.name.encode())
    manifest = root / "dataset.json"
    if manifest.is_file():
        h.update(b"\0manifest\0" + manifest.read_bytes())
    entries = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            entries.append(f"{p.relative_to(class_dir).as_posix()}\t{p.stat().st_size}")
    h.update("\n".join(sorted(entries)).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class FeatureSpec:
    """What determines one feature file. `max_train` (first N images) applies to the train split only."""

    data_root: str
    category: str
    split: str
    backbone: str
    layers: tuple[str, ...]
    preprocess: Any = None  # datasets.Preprocess; None = the paper's 256 -> 224
    max_train: int | None = None
    pretrained: bool = True
    weights: str | None = None

    def __post_init__(self) -> None:
        from padim_lib.datasets.preprocess import Preprocess

        object.__setattr__(self, "data_root", str(self.data_root))
        if self.preprocess is None:
            object.__setattr__(self, "preprocess", Preprocess())
        if not isinstance(self.preprocess, Preprocess):
            raise PadimError(f"FeatureSpec.preprocess={self.preprocess!r}; expected a Preprocess")
        if isinstance(self.layers, str) or not self.layers:
            raise PadimError(f"FeatureSpec.layers: expected a non-empty tuple of layer names, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.split not in SPLITS:
            raise PadimError(f"FeatureSpec.split={self.split!r}; expected one of {SPLITS}")
        if self.split == "test" and self.max_train is not None:
            raise PadimError("FeatureSpec.max_train applies to the train split only; pass None for 'test'")
        if self.max_train is not None and (not isinstance(self.max_train, int) or self.max_train <= 0):
            raise PadimError(f"FeatureSpec.max_train={self.max_train!r}; expected a positive int or None")

    def key(self) -> str:
        """16 hex digits over the data's identity, every field but the root's path, and versions."""
        fields = asdict(self)
        fields["layers"] = list(self.layers)
        fields["data_root"] = data_identity(self.data_root, self.category)
        if self.weights is not None:
            fields["weights"] = file_digest(self.weights)
        return stable_hash(
            {"spec": fields, "storage": str(STORAGE_DTYPE), "format": FORMAT_VERSION,
             "versions": code_versions("features")}
        )

    def filename(self) -> str:
        return f"{self.category}_{self.split}_{self.backbone}_{self.key()}.pt"


def _make_extractor(spec: FeatureSpec, device: torch.device) -> torch.nn.Module:
    # Looked up on the module at call time so tests can count or replace extractions.
    from padim_lib.features import extractor as features

    return features.FeatureExtractor(
        spec.backbone, spec.layers, pretrained=spec.pretrained, weights=spec.weights, channels_last=CHANNELS_LAST
    ).to(device)


def _to_storage(x: torch.Tensor) -> torch.Tensor:
    """fp16 copy on the CPU, unless the values would overflow fp16 (then fp32)."""
    x = x.detach().to("cpu")
    if x.numel() and float(x.abs().max()) > torch.finfo(STORAGE_DTYPE).max:
        return x.float()
    return x.to(STORAGE_DTYPE)


def extract(spec: FeatureSpec, device: str | torch.device = "auto", batch_size: int = 16, progress: bool = True) -> dict[str, Any]:
    """Run the backbone over the split; returns the dict that `ensure_features` stores."""
    from tqdm.auto import tqdm

    from padim_lib.datasets import open_dataset

    dev = resolve_device(device)
    # an STC scene spreads max_train over its clips itself; folders keep their first N images
    data = open_dataset(spec.data_root, spec.category, spec.split, spec.preprocess, max_train=spec.max_train)
    n = len(data) if spec.max_train is None else min(len(data), spec.max_train)
    subset = torch.utils.data.Subset(data, range(n))  # deterministic order: the first n images
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=0)
    extractor = _make_extractor(spec, dev)
    feats: dict[str, list[torch.Tensor]] = {layer: [] for layer in spec.layers}
    masks: list[torch.Tensor] = []
    with tqdm(total=n, desc=f"features {spec.category}/{spec.split}", unit="img", disable=not progress) as bar:
        for batch in loader:
            out = extractor(batch["image"].to(dev))
            for layer in spec.layers:
                feats[layer].append(_to_storage(out[layer]))
            masks.append(batch["mask"].to(torch.uint8))
            bar.update(len(batch["image"]))
    has_masks = spec.split == "test" and bool(getattr(data, "has_masks", False))
    return {
        "format": FORMAT_VERSION,
        "spec": asdict(spec),
        "features": {layer: torch.cat(chunks) for layer, chunks in feats.items()},
        "labels": torch.as_tensor(data.labels[:n], dtype=torch.int64),
        "masks": torch.cat(masks) if has_masks else None,
        "paths": list(data.paths[:n]),
        "defect_types": list(data.defect_types[:n]),
        "image_size": int(spec.preprocess.size),
        "versions": code_versions("features"),
    }


def feature_path(spec: FeatureSpec, cache_dir: str | os.PathLike) -> Path:
    """Where `ensure_features` keeps the file for `spec`."""
    return Path(cache_dir) / spec.filename()


def ensure_features(
    spec: FeatureSpec,
    cache_dir: str | os.PathLike,
    device: str | torch.device = "auto",
    batch_size: int = 16,
    progress: bool = True,
) -> Path:
    """The feature file for `spec`, extracted now if it is not in `cache_dir` yet."""
    path = feature_path(spec, cache_dir)
    if not path.is_file():
        atomic_torch_save(extract(spec, device=device, batch_size=batch_size, progress=progress), path)
    return path


def load_features(path: str | os.PathLike) -> dict[str, Any]:
    """Read a feature file.

    Returns {"features": {layer: Tensor (N, C_l, h_l, w_l) float16 (or float32)}, "labels": np
    int64 (N,), "masks": np uint8 (N, S, S) or None (no ground truth), "paths": [N str],
    "defect_types": [N str], "image_size": S, "spec": dict}. Convert features to float32 per
    batch when using them; keeping the file's dtype halves peak memory.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file {path} does not exist (run ensure_features first)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a damaged file
        raise PadimError(f"feature file {path} is unreadable ({err}); delete it to recompute") from err
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
        raise PadimError(f"feature file {path} is not a format-{FORMAT_VERSION} feature cache file; delete it to recompute")
    masks = obj["masks"]
    return {
        "features": obj["features"],
        "labels": obj["labels"].numpy(),
        "masks": None if masks is None else masks.numpy(),
        "paths": list(obj["paths"]),
        "defect_types": list(obj["defect_types"]),
        "image_size": int(obj["image_size"]),
        "spec": obj["spec"],
    }


class FeatureBatches:
    """Re-iterable {layer: Tensor (b, C_l, h_l, w_l) float32} batches of cached maps.

    What `PaDiM.fit_features` / `predict_features` take; re-iterable because PCA reads the
    training set twice. Converting per batch keeps the cached float16 tensors as they are.
    """

    def __init__(self, features: dict[str, torch.Tensor], layers: tuple[str, ...] | None = None, batch_size: int = 32):
        self.layers = tuple(features) if layers is None else tuple(layers)
        missing = [x for x in self.layers if x not in features]
        if missing:
            raise PadimError(f"layers {missing} are not in the feature file (it has {list(features)})")
        self.features, self.batch_size = features, int(batch_size)
        self.n = int(features[self.layers[0]].shape[0])

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        for start in range(0, self.n, self.batch_size):
            yield {x: self.features[x][start : start + self.batch_size].float() for x in self.layers}
