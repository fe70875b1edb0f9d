"""`padim book`: run the book's notebooks with papermill, then build the HTML with jupyter-book 1.x.

Where things live (paths relative to the project root, the folder holding `_config.yml`):

- `book/<stem>.ipynb`: the chapters' sources, committed without outputs. Each has one cell tagged
  `parameters` (papermill injects the run's values after it, in a cell tagged `injected-parameters`).
- `book/_executed/<stem>.ipynb`: papermill's executed copies (git-ignored). A failed run keeps its
  partially executed copy here for inspection.
- `_toc.yml` lists the executed copies (`book/_executed/<stem>`) and plain pages such as
  `book/references.md`; `_config.yml` sets `only_build_toc_files: true`, so jupyter-book renders
  exactly what papermill produced and never the sources, and `execute_notebooks: "off"`, so
  papermill stays the only executor. A chapter that has never been run (e.g. after `--only`) gets
  a placeholder page saying how to run it, so the build never points at a missing file. Chapters
  not selected keep their last executed copy, which may come from other parameters: re-run the
  whole book (no `--only`) before publishing it.
- `_build/html/index.html`: the book.

Notebooks run in a kernel of this very interpreter (`private_kernel`: a temporary kernelspec for
`sys.executable`, first on JUPYTER_PATH), with the project root as working directory; the kernel's
stdout and stderr (the sweep's progress) are streamed to the terminal.

Profiles give every notebook parameter a value (`PROFILES`); `-p name=value` overrides apply on
top, and only to the notebooks that declare that parameter. `auto` picks `paper` when MVTec AD is
complete under `data/mvtec` and the ResNet18 ImageNet weights are in the torch hub cache, else
`embedded` (the synthetic set, made on first use, with EfficientNet-Lite0).

Chapter helpers used by the notebooks (task lists, the reproduced-vs-published table, the results'
comparability) are at the end of this module, so notebooks stay thin.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from padim_lib.errors import PadimError

EXECUTED_DIR = "book/_executed"
KERNEL_NAME = "padim-book"

# Table II's dimensions for EfficientNet-Lite0 keep the paper's ratios: 100/448 and 200/448 of
# Lite0's 176-d embedding (24 + 40 + 112 channels). The embedded study is ~120 small tasks: one torch
# thread each costs little on an idle machine and avoids the stalls of two threads per task on a busy
# one (measured on 2 shared cores: 4 min with one thread, 47 min with two).
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
    },
}


@dataclass(frozen=True)
class Chapter:
    """One notebook of the book: its source and where papermill writes the executed copy."""

    stem: str
    source: Path
    executed: Path


# ----------------------------------------------------------------------------- runner


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
) -> Path:
    """Execute the chapters (all, or the stems in `only`) in `_toc.yml` order and build the HTML.

    Returns the path of `_build/html/index.html` (or of the executed-notebook folder when
    `html=False`). Raises PadimError naming the notebook and the failing cell's exception.
    `strict`: a Sphinx warning (e.g. a missing glue value) fails the build (tests use it).
    """
    log = log or _print
    root = project_root(root)
    chapters = toc_chapters(root)
    selected = select_chapters(chapters, only)
    name, values = resolve_profile(profile, root, params)
    per_notebook = notebook_parameters(selected, values, explicit=set(params or {}))
    t0 = time.perf_counter()
    log(f"padim book: profile {name!r}, {len(selected)} notebook(s), root {root}")
    for data_root in dict.fromkeys(p["data_root"] for p in per_notebook.values() if "data_root" in p):
        prepare_data(name, data_root, root, log=log)
    with private_kernel() as kernel:
        for i, chapter in enumerate(selected, 1):
            log(f"[{i}/{len(selected)}] {chapter.stem}: running (elapsed {_fmt_s(time.perf_counter() - t0)})")
            t1 = time.perf_counter()
            run_notebook(chapter, per_notebook[chapter.stem], root=root, kernel=kernel, stream=stream_output)
            log(f"[{i}/{len(selected)}] {chapter.stem}: done in {_fmt_s(time.perf_counter() - t1)}")
    for chapter in chapters:
        if not chapter.executed.exists():
            write_placeholder(chapter)
    if not html:
        return root / EXECUTED_DIR
    log(f"building HTML with jupyter-book (elapsed {_fmt_s(time.perf_counter() - t0)})")
    index = build_html(root, extra_args=["-W", "--keep-going"] if strict else ())
    log(f"book ready: {index} (total {_fmt_s(time.perf_counter() - t0)})")
    return index


def project_root(root: str | os.PathLike | None = None) -> Path:
    """The folder with `_config.yml` and `_toc.yml`: `root`, else the current directory, else the
    checkout this package was installed from (editable install)."""
    candidates = [Path(root)] if root is not None else [Path.cwd(), Path(__file__).resolve().parents[1]]
    for c in candidates:
        if (c / "_toc.yml").is_file() and (c / "_config.yml").is_file():
            return c.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise PadimError(f"no jupyter-book project (_config.yml and _toc.yml) found in {where}")


def toc_chapters(root: Path) -> list[Chapter]:
    """The notebooks listed in `root/_toc.yml`, in reading order.

    Entries under `book/_executed/` are papermill outputs whose source is `book/<stem>.ipynb`;
    other entries (plain Markdown pages) are not executed and not returned.
    """
    import yaml

    toc_path = root / "_toc.yml"
    toc = yaml.safe_load(toc_path.read_text())
    files: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    files.append(node[key])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    chapters = []
    prefix = EXECUTED_DIR + "/"
    for entry in files:
        entry = entry.removesuffix(".ipynb")
        if not entry.startswith(prefix):
            continue
        stem = entry[len(prefix) :]
        source = root / "book" / f"{stem}.ipynb"
        if not source.is_file():
            raise PadimError(f"{toc_path}: entry {entry!r} has no source notebook {source}")
        chapters.append(Chapter(stem, source, root / EXECUTED_DIR / f"{stem}.ipynb"))
    if not chapters:
        raise PadimError(f"{toc_path}: no entry under {EXECUTED_DIR}/; nothing to execute")
    return chapters


def select_chapters(chapters: Sequence[Chapter], only: Sequence[str] | None) -> list[Chapter]:
    """`only` (stems, with or without `.ipynb`) in toc order; None/empty = all."""
    if not only:
        return list(chapters)
    wanted = [Path(s).name.removesuffix(".ipynb") for s in only]
    known = {c.stem for c in chapters}
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise PadimError(f"--only: unknown notebook(s) {unknown}; the book has {[c.stem for c in chapters]}")
    return [c for c in chapters if c.stem in wanted]


def resolve_profile(profile: str, root: Path, params: Mapping[str, Any] | None = None) -> tuple[str, dict]:
    """(profile name, parameter values with `params` applied on top)."""
    if profile == "auto":
        profile = "paper" if paper_inputs_problems(root) == [] else "embedded"
    elif profile == "paper":
        problems = paper_inputs_problems(root)
        if problems:
            raise PadimError(
                "profile 'paper' needs MVTec AD under data/mvtec and the ResNet18 ImageNet weights in the "
                "torch hub cache (`padim download mvtec`; torchvision's resnet18 weights); missing: "
                + "; ".join(problems)
            )
    if profile not in PROFILES:
        raise PadimError(f"unknown profile {profile!r}; expected 'auto' or one of {sorted(PROFILES)}")
    values = dict(PROFILES[profile])
    values.update(params or {})
    return profile, values


def paper_inputs_problems(root: Path) -> list[str]:
    """What keeps the `paper` profile from running here (empty = it can run)."""
    problems = []
    mvtec = root / "data" / "mvtec"
    if not mvtec.is_dir():
        problems.append(f"no MVTec AD folder at {mvtec}")
    else:
        try:
            from padim_lib.datasets.mvtec import check_split_counts

            problems += [f"MVTec AD: {p}" for p in check_split_counts(mvtec)]
        except ImportError as exc:  # the data layer is missing: say so rather than guess
            problems.append(f"cannot check MVTec AD ({exc})")
    if resnet18_weights_file() is None:
        problems.append("ResNet18 ImageNet weights not in the torch hub cache")
    return problems


def resnet18_weights_file() -> Path | None:
    """torchvision's cached ResNet18 ImageNet checkpoint, if downloaded before (never downloads)."""
    import torch
    from torchvision.models import ResNet18_Weights

    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    return path if path.is_file() else None


