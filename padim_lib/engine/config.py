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
import json
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from padim_lib.errors import PadimError
from padim_lib.io.digest import code_versions, file_digest, stable_hash
from padim_lib.methods.params import (
    check_eps,
    check_layer_mode,
    check_max_train,
    check_reduce,
    check_seed,
    check_sigma,
    layer_groups,
)

# Fields that do not change numbers: shown to readers, never hashed.
DISPLAY_FIELDS = ("label", "published_row")


class FrozenParams(dict):
    """A read-only, hashable dict of a method's parameters (configurations are frozen and hashable)."""

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("ExperimentConfig.params is read-only; use config.replace(params={...})")

    __setitem__ = __delitem__ = update = pop = popitem = clear = setdefault = _readonly  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(json.dumps(self, sort_keys=True, default=str))

    def __reduce__(self):
        return (FrozenParams, (dict(self),))


_UNSET: Any = "<unset>"


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment's parameters: the single validated parameter set (CLI, study YAML, notebooks).

    method: a registered method (padim_lib.methods.registry); params: that method's own parameters
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
        from padim_lib.datasets.preprocess import Preprocess
        from padim_lib.features.backbones import check_image_size, resolve_layers
        from padim_lib.methods.registry import OPTIONAL_FIELDS, get_method

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
        """The registry entry of `method` (padim_lib.methods.registry.MethodSpec)."""
        from padim_lib.methods.registry import get_method

        return get_method(self.method)

    def uses_seed(self) -> bool:
        """True when the seed changes the numbers (e.g. PaDiM's random channel selection)."""
        return bool(self.method_spec().uses_seed(self))

    def resolved_layers(self) -> tuple[str, ...]:
        """`layers`, or the backbone's default layers when None."""
        from padim_lib.features.backbones import resolve_layers

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


