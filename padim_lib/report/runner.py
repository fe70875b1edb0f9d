"""`padim book`: run the book's notebooks with papermill, then build the HTML with jupyter-book 1.x.

Where things live (see padim_lib.report.chapters): sources `book/<stem>.ipynb`, executed copies
`book/_executed/<stem>.ipynb` (git-ignored; a failed run keeps its partial copy there), the book
`_build/html/index.html`. `_config.yml` sets `only_build_toc_files: true` and
`execute_notebooks: "off"`, so jupyter-book renders exactly what papermill produced and papermill
stays the only executor. A chapter that has never been run (e.g. after `--only`) gets a placeholder
page saying how to run it. Chapters not selected keep their last executed copy, which may come from
other parameters: re-run the whole book (no `--only`) before publishing it.

Notebooks run in a kernel of this very interpreter (`private_kernel`: a temporary kernelspec for
`sys.executable`, first on JUPYTER_PATH), with the project root as working directory; the kernel's
stdout and stderr (the sweep's progress) are streamed to the terminal. `jobs` > 1 runs that many
chapters at once (one kernel each; a kernel's start and imports cost seconds of one core): the
chapters that read the others' results (`READS_OTHER_CHAPTERS`, the introduction and the execution statistics) wait for
every chapter before them, so they find the others' results in the cache instead of computing them.

Profiles give every notebook parameter a value (`PROFILES`); overrides (`-p`, `-y`, `-f`, parsed
and checked by padim_lib.report.nbparams) apply on top, and only to the notebooks that declare that
parameter. `auto` picks `paper` when MVTec AD is complete under `data/mvtec` and the ResNet18
ImageNet weights are in the torch hub cache, else `embedded` (the synthetic set, made on first use,
with EfficientNet-Lite0).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from padim_lib.errors import PadimError
from padim_lib.io.atomic import atomic_write
from padim_lib.report import runlog
from padim_lib.report.chapters import Chapter, project_root, select_chapters, toc_chapters, write_placeholder
from padim_lib.report.nbparams import (
    check_params,
    merge_parameters_cell,
    notebook_parameters,
)
from padim_lib.report.provenance import machine_description

KERNEL_NAME = "padim-book"
# Chapters that load other chapters' studies and find their results in the cache; with jobs > 1 they
# start only once every chapter before them in the toc has finished (the introduction, which lists
# how every chapter ran, always runs last).
READS_OTHER_CHAPTERS = ("summary",)

# Table II's dimensions for EfficientNet-Lite0 keep the paper's ratios: 100/448 and 200/448 of
# Lite0's 176-d embedding (24 + 40 + 112 channels) are 39 and 79, rounded to 40 and 80. The
# embedded study is ~120 small tasks: one torch thread each costs little on an idle machine and
# avoids the stalls of two threads per task on a busy one (measured on 2 shared cores: 4 min with
# one thread, 47 min with two).
PROFILES: dict[str, dict[str, Any]] = {
    "embedded": {
        "profile": "embedded",
        "data_root": "data/synthetic",
        "classes": None,
        "backbone": "efficientnet_lite0",
        "dims": [40, 80],
        "seeds": 10,
        "bootstrap": 100,
        "max_train": None,
        "results_dir": "results/embedded",
        "device": "auto",
        "scheduler": None,
        "torch_threads": 1,
        "stc_root": "data/synthetic_stc",  # STC_ROOT_EMBEDDED: made on first use (prepare_stc)
        "pretrained": True,
    },
    "paper": {
        "profile": "paper",
        "data_root": "data/mvtec",
        "classes": None,
        "backbone": "resnet18",
        "dims": [100, 200],
        "seeds": 10,
        "bootstrap": 200,
        "max_train": None,
        "results_dir": "results/paper",
        "device": "auto",
        "scheduler": None,
        "torch_threads": None,
        # ImageNet weights for every network. False only for a dry run of this profile's code path
        # (tests/test_dry_run.py): random weights, every chapter says so, the numbers mean nothing.
        "pretrained": True,
        # PaDiM against the baselines (baselines.ipynb) and time and memory (complexity.ipynb): the
        # paper's four models, its VAE budget, every class.
        "small_backbone": "resnet18",
        "large_backbone": "wide_resnet50_2",
        "spade_backbone": "wide_resnet50_2",
        "classes_per_kind": None,
        "vae_backbone": "resnet18",
        "vae_pretrained": True,
        "vae_epochs": 100,
        "vae_images_per_epoch": 10_000,
        "vae_image_size": 256,
        "vae_batch_size": 32,
        "spade_gallery": 50,
        "paper_models": [],
        # image-level detection (book/detection.ipynb): the networks the paper names
        "det_rd_backbone": "wide_resnet50_2",
        "det_rd": 550,
        "det_effnet_backbones": ["efficientnet_b5"],
        "det_effnet_literal_layers": ["features.2", "features.5.0", "features.5"],
        "det_spade_backbone": "wide_resnet50_2",
        "det_spade_params": {},
        # non-aligned MVTec AD (book/non_aligned.ipynb): all classes, 5 versions, the paper's VAE
        "na_classes": "all",
        "na_versions": 5,
        "na_backbone": "wide_resnet50_2",
        "na_rd": 550,
        "na_spade_backbone": "wide_resnet50_2",
        "na_spade_params": {},
        "na_vae_params": {},
        "na_vae_backbone": "resnet18",
        "na_vae_pretrained": True,
        # ShanghaiTech Campus (book/stc.ipynb)
        "stc_root": "data/stc",
        "stc_backbone": "resnet18",
        "stc_rd": 100,
        "stc_spade_backbone": "wide_resnet50_2",
        "stc_spade_params": {},
        "stc_max_train": 2000,
        "stc_resize": 256,
    },
}
STC_ROOT_EMBEDDED = "data/synthetic_stc"  # the stc chapter's default `stc_root`, made on first use


def build_book(
    profile: str = "auto",
    params: Mapping[str, Any] | None = None,
    only: Sequence[str] | None = None,
    *,
    root: str | os.PathLike | None = None,
    html: bool = True,
    log: Callable[[str], None] | None = None,
    stream_output: bool = True,
    strict: bool = False,
    jobs: int = 1,
) -> Path:
    """Execute the chapters (all, or the stems in `only`) in `_toc.yml` order and build the HTML.

    `params` (already parsed values, e.g. `nbparams.load_params`) override the profile's. Every
    value is checked against the type each chapter declares before any kernel starts.
    Returns the path of `_build/html/index.html` (or of the executed-notebook folder when
    `html=False`). Raises PadimError naming the notebook and the failing cell's exception.
    `strict`: a Sphinx warning (e.g. a missing glue value) fails the build (tests use it).
    `jobs`: chapters run at once (each in its own kernel; see the module docstring for the order).
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise PadimError(f"jobs={jobs!r}; expected a positive number of chapters run at once")
    log = log or _print
    root = project_root(root)
    chapters = toc_chapters(root)
    selected = select_chapters(chapters, only)
    # The introduction lists when and how every chapter ran, the execution statistics page how long each
    # took and on what (padim_lib.report.runlog): they run after the others, in that order, and again
    # whenever any chapter is re-run alone.
    reporting = [chapters[0]] + [c for c in chapters[1:] if c.stem == runlog.STATISTICS_PAGE]
    selected = [c for c in selected if c not in reporting] + (reporting if selected else [])
    name, values = resolve_profile(profile, root, params, log=log)
    per_notebook = notebook_parameters(selected, values, explicit=set(params or {}))
    check_params(values, selected)
    t0 = time.perf_counter()
    log(f"padim book: profile {name!r}, {len(selected)} notebook(s), root {root}")
    for data_root in dict.fromkeys(p["data_root"] for p in per_notebook.values() if "data_root" in p):
        prepare_data(name, data_root, root, log=log)
    for stc_root in dict.fromkeys(p["stc_root"] for p in per_notebook.values() if "stc_root" in p):
        prepare_stc(name, stc_root, root, log=log)
    from padim_lib.report import plan

    plan.check(name, selected, per_notebook, root)  # the free disk and the memory, before any chapter runs
    hardware: dict[str, str] = {}  # device parameter -> machine_description (probed once per value)
    with private_kernel() as kernel:
        def run(i: int, chapter: Chapter) -> None:
            log(f"[{i}/{len(selected)}] {chapter.stem}: running (elapsed {_fmt_s(time.perf_counter() - t0)})")
            t1 = time.perf_counter()
            run_notebook(chapter, per_notebook[chapter.stem], root=root, kernel=kernel, stream=stream_output)
            seconds = time.perf_counter() - t1
            device = str(per_notebook[chapter.stem].get("device", "auto"))
            with _RECORD_LOCK:  # runs.json is read, updated and replaced: one chapter at a time
                if device not in hardware:
                    hardware[device] = machine_description(device)
                runlog.record(root, chapter.stem, name, per_notebook[chapter.stem], seconds=seconds,
                              hardware=hardware[device])
            log(f"[{i}/{len(selected)}] {chapter.stem}: done in {_fmt_s(seconds)}")

        late = {c.stem for c in selected if c in reporting or c.stem in READS_OTHER_CHAPTERS}
        run_chapters(selected, run, jobs=jobs, waits_for_earlier=late)
    for chapter in chapters:
        if not chapter.executed.exists():
            write_placeholder(chapter)
    if not html:
        return root / "book" / "_executed"
    log(f"building HTML with jupyter-book (elapsed {_fmt_s(time.perf_counter() - t0)})")
    index = build_html(root, extra_args=["-W", "--keep-going"] if strict else ())
    log(f"book ready: {index} (total {_fmt_s(time.perf_counter() - t0)})")
    return index


