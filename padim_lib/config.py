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
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from padim_lib.errors import PadimError

# Bump when the meaning of a key's inputs changes without a version bump
# (e.g. the feature cache's storage dtype or the bootstrap scheme).
KEY_SCHEMA = 1

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


# Modules that present numbers but never change one: editing them keeps every cached result.
PRESENTATION_MODULES = frozenset({
    "__init__", "__main__", "book", "cli", "errors", "plots", "provenance", "report", "runner", "tables",
    # the chapters' studies: they choose configurations and summarise rows, as `tables` does
    "studies", "detection", "nonaligned_study", "stc_study", "study_plots",
})
# What feature files depend on: the data sets' reading and preprocessing and the backbones.
FEATURE_SOURCES = ("datasets/", "backbones.py", "features.py", "featcache.py")


def _source_files(scope: str) -> list[Path]:
    root = Path(__file__).resolve().parent
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0].removesuffix(".py") in PRESENTATION_MODULES and "/" not in rel.rstrip("/"):
            continue
        if rel.startswith("cli/"):
            continue
        if scope == "features" and not rel.startswith(FEATURE_SOURCES):
            continue
        out.append(path)
    return out


@functools.lru_cache(maxsize=8)
def _digest_of(listing: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path, _, _ in listing:
        h.update(Path(path).relative_to(root).as_posix().encode() + b"\0")
        h.update(Path(path).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_digest(scope: str = "results") -> str:
    """sha256 (16 hex digits) of the library source files that compute numbers.

    scope "results": every module but the presentation ones (PRESENTATION_MODULES); "features":
    the modules feature files depend on (FEATURE_SOURCES). Keys hash this rather than the version
    number, so a student who edits `padim.py` (an editable install included) gets new results,
    while editing a notebook, a plot or the CLI keeps the cache. Re-read when a file's size or
    modification time changes.
    """
    listing = tuple((str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in _source_files(scope))
    return _digest_of(listing)


def code_versions(scope: str = "results") -> dict[str, str]:
    """What changes numbers besides a key's fields: this library's source (see `code_digest`), torch,
    torchvision, and the key schema."""
    from padim_lib import __version__

    return {
        "padim_lib": __version__,
        "code": code_digest(scope),
        "torch": _package_version("torch"),
        "torchvision": _package_version("torchvision"),
        "key_schema": str(KEY_SCHEMA),
    }


def stable_hash(payload: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of `payload` (sorted keys), first `length` hex digits."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class FrozenParams(dict):
    """A read-only, hashable dict of a method's parameters (configurations are frozen and hashable)."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("ExperimentConfig.params is read-only; use config.replace(params={...})")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, default=str))

    def __reduce__(self):
        return (FrozenParams, (dict(self),))


# ----------------------------------------------------------------------------- shared checks
# The configuration and the detectors accept and reject the same values: both call these.
def check_seed(seed: Any, where: str = "") -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise PadimError(f"{where}seed={seed!r}; expected an integer >= 0")
    return int(seed)


def check_eps(eps: Any, where: str = "") -> float:
    # eps = 0 leaves the covariance singular whenever N <= d: refused, "near 0" is allowed.
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (math.isfinite(eps) and eps > 0):
        raise PadimError(f"{where}eps={eps!r}; expected a finite number > 0")
    return float(eps)


def check_sigma(sigma: Any, where: str = "") -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not (math.isfinite(sigma) and sigma >= 0):
        raise PadimError(f"{where}sigma={sigma!r}; expected a finite number >= 0 (0 = no smoothing)")
    return float(sigma)


def check_max_train(max_train: Any, where: str = "") -> int | None:
    if max_train is None:
        return None
    if isinstance(max_train, bool) or not isinstance(max_train, numbers.Integral) or max_train < 2:
        raise PadimError(f"{where}max_train={max_train!r}; expected None or an integer >= 2")
    return int(max_train)


def check_layer_mode(layer_mode: Any, where: str = "") -> str:
    if layer_mode not in LAYER_MODES:
        raise PadimError(f"{where}layer_mode={layer_mode!r}; expected one of {list(LAYER_MODES)}")
    return layer_mode


def parse_reduce(reduce: Any, where: str = "") -> tuple[str | None, int | None]:
    """"random:100" -> ("random", 100), "pca:100" -> ("pca", 100), None (or "none") -> (None, None)."""
    if reduce is None or reduce in ("", "none", "None"):
        return None, None
    match = _REDUCE_RE.match(str(reduce)) if isinstance(reduce, str) else None
    if match is None:
        raise PadimError(f"{where}reduce={reduce!r}; expected None, 'random:D' or 'pca:D' with D a positive integer")
    return match.group(1), int(match.group(2))


def check_reduce(reduce: Any, backbone: str, groups: Sequence[Sequence[str]], where: str = "") -> str | None:
    """`reduce` checked against the embedding size of every layer group (one group per model)."""
    from padim_lib.backbones import embedding_size

    kind, dim = parse_reduce(reduce, where)
    if kind is None:
        return None
    for group in groups:
        channels = embedding_size(backbone, group)
        if dim > channels:
            raise PadimError(
                f"{where}reduce={reduce!r} asks for {dim} dimensions but the embedding of {list(group)} on "
                f"{backbone} has {channels}; expected d <= {channels}"
            )
    return f"{kind}:{dim}"


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def check_device(device: Any, where: str = "") -> str:
    """`device` checked before any work: a name torch knows, and a CUDA device that exists here.

    torch is imported only for CUDA names (their availability is the question)."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise PadimError(f"{where}device={device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise PadimError(f"{where}device={device!r}: no CUDA GPU is available here; expected 'cpu' or 'auto'")
        index = int(device.partition(":")[2] or 0)
        if index >= n:
            raise PadimError(f"{where}device={device!r}: this machine has {n} CUDA device(s); expected cuda:0..cuda:{n - 1}")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise PadimError(f"{where}device='mps': the MPS backend is not available here; expected 'cpu' or 'auto'")
    return device


def layer_groups(layers: Sequence[str], layer_mode: str) -> tuple[tuple[str, ...], ...]:
    """One group per fitted model: all layers together ("concat") or one per layer ("sum")."""
    return (tuple(layers),) if layer_mode == "concat" else tuple((x,) for x in layers)


_UNSET: Any = "<unset>"


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment's parameters: the single validated parameter set (CLI, study YAML, notebooks).

    method: a registered method (padim_lib.detectors); params: that method's own parameters
        (defaults filled in, validated against its schema).
    backbone, layers (None = the backbone's default layers; resolved by `backbones.resolve_layers`),
    layer_mode: "concat" (one model over the concatenated layers) or "sum" (one model per layer,
        maps summed: the paper's "Layer 1+2+3"); reduce: None, "random:D" (Rd, seeded) or "pca:D".
        Methods that do not read one of layers / layer_mode / reduce / eps refuse a non-default value.
    preprocess: a `datasets.Preprocess` (resize, centre crop). `resize=` / `crop=` are accepted as a
        shorthand for it (constructor, `replace`, `from_dict`), e.g. in a study YAML.
    seed, eps, sigma, max_train (first N training images), pretrained, weights (a local file).
    label, published_row: display only, never part of the key.
    """

    method: str = "padim"
    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] | None = None
    layer_mode: str = "concat"
    reduce: str | None = None
    params: Mapping[str, Any] = field(default_factory=FrozenParams)
    seed: int = 0
    eps: float = 0.01
    sigma: float = 4.0
    preprocess: Any = None  # datasets.Preprocess; None = the paper's 256 -> 224
    max_train: int | None = None
    pretrained: bool = True
    weights: str | None = None
    label: str = ""
    published_row: str = ""  # row name in published.csv this configuration is compared with ("" = none)
    resize: InitVar[int | None] = None
    crop: InitVar[Any] = _UNSET

    def __post_init__(self, resize: int | None, crop: Any) -> None:
        from padim_lib.backbones import check_image_size, resolve_layers
        from padim_lib.datasets.preprocess import Preprocess
        from padim_lib.detectors import OPTIONAL_FIELDS, get_method

        where = "ExperimentConfig."
        spec = get_method(self.method)
        if spec.backbones and self.backbone not in spec.backbones:
            raise PadimError(f"{where}backbone={self.backbone!r}: method {self.method!r} works with {list(spec.backbones)}")
        pre = self.preprocess if self.preprocess is not None else Preprocess()
        if isinstance(pre, Mapping):
            pre = Preprocess(**pre)
        if not isinstance(pre, Preprocess):
            raise PadimError(f"{where}preprocess={pre!r}; expected a Preprocess or a mapping of resize / crop")
        if resize is not None or crop is not _UNSET:
            pre = Preprocess(
                resize=pre.resize if resize is None else resize,
                crop=pre.crop if crop is _UNSET else (crop or None),  # crop 0 = no crop, as on the CLI
                normalize=pre.normalize,
            )
        object.__setattr__(self, "preprocess", pre)
        if isinstance(self.layers, str):
            raise PadimError(f"{where}layers must be a sequence of layer names, got the string {self.layers!r}")
        if self.layers is not None:
            object.__setattr__(self, "layers", resolve_layers(self.backbone, self.layers))
        else:
            resolve_layers(self.backbone, None)  # checks the backbone name
        if self.reduce in ("", "none", "None"):
            object.__setattr__(self, "reduce", None)
        check_layer_mode(self.layer_mode, where)
        object.__setattr__(self, "seed", check_seed(self.seed, where))
        object.__setattr__(self, "eps", check_eps(self.eps, where))
        object.__setattr__(self, "sigma", check_sigma(self.sigma, where))
        object.__setattr__(self, "max_train", check_max_train(self.max_train, where))
        object.__setattr__(self, "reduce", check_reduce(self.reduce, self.backbone,
                                                        layer_groups(self.resolved_layers(), self.layer_mode), where))
        if "layers" in spec.reads:  # a method on backbone features needs >= 1 cell on every layer
            check_image_size(self.backbone, self.resolved_layers(), pre.size, where)
        if not isinstance(self.pretrained, bool):
            raise PadimError(f"{where}pretrained={self.pretrained!r}; expected true or false")
        if self.weights is not None and not self.pretrained:
            raise PadimError(f"{where}weights given with pretrained=False; pass one or the other")
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in OPTIONAL_FIELDS}
        for name in OPTIONAL_FIELDS:
            if name not in spec.reads and getattr(self, name) != defaults[name]:
                raise PadimError(f"{where}{name}={getattr(self, name)!r}: method {self.method!r} has no such parameter")
        if not isinstance(self.params, Mapping):
            raise PadimError(f"{where}params={self.params!r}; expected a mapping of {self.method!r} parameters")
        params = spec.validate_params(self.params, f"{where}params.")
        object.__setattr__(self, "params", FrozenParams(params))

    def method_spec(self):
        """The registry entry of `method` (padim_lib.detectors.MethodSpec)."""
        from padim_lib.detectors import get_method

        return get_method(self.method)

    def uses_seed(self) -> bool:
        """True when the seed changes the numbers (e.g. PaDiM's random channel selection)."""
        return bool(self.method_spec().uses_seed(self))

    def resolved_layers(self) -> tuple[str, ...]:
        """`layers`, or the backbone's default layers when None."""
        from padim_lib.backbones import resolve_layers

        return resolve_layers(self.backbone, self.layers)

    def numeric_fields(self) -> dict[str, Any]:
        """The fields that change numbers, canonicalised (layers resolved, seed 0 when unused,
        fields the method does not read left out)."""
        reads = self.method_spec().reads
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in DISPLAY_FIELDS}
        for name in ("layers", "layer_mode", "reduce", "eps"):
            if name not in reads:
                d.pop(name)
        if "layers" in d:
            d["layers"] = list(self.resolved_layers())
        d["params"] = dict(self.params)
        d["preprocess"] = dataclasses.asdict(self.preprocess)
        if not self.uses_seed():
            d["seed"] = 0  # deterministic configurations: every seed shares one result
        if self.weights is not None:
            # A local weights file is identified by its contents, not its path.
            d["weights"] = file_digest(self.weights)
        return d

    def key(self) -> str:
        """16 hex digits of sha256(number-changing fields + code versions)."""
        return stable_hash({"config": self.numeric_fields(), "versions": code_versions()})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (layers as a list, params and preprocess as mappings)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if d["layers"] is not None:
            d["layers"] = list(d["layers"])
        d["params"] = dict(self.params)
        d["preprocess"] = dataclasses.asdict(self.preprocess)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExperimentConfig:
        """Inverse of `to_dict`, also taking `resize` / `crop`; unknown fields are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)} | {"resize", "crop"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise PadimError(f"unknown ExperimentConfig field(s) {unknown}; expected a subset of {sorted(names)}")
        d = dict(d)
        if d.get("layers") is not None and not isinstance(d["layers"], str):
            d["layers"] = tuple(d["layers"])
        return cls(**d)

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with `changes` applied (validated like the constructor; `resize` / `crop` accepted)."""
        names = {f.name for f in dataclasses.fields(self)} | {"resize", "crop"}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise PadimError(f"unknown ExperimentConfig field(s) {unknown}")
        if "method" in changes and "params" not in changes:
            changes["params"] = {}  # another method's parameters do not carry over
        return dataclasses.replace(self, **{"resize": None, "crop": _UNSET, **changes})


# The shorthands are constructor arguments only: reading `config.resize` must not find the class
# default (None) but fail, so every reader goes through `config.preprocess`.
del ExperimentConfig.resize, ExperimentConfig.crop


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
