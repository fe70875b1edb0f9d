"""Parameter checks shared by the detectors and the configuration, so both accept and reject the same values.

`check_*` functions return the value, normalised, or raise a `PadimError` naming the parameter
(`where` prefixes it, e.g. "ExperimentConfig."); `Param` describes one method-specific parameter
(types, help, an extra check such as `at_least(1)`), its default taken from the detector's
``__init__`` when the method is registered (padim_lib.methods.registry.method).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from padim_lib.errors import PadimError

LAYER_MODES = ("concat", "sum")
_REDUCE_RE = re.compile(r"^(random|pca):([1-9][0-9]*)$")


@dataclass(frozen=True)
class Param:
    """One method-specific parameter: accepted Python types, help text, an extra check, its default.

    check(value) returns an error fragment ("expected an integer >= 1") or None when the value is fine.
    """

    types: tuple[type, ...]
    help: str
    check: Callable[[Any], str | None] | None = None
    none_ok: bool = False
    default: Any = None  # filled from the detector's __init__ by `registry.method`

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
    from padim_lib.features.backbones import embedding_size

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


def layer_groups(layers: Sequence[str], layer_mode: str) -> tuple[tuple[str, ...], ...]:
    """One group per fitted model: all layers together ("concat") or one per layer ("sum")."""
    return (tuple(layers),) if layer_mode == "concat" else tuple((x,) for x in layers)