def declared_parameters(chapters: Sequence[Chapter]) -> dict[str, list[str]]:
    """Per notebook, the names assigned in its `parameters` cell (papermill's inspection)."""
    import papermill

    return {c.stem: list(papermill.inspect_notebook(str(c.source))) for c in chapters}


def notebook_parameters(
    chapters: Sequence[Chapter], values: Mapping[str, Any], explicit: set[str]
) -> dict[str, dict[str, Any]]:
    """Per notebook, the values of the parameters it declares.

    A name in `explicit` (a `-p` override) that none of `chapters` declares is an error that lists
    each notebook's parameters.
    """
    declared = declared_parameters(chapters)
    unknown = sorted(n for n in explicit if not any(n in names for names in declared.values()))
    if unknown:
        listing = "; ".join(f"{stem}: {', '.join(names) or '(none)'}" for stem, names in declared.items())
        raise PadimError(f"-p: unknown parameter(s) {unknown}; the notebooks take: {listing}")
    return {stem: {n: values[n] for n in names if n in values} for stem, names in declared.items()}


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


def run_notebook(
    chapter: Chapter, parameters: Mapping[str, Any], *, root: Path, kernel: str, stream: bool = True
) -> None:
    """Execute one chapter with papermill into `chapter.executed` (cwd = project root)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    chapter.executed.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
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
        propagate_display_tags(chapter.executed)
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


_DISPLAY_TAGS = ("remove-cell", "remove-input", "remove-output", "hide-cell", "hide-input", "hide-output")


def propagate_display_tags(path: Path) -> None:
    """Give papermill's injected-parameters cell the display tags of the `parameters` cell.

    papermill tags the cell it injects only `injected-parameters`; a chapter that hides its
    parameters (the intro) would otherwise show the injected values.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    tags_of = [c.metadata.get("tags", []) for c in nb.cells]
    wanted = next((t for t in tags_of if "parameters" in t), [])
    display = [t for t in wanted if t in _DISPLAY_TAGS]
    if not display:
        return
    for cell, tags in zip(nb.cells, tags_of, strict=True):
        if "injected-parameters" in tags:
            cell.metadata["tags"] = list(dict.fromkeys([*tags, *display]))
    nbformat.write(nb, path)


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


