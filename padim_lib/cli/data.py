"""`padim synth`, `padim download`, `padim sweep`: data sets and study grids."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from padim_lib.errors import PadimError
from padim_lib.io.atomic import node_kind, output_target

SYNTH_SIZES = (32, 4096)  # px; above 4096 one image alone needs >= 200 MB while it is drawn


def _check_folder(path: str, option: str) -> Path:
    """A folder to write in later (synth's --out, the sweep's --results), by the atomic writers'
    rule: a link to a folder is followed (and stays a link); a broken link, a file, a device or a
    pipe is refused; the folder, or the first one above that exists, must be writable."""
    if not str(path).strip():
        raise PadimError(f"{option} is empty; expected a folder")
    p = Path(path)
    try:
        kind, target = node_kind(p), output_target(p)
    except OSError as exc:
        reason = str(exc.strerror or exc)
        raise PadimError(f"{option} {path}: {reason[:1].lower() + reason[1:]}; expected a folder") from exc
    if kind not in (None, "folder"):
        raise PadimError(f"{option} {path}: is a {kind}; expected a folder")
    if kind is None and p.is_symlink():  # a dangling link: its target may be an unmounted disk's
        raise PadimError(f"{option} {path}: is a broken link (to {target}); expected a folder")
    above = target
    while not above.exists():
        if above.is_symlink():  # a dangling link cannot be made into a folder
            raise PadimError(f"{option} {path}: {above} is a broken link; expected a folder")
        above = above.parent
    if not above.is_dir():
        raise PadimError(f"{option} {path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise PadimError(f"{option} {path}: cannot write in {above} (permission denied)")
    return p


def cmd_synth(args: argparse.Namespace) -> int:
    from padim_lib.datasets.synthetic import make_synthetic

    if args.kind == "stc":
        return _synth_stc(args)
    if args.kind == "nonaligned":
        return _synth_nonaligned(args)
    args.out = args.out or "data/synthetic"
    low, high = SYNTH_SIZES
    if not low <= args.size <= high:
        raise PadimError(f"--size {args.size}; expected an image side between {low} and {high} px")
    _check_folder(args.out, "--out")
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


def _synth_stc(args: argparse.Namespace) -> int:
    from padim_lib.datasets.synthetic_stc import make_synthetic_stc

    if args.scenes < 1:
        raise PadimError(f"--scenes {args.scenes}; expected at least 1 scene")
    out = _check_folder(args.out or "data/synthetic_stc", "--out")
    print(f"synthetic STC-layout set ready at {make_synthetic_stc(out, seed=args.seed, scenes=args.scenes)}")
    return 0


def _synth_nonaligned(args: argparse.Namespace) -> int:
    from padim_lib.datasets.nonaligned import nonaligned_versions

    src = Path(args.src)
    if not src.is_dir():
        raise PadimError(f"--src {args.src}: no such folder; expected an MVTec-layout data set")
    if any(s < 0 for s in args.seeds):
        raise PadimError(f"--seeds {args.seeds}; expected integers >= 0")
    out = _check_folder(args.out or "data/nonaligned", "--out")
    for root in nonaligned_versions(src, out, seeds=args.seeds, classes=args.categories):
        print(f"non-aligned version ready at {root}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from padim_lib.datasets import download

    if args.dataset == "weights":
        from padim_lib.features.weights import download_weights
        from padim_lib.paper.catalog import paper_backbones

        download_weights(args.names or paper_backbones())
        return 0
    if args.names:
        raise PadimError(f"padim download {args.dataset}: unexpected names {args.names}; names go with 'weights'")
    if args.dataset == "stc":
        from padim_lib.datasets.stc import STC_SCENES, check_stc_layout, stc_download_help

        root = args.dest or "data/stc"
        print(stc_download_help(root))
        problems = check_stc_layout(root, scenes=STC_SCENES) if Path(root).is_dir() else [f"{root}: no such folder"]
        for problem in problems:
            print(f"  - {problem}")
        if problems:
            raise PadimError(f"{root}: not a usable ShanghaiTech Campus folder yet ({len(problems)} problems above)")
        print(f"{root}: the STC layout is complete")
        return 0
    args.dest = args.dest or "data/mvtec"
    kwargs = {}
    if args.url:
        kwargs["url"] = args.url
    if args.sha256:
        kwargs["sha256"] = args.sha256
    try:
        download.download_mvtec(args.dest, **kwargs)
    except PadimError as exc:  # url=..., sha256=...: say it with the options' names
        raise PadimError(re.sub(r"^(url|sha256)=", r"--\1 ", str(exc))) from exc
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from padim_lib.engine.on_dask import check_scheduler
    from padim_lib.engine.studyfile import run_study
    from padim_lib.paper.tables import PRESETS

    if args.local_cluster is not None and args.local_cluster < 1:
        raise PadimError(f"--local-cluster {args.local_cluster}; expected a positive number of workers")
    try:
        check_scheduler(args.scheduler, args.local_cluster)
    except PadimError as exc:  # scheduler=... -> --scheduler ...
        raise PadimError(re.sub(r"^scheduler=", "--scheduler ", str(exc))) from exc
    if args.results is not None:
        _check_folder(args.results, "--results")
    run_study(args.study, scheduler=args.scheduler, local_cluster=args.local_cluster, results=args.results,
              presets=PRESETS)
    return 0
