"""The chapters' parameters, the way papermill takes them: declared, listed, parsed, checked, shown once.

Each chapter declares its parameters in one cell tagged `parameters`, one per line:
``name = default  # comment``. papermill's inspection reads the name, the default, the comment
and a type: a PEP 484 type comment (``# type: int|None cap on ...``) where the default is None,
otherwise the type of the default's literal. `padim book -p name value` (or `name=value`),
`-y YAML` and `-f FILE` give values as papermill's own CLI parses them, and every value is
checked against the type of each chapter that declares it before any kernel starts.
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from padim_lib.errors import PadimError
from padim_lib.report.chapters import Chapter, project_root, select_chapters, toc_chapters

# papermill's own cell grammar (translators.PythonTranslator.PARAMETER_PATTERN), used to rewrite lines
_LINE = re.compile(
    r"^(?P<target>\w[\w_]*)\s*(:\s*[\"']?(?P<annotation>\w[\w_\[\],\s]*)[\"']?\s*)?=\s*(?P<value>.*?)"
    r"(\s*#\s*(type:\s*(?P<type_comment>[^\s]*)\s*)?(?P<help>.*))?$"
)
# YAML words accepted besides papermill's True / False / None (`-p max_train null`, as YAML reads it)
_YAML_WORDS = {"null": None, "~": None, "true": True, "false": False}


@dataclass(frozen=True)
class NotebookParam:
    """One declared parameter: its type (as written, or inferred from the default), default
    (source text) and the comment beside it."""

    name: str
    type: str
    default: str
    help: str

    def accepts(self, value: Any) -> bool:
        return _matches(_type_tree(self.type), value)


def parameter_specs(chapter: Chapter) -> dict[str, NotebookParam]:
    """The parameters of `chapter`'s `parameters` cell, in their order (papermill's inspection)."""
    import papermill

    out = {}
    for name, p in papermill.inspect_notebook(str(chapter.source)).items():
        declared = str(p.get("inferred_type_name") or "None")
        kind = declared if declared != "None" else _literal_type(p.get("default", ""))
        out[name] = NotebookParam(name, kind, str(p.get("default", "")), str(p.get("help", "")))
    return out


def declared_parameters(chapters: Sequence[Chapter]) -> dict[str, list[str]]:
    """Per notebook, the names assigned in its `parameters` cell."""
    return {c.stem: list(parameter_specs(c)) for c in chapters}


# ----------------------------------------------------------------------------- parsing


def parse_value(text: str) -> Any:
    """A `-p` value as papermill's CLI reads it (True / False / None, int, float, else the string),
    plus YAML flow lists and mappings ("[carpet, 1]", "{a: 1}") and YAML's null / true / false."""
    from papermill.cli import _resolve_type

    stripped = text.strip()
    if stripped in _YAML_WORDS:
        return _YAML_WORDS[stripped]
    if stripped[:1] in "[{":
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0]
            raise PadimError(f"-p value {text!r} is not a valid YAML list or mapping ({first})") from None
    return _resolve_type(text)


def parse_cli_params(items: Iterable[Sequence[str] | str] | None) -> dict[str, Any]:
    """`-p` occurrences -> {name: value}. Each is `name value` (two tokens, as papermill's -p) or
    `name=value` (one token); later occurrences win."""
    out: dict[str, Any] = {}
    for item in items or []:
        tokens = [item] if isinstance(item, str) else list(item)
        if len(tokens) == 2:
            name, text = tokens
        elif len(tokens) == 1 and "=" in tokens[0]:
            name, text = tokens[0].split("=", 1)
        else:
            raise PadimError(f"-p {' '.join(tokens)!r}: expected `-p name value` or `-p name=value`")
        if not name.isidentifier():
            raise PadimError(f"-p {name!r}: a parameter name is a Python identifier")
        out[name] = parse_value(text)
    return out