def write_placeholder(chapter: Chapter) -> None:
    """An executed copy for a chapter never run: its title and the command that runs it."""
    import nbformat

    source = nbformat.read(chapter.source, as_version=4)
    title = next(
        (c.source.splitlines()[0] for c in source.cells if c.cell_type == "markdown" and c.source.startswith("#")),
        f"# {chapter.stem}",
    )
    nb = nbformat.v4.new_notebook(metadata=source.metadata)
    nb.cells = [
        nbformat.v4.new_markdown_cell(title),
        nbformat.v4.new_markdown_cell(
            f"This chapter has not been run yet. Run it with `padim book --only {chapter.stem}`."
        ),
    ]
    chapter.executed.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, chapter.executed)


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


# ----------------------------------------------------------------------------- chapter helpers


def comparability(
    data_root: str | os.PathLike,
    backbone: str,
    classes: Sequence[str] | str | None = None,
    *,
    resize: int = 256,
    crop: int | None = 224,
    max_train: int | None = None,
) -> tuple[bool, list[str]]:
    """Whether reproduced numbers can be set against the paper's (Tables I and II), and if not, why.

    Comparable means the paper's set-up: all 15 MVTec AD classes with the published split sizes,
    ResNet18, resize 256 and centre crop 224, every training image.
    """
    from padim_lib.datasets.mvtec import CLASSES, check_split_counts

    reasons = []
    if (Path(data_root) / "dataset.json").is_file():
        reasons.append(f"the data at {data_root} is a generated set, not MVTec AD")
    else:
        try:
            problems = check_split_counts(data_root)
        except Exception as exc:  # noqa: BLE001 - a missing or odd folder is a reason, not a crash
            problems = [f"{type(exc).__name__}: {exc}"]
        if problems:
            reasons.append(f"the data at {data_root} is not a complete MVTec AD ({problems[0]})")
    chosen = as_list(classes)
    if chosen is not None and sorted(chosen) != sorted(CLASSES):
        reasons.append(f"{len(chosen)} of the 15 classes")
    if backbone != "resnet18":
        reasons.append(f"backbone {backbone}, not ResNet18")
    if (resize, crop) != (256, 224):
        reasons.append(f"preprocessing resize {resize} / crop {crop}, not 256 / 224")
    if max_train is not None:
        reasons.append(f"training images capped at {max_train}")
    return not reasons, reasons


