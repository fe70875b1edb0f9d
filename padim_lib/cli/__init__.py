"""`padim` command line: thin handlers over the library (the same entry as `python -m padim_lib`).

Every failure a user can cause ends as one line on stderr naming the option and what was
expected (exit 2); an interrupt prints one line and exits 130 (143 for SIGTERM) with temporary
files removed; anything else prints one line and a hint to rerun with --debug (exit 1).
Every check that can fail (configuration, device, output paths, input data) runs before the
work starts, and outputs are written atomically at the end, all or nothing: a link's final
target is replaced (the link stays), a device or a pipe is written straight into.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from typing import Any

from padim_lib import __version__
from padim_lib.cli.data import SYNTH_SIZES, cmd_download, cmd_sweep, cmd_synth
from padim_lib.cli.model import cmd_evaluate, cmd_export, cmd_fit, methods_epilog
from padim_lib.errors import PadimError

__all__ = ["build_parser", "main"]


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after every option's help; the method list in the epilog kept as written."""


class _Parser(argparse.ArgumentParser):
    """argparse with the defaults in the help and usage errors on one line."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `except BaseException` clean-up runs."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def cmd_book(args: argparse.Namespace) -> int:
    from padim_lib.report import nbparams, runner

    if args.list_params is not None:
        print(nbparams.list_params(args.list_params or None))
        return 0
    params = nbparams.load_params(args.param, yaml_text=args.parameters_yaml, yaml_file=args.parameters_file)
    if args.plan:
        plan = runner.plan_book(profile=args.profile, params=params, only=args.only)
        print(plan.text())
        if plan.problems():
            raise PadimError("; ".join(plan.problems()))
        return 0
    runner.build_book(profile=args.profile, params=params, only=args.only, jobs=args.jobs)
    return 0


EXPORT_DESCRIPTION = """\
Write a fitted model as an ONNX graph (methods: padim; others say they cannot).
Input 'images': (N, 3, H, W) float32, preprocessed as for fitting (resize, crop, ImageNet
normalisation; recorded in the graph's metadata). Outputs 'maps': (N, H, W), upsampled and
smoothed as `padim evaluate` does; 'scores': (N,), the maximum of each map.
Needs the onnx package: pip install 'padim-lib[export]'."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="padim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"padim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # --debug is accepted after the sub-command too; SUPPRESS keeps `padim --debug fit` working
    debug = _Parser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=lambda **kw: _Parser(
        parents=[debug], **kw))

    p = sub.add_parser("synth", help="generate a synthetic data set (MVTec-like, STC-like, or a non-aligned copy)")
    p.add_argument("--kind", default="mvtec", choices=["mvtec", "stc", "nonaligned"],
                   help="mvtec: the MVTec-like image set; stc: short ShanghaiTech-Campus-like clips; "
                        "nonaligned: rotated and randomly cropped copies of --src, one per --seeds value")
    p.add_argument("--out", default=None, help="folder of the data set (default: data/synthetic, "
                   "data/synthetic_stc, data/nonaligned)")
    p.add_argument("--src", default="data/synthetic", help="nonaligned: the MVTec-layout tree to transform")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="nonaligned: one version per seed")
    p.add_argument("--scenes", type=int, default=2, help="stc: number of scenes")
    p.add_argument("--seed", type=int, default=0, help="seed of every drawn image")
    p.add_argument("--n-train", type=int, default=60, help="training images per class")
    p.add_argument("--n-test-good", type=int, default=10, help="defect-free test images per class")
    p.add_argument("--n-test-defect", type=int, default=20, help="defective test images per class")
    p.add_argument("--size", type=int, default=256, help=f"image side in pixels ({SYNTH_SIZES[0]}..{SYNTH_SIZES[1]})")
    p.add_argument("--categories", nargs="+", default=None, help="subset of the synthetic classes (default: all)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("download", help="download MVTec AD, the paper's backbone weights, or check an STC folder")
    p.add_argument("dataset", choices=["mvtec", "weights", "stc"],
                   help="mvtec: the archive, checked and extracted; weights: torchvision ImageNet weights into "
                        "torch's cache; stc: where to get ShanghaiTech Campus, and a check of the folder")
    p.add_argument("names", nargs="*", default=[],
                   help="weights: backbone names (default: resnet18 wide_resnet50_2 efficientnet_b5)")
    p.add_argument("--dest", default=None, help="mvtec: folder for the class folders (default: data/mvtec); "
                   "stc: the folder to check (default: data/stc)")
    p.add_argument("--url", default=None, help="override the archive's address (mirrors, tests)")
    p.add_argument("--sha256", default=None, help="override the expected SHA-256 of the archive")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("fit", help="fit a detector (PaDiM or another method) on one class's training images",
                       epilog=methods_epilog())
    p.add_argument("--data", required=True, help="data root in the MVTec AD layout")
    p.add_argument("--category", required=True, help="class folder under --data")
    p.add_argument("--method", default="padim", help="registered method (listed below)")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="a parameter of the method, value read as YAML (repeatable; listed below)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="feature extractor")
    p.add_argument("--layers", nargs="+", default=None, help="backbone layers (default: the backbone's own)")
    p.add_argument("--layer-mode", default="concat", choices=["concat", "sum"],
                   help="concat: one model on the joined layers; sum: one per layer, maps summed")
    p.add_argument("--reduce", default=None, help="random:D, pca:D or none")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", default=None, help="local weights file for the backbone")
    w.add_argument("--no-pretrained", action="store_true", help="random initialisation (tests only)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--eps", type=float, default=0.01, help="covariance regulariser (> 0)")
    p.add_argument("--sigma", type=float, default=4.0, help="Gaussian smoothing of the maps (0 = none)")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed of random choices (e.g. random:D channels)")
    p.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
    p.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True,
        help="backbone in channels-last memory format (the same maps, 1.4-1.6x faster on CPU)"
    )
    p.add_argument(
        "--backbone-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="precision of the backbone's forward pass; bfloat16 is faster on CPUs/GPUs with native "
        "support and changes the scores slightly (benchmarks/README.md)",
    )
    p.add_argument("--resize", type=int, default=256, help="square resize before the crop (bicubic)")
    p.add_argument("--crop", type=int, default=224, help="centre crop; 0 = no crop (STC-style)")
    p.add_argument("--out", required=True, help="model file to write")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="score a class's test images with a saved model (any method)")
    p.add_argument("--model", required=True, help="model file written by padim fit")
    p.add_argument("--data", required=True, help="data root in the MVTec AD layout")
    p.add_argument("--category", required=True, help="class folder under --data")
    p.add_argument("--json", default=None, help="write the metrics here (JSON); '-' for standard output "
                   "(a device, a pipe or a link's target is written into, e.g. /dev/stdout)")
    p.add_argument("--save-maps", default=None, help="write maps, scores, labels and paths (.npz)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--holdout", type=float, default=None, metavar="FRACTION",
                   help="also choose thresholds without test masks: refit the model's configuration on the "
                        "training images less this held-out fraction, and take the image and pixel "
                        "thresholds that the held-out images' scores give at --fpr (JSON key 'threshold', "
                        "with the rates they give on the test set)")
    p.add_argument("--fpr", type=float, default=None, metavar="RATE",
                   help="with --holdout: the false-positive rate the thresholds allow (default 0.01)")
    p.add_argument("--holdout-seed", type=int, default=0, help="with --holdout: seed of the held-out draw")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="write a fitted model as an ONNX graph (images -> anomaly maps, scores)",
                       description=EXPORT_DESCRIPTION)
    p.add_argument("model", help="model file written by padim fit")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx",
                   help="ONNX file to write (a device, a pipe or a link's target is written into)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version (14 to 20)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("book", help="run every notebook with papermill and build the HTML book")
    p.add_argument("--profile", default="auto", choices=["auto", "embedded", "paper"],
                   help="embedded: synthetic data + Lite0; paper: MVTec AD + the paper's backbones; "
                        "auto: paper when its inputs are here")
    p.add_argument("-p", "--param", action="append", nargs="+", metavar=("NAME", "VALUE"),
                   help="notebook parameter, `-p name value` or `-p name=value` (repeatable); values as "
                        "papermill reads them: None, True, numbers, lists [a, b]")
    p.add_argument("-y", "--parameters-yaml", default=None, metavar="YAML", help="parameters as a YAML mapping")
    p.add_argument("-f", "--parameters-file", default=None, metavar="FILE", help="parameters from a YAML file")
    p.add_argument("--only", nargs="+", default=None, help="run only these notebooks (stems)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="chapters run at once, each in its own kernel (the summary and the introduction "
                        "still wait for the chapters before them)")
    p.add_argument("--list-params", nargs="?", const="", default=None, metavar="CHAPTER",
                   help="print each chapter's (or CHAPTER's) parameters, types, defaults and comments; run nothing")
    p.add_argument("--plan", action="store_true",
                   help="print each chapter's tasks, feature cache, peak memory and estimated time (here and on "
                        "a GPU); run nothing (exit 2 when the run would not fit the free disk or memory)")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("sweep", help="run a study grid in-process or on a Dask cluster")
    p.add_argument("study", help="study YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")
    g.add_argument("--local-cluster", type=int, default=None, metavar="N", help="start N local workers")
    p.add_argument("--results", default=None, help="result cache directory (default: the study's)")
    p.set_defaults(func=cmd_sweep)
    return parser


def _interrupted(exc: BaseException) -> bool:
    """True when `exc` is, or was caused by, an interrupt (torch.save turns one into a RuntimeError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"padim: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "reduce", None) in ("none", "None", ""):
        args.reduce = None
    name = f"padim {args.command}"
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _show_warning  # one line per warning, no source excerpt
            return int(args.func(args) or 0)
    except BaseException as exc:
        if args.debug or isinstance(exc, SystemExit):
            raise
        if _interrupted(exc):
            terminated = any(isinstance(e, _Terminated) for e in _chain(exc))
            print(f"{name}: {'terminated' if terminated else 'interrupted'}; temporary files removed",
                  file=sys.stderr)
            return 143 if terminated else 130
        if isinstance(exc, PadimError):
            print(f"{name}: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, OSError):
            where = f": {exc.filename}" if exc.filename else ""
            print(f"{name}: error: {exc.strerror or exc}{where}", file=sys.stderr)
            return 2
        first = next((x.strip() for x in str(exc).splitlines() if x.strip()), "")
        print(f"{name}: unexpected error: {type(exc).__name__}: {first} "
              f"(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    raise SystemExit(main())
