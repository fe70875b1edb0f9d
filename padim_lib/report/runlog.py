"""Which chapter ran when, with which parameters and data: the book's record of its executions.

`padim book --only CHAPTER` re-runs one chapter and leaves the others as they were executed last,
perhaps with other parameters. The runner records every execution in book/_executed/runs.json
(`record`), and the introduction, executed after the other chapters, shows `execution_table`:
per chapter, when it ran, the profile, the data, and each parameter whose value differs from the
value most chapters that take it ran with, so a reader sees at once which pages do not match.
Each record also keeps the run's wall-clock time and the hardware it ran on: the "Execution
statistics" page (book/execution.ipynb, run after every other chapter) shows them with
`statistics_table`.
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
STATISTICS_PAGE = "execution"  # the chapter that shows `statistics_table`; the runner runs it last


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


def record(root: str | os.PathLike, stem: str, profile: str, parameters: Mapping[str, Any], *,
           seconds: float | None = None, hardware: str | None = None) -> None:
    """Add (or replace) chapter `stem`'s execution, now, in the record (written atomically).
    `seconds`: the run's wall-clock time; `hardware`: what it ran on (provenance.machine_description)."""
    runs = load(root)
    data = parameters.get("data_root")
    runs[stem] = {
        "executed": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile,
        "parameters": json.loads(json.dumps(dict(parameters), default=str)),
        "data": None if data is None else {"root": str(data), "fingerprint": data_fingerprint(Path(root) / data)},
        "seconds": None if seconds is None else round(float(seconds), 1),
        "hardware": hardware,
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


def format_seconds(seconds: float | None) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'; 'not recorded' for None (a run logged before run times were)."""
    if seconds is None:
        return "not recorded"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def statistics_table(root: str | os.PathLike, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Per recorded chapter (in `order` when given): its run time (wall clock, kernel start included),
    profile, hardware and when it ran. The column `seconds` holds the run time as a number (NaN when
    not recorded)."""
    runs = load(root)
    stems = [s for s in (order or sorted(runs)) if s in runs]
    rows = []
    for stem in stems:
        run = runs[stem]
        seconds = run.get("seconds")
        rows.append({
            "chapter": stem,
            "run time": format_seconds(seconds),
            "profile": run.get("profile", ""),
            "hardware": run.get("hardware") or "not recorded",
            "executed": run.get("executed", ""),
            "seconds": float("nan") if seconds is None else float(seconds),
        })
    return pd.DataFrame(rows, columns=["chapter", "run time", "profile", "hardware", "executed", "seconds"])


def statistics_summary(stats: pd.DataFrame, order: Sequence[str], profile: str) -> str:
    """One paragraph on `statistics_table`'s rows: how many of the chapters in `order` ran, their total
    run time, on which hardware, and which ran on another profile than `profile` or have not run."""
    stats = stats[stats["chapter"].isin(list(order))]
    ran = [s for s in order if s in set(stats["chapter"])]
    if not ran:
        return f"None of the {len(order)} chapters has run yet."
    text = (f"All {len(order)} chapters have run." if len(ran) == len(order) else
            f"{len(ran)} of the {len(order)} chapters have run.")
    seconds = stats["seconds"].dropna()
    text += f" Their runs took {format_seconds(float(seconds.sum()))} in all"
    if len(seconds) < len(ran):
        text += f" ({len(ran) - len(seconds)} without a recorded run time)"
    machines = [m for m in dict.fromkeys(stats["hardware"]) if m != "not recorded"]
    if machines:
        text += f", on {machines[0]}" if len(machines) == 1 else f", on {len(machines)} different machines"
    first, last = stats["executed"].min(), stats["executed"].max()
    text += f". They ran on {first}." if first == last else f". They ran between {first} and {last}."
    other = stats[stats["profile"] != profile]
    text += (f" Every one ran on the {profile} profile." if other.empty else
             f" {len(other)} ran on another profile than {profile}: "
             + ", ".join(f"{c} ({p})" for c, p in zip(other["chapter"], other["profile"], strict=True)) + ".")
    missing = [s for s in order if s not in ran]
    if missing:
        text += f" Not run yet: {', '.join(missing)}."
    return text