def plan_book(profile: str = "auto", params: Mapping[str, Any] | None = None, only: Sequence[str] | None = None,
              *, root: str | os.PathLike | None = None, log: Callable[[str], None] | None = None):
    """What `build_book` with these arguments would do (`report.plan.BookPlan`), measured and estimated
    before any chapter runs; the data is prepared as `build_book` would (the embedded sets are made)."""
    from padim_lib.report import plan

    log = log or _print
    root = project_root(root)
    chapters = toc_chapters(root)
    selected = select_chapters(chapters, only)
    selected = [c for c in selected if c is not chapters[0]] + ([chapters[0]] if selected else [])
    name, values = resolve_profile(profile, root, params, log=log)
    per_notebook = notebook_parameters(selected, values, explicit=set(params or {}))
    check_params(values, selected)
    for data_root in dict.fromkeys(p["data_root"] for p in per_notebook.values() if "data_root" in p):
        prepare_data(name, data_root, root, log=log)
    for stc_root in dict.fromkeys(p["stc_root"] for p in per_notebook.values() if "stc_root" in p):
        prepare_stc(name, stc_root, root, log=log)
    log(f"padim book --plan: profile {name!r}, {len(selected)} notebook(s): measuring this machine")
    return plan.book_plan(name, selected, per_notebook, root)


