"""One interface for every anomaly detector (PaDiM, SPADE, the VAE, ...) and the method registry.

A detector is an sklearn-style estimator (parameters in ``__init__``, fitted state ending in
``_``) that turns images into ``(maps, scores)``:

* ``fit(X, y=None)`` on training images, ``predict(X) -> (maps (N, H, W), scores (N,))``;
* detectors whose backbone is frozen (``uses_features = True``) also fit and predict on
  per-layer feature batches (``fit_features`` / ``predict_features``), so the sweep can extract
  a class's features once and serve every configuration from the feature cache; they name the
  layers they need with ``feature_layers()``;
* ``save(path)`` / ``load(path, device)`` with a format name and version in the file;
* ``from_config(config, device=..., progress=...)`` builds the detector from an
  ``ExperimentConfig`` (the one validated parameter set).

The registry maps a method name to a `MethodSpec`: where the class lives (imported lazily, so
validating a configuration imports no torch), the method's own parameters (`Param`: default,
type, check, help) and which of the configuration's common fields the method reads. Everything
above the detectors (experiments, sweep, book, CLI) asks the registry and never tests a method's
name. Adding a method is one module and one `register(...)` call.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from padim_lib.errors import PadimError

# Common configuration fields a method may read (all methods read backbone, seed, sigma, preprocess,
# max_train, pretrained, weights). A method that does not list one of these rejects a non-default value.
OPTIONAL_FIELDS = ("layers", "layer_mode", "reduce", "eps")


@dataclass(frozen=True)
class Param:
    """One method-specific parameter: its default, accepted Python types, an extra check, help text.

    check(value) returns an error fragment ("expected an integer >= 1") or None when the value is fine.
    """

    default: Any
    types: tuple[type, ...]
    help: str
    check: Callable[[Any], str | None] | None = None
    none_ok: bool = False

    def validate(self, name: str, value: Any, where: str) -> Any:
        if value is None and self.none_ok:
            return None
        if float in self.types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # 2 where a number is expected is 2.0
        ok = isinstance(value, self.types) and not (isinstance(value, bool) and bool not in self.types)
        problem = None if ok else f"expected {_type_words(self.types, self.none_ok)}"
        if problem is None and self.check is not None:
            problem = self.check(value)
        if problem:
            raise PadimError(f"{where}{name}={value!r}; {problem}")
        return value


def _type_words(types: tuple[type, ...], none_ok: bool) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    words = [names.get(t, t.__name__) for t in types if not (t is int and float in types)]
    return " or ".join(words + (["None"] if none_ok else []))


# Checks are small picklable objects (not closures): a task carries its method's spec to worker processes.
@dataclass(frozen=True)
class at_least:  # noqa: N801  (reads as a function: Param(..., check=at_least(1)))
    """A `Param.check`: value >= low (> low when strict)."""

    low: float
    strict: bool = False

    def __call__(self, value: Any) -> str | None:
        bad = value <= self.low if self.strict else value < self.low
        return f"expected a value {'>' if self.strict else '>='} {self.low}" if bad else None


@dataclass(frozen=True)
class one_of:  # noqa: N801
    """A `Param.check`: value among `choices`."""

    choices: tuple[Any, ...]

    def __init__(self, *choices: Any) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def __call__(self, value: Any) -> str | None:
        return None if value in self.choices else f"expected one of {list(self.choices)}"


def never(config: Any) -> bool:
    """`MethodSpec.uses_seed` of a deterministic method."""
    return False


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: name, class (``"module:Class"``, imported on first use), its own
    parameters, the optional common fields it reads, and a one-line description."""

    name: str
    target: str
    params: Mapping[str, Param] = field(default_factory=dict)
    reads: frozenset[str] = frozenset()
    description: str = ""
    uses_seed: Callable[[Any], bool] = never  # does the seed change this configuration's numbers?
    backbones: tuple[str, ...] = ()  # the backbones the method accepts; () = any

    def __post_init__(self) -> None:
        unknown = set(self.reads) - set(OPTIONAL_FIELDS)
        if unknown:
            raise PadimError(f"MethodSpec {self.name!r}: reads unknown common field(s) {sorted(unknown)}")
        object.__setattr__(self, "reads", frozenset(self.reads))

    def detector_class(self) -> type[Detector]:
        module, _, name = self.target.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise PadimError(f"method {self.name!r}: cannot import its detector {self.target!r} ({exc})") from exc

    def defaults(self) -> dict[str, Any]:
        return {name: p.default for name, p in self.params.items()}

    def validate_params(self, params: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """`params` completed with defaults and checked; unknown names are an error naming them."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            known = sorted(self.params) or "none"
            raise PadimError(f"{where}unknown parameter(s) {unknown} for method {self.name!r}; its parameters: {known}")
        out = self.defaults()
        for name, value in params.items():
            out[name] = self.params[name].validate(name, value, where)
        return out


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add a method to the registry (idempotent for the same name and class; `replace` to change one).

    A spec that reached a worker process with its task and the one its module registers on import
    are equal in name and target but not as objects (their check functions differ): both are fine.
    """
    old = _REGISTRY.get(spec.name)
    if old is not None and not replace:
        if old.target != spec.target:
            raise PadimError(f"method {spec.name!r} is registered already (as {old.target}); pass replace=True")
        return old
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


PLUGINS_ENV = "PADIM_METHODS"
ENTRY_POINT_GROUP = "padim_lib.methods"
_plugins_loaded = False


def load_plugins() -> None:
    """Import the modules that register further methods: the installed packages' entry points of
    group "padim_lib.methods", and the comma-separated module names in $PADIM_METHODS (so a method
    defined outside the library also reaches a notebook kernel or a worker process). Once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise PadimError(f"${PLUGINS_ENV}: cannot import method module {module!r} ({exc})") from exc


def method_names() -> list[str]:
    """Registered method names, in registration order."""
    load_plugins()
    return list(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """The spec of `name`; an unknown name is an error listing the registered ones."""
    if name not in _REGISTRY:
        load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PadimError(f"method={name!r} is unknown; expected one of {method_names()}") from None
    except TypeError:
        raise PadimError(f"method={name!r}; expected a method name among {method_names()}") from None


class Detector:
    """Mixin that documents and partly implements the detector interface (see the module docstring).

    Subclasses set `method` (the registry name) and `uses_features`, and implement
    `from_config`, `fit`, `predict`, `save`, `load`; feature-based ones also `feature_layers`,
    `fit_features` and `predict_features`.
    """

    method: ClassVar[str] = ""
    uses_features: ClassVar[bool] = True

    @classmethod
    def from_config(cls, config: Any, *, device: str = "auto", progress: bool = False) -> Detector:
        raise NotImplementedError

    def training_preprocess(self, preprocess: Any) -> Any:
        """The preprocessing of the training images, given the test images' (default: the same)."""
        return preprocess

    def feature_layers(self) -> tuple[str, ...]:
        """Backbone layers the feature cache must hold for `fit_features` / `predict_features`."""
        raise NotImplementedError(f"{type(self).__name__} does not work on cached features")

    def fit_features(self, batches: Iterable[Mapping[str, Any]]) -> Detector:
        raise NotImplementedError(f"{type(self).__name__} does not work on cached features")

    def predict_features(self, batches: Iterable[Mapping[str, Any]], image_size: Any) -> tuple[Any, Any]:
        raise NotImplementedError(f"{type(self).__name__} does not work on cached features")


def build_detector(config: Any, *, device: str = "auto", progress: bool = False) -> Detector:
    """The detector of `config` (an ExperimentConfig), built by its method's class."""
    return get_method(config.method).detector_class().from_config(config, device=device, progress=progress)


def _random_reduction(config: Any) -> bool:
    return config.reduce is not None and config.reduce.startswith("random")


def _always(config: Any) -> bool:
    return True


def _register_builtin() -> None:
    register(MethodSpec(
        name="padim",
        target="padim_lib.padim:PaDiM",
        reads=frozenset({"layers", "layer_mode", "reduce", "eps"}),
        uses_seed=_random_reduction,
        description="PaDiM: one Gaussian per patch position, Mahalanobis distance (Defard et al. 2020)",
    ))
    register(MethodSpec(
        name="vae",
        target="padim_lib.baselines.vae:VAE",
        params={
            "epochs": Param(100, (int,), "training epochs (paper: 100)", at_least(1)),
            "images_per_epoch": Param(10_000, (int,), "augmented images per epoch (paper: 10,000)", at_least(1)),
            "lr": Param(1e-4, (float,), "Adam learning rate (paper: 1e-4)", at_least(0, strict=True)),
            "batch_size": Param(32, (int,), "training and inference batch size (paper: 32)", at_least(1)),
            "beta": Param(1.0, (float,), "weight of the KL term in the loss", at_least(0)),
            "latent_channels": Param(64, (int,), "channels of the (image_size/32)^2 latent", at_least(1)),
            "image_size": Param(256, (int,), "side the VAE works at (paper: 256; a multiple of 32)", at_least(64)),
            "aug_resize": Param(292, (int,), "augmentation: square resize (paper: 292)", at_least(1)),
            "aug_crop": Param(282, (int,), "augmentation: random crop (paper: 282)", at_least(1)),
            "rotation": Param(2.0, (float,), "augmentation: max rotation in degrees (paper: 2)", at_least(0)),
            "amp": Param(False, (bool,), "bfloat16 autocast for the network (mixed precision)"),
        },
        uses_seed=_always,  # weights initialisation, data order and augmentation
        backbones=("resnet18",),
        description="VAE: ResNet18 encoder, 8x8 latent, pixel-wise L2 reconstruction error (the paper's baseline)",
    ))
    register(MethodSpec(
        name="spade",
        target="padim_lib.baselines.spade:SPADE",
        params={
            "k": Param(50, (int,), "image score: mean distance to the k nearest training images "
                       "(pooled global features); capped at the training-set size", at_least(1)),
            "n_gallery": Param(50, (int,), "K: the pixel gallery is the feature maps of the K nearest "
                               "training images; capped at the training-set size", at_least(1)),
            "kappa": Param(1, (int,), "pixel score: mean distance to the kappa nearest gallery "
                           "pixel features (1 = the nearest)", at_least(1)),
            "global_layer": Param(None, (str,), "layer average-pooled for the image k-NN; "
                                  "None = the backbone's deepest layer", none_ok=True),
        },
        reads=frozenset({"layers", "layer_mode"}),
        description="SPADE: k-NN on pooled deep features, pixel k-NN over the K nearest training "
        "images' feature maps (Cohen & Hoshen 2020)",
    ))


_register_builtin()
