"""The book's chapters: which notebooks `_toc.yml` lists, where their sources and executed copies live.

Paths are relative to the project root, the folder holding `_config.yml` and `_toc.yml`:

- `book/<stem>.ipynb`: a chapter's source, committed without outputs, with one cell tagged
  `parameters` (papermill injects the run's values after it, in a cell tagged `injected-parameters`).
- `book/_executed/<stem>.ipynb`: papermill's executed copy (git-ignored). `_toc.yml` lists these,
  so jupyter-book renders what papermill produced and never the sources.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from padim_lib.errors import PadimError
from padim_lib.io.atomic import atomic_write

EXECUTED_DIR = "book/_executed"
# chapter stem -> the experiment of `paper.experiments` it runs (`report.chapter_studies`, `report.plan`)
CHAPTER_EXPERIMENTS = {"table1_layers": "table1", "table2_dimensionality": "table2", "baselines": "baselines",
                       "detection": "detection", "non_aligned": "nonaligned", "stc": "stc"}


@dataclass(frozen=True)
class Chapter:
    """One notebook of the book: its source and where papermill writes the executed copy."""

    stem: str
    source: Path
    executed: Path


def project_root(root: str | os.PathLike | None = None) -> Path:
    """The folder with `_config.yml` and `_toc.yml`: `root`, else the current directory, else the
    checkout this package was installed from (editable install)."""
    candidates = [Path(root)] if root is not None else [Path.cwd(), Path(__file__).resolve().parents[2]]
    for c in candidates:
        if (c / "_toc.yml").is_file() and (c / "_config.yml").is_file():
            return c.resolve()
    where = ", ".join(str(c) for c in candidates)
    raise PadimError(f"no jupyter-book project (_config.yml and _toc.yml) found in {where}")


def toc_files(root: Path) -> list[str]:
    """Every file entry of `root/_toc.yml` (root page first), in reading order, as written there."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
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
    return files


def toc_chapters(root: Path) -> list[Chapter]:
    """The notebooks listed in `root/_toc.yml`, in reading order.

    Entries under `book/_executed/` are papermill outputs whose source is `book/<stem>.ipynb`;
    other entries (plain Markdown pages) are not executed and not returned.
    """
    toc_path = root / "_toc.yml"
    chapters = []
    prefix = EXECUTED_DIR + "/"
    for entry in toc_files(root):
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
    atomic_write(chapter.executed, lambda tmp: nbformat.write(nb, str(tmp)))


def run_it_yourself(stem: str, **example: object) -> str:
    """A MyST "Run it yourself" box for chapter `stem`: the `padim book` and plain papermill commands
    that re-run it with the `example` parameters (values written as papermill's -p reads them)."""
    import json

    def value(v: object) -> str:
        text = v if isinstance(v, str) else json.dumps(v)
        return f"'{text}'" if any(c in text for c in " []{},\"'") else text

    params = " ".join(f"-p {name} {value(v)}" for name, v in example.items())
    # papermill's own -p reads a list as a string: lists and mappings go through -y (YAML) there
    pm = " ".join(f"-p {name} {value(v)}" if not isinstance(v, list | tuple | dict)
                  else f"-y '{name}: {json.dumps(v)}'" for name, v in example.items())
    return "\n".join([
        ":::{admonition} Run it yourself",
        ":class: tip",
        "With the project set up (`make book` once), re-run this chapter with other parameters:",
        "",
        "```bash",
        f"padim book --only {stem} {params}".rstrip(),
        "```",
        "",
        "or with plain papermill, from the repository root (then `make book` renders it):",
        "",
        "```bash",
        f"papermill book/{stem}.ipynb book/_executed/{stem}.ipynb {pm}".rstrip(),
        "```",
        "",
        f"`padim book --list-params {stem}` lists every parameter with its type, default and meaning.",
        ":::",
    ])