def resolve_profile(profile: str, root: Path, params: Mapping[str, Any] | None = None,
                    log: Callable[[str], None] | None = None) -> tuple[str, dict]:
    """(profile name, parameter values with `params` applied on top). With "auto", says through `log`
    which profile it picked and, when it is not `paper`, each missing input and the command that
    supplies it."""
    if profile == "auto":
        problems = paper_inputs_problems(root)  # the paper profile's own inputs, not `params`
        profile = "embedded" if problems else "paper"
        if log is not None:
            log(f"profile auto -> {profile!r}" + ("" if not problems else
                " (the paper's inputs are incomplete; the embedded profile's numbers are not comparable "
                "with the paper's). Missing: " + "; ".join(problems)))
    elif profile == "paper":
        problems = paper_inputs_problems(root, {**PROFILES["paper"], **(params or {})})
        if problems:
            raise PadimError("profile 'paper': missing " + "; ".join(problems))
    if profile not in PROFILES:
        raise PadimError(f"unknown profile {profile!r}; expected 'auto' or one of {sorted(PROFILES)}")
    values = dict(PROFILES[profile])
    values.update(params or {})
    return profile, values


def paper_inputs_problems(root: Path, values: Mapping[str, Any] | None = None) -> list[str]:
    """What keeps the `paper` profile (with `values`, default its own) from running here (empty = it can run).

    With `pretrained` true: MVTec AD complete at `data_root` and the ResNet18 weights cached. With
    `pretrained` false (a dry run on random weights: nothing is downloaded) only an MVTec-layout
    tree at `data_root`, of any size and classes."""
    from padim_lib.datasets.folder import list_categories
    from padim_lib.datasets.mvtec import check_split_counts
    from padim_lib.features.weights import cached_weights

    values = PROFILES["paper"] if values is None else values
    problems = []
    mvtec = Path(values["data_root"])
    mvtec = mvtec if mvtec.is_absolute() else root / mvtec
    if not mvtec.is_dir():
        problems.append(f"MVTec AD at {mvtec} (run `padim download mvtec --dest {mvtec}`)")
    elif not values.get("pretrained", True):
        if not list_categories(mvtec):
            problems.append(f"data_root {mvtec}: no class folders with train/good (the MVTec AD layout)")
    else:
        problems += [f"MVTec AD: {p} (rerun `padim download mvtec --dest {mvtec}`)" for p in check_split_counts(mvtec)]
    if values.get("pretrained", True) and cached_weights("resnet18") is None:
        problems.append("the ResNet18 ImageNet weights in the torch hub cache (run `padim download weights resnet18`)")
    return problems


