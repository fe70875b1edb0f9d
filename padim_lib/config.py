"""One experiment configuration and its cache key.

An `ExperimentConfig` says everything that changes a result's numbers (method, backbone,
layers, reduction, seed, eps, sigma, preprocessing, training cap, weights). `key()` hashes
exactly those fields plus the versions of the code that computes them, so a result cache
keyed by it is reused when, and only when, the numbers would be the same. Display fields
(`label`, `published_row`) are not part of the key: two tables may show one configuration
under different names (Table I's "PaDiM-R18" is Table II's "all (448)").
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from padim_lib.errors import PadimError

# Bump when the meaning of a key's inputs changes without a version bump
# (e.g. the feature cache's storage dtype or the bootstrap scheme).
KEY_SCHEMA = 1

METHODS = ("padim",)
LAYER_MODES = ("concat", "sum")
_REDUCE_RE = re.compile(r"^(random|pca):([1-9][0-9]*)$")
# Fields that do not change numbers: shown to readers, never hashed.
DISPLAY_FIELDS = ("label", "published_row")


@functools.cache  # metadata look-ups cost ms; sweeps plan thousands of keys
def _package_version(name: str) -> str:
    """Installed version of a distribution without importing it (torch import costs seconds)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def code_versions() -> dict[str, str]:
    """Versions that change numbers: this library, torch, torchvision, plus the key schema."""
    from padim_lib import __version__

    return {
        "padim_lib": __version__,
        "torch": _package_version("torch"),
        "torchvision": _package_version("torchvision"),
        "key_schema": str(KEY_SCHEMA),
    }


def stable_hash(payload: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of `payload` (sorted keys), first `length` hex digits."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class ExperimentConfig:
    """One PaDiM configuration (see INTERFACES "study layer").

    layers: backbone layer names, None = the backbone's default layers (resolved in `key()`).
    layer_mode: "concat" (PaDiM, one Gaussian over the concatenated layers) or "sum"
        (one model per layer, maps summed: the paper's "Layer 1+2+3").
    reduce: None, "random:D" (Rd, seeded by `seed`) or "pca:D".
    """

    method: str = "padim"
    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] | None = None
    layer_mode: str = "concat"
    reduce: str | None = None
    seed: int = 0
    eps: float = 0.01
    sigma: float = 4.0
    resize: int = 256
    crop: int | None = 224
    max_train: int | None = None
    pretrained: bool = True
    weights: str | None = None
    label: str = ""
    published_row: str = ""  # row name in published.csv this configuration is compared with ("" = none)

    def __post_init__(self) -> None:
        if self.layers is not None:
            if isinstance(self.layers, str):
                raise PadimError(f"ExperimentConfig.layers must be a sequence of layer names, got the string {self.layers!r}")
            object.__setattr__(self, "layers", tuple(str(x) for x in self.layers))
            if not self.layers:
                raise PadimError("ExperimentConfig.layers is empty; use None for the backbone's default layers")
        if self.reduce in ("", "none", "None"):
            object.__setattr__(self, "reduce", None)
        if self.method not in METHODS:
            raise PadimError(f"ExperimentConfig.method={self.method!r}; expected one of {METHODS}")
        if self.layer_mode not in LAYER_MODES:
            raise PadimError(f"ExperimentConfig.layer_mode={self.layer_mode!r}; expected one of {LAYER_MODES}")
        if self.reduce is not None and not _REDUCE_RE.match(str(self.reduce)):
            raise PadimError(f"ExperimentConfig.reduce={self.reduce!r}; expected None, 'random:D' or 'pca:D' with D > 0")
        if self.reduce is not None and self.layer_mode == "sum":
            raise PadimError("ExperimentConfig: reduce is only defined for layer_mode='concat' (one embedding)")
        for name in ("resize", "crop", "max_train"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise PadimError(f"ExperimentConfig.{name}={value!r}; expected a positive int" + (" or None" if name != "resize" else ""))
        if self.crop is not None and self.crop > self.resize:
            raise PadimError(f"ExperimentConfig.crop={self.crop} is larger than resize={self.resize}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise PadimError(f"ExperimentConfig.seed={self.seed!r}; expected an int >= 0")
        if not float(self.eps) > 0:
            raise PadimError(f"ExperimentConfig.eps={self.eps!r}; expected > 0")
        if not float(self.sigma) >= 0:
            raise PadimError(f"ExperimentConfig.sigma={self.sigma!r}; expected >= 0")
        if self.weights is not None and not self.pretrained:
            raise PadimError("ExperimentConfig: weights given with pretrained=False; pass one or the other")

    def uses_seed(self) -> bool:
        """True when the seed changes the numbers (random channel selection); others run seed 0 only."""
        return self.reduce is not None and self.reduce.startswith("random")

    def resolved_layers(self) -> tuple[str, ...]:
        """`layers`, or the backbone's default layers when None (imports padim_lib.features)."""
        if self.layers is not None:
            return self.layers
        from padim_lib.features import BACKBONES

        if self.backbone not in BACKBONES:
            raise PadimError(f"ExperimentConfig.backbone={self.backbone!r}; expected one of {sorted(BACKBONES)}")
        return tuple(BACKBONES[self.backbone].default_layers)

    def numeric_fields(self) -> dict[str, Any]:
        """The fields that change numbers, canonicalised (layers resolved, seed 0 when unused)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in DISPLAY_FIELDS}
        d["layers"] = list(self.resolved_layers())
        d["eps"] = float(self.eps)
        d["sigma"] = float(self.sigma)
        if not self.uses_seed():
            d["seed"] = 0  # PCA / no reduction are deterministic: seeds share one result
        if self.weights is not None:
            # A local weights file is identified by its contents, not its path.
            d["weights"] = file_digest(self.weights)
        return d

    def key(self) -> str:
        """16 hex digits of sha256(number-changing fields + code versions)."""
        return stable_hash({"config": self.numeric_fields(), "versions": code_versions()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (layers as a list)."""
        d = dataclasses.asdict(self)
        if d["layers"] is not None:
            d["layers"] = list(d["layers"])
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        """Inverse of `to_dict`; unknown fields are an error that names them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise PadimError(f"unknown ExperimentConfig field(s) {unknown}; expected a subset of {sorted(names)}")
        d = dict(d)
        if d.get("layers") is not None:
            d["layers"] = tuple(d["layers"])
        return cls(**d)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with `changes` applied (validated like the constructor)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise PadimError(f"unknown ExperimentConfig field(s) {unknown}")
        return dataclasses.replace(self, **changes)


def file_digest(path: str) -> str:
    """sha256 of a local weights file (moving it keeps the key, changing it does not).

    A string that is no file (e.g. a torchvision weights name) is hashed as given; the
    backbone loader reports it if it is wrong.
    """
    p = Path(path)
    if not p.is_file():
        return str(path)
    st = p.stat()
    return _digest_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest_cached(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key so a rewritten file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()
