"""`padim fit`, `padim evaluate` and `padim export`, for every registered detector.

fit: the options make an ExperimentConfig (the rules the study files follow too), the registry
builds its detector, which is fitted on the class's training images; `meta` records the
preprocessing, the data and its identity, and the fit time; the file is written atomically.
evaluate: `detectors.load_detector` reads the file's format marker and loads it with the
right class; the JSON has the same keys for every method (null pixel metrics without masks).
export: the detector's export module traced to ONNX in memory (a method that cannot export says
so), then written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from padim_lib.errors import PadimError


def _cli_words(message: str) -> str:
    """A configuration error in the command line's words: ExperimentConfig.seed=-1 -> --seed=-1."""
    message = message.replace("ExperimentConfig.preprocess gives", "--resize/--crop give")
    message = re.sub(r"ExperimentConfig\.params\.(\w+)=", r"--param \1=", message)
    message = message.replace("ExperimentConfig.params.", "--param: ")
    return re.sub(r"ExperimentConfig\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), message)


def _method_params(items: list[str] | None) -> dict[str, Any]:
    """--param name=value (repeatable): values read as YAML (3, 0.5, true, null, [a, b])."""
    import yaml

    params: dict[str, Any] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise PadimError(f"--param {item!r}; expected name=value")
        name = name.strip()
        if name in params:
            raise PadimError(f"--param {name} is given twice")
        try:
            params[name] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PadimError(f"--param {name}={text!r} is not a valid YAML value ({getattr(exc, 'problem', None) or exc})") from exc
    return params


def _config(args: argparse.Namespace):
    """The ExperimentConfig of `padim fit`'s options: the one set of rules the study files use too."""
    from padim_lib.engine.config import ExperimentConfig

    try:
        return ExperimentConfig(
            method=args.method,
            backbone=args.backbone,
            layers=tuple(args.layers) if args.layers else None,
            layer_mode=args.layer_mode,
            reduce=args.reduce,
            params=_method_params(args.param),
            seed=args.seed,
            eps=args.eps,
            sigma=args.sigma,
            resize=args.resize,
            crop=args.crop,  # 0 = no crop
            max_train=args.max_train,
            pretrained=not args.no_pretrained,
            weights=args.weights,
        )
    except PadimError as exc:
        raise PadimError(_cli_words(str(exc))) from exc


# Options of the run, not of the result: a detector that lacks one refuses a non-default value.
RUNTIME_OPTIONS = {"batch_size": 16, "channels_last": True, "backbone_dtype": "float32"}


def _set_runtime_options(detector: Any, args: argparse.Namespace) -> None:
    for name, default in RUNTIME_OPTIONS.items():
        value = getattr(args, name)
        if hasattr(detector, name):
            setattr(detector, name, value)
        elif value != default:
            option = "--" + name.replace("_", "-")
            raise PadimError(f"{option} {value}: method {args.method!r} has no such option")


STDOUT = "-"  # --json -: the metrics on standard output


def _is_stdout(path: Path) -> bool:
    """True when `path` names the file, device or pipe our standard output writes to
    (`--json /dev/stdout`): the output is there already, printing it again would double it."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError, AttributeError):  # no such node; a captured stdout has no fileno
        return False


def cmd_fit(args: argparse.Namespace) -> int:
    from padim_lib.features.device import check_device
    from padim_lib.io.atomic import check_output, make_parents, remove_empty

    config = _config(args)
    if args.weights is not None and not Path(args.weights).is_file():
        raise PadimError(f"--weights {args.weights}: no such file; expected a local state-dict file")
    check_device(args.device, "--")
    out = check_output(args.out, "--out")

    from padim_lib.features.cache import data_identity
    from padim_lib.methods.registry import build_detector

    detector = build_detector(config, device=args.device, progress=True)
    _set_runtime_options(detector, args)
    train = detector.training_data(args.data, args.category, config.preprocess)  # the sweep's and the book's too
    identity = data_identity(args.data, args.category)
    created = make_parents(out, "--out")
    try:
        t0 = time.perf_counter()
        detector.fit(train)
        detector.meta = {
            "method": config.method,
            "config": config.to_dict(),
            "preprocess": {"resize": config.preprocess.resize, "crop": config.preprocess.crop,
                           "normalize": config.preprocess.normalize},
            "category": args.category,
            "data": str(args.data),
            "data_identity": identity,
            "n_train": min(len(train), config.max_train or len(train)),
            "fit_s": round(time.perf_counter() - t0, 3),
        }
        detector.save(out)
    except BaseException:
        remove_empty(created)
        raise
    print(f"fitted on {detector.meta['n_train']} images in {detector.meta['fit_s']} s ({config.method}); saved {out}",
          file=sys.stderr if _is_stdout(out) else sys.stdout)  # not into a model streamed to stdout
    return 0


def _warn_other_data(meta: dict, args: argparse.Namespace) -> None:
    """Warn when the model was fitted on other data than it is now scored on (data identities differ)."""
    from padim_lib.features.cache import data_identity

    fitted = meta.get("data_identity")
    if not fitted:
        return
    now = data_identity(args.data, args.category)
    if now != fitted:
        warnings.warn(
            f"model {args.model} was fitted on class {meta.get('category')!r} of {meta.get('data')} "
            f"(data identity {fitted}) but is scored on class {args.category!r} of {args.data} "
            f"(data identity {now}); its scores may mean nothing",
            stacklevel=2,
        )


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from padim_lib.features.device import check_device
    from padim_lib.io.atomic import atomic_write, check_output, make_parents, open_output, remove_empty

    check_device(args.device, "--")
    holdout = _holdout_options(args)
    if args.save_maps == STDOUT:
        raise PadimError("--save-maps -: standard output is for --json - only; expected a file path (.npz)")
    outputs = {}
    for option, value in (("--save-maps", args.save_maps), ("--json", args.json)):
        if value is not None and value != STDOUT:
            outputs[option] = check_output(value, option)
    if len({p.resolve() for p in outputs.values()}) < len(outputs):
        raise PadimError(f"--json and --save-maps both name {args.json}; expected two files")

    from padim_lib.datasets import Preprocess, open_dataset
    from padim_lib.engine.evaluation import evaluate
    from padim_lib.methods.registry import load_detector

    detector = load_detector(args.model, device=args.device)
    meta = getattr(detector, "meta", None) or {}
    pre = Preprocess(**meta.get("preprocess", {}))
    test = open_dataset(args.data, args.category, "test", pre)
    _warn_other_data(meta, args)
    threshold = _holdout_threshold(detector, pre, test, args) if holdout else None
    res = evaluate(detector, test, return_maps="--save-maps" in outputs)
    arrays = {k: res.pop(k) for k in ("maps", "scores", "labels", "masks", "paths") if k in res}
    res.update({"method": getattr(detector, "method", meta.get("method")), "model": str(args.model),
                "data": str(args.data), "category": args.category})
    if threshold is not None:
        res["threshold"] = threshold
    text = json.dumps(res, indent=2, default=float)

    def write_maps(tmp: Path) -> None:
        with open_output(tmp) as fh:  # a file object: np.savez would add ".npz" to a name
            np.savez_compressed(
                fh,
                maps=arrays["maps"].astype(np.float32),
                scores=np.asarray(arrays["scores"]),
                labels=np.asarray(arrays["labels"]),
                paths=np.asarray(arrays["paths"]),
            )

    # Every check passed: write the outputs (each atomically), then show the metrics.
    created: list[Path] = []
    try:
        for option, path in outputs.items():
            created += make_parents(path, option)
        if "--save-maps" in outputs:
            atomic_write(outputs["--save-maps"], write_maps)
        if "--json" in outputs:
            atomic_write(outputs["--json"], lambda tmp: tmp.write_text(text + "\n"))
    except BaseException:
        remove_empty(created)
        raise
    if not ("--json" in outputs and _is_stdout(outputs["--json"])):
        print(text)  # also what --json - asks for: the JSON, alone, on standard output
    if threshold is not None:
        print(_threshold_summary(threshold), file=sys.stderr)  # stdout keeps the JSON alone
    return 0


def _holdout_options(args: argparse.Namespace) -> bool:
    """--holdout / --fpr / --holdout-seed checked before any work; True when a threshold is asked for."""
    from padim_lib.engine.threshold import check_holdout
    from padim_lib.metrics.threshold import check_fpr

    if args.holdout is None:
        for option, value, default in (("--fpr", args.fpr, None), ("--holdout-seed", args.holdout_seed, 0)):
            if value != default:
                raise PadimError(f"{option} {value}: needs --holdout FRACTION (the held-out part of the training images)")
        return False
    args.fpr = 0.01 if args.fpr is None else args.fpr
    with _holdout_words():
        check_holdout(args.holdout)
        check_fpr(args.fpr)
    if args.holdout_seed < 0:
        raise PadimError(f"--holdout-seed {args.holdout_seed}; expected an integer >= 0")
    return True


@contextlib.contextmanager
def _holdout_words():
    """The threshold library's errors in the command line's words: holdout=0.9 -> --holdout 0.9."""
    try:
        yield
    except PadimError as exc:
        options = {"holdout": "--holdout", "fpr": "--fpr", "seed": "--holdout-seed"}
        raise PadimError(re.sub(r"^(holdout|fpr|seed)=", lambda m: options[m.group(1)] + " ", str(exc))) from exc


def _holdout_threshold(detector: Any, pre: Any, test: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The 'threshold' entry of the JSON: thresholds from held-out training images and their test rates."""
    from padim_lib.engine.threshold import holdout_threshold

    with _holdout_words():  # e.g. the holdout leaves too few images to fit on
        found = holdout_threshold(detector, args.data, args.category, pre, holdout=args.holdout, fpr=args.fpr,
                                  seed=args.holdout_seed)
    return {**found.summary(), "test": found.test_rates(test)}


def _threshold_summary(t: dict[str, Any]) -> str:
    """One line for the terminal: the thresholds and what they give on the test set."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f}%"

    rates = t["test"]
    return (f"threshold at FPR {t['fpr']:g} from {t['n_holdout']} held-out good training images (seed {t['seed']}; "
            f"model refitted on {t['n_fit']}): image {t['image_threshold']:.4g}, pixel {t['pixel_threshold']:.4g}; "
            f"on the test set: image FPR {pct(rates['image_fpr'])}, TPR {pct(rates['image_tpr'])}; "
            f"pixel FPR {pct(rates['pixel_fpr'])}, TPR {pct(rates['pixel_tpr'])}")


def cmd_export(args: argparse.Namespace) -> int:
    from padim_lib.engine.export import MAX_OPSET, MIN_OPSET, to_onnx
    from padim_lib.io.atomic import check_output, make_parents, remove_empty

    if not MIN_OPSET <= args.opset <= MAX_OPSET:
        raise PadimError(f"--opset {args.opset}; expected an integer from {MIN_OPSET} to {MAX_OPSET}")
    out = check_output(args.onnx, "--onnx")

    from padim_lib.methods.registry import load_detector

    detector = load_detector(args.model, device="cpu")
    graph = to_onnx(detector, opset=args.opset)  # a method that cannot export stops here
    created = make_parents(out, "--onnx")
    try:
        graph.write(out)
    except BaseException:
        remove_empty(created)
        raise
    h, w = graph.image_size
    print(f"exported {args.model} ({graph.method}) to {out}: {len(graph.data) / 1e6:.1f} MB; input 'images' "
          f"(N, 3, {h}, {w}) float32, outputs 'maps' (N, {h}, {w}) and 'scores' (N,)",
          file=sys.stderr if _is_stdout(out) else sys.stdout)
    return 0


def methods_epilog() -> str:
    """`padim fit --help`'s list of the registered methods and their own parameters."""
    from padim_lib.methods.registry import get_method, method_names

    lines = ["methods (--method NAME) and their parameters (--param NAME=VALUE):"]
    for name in method_names():
        spec = get_method(name)
        lines.append(f"  {name}: {spec.description}")
        reads = ", ".join(f"--{x.replace('_', '-')}" for x in sorted(spec.reads)) or "none"
        lines.append(f"      reads the common options: {reads}")
        for pname, param in spec.params.items():
            lines.append(f"      {pname}={param.default!r}: {param.help}")
        if not spec.params:
            lines.append("      (no own parameters)")
    return "\n".join(lines)
