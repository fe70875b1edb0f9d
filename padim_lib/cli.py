"""`padim` command line: thin handlers over the library (the same entry as `python -m padim_lib`)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from padim_lib.errors import PadimError


def _add_preprocess_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resize", type=int, default=256, help="square resize before the crop (bicubic)")
    p.add_argument("--crop", type=int, default=224, help="centre crop; 0 = no crop (STC-style)")


def _preprocess(args: argparse.Namespace):
    from padim_lib.datasets import Preprocess

    return Preprocess(resize=args.resize, crop=args.crop or None)


def cmd_synth(args: argparse.Namespace) -> int:
    from padim_lib.datasets.synthetic import make_synthetic

    out = make_synthetic(
        args.out,
        seed=args.seed,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_defect=args.n_test_defect,
        size=args.size,
        categories=args.categories,
    )
    print(f"synthetic data set ready at {out}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from padim_lib.datasets import download

    if args.dataset != "mvtec":
        raise PadimError(f"unknown data set {args.dataset!r}; expected 'mvtec'")
    kwargs = {}
    if args.url:
        kwargs["url"] = args.url
    if args.sha256:
        kwargs["sha256"] = args.sha256
    download.download_mvtec(args.dest, **kwargs)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from padim_lib.datasets import open_dataset
    from padim_lib.padim import PaDiM

    pre = _preprocess(args)
    train = open_dataset(args.data, args.category, "train", pre)
    model = PaDiM(
        backbone=args.backbone,
        layers=tuple(args.layers) if args.layers else None,
        layer_mode=args.layer_mode,
        reduce=args.reduce,
        eps=args.eps,
        sigma=args.sigma,
        device=args.device,
        batch_size=args.batch_size,
        seed=args.seed,
        pretrained=not args.no_pretrained,
        weights=args.weights,
        max_train=args.max_train,
        channels_last=args.channels_last,
        backbone_dtype=args.backbone_dtype,
    )
    t0 = time.perf_counter()
    model.fit(train)
    model.meta = (
        {
            "preprocess": {"resize": pre.resize, "crop": pre.crop, "normalize": pre.normalize},
            "category": args.category,
            "data": str(args.data),
            "n_train": min(len(train), args.max_train or len(train)),
            "fit_s": round(time.perf_counter() - t0, 3),
        }
    )
    model.save(args.out)
    print(f"fitted on {model.meta['n_train']} images in {model.meta['fit_s']} s; saved {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from padim_lib.atomic import atomic_write
    from padim_lib.datasets import Preprocess, open_dataset
    from padim_lib.evaluation import evaluate
    from padim_lib.padim import PaDiM

    model = PaDiM.load(args.model, device=args.device)
    pre = Preprocess(**model.meta.get("preprocess", {}))
    test = open_dataset(args.data, args.category, "test", pre)
    res = evaluate(model, test, return_maps=bool(args.save_maps))
    arrays = {k: res.pop(k) for k in ("maps", "scores", "labels", "masks", "paths") if k in res}
    res.update({"model": str(args.model), "data": str(args.data), "category": args.category})
    text = json.dumps(res, indent=2, default=float)
    if args.json:
        atomic_write(args.json, lambda tmp: tmp.write_text(text))
    print(text)
    if args.save_maps:
        np.savez_compressed(
            args.save_maps,
            maps=arrays["maps"].astype(np.float32),
            scores=np.asarray(arrays["scores"]),
            labels=np.asarray(arrays["labels"]),
            paths=np.asarray(arrays["paths"]),
        )
    return 0


def cmd_book(args: argparse.Namespace) -> int:
    from padim_lib import runner

    if args.list_params is not None:
        print(runner.list_params(args.list_params or None))
        return 0
    params = runner.load_params(args.param, yaml_text=args.parameters_yaml, yaml_file=args.parameters_file)
    runner.build_book(profile=args.profile, params=params, only=args.only)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from padim_lib.sweep import run_study

    run_study(args.study, scheduler=args.scheduler, local_cluster=args.local_cluster, results=args.results)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="padim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="generate the synthetic MVTec-like data set")
    p.add_argument("--out", default="data/synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=60, help="training images per class")
    p.add_argument("--n-test-good", type=int, default=10, help="defect-free test images per class")
    p.add_argument("--n-test-defect", type=int, default=20, help="defective test images per class")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--categories", nargs="+", default=None, help="subset of the synthetic classes")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("download", help="download a data set (MVTec AD)")
    p.add_argument("dataset", choices=["mvtec"])
    p.add_argument("--dest", default="data/mvtec")
    p.add_argument("--url", default=None, help="override the archive's address (mirrors, tests)")
    p.add_argument("--sha256", default=None, help="override the expected SHA-256 of the archive")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("fit", help="fit PaDiM on one class's training images")
    p.add_argument("--data", required=True, help="data root in the MVTec AD layout")
    p.add_argument("--category", required=True)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--layers", nargs="+", default=None)
    p.add_argument("--layer-mode", default="concat", choices=["concat", "sum"])
    p.add_argument("--reduce", default=None, help="random:D, pca:D or none")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", default=None, help="local weights file for the backbone")
    w.add_argument("--no-pretrained", action="store_true", help="random initialisation (tests only)")
    p.add_argument("--device", default="auto")
    p.add_argument("--eps", type=float, default=0.01)
    p.add_argument("--sigma", type=float, default=4.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train", type=int, default=None)
    p.add_argument(
        "--channels-last", action="store_true", help="backbone in channels-last memory format (faster on most CPUs)"
    )
    p.add_argument(
        "--backbone-dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="precision of the backbone's forward pass; bfloat16 is faster on CPUs/GPUs with native "
        "support and changes the scores slightly (benchmarks/README.md)",
    )
    _add_preprocess_args(p)
    p.add_argument("--out", required=True, help="model file to write")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("evaluate", help="score a class's test images with a saved model")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--json", default=None, help="write the metrics here")
    p.add_argument("--save-maps", default=None, help="write maps, scores, labels and paths (.npz)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("book", help="run every notebook with papermill and build the HTML book")
    p.add_argument("--profile", default="auto", choices=["auto", "embedded", "paper"])
    p.add_argument("-p", "--param", action="append", nargs="+", metavar=("NAME", "VALUE"),
                   help="notebook parameter, `-p name value` or `-p name=value` (repeatable); values as "
                        "papermill reads them: None, True, numbers, lists [a, b]")
    p.add_argument("-y", "--parameters-yaml", default=None, metavar="YAML", help="parameters as a YAML mapping")
    p.add_argument("-f", "--parameters-file", default=None, metavar="FILE", help="parameters from a YAML file")
    p.add_argument("--only", nargs="+", default=None, help="run only these notebooks (stems)")
    p.add_argument("--list-params", nargs="?", const="", default=None, metavar="CHAPTER",
                   help="print each chapter's (or CHAPTER's) parameters, types, defaults and comments; run nothing")
    p.set_defaults(func=cmd_book)

    p = sub.add_parser("sweep", help="run a study grid in-process or on a Dask cluster")
    p.add_argument("study", help="study YAML file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786")
    g.add_argument("--local-cluster", type=int, default=None, metavar="N", help="start N local workers")
    p.add_argument("--results", default=None, help="result cache directory (default: the study's)")
    p.set_defaults(func=cmd_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "reduce", None) in ("none", "None", ""):
        args.reduce = None
    try:
        return int(args.func(args) or 0)
    except (PadimError, FileNotFoundError) as exc:
        print(f"padim {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