def prepare_data(profile: str, data_root: str | os.PathLike, root: Path, *, log: Callable[[str], None]) -> None:
    """On `embedded`, make the synthetic set if it is missing (what `padim synth` does); otherwise
    check that `data_root` exists."""
    path = Path(data_root) if Path(data_root).is_absolute() else root / data_root
    if profile == "embedded" and str(data_root) == PROFILES["embedded"]["data_root"]:
        from padim_lib.datasets.synthetic import make_synthetic

        if not (path / "dataset.json").is_file():
            log(f"making the synthetic data set at {path}")
        make_synthetic(path)  # idempotent: returns at once when the same manifest exists
    elif not path.is_dir():
        raise PadimError(f"data_root {data_root!r}: no such folder (relative paths are from {root})")


def prepare_stc(profile: str, stc_root: str | os.PathLike, root: Path, *, log: Callable[[str], None]) -> None:
    """On `embedded`, make the synthetic STC set if it is missing (`make_synthetic_stc`, default size);
    otherwise check that `stc_root` is a usable STC tree (ShanghaiTech Campus is never downloaded)."""
    path = Path(stc_root) if Path(stc_root).is_absolute() else root / stc_root
    if profile == "embedded" and str(stc_root) == STC_ROOT_EMBEDDED:
        from padim_lib.datasets.synthetic_stc import make_synthetic_stc

        if not (path / "dataset.json").is_file():
            log(f"making the synthetic STC set at {path}")
        make_synthetic_stc(path)  # idempotent, like make_synthetic
        return
    from padim_lib.datasets.stc import STC_URL, check_stc_layout

    problems = check_stc_layout(path)
    if problems:
        raise PadimError(f"stc_root {stc_root!r}: {problems[0]} (STC is not downloaded automatically: "
                         f"get it from {STC_URL} and unpack it at {path})")


# ----------------------------------------------------------------------------- execution


@contextlib.contextmanager
def private_kernel() -> Iterator[str]:
    """A kernelspec that runs this very interpreter (`sys.executable`), found first on JUPYTER_PATH.

    A user-level `python3` kernelspec may point at another Python without padim_lib; ours cannot.
    """
    old = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="padim-kernel-") as tmp:
        spec_dir = Path(tmp) / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (padim_lib)",
            "language": "python",
            # lets jupyter_client provision CurveZMQ keys, as ipykernel's own spec does (no TCP warning)
            "metadata": {"debugger": True, "supported_encryption": ["curve"]},
            # debugpy warns about frozen modules on every start; nothing to fix on our side
            "env": {"PYDEVD_DISABLE_FILE_VALIDATION": "1"},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
        os.environ["JUPYTER_PATH"] = os.pathsep.join([tmp] + ([old] if old else []))
        try:
            yield KERNEL_NAME
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


_RECORD_LOCK = threading.Lock()


