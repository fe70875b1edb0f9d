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

from padim_lib.errors import PadimError, load_reason

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


def at_least(low: float, *, strict: bool = False) -> Callable[[Any], str | None]:
    """A `Param.check`: value >= low (> low when strict)."""

    def check(value: Any) -> str | None:
        bad = value <= low if strict else value < low
        return f"expected a value {'>' if strict else '>='} {low}" if bad else None

    return check


def one_of(*choices: str) -> Callable[[Any], str | None]:
    """A `Param.check`: value among `choices`."""

    def check(value: Any) -> str | None:
        return None if value in choices else f"expected one of {list(choices)}"

    return check


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: name, class (``"module:Class"``, imported on first use), its own
    parameters, the optional common fields it reads, and a one-line description."""

    name: str
    target: str
    params: Mapping[str, Param] = field(default_factory=dict)
    reads: frozenset[str] = frozenset()
    description: str = ""
    file_format: str = ""  # the "format" marker of the detector's saved files (load_detector dispatches on it)
    uses_seed: Callable[[Any], bool] = lambda config: False  # noqa: E731  (does the seed change numbers?)

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


def load_detector(path: str | os.PathLike, device: str = "auto") -> Detector:
    """The fitted detector saved at `path`, by the class whose `file_format` the file names.

    Errors (a folder, a missing, empty, damaged or foreign file, an unknown format) name the path.
    """
    import torch

    path = os.fspath(path)
    if os.path.isdir(path):
        raise PadimError(f"model file {path} is a folder; expected a file written by `padim fit --out`")
    if not os.path.isfile(path):
        raise PadimError(f"model file {path} does not exist")
    if os.path.getsize(path) == 0:
        raise PadimError(f"model file {path} is empty (0 bytes); refit the model")
    try:  # mmap: only the small header is read here; the class's load reads the tensors
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises many types for a damaged file (zip, pickle, EOF...)
        raise PadimError(f"model file {path} is not readable ({load_reason(exc)})") from exc
    marker = payload.get("format") if isinstance(payload, dict) else None
    del payload
    formats = {spec.file_format: spec for spec in (get_method(n) for n in method_names()) if spec.file_format}
    if marker not in formats:
        raise PadimError(
            f"model file {path} has format marker {marker!r}; expected one of {sorted(formats)} "
            "(a file written by `padim fit`)"
        )
    return formats[marker].detector_class().load(path, device=device)


def _random_reduction(config: Any) -> bool:
    return config.reduce is not None and config.reduce.startswith("random")


def _register_builtin() -> None:
    register(MethodSpec(
        name="padim",
        target="padim_lib.padim:PaDiM",
        reads=frozenset({"layers", "layer_mode", "reduce", "eps"}),
        uses_seed=_random_reduction,
        file_format="padim_lib.model",
        description="PaDiM: one Gaussian per patch position, Mahalanobis distance (Defard et al. 2020)",
    ))


_register_builtin()