def comparability_note(profile: str, comparable: bool, reasons: Sequence[str]) -> str:
    """A MyST admonition for the intro: plain words on whether the numbers compare with the paper's."""
    if comparable:
        return (
            ":::{note}\nThis run uses the paper's set-up (MVTec AD, ResNet18, 256/224 preprocessing), so "
            "its numbers can be compared with the published ones; differences are shown with 95 % "
            "intervals.\n:::\n"
        )
    why = "; ".join(reasons)
    return (
        f":::{{warning}}\n**The numbers in this book are not comparable with the paper's.** This run "
        f"(profile `{profile}`) differs from the paper's set-up: {why}. It exercises the whole "
        "pipeline and tests the paper's claims about orderings (which layer, which reduction is better) "
        "on other data; the published figures are shown for orientation only, and claims about "
        "magnitudes are marked *not comparable*. Run `padim book --profile paper` with MVTec AD in "
        "`data/mvtec` to compare.\n:::\n"
    )


def table_note(run: TableRun) -> str:
    """A chapter's MyST admonition on whether its table compares with the paper's."""
    if run.comparable:
        return (":::{note}\nThis run uses the paper's set-up, so the differences to the published figures "
                "are meaningful; read them with their intervals.\n:::\n")
    return (":::{warning}\nNot comparable with the paper: " + "; ".join(run.reasons) + ". The published "
            "figures are shown for orientation only; compare orderings, not values.\n:::\n")


def default_category(data_root: str | os.PathLike) -> str:
    """The first object class under `data_root` (objects make the clearest maps), else the first class."""
    from padim_lib.datasets import category_kinds

    kinds = category_kinds(data_root)
    if not kinds:
        raise PadimError(f"data_root {data_root}: no class folders with train/good")
    return next((c for c, k in kinds.items() if k == "object"), next(iter(kinds)))


def as_list(classes: Sequence[str] | str | None) -> list[str] | None:
    """A notebook's `classes` parameter: None / "all" -> None (every class), "x" -> ["x"]."""
    if classes is None or classes == "all":
        return None
    if isinstance(classes, str):
        return [classes]
    return [str(c) for c in classes]


BACKBONE_SHORT = {"resnet18": "R18", "wide_resnet50_2": "WR50", "efficientnet_b5": "B5", "efficientnet_lite0": "Lite0"}
TABLES = ("Table I", "Table II")