def run_chapters(chapters: Sequence[Chapter], run: Callable[[int, Chapter], None], *, jobs: int = 1,
                 waits_for_earlier: set[str] = frozenset()) -> None:
    """Call `run(i, chapter)` (i counts from 1, in `chapters`' order) for every chapter, up to `jobs`
    at once, each in its own thread (a chapter's work is in its kernel, another process). A chapter
    in `waits_for_earlier` starts only when every chapter before it has finished. The first failure
    stops new starts; the chapters already running finish, then it is raised."""
    if jobs == 1:
        for i, chapter in enumerate(chapters, 1):
            run(i, chapter)
        return
    pending = list(enumerate(chapters, 1))
    running: dict[Future, int] = {}
    finished: set[int] = set()
    error: BaseException | None = None
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="chapter") as pool:
        while (pending and error is None) or running:
            while pending and error is None and len(running) < jobs:
                i, chapter = pending[0]
                if chapter.stem in waits_for_earlier and not all(j in finished for j in range(1, i)):
                    break  # in order: nothing after a waiting chapter starts before it
                pending.pop(0)
                running[pool.submit(run, i, chapter)] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                finished.add(running.pop(future))
                if future.exception() is not None and error is None:
                    error = future.exception()
    if error is not None:
        raise error


def run_notebook(
    chapter: Chapter, parameters: Mapping[str, Any], *, root: Path, kernel: str, stream: bool = True
) -> None:
    """Execute one chapter with papermill into `chapter.executed` (cwd = project root), then make
    its page show the parameters it ran with once (`nbparams.merge_parameters_cell`)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    chapter.executed.parent.mkdir(parents=True, exist_ok=True)
    try:
        nb = papermill.execute_notebook(
            str(chapter.source),
            str(chapter.executed),
            parameters=dict(parameters),
            kernel_name=kernel,
            cwd=str(root),
            progress_bar=False,
            stdout_file=sys.stdout if stream else None,
            stderr_file=sys.stderr if stream else None,
            **_kernel_manager_kwargs(),
        )
    except PapermillExecutionError as exc:
        last = _strip_ansi(exc.traceback[-1]) if exc.traceback else f"{exc.ename}: {exc.evalue}"
        raise PadimError(
            f"notebook {chapter.source.relative_to(root)} failed in cell [{exc.exec_count}]: "
            f"{exc.ename}: {exc.evalue}\n{last}\n"
            f"partially executed copy kept at {chapter.executed}"
        ) from exc
    except Exception as exc:  # kernel died, timed out, could not start: same report, same copy
        if isinstance(exc, PadimError):
            raise
        raise PadimError(
            f"notebook {chapter.source.relative_to(root)} could not run: {type(exc).__name__}: {exc}\n"
            f"partially executed copy (if any) kept at {chapter.executed}"
        ) from exc
    if merge_parameters_cell(nb):
        import nbformat

        atomic_write(chapter.executed, lambda tmp: nbformat.write(nb, str(tmp)))


def _kernel_manager_kwargs() -> dict[str, Any]:
    """Let jupyter_client give the kernel CurveZMQ keys (our kernelspec declares support), so the
    kernel's traffic on 127.0.0.1 is encrypted and ipykernel does not warn about plain TCP."""
    import zmq
    from jupyter_client.manager import AsyncKernelManager

    if not zmq.has("curve"):
        return {}

    class CurveKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            kwargs.setdefault("transport_encryption", "auto")
            super().__init__(**kwargs)

    return {"kernel_manager_class": CurveKernelManager}


def build_html(root: Path, *, extra_args: Sequence[str] = ()) -> Path:
    """`jupyter-book build root` in a subprocess; returns `_build/html/index.html`."""
    import subprocess

    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(root)]
    proc = subprocess.run([*cmd, "--quiet", *extra_args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise PadimError(f"jupyter-book build failed (exit {proc.returncode}):\n{tail}")
    warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line]
    for line in warnings:
        print(f"  jupyter-book: {line}", file=sys.stderr)
    index = root / "_build" / "html" / "index.html"
    if not index.is_file():
        raise PadimError(f"jupyter-book finished but {index} is missing")
    return index


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_s(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)
