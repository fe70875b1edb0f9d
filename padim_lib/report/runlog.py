"""Which chapter ran when, with which parameters and data: the book's record of its executions.

`padim book --only CHAPTER` re-runs one chapter and leaves the others as they were executed last,
perhaps with other parameters. The runner records every execution in book/_executed/runs.json
(`record`), and the introduction, executed after the other chapters, shows `execution_table`:
per chapter, when it ran, the profile, the data, and each parameter whose value differs from the
value most chapters that take it ran with, so a reader sees at once which pages do not match.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from padim_lib.io.atomic import atomic_write

RUNS_FILE = Path("book") / "_executed" / "runs.json"


def data_fingerprint(data_root: str | os.PathLike) -> str:
    """12 hex digits naming a data set's content cheaply: its manifest and its file listing (sizes)."""
    root = Path(data_root)
    if not root.is_dir():
        return "missing"
    h = hashlib.sha256()
    manifest = root / "dataset.json"
    if manifest.is_file():
        h.update(manifest.read_bytes())
    for path in sorted(root.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            h.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return h.hexdigest()[:12]


def load(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The recorded executions, by chapter stem ({} before the first)."""
    path = Path(root) / RUNS_FILE
    try:
        runs = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return runs if isinstance(runs, dict) else {}


def record(root: str | os.PathLike, stem: str, profile: str, parameters: Mapping[str, Any]) -> None:
    """Add (or replace) chapter `stem`'s execution, now, in the record (written atomically)."""
    runs = load(root)
    data = parameters.get("data_root")
    runs[stem] = {
        "executed": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile,
        "parameters": json.loads(json.dumps(dict(parameters), default=str)),
        "data": None if data is None else {"root": str(data), "fingerprint": data_fingerprint(Path(root) / data)},
    }
    text = json.dumps(runs, indent=1, sort_keys=True)
    atomic_write(Path(root) / RUNS_FILE, lambda tmp: tmp.write_text(text))


def execution_table(root: str | os.PathLike, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per recorded chapter (in `order` when given): when it ran, the profile, the data, and the
    parameters that differ from the majority of the chapters taking them ("" when none does)."""
    runs = load(root)
    stems = [s for s in (order or sorted(runs)) if s in runs]
    values: dict[str, Counter] = {}
    for stem in stems:
        for name, value in runs[stem]["parameters"].items():
            values.setdefault(name, Counter())[json.dumps(value, sort_keys=True)] += 1
    rows = []
    for stem in stems:
        run = runs[stem]
        differs = [
            f"{name} = {json.loads(v)!r}" for name, value in run["parameters"].items()
            if (v := json.dumps(value, sort_keys=True)) != values[name].most_common(1)[0][0] and len(values[name]) > 1
        ]
        data = run.get("data") or {}
        rows.append({
            "chapter": stem,
            "executed": run["executed"],
            "profile": run["profile"],
            "data": f"{data.get('root', '')} ({data.get('fingerprint', '')})" if data else "",
            "differs from the other chapters": ", ".join(differs),
        })
    return pd.DataFrame(rows, columns=["chapter", "executed", "profile", "data", "differs from the other chapters"])
