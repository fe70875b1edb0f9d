"""The method registry: a method name -> its `MethodSpec` (class, own parameters, fields it reads, file format).

A detector class declares its own spec with the `method` decorator, in its own module; the
parameters' defaults are read from the class's ``__init__``, so nothing is written twice:

    @method("padim", file_format="padim_lib.model", reads=("layers", "layer_mode", "reduce", "eps"),
            uses_seed=random_reduction, description="...")
    class PaDiM(FeatureDetector): ...

Built-in methods are the sub-packages of `padim_lib.methods` that have a ``detector`` module
(found and imported on first use); further methods come from installed packages' entry points
(group "padim_lib.methods") or the comma-separated module names in ``$PADIM_METHODS``, which also
reach notebook kernels and worker processes. Everything above the detectors (engine, paper, book,
CLI) asks the registry and never tests a method's name. Adding a method is one module.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from padim_lib.errors import PadimError, load_reason
from padim_lib.methods.params import Param, never

if TYPE_CHECKING:
    from padim_lib.methods.base import Detector

# Common configuration fields a method may read (all methods read backbone, seed, sigma, preprocess,
# max_train, pretrained, weights). A method that does not list one of these rejects a non-default value.
OPTIONAL_FIELDS = ("layers", "layer_mode", "reduce", "eps")
PLUGINS_ENV = "PADIM_METHODS"
ENTRY_POINT_GROUP = "padim_lib.methods"


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
    uses_seed: Callable[[Any], bool] = never  # does the seed change this configuration's numbers?
    backbones: tuple[str, ...] = ()  # the backbones the method accepts; () = any

    def __post_init__(self) -> None:
        unknown = set(self.reads) - set(OPTIONAL_FIELDS)
        if unknown:
            raise PadimError(f"MethodSpec {self.name!r}: reads unknown common field(s) {sorted(unknown)}")
        object.__setattr__(self, "reads", frozenset(self.reads))
        object.__setattr__(self, "backbones", tuple(self.backbones))

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


def method(
    name: str,
    *,
    file_format: str = "",
    description: str = "",
    reads: Iterable[str] = (),
    params: Mapping[str, Param] | None = None,
    uses_seed: Callable[[Any], bool] = never,
    backbones: Iterable[str] = (),
    register_now: bool = True,
) -> Callable[[type], type]:
    """Class decorator: the class's `MethodSpec` (as `cls.spec`, its name as `cls.method`), registered.

    `params`: the method's own parameters; each default is the default of the same-named argument
    of the class's ``__init__`` (a parameter ``__init__`` lacks is an error). `register_now=False`
    declares without registering (a test that registers the method itself and removes it; loading the
    module as a plugin registers it: `register_module`).
    Check functions given here (`uses_seed`, a Param's `check`) must be module-level or picklable:
    a task carries its method's spec to worker processes.
    """

    def wrap(cls: type) -> type:
        signature = inspect.signature(cls.__init__).parameters
        declared = {}
        for pname, param in (params or {}).items():
            if pname not in signature or signature[pname].default is inspect.Parameter.empty:
                raise PadimError(f"method {name!r}: parameter {pname!r} is not an argument with a default of "
                                 f"{cls.__name__}.__init__")
            declared[pname] = replace(param, default=signature[pname].default)
        spec = MethodSpec(name=name, target=f"{cls.__module__}:{cls.__qualname__}", params=declared,
                          reads=frozenset(reads), description=description, file_format=file_format,
                          uses_seed=uses_seed, backbones=tuple(backbones))
        cls.spec = spec
        cls.method = name
        if register_now:
            register(spec, replace=_REGISTRY.get(name) is not None and _REGISTRY[name].target == spec.target)
        return cls

    return wrap


_loaded = False


def load_methods() -> None:
    """Import, once, the modules that register methods: the built-in ones (every sub-package of
    padim_lib.methods with a `detector` module), the installed packages' entry points of group
    "padim_lib.methods", and the modules named in $PADIM_METHODS."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import padim_lib.methods as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.ispkg and importlib.util.find_spec(f"{package.__name__}.{info.name}.detector") is not None:
            importlib.import_module(f"{package.__name__}.{info.name}.detector")
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            register_module(importlib.import_module(module))
        except ImportError as exc:
            raise PadimError(f"${PLUGINS_ENV}: cannot import method module {module!r} ({exc})") from exc


def register_module(module: Any) -> list[MethodSpec]:
    """Register every method a module declares (`@method`, also with register_now=False): what
    loading it as a plugin means, so a module can declare a method without registering it on import."""
    specs = [obj.spec for obj in vars(module).values()
             if isinstance(obj, type) and isinstance(getattr(obj, "spec", None), MethodSpec)
             and obj.spec.target == f"{obj.__module__}:{obj.__qualname__}" and obj.__module__ == module.__name__]
    for spec in specs:
        register(spec, replace=spec.name in _REGISTRY and _REGISTRY[spec.name].target == spec.target)
    return specs


def method_names() -> list[str]:
    """Registered method names: the built-in ones first (padim, spade, vae), then in registration order."""
    load_methods()
    builtin = [n for n in ("padim", "spade", "vae") if n in _REGISTRY]
    return builtin + [n for n in _REGISTRY if n not in builtin]


def get_method(name: str) -> MethodSpec:
    """The spec of `name`; an unknown name is an error listing the registered ones."""
    try:
        if name not in _REGISTRY:
            load_methods()
        return _REGISTRY[name]
    except KeyError:
        raise PadimError(f"method={name!r} is unknown; expected one of {method_names()}") from None
    except TypeError:
        raise PadimError(f"method={name!r}; expected a method name among {method_names()}") from None


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