def load_params(
    items: Iterable[Sequence[str] | str] | None = None,
    yaml_text: str | None = None,
    yaml_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The parameters of `-f FILE`, then `-y YAML`, then `-p` (later ones win, as in papermill)."""
    out: dict[str, Any] = {}
    if yaml_file is not None:
        path = Path(yaml_file)
        if not path.is_file():
            raise PadimError(f"-f {yaml_file}: no such file; expected a YAML mapping of parameters")
        out.update(_yaml_mapping(path.read_text(), f"-f {yaml_file}"))
    if yaml_text is not None:
        out.update(_yaml_mapping(yaml_text, "-y"))
    out.update(parse_cli_params(items))
    return out


def _yaml_mapping(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PadimError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise PadimError(f"{where}: expected a YAML mapping of parameter names to values, got {type(data).__name__}")
    return data


# ----------------------------------------------------------------------------- checking


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


def check_params(params: Mapping[str, Any], chapters: Sequence[Chapter]) -> None:
    """Every value in `params` against the type of each chapter in `chapters` that declares it;
    the first mismatch is a PadimError naming the parameter, the chapter and the expected type."""
    for chapter in chapters:
        for name, spec in parameter_specs(chapter).items():
            if name in params and not spec.accepts(params[name]):
                raise PadimError(
                    f"parameter {name}={params[name]!r} ({type(params[name]).__name__}): chapter "
                    f"{chapter.stem} expects {spec.type} (default {spec.default})"
                )


def _literal_type(default: str) -> str:
    """The type of a default's literal ("[40, 80]" -> "list[int]"); "Any" when it is no literal or None."""
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return "Any"
    if value is None:
        return "Any"
    if isinstance(value, (list, tuple)):
        inner = {_literal_type(repr(v)) for v in value}
        if inner == {"int", "float"}:
            inner = {"float"}
        return f"list[{inner.pop()}]" if len(inner) == 1 and "Any" not in inner else "list"
    return type(value).__name__


def _type_tree(text: str) -> ast.expr | None:
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError:
        return None  # a type we cannot read is not checked


def _matches(node: ast.expr | None, value: Any) -> bool:
    """Whether `value` fits a type expression (int, float, str, bool, None, list[X], dict,
    X|Y, Optional[X], Union[X, Y], Any). An int fits float; unknown names fit anything."""
    if node is None:
        return True
    if isinstance(node, ast.Constant):
        return node.value is None and value is None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _matches(node.left, value) or _matches(node.right, value)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
        base = node.value.id
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if base == "Optional":
            return value is None or _matches(args[0], value)
        if base == "Union":
            return any(_matches(a, value) for a in args)
        if base in ("list", "List", "Sequence", "tuple"):
            return isinstance(value, (list, tuple)) and all(_matches(args[0], v) for v in value)
        return _matches(node.value, value)
    if isinstance(node, ast.Name):
        checks = {
            "None": lambda v: v is None, "NoneType": lambda v: v is None,
            "bool": lambda v: isinstance(v, bool),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "str": lambda v: isinstance(v, str),
            "list": lambda v: isinstance(v, (list, tuple)), "tuple": lambda v: isinstance(v, (list, tuple)),
            "dict": lambda v: isinstance(v, dict),
        }
        return checks.get(node.id, lambda v: True)(value)
    return True


# ----------------------------------------------------------------------------- listing


def list_params(chapter: str | None = None, *, root: str | os.PathLike | None = None) -> str:
    """Each chapter's parameters (or one chapter's): name, type, default and the comment beside it."""
    base = project_root(root)
    chapters = select_chapters(toc_chapters(base), [chapter] if chapter else None)
    blocks = []
    for c in chapters:
        specs = list(parameter_specs(c).values())
        lines = [f"{c.stem} ({c.source.relative_to(base)}):"]
        if not specs:
            lines.append("  (no parameters)")
        rows = [("name", "type", "default", "comment")] + [(s.name, s.type, s.default, s.help) for s in specs]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for name, kind, default, comment in rows if specs else []:
            lines.append(f"  {name:<{widths[0]}}  {kind:<{widths[1]}}  {default:<{widths[2]}}  {comment}".rstrip())
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# ----------------------------------------------------------------------------- showing once


def merge_parameters_cell(nb: Any) -> bool:
    """Show the parameters a chapter ran with once: papermill's injected cell becomes the full
    parameter list (each default line with its comment, the run's value where one was injected,
    the default noted beside it), and the defaults cell is tagged `remove-cell`.

    `nb`: an executed nbformat notebook, changed in place. The injected source is kept in the
    cell's metadata (`papermill_injected_source`). Returns False when nothing was injected.
    """
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    params_cell = next((c for c, t in zip(nb.cells, tags, strict=True) if "parameters" in t), None)
    injected = next((c for c, t in zip(nb.cells, tags, strict=True) if "injected-parameters" in t), None)
    if params_cell is None or injected is None:
        return False
    values = _assigned_values(injected.source)
    lines, declared = [], set()
    for line in params_cell.source.splitlines():
        m = _LINE.match(line)
        if m is not None:
            declared.add(m["target"])
        if m is None or m["target"] not in values or _same_value(values[m["target"]], m["value"]):
            lines.append(line)
            continue
        head, tail = line[: m.start("value")], line[m.end("value") :]
        note = f"(default {m['value']})"
        lines.append(head + values[m["target"]] + (f"{tail} {note}" if tail.strip() else f"  # {note}"))
    lines += [f"{name} = {text}  # set for this run" for name, text in values.items() if name not in declared]
    injected.metadata["papermill_injected_source"] = injected.source
    injected.source = "# Parameters of this run\n" + "\n".join(lines)
    display = [t for t in params_cell.metadata.get("tags", []) if t in DISPLAY_TAGS]
    injected.metadata["tags"] = list(dict.fromkeys([*injected.metadata.get("tags", []), *display]))
    params_cell.metadata["tags"] = list(dict.fromkeys([*params_cell.metadata.get("tags", []), "remove-cell"]))
    return True


DISPLAY_TAGS = ("remove-cell", "remove-input", "remove-output", "hide-cell", "hide-input", "hide-output")


def _same_value(a: str, b: str) -> bool:
    """Two value texts denote the same literal ('x' and "x", 1.0 and 1.00)."""
    try:
        return ast.literal_eval(a) == ast.literal_eval(b)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return a.strip() == b.strip()


def _assigned_values(source: str) -> dict[str, str]:
    """name -> source text of the value, for the top-level `name = value` lines of papermill's cell."""
    tree = ast.parse(source)
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.get_source_segment(source, node.value) or ""
    return out