def table_configs(
    table: str,
    *,
    backbone: str,
    layers: Sequence[str] | None = None,
    dims: Sequence[int] = (100, 200),
    seeds: int | Sequence[int] = 10,
    **common: Any,
) -> list:
    """The configurations of the paper's Table I or II for `backbone` (ExperimentConfig list).

    `seeds`: a count (seeds 0..n-1) or explicit seeds, for Table II's Rd rows. `common`: resize,
    crop, sigma, eps, max_train. Table I's concatenated model is labelled after the backbone it
    really runs ("PaDiM-Lite0"); its `published_row` stays "PaDiM-R18", the figure it is set against.
    """
    from padim_lib.experiments import table1_configs, table2_configs

    if table == "Table I":
        configs = table1_configs(backbone=backbone, layers=layers, **common)
        name = f"PaDiM-{BACKBONE_SHORT.get(backbone, backbone)}"
        return [c.replace(label=name) if c.label == "PaDiM-R18" else c for c in configs]
    if table == "Table II":
        seed_list = range(int(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
        return table2_configs(backbone=backbone, dims=dims, seeds=seed_list, layers=layers, **common)
    raise PadimError(f"table={table!r}; expected one of {TABLES}")


@dataclass
class TableRun:
    """One table's configurations, tasks and result rows (labelled with this table's names)."""

    table: str
    configs: list
    tasks: list
    rows: Any  # pd.DataFrame, tidy result rows
    results_dir: Path
    comparable: bool
    reasons: list[str]

    @property
    def labels(self) -> list[str]:
        """Configuration labels in the table's order."""
        return list(dict.fromkeys(c.label for c in self.configs))

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys(t.category for t in self.tasks))

    def summary(self):
        """stats.summarise of the rows: per label, metric and class / group, value with 95 % CI."""
        from padim_lib import stats

        return stats.summarise(self.rows)

    def comparison(self, summary=None):
        """stats.compare_published: reproduced vs published (percent), difference and source."""
        from padim_lib import stats

        return stats.compare_published(self.summary() if summary is None else summary, self.table,
                                       comparable=self.comparable)

    def published(self):
        """The published figures of this table as (group, label, metric, value as a fraction)."""
        import pandas as pd

        from padim_lib.published import load_published

        pub = load_published()
        pub = pub[pub["table"] == self.table]
        rows = []
        for c in self.configs:
            for _, r in pub[pub["row"] == c.published_row].iterrows() if c.published_row else []:
                rows.append({"group": r["group"], "label": c.label, "metric": r["metric"], "value": r["value"] / 100})
        return pd.DataFrame(rows, columns=["group", "label", "metric", "value"]).drop_duplicates()

    def artifacts(self, label: str, category: str) -> dict:
        """The arrays stored with the task of (label, category); seeded configurations: the lowest seed."""
        from padim_lib.results import ResultStore

        tasks = [t for t in self.tasks if t.config.label == label and t.category == category]
        if not tasks:
            raise PadimError(f"{self.table}: no task for configuration {label!r} and class {category!r}")
        task = min(tasks, key=lambda t: t.config.seed)
        return ResultStore(self.results_dir).artifacts(task.key())

    def curves(self, kind: str) -> dict[str, dict[str, tuple]]:
        """{class: {label: (x, y)}} for kind 'roc' (image ROC), 'pixel_roc' or 'pro' (PRO vs FPR)."""
        names = {"roc": ("image_roc_fpr", "image_roc_tpr"), "pixel_roc": ("pixel_roc_fpr", "pixel_roc_tpr"),
                 "pro": ("pro_fpr", "pro")}
        if kind not in names:
            raise PadimError(f"kind={kind!r}; expected one of {sorted(names)}")
        x, y = names[kind]
        out: dict[str, dict[str, tuple]] = {}
        for category in self.classes:
            for label in self.labels:
                art = self.artifacts(label, category)
                if x in art:
                    out.setdefault(category, {})[label] = (art[x], art[y])
        return out

    def examples(self, label: str, category: str) -> dict:
        """Overlay inputs of (label, category): images (k,S,S,3) in [0,1], maps, masks, titles."""
        import numpy as np

        art = self.artifacts(label, category)
        idx = art["example_index"]
        titles = [
            f"{art['defect_types'][i]}, score {float(art['scores'][i]):.1f}" for i in idx
        ]
        return {
            "images": art["example_images"].astype(np.float32) / 255.0,
            "maps": art["example_maps"].astype(np.float32),
            "masks": art["example_masks"],
            "titles": titles,
        }


def run_table(
    table: str,
    data_root: str | os.PathLike,
    classes: Sequence[str] | str | None = None,
    *,
    backbone: str,
    layers: Sequence[str] | None = None,
    dims: Sequence[int] = (100, 200),
    seeds: int | Sequence[int] = 10,
    resize: int = 256,
    crop: int | None = 224,
    sigma: float = 4.0,
    eps: float = 0.01,
    max_train: int | None = None,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
    scheduler: str | None = None,
    bootstrap: int = 200,
    torch_threads: int | None = None,
    progress: bool = True,
) -> TableRun:
    """Compute (or read from the result cache) one of the paper's tables on `data_root`.

    Every class x configuration (x seed) is a task of `padim_lib.sweep.run`, in-process or on the
    Dask `scheduler`; tasks already stored in `results_dir` are not recomputed. `torch_threads`:
    intra-op threads per task (None: torch's default in-process, the worker's share on Dask).
    """
    from padim_lib import sweep
    from padim_lib.experiments import label_rows

    configs = table_configs(table, backbone=backbone, layers=layers, dims=dims, seeds=seeds, resize=resize,
                            crop=crop, sigma=sigma, eps=eps, max_train=max_train)
    chosen = as_list(classes)
    tasks = sweep.make_tasks(data_root, "all" if chosen is None else chosen, configs)
    if progress:
        print(f"{table}: {len(tasks)} tasks ({len(configs)} configurations x "
              f"{len({t.category for t in tasks})} classes: {', '.join(dict.fromkeys(t.category for t in tasks))})",
              flush=True)
    rows = sweep.run(tasks, results_dir, scheduler=scheduler, device=device, bootstrap=bootstrap,
                     torch_threads=torch_threads, progress=progress)
    comparable, reasons = comparability(data_root, backbone, chosen, resize=resize, crop=crop, max_train=max_train)
    return TableRun(table, configs, tasks, label_rows(rows, configs), Path(results_dir), comparable, reasons)


# ----------------------------------------------------------------------------- presentation


def fmt_ci(value: float, low: float, high: float, digits: int = 1) -> str:
    """'96.3 [95.1, 97.0]' (percent values in, as given)."""
    import math

    if any(math.isnan(float(v)) for v in (low, high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def comparison_table(comparison, metric: str, *, labels: Sequence[str] | None = None, seed_sem: bool = False,
                     groups: Sequence[str] = ("textures", "objects", "all")):
    """The paper's layout for one metric: rows configurations, columns groups; each cell the
    reproduced value [95 % CI], then the published value and the difference (p.p.).

    comparison: stats.compare_published output (percent). `seed_sem`: add the SEM over seeds of the
    "all" value (as a fraction, the paper's scale) for configurations run with several seeds.
    Returns a pandas Styler (HTML in the book) captioned with the published figures' sources.
    """
    import math

    import pandas as pd

    from padim_lib.plots import metric_label

    sub = comparison[comparison["metric"] == metric]
    order = list(labels) if labels is not None else list(dict.fromkeys(sub["label"]))
    shown = [g for g in groups if (sub["group"] == g).any()]
    records, sources = {}, []
    for label in order:
        cells = {}
        for group in shown:
            hit = sub[(sub["label"] == label) & (sub["group"] == group)]
            if hit.empty:
                cells[group] = ""
                continue
            r = hit.iloc[0]
            text = f"<b>{r['reproduced']:.1f}</b>"
            if not math.isnan(float(r["ci_low"])):
                text += f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
            pub = r["published"]
            if pub is not None and not math.isnan(float(pub)):
                text += f"<br><small>paper {pub:.1f} · Δ {r['difference']:+.1f}</small>"
                sources.append(str(r["source"]))
            cells[group] = text
        if seed_sem:
            hit = sub[(sub["label"] == label) & (sub["group"] == "all")]
            n = int(hit.iloc[0]["n_seeds"]) if len(hit) else 1
            cells["seeds"] = str(n)
            cells["SEM over seeds (all)"] = f"{float(hit.iloc[0]['seed_sem']) / 100:.1e}" if n > 1 else "–"
        records[label] = cells
    df = pd.DataFrame.from_dict(records, orient="index").rename_axis("configuration")
    caption = (f"{metric_label(metric)} (%): reproduced [95 % CI]; paper value and difference "
               f"reproduced − paper in p.p. Published figures: {'; '.join(dict.fromkeys(sources)) or 'none'}.")
    styles = [{"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 0.9em;"},
              {"selector": "td", "props": "text-align: center; white-space: nowrap;"}]
    return df.style.set_caption(caption).set_table_styles(styles)


def class_table(summary, metric: str, labels: Sequence[str] | None = None):
    """Per-class values (percent, 95 % CI) of one metric: rows classes and groups, columns labels."""
    import pandas as pd

    sub = summary[summary["metric"] == metric]
    order = list(labels) if labels is not None else list(dict.fromkeys(sub["label"]))
    table = {}
    for label in order:
        s = sub[sub["label"] == label].set_index("group")
        table[label] = {g: fmt_ci(100 * r["value"], 100 * r["ci_low"], 100 * r["ci_high"]) for g, r in s.iterrows()}
    return pd.DataFrame(table).rename_axis("class / group")


def diff_text(rows, a: str, b: str, metric: str, group: str = "all") -> str:
    """'+1.2 p.p. (95 % CI +0.8 to +1.6)' for a - b, paired over the same bootstrap resamples."""
    import math

    from padim_lib import stats

    d = stats.diff_ci(rows, a, b, metric, group)
    text = f"{100 * d['diff']:+.1f} p.p."
    if not math.isnan(d["ci_low"]):
        text += f" (95 % CI {100 * d['ci_low']:+.1f} to {100 * d['ci_high']:+.1f})"
    return text


def published_diff(table: str, a: str, b: str, metric: str, group: str = "all") -> str:
    """The same difference in the paper's table, '+1.1 p.p.' ('n/a' when a figure is missing)."""
    from padim_lib.published import load_published, published_value

    pub = load_published()
    va, vb = published_value(pub, table, a, group, metric), published_value(pub, table, b, group, metric)
    return "n/a" if va is None or vb is None else f"{va - vb:+.1f} p.p."


def best_label(summary, labels: Sequence[str], metric: str, group: str = "all") -> str:
    """The label among `labels` with the highest value of `metric` for `group`, e.g. 'Layer 3 (97.2 %)'."""
    sub = summary[(summary["metric"] == metric) & (summary["group"] == group) & summary["label"].isin(labels)]
    if sub.empty:
        raise PadimError(f"no {metric} for group {group!r} and labels {list(labels)}")
    r = sub.loc[sub["value"].idxmax()]
    return f"{r['label']} ({100 * r['value']:.1f} %)"


def differences(comparison):
    """Reproduced - published per (row, group, metric), p.p., with the reproduced CI shifted alike."""
    sub = comparison.dropna(subset=["published"])
    out = sub.assign(row=sub["label"], diff=sub["difference"], diff_low=sub["ci_low"] - sub["published"],
                     diff_high=sub["ci_high"] - sub["published"])
    return out[["row", "group", "metric", "diff", "diff_low", "diff_high"]].reset_index(drop=True)


VERDICT_COLOURS = {"holds": "#d4edda", "does not hold": "#f8d7da", "inconclusive": "#fff3cd",
                   "not comparable": "#e2e3e5", "not tested": "#e2e3e5"}


def run_names(runs: Sequence[TableRun]) -> dict[str, str]:
    """Published row name -> this run's label, where they differ (e.g. "Rd 100" -> "Rd 40")."""
    return {c.published_row: c.label for r in runs for c in r.configs
            if c.published_row and c.published_row != c.label}


def claims_table(verdicts, names: Mapping[str, str] | None = None):
    """stats.evaluate_claims output as a styled table, one block of rows per quoted sentence.

    Rows are grouped by (table, the paper's sentence, claim id); columns: the test (with this run's
    configuration names when `names` maps published rows to them), reproduced value [95 % CI],
    the same quantity on the paper's table, and the verdict (coloured).
    """
    import math
    import re

    import pandas as pd

    names = dict(names or {})
    pattern = re.compile("|".join(re.escape(k) for k in sorted(names, key=len, reverse=True))) if names else None

    def test(r) -> str:
        check = str(r["check"]) if isinstance(r["check"], str) else str(r["test"])
        text = pattern.sub(lambda m: names[m.group(0)], check) if pattern else check
        note = r["note"] if isinstance(r["note"], str) else ""
        # the box above the table already says when the set-up differs from the paper's
        note = note.replace("the run's set-up differs from the paper's", "").strip("; ")
        note = f"; {note}" if note else ""
        return f"{text}<br><small>{r['metric']}, {r['group']}{note}</small>"

    def number(r) -> str:
        value = r.get("reproduced")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if r["unit"] == "fraction":
            return f"{value:.1e}<br>[{r['ci_low']:.1e}, {r['ci_high']:.1e}]"
        return f"{value:+.1f} p.p.<br>[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"

    def paper(r) -> str:
        pub = r.get("published")
        if pub is None or (isinstance(pub, float) and math.isnan(pub)):
            return str(r.get("paper_table", "n/a"))
        return f"{pub:+.1f} p.p.<br>({r['paper_table']})"

    # The claim id keeps the index unique (Styler.map needs it); it is hidden, and rows sharing a
    # sentence show it once (Styler spans equal index values).
    sentences = [f"“{q.strip()}” ({t})" for q, t in zip(verdicts["claim"], verdicts["table"], strict=True)]
    index = pd.MultiIndex.from_arrays([sentences, verdicts["id"]], names=["the paper's sentence", "claim"])
    df = pd.DataFrame({
        "tested as": [test(r) for _, r in verdicts.iterrows()],
        "reproduced [95 % CI]": [number(r) for _, r in verdicts.iterrows()],
        "paper's table": [paper(r) for _, r in verdicts.iterrows()],
        "verdict": list(verdicts["verdict"]),
    }, index=index)
    styles = [
        {"selector": "th.row_heading", "props": "text-align: left; vertical-align: top; font-weight: normal;"
                                                "font-style: italic; min-width: 16em;"},
        {"selector": "td", "props": "vertical-align: top; text-align: left;"},
    ]
    used = {k: v for k, v in names.items() if pattern and any(k in str(c) for c in verdicts["check"])}
    caption = ("This run's configurations stand for the paper's: "
               + ", ".join(f"{v} for {k}" for k, v in used.items()) + ".") if used else ""
    styles.append({"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 0.9em;"})
    return (df.style.set_table_styles(styles).set_caption(caption).hide(axis="index", level="claim")
            .map(lambda v: f"background-color: {VERDICT_COLOURS.get(v, 'white')};", subset=["verdict"]))


# ----------------------------------------------------------------------------- the method chapter


def class_features(
    data_root: str | os.PathLike,
    category: str,
    *,
    backbone: str,
    resize: int = 256,
    crop: int | None = 224,
    max_train: int | None = None,
    results_dir: str | os.PathLike = "results",
    device: str = "auto",
) -> tuple[dict, dict]:
    """(train, test) cached features of one class, as `featcache.load_features` returns them.

    The same files the Table I / II tasks read (`Task.feature_specs`, cache `<results_dir>/features`
    as `sweep.run` uses it), so the method chapter and the tables share one backbone pass.
    """
    from padim_lib.config import ExperimentConfig
    from padim_lib.experiments import Task
    from padim_lib.featcache import ensure_features, load_features

    task = Task(str(data_root), category, ExperimentConfig(backbone=backbone, resize=resize, crop=crop,
                                                           max_train=max_train))
    cache = Path(results_dir).resolve() / "features"
    train, test = (load_features(ensure_features(s, cache, device=device, progress=False)) for s in task.feature_specs())
    return train, test


def embedding_of(features: Mapping[str, Any], index: int):
    """The aligned, concatenated embedding (D, h, w) float32 of image `index` of cached features."""
    from padim_lib.features import align_concat

    return align_concat([f[index : index + 1].float() for f in features.values()])[0]


def patch_vectors(features: Mapping[str, Any], position: tuple[int, int], *, batch_size: int = 32):
    """Embedding vectors at one grid position of every image of cached features: numpy (N, D)."""
    import numpy as np

    from padim_lib.features import align_concat

    i, j = position
    n = int(next(iter(features.values())).shape[0])
    out = [
        align_concat([f[s : s + batch_size].float() for f in features.values()])[:, :, i, j].numpy()
        for s in range(0, n, batch_size)
    ]
    return np.concatenate(out)


def seed_sem_text(summary, labels: Sequence[str], metric: str = "pixel_auroc", group: str = "all") -> str:
    """'2.1e-04 (Rd 40), 9.8e-05 (Rd 80)': SEM over seeds of the group mean, as a fraction."""
    parts = []
    for label in labels:
        hit = summary[(summary["label"] == label) & (summary["metric"] == metric) & (summary["group"] == group)]
        if len(hit) and int(hit.iloc[0]["n_seeds"]) > 1:
            parts.append(f"{float(hit.iloc[0]['seed_sem']):.1e} ({label})")
    return ", ".join(parts) or "not available (one seed)"
