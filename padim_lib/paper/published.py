"""Published figures, kept as data in padim_lib/paper/data/published.csv.

published.csv: one row per figure, columns table, row, group, metric, value, unit, source,
note. Values are as published (percent for AUROC / PRO; independent implementations that
publish fractions are stored x100, said in `note`). `source` names where a figure comes
from: the paper excerpt, a secondary transcription (marked "(t)", to be checked against
arXiv 2011.08785), or an independent implementation.

The paper's claims about these figures (claims.yaml) are read and tested by `padim_lib.paper.claims`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pandas as pd

from padim_lib.errors import PadimError

COLUMNS = ("table", "row", "group", "metric", "value", "unit", "source", "note")
KEY = ("table", "row", "group", "metric")


def _data_file(name: str) -> Path:
    return Path(__file__).resolve().parent / "data" / name


def load_published(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The published figures as a DataFrame with columns COLUMNS (value float, note "" if none).

    Raises PadimError naming the file when a column is missing, a value is not a number or a
    (table, row, group, metric) appears twice.
    """
    path = Path(path) if path is not None else _data_file("published.csv")
    if not path.is_file():
        raise FileNotFoundError(f"published figures file {path} does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PadimError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = df.loc[values.isna(), "value"]
    if len(bad):
        raise PadimError(f"{path}: non-numeric value(s) {bad.tolist()[:5]} in lines {[i + 2 for i in bad.index[:5]]}")
    df["value"] = values.astype(float)
    empty = [c for c in ("table", "row", "group", "metric", "source") if (df[c].str.strip() == "").any()]
    if empty:
        raise PadimError(f"{path}: empty cells in column(s) {empty}")
    dup = df.duplicated(list(KEY), keep=False)
    if dup.any():
        raise PadimError(f"{path}: duplicated (table, row, group, metric): {df.loc[dup, list(KEY)].values.tolist()[:5]}")
    return df[list(COLUMNS)].reset_index(drop=True)


def published_value(published: pd.DataFrame, table: str, row: str, group: str, metric: str) -> float | None:
    """One figure (as published, e.g. percent) or None when the paper gives none."""
    hit = published[
        (published["table"] == table) & (published["row"] == row) & (published["group"] == group) & (published["metric"] == metric)
    ]
    return float(hit["value"].iloc[0]) if len(hit) else None


@functools.cache
def _typed_values(path: str) -> dict[tuple[str, str, str, str], str]:
    """Each figure's value as written in the file ("37.0", "0.17"): how the paper prints it."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return {tuple(r[k] for k in KEY): r["value"] for _, r in df.iterrows()}


def published_text(table: str, row: str, group: str, metric: str, *, unit: bool = False,
                   path: str | os.PathLike | None = None) -> str:
    """One published figure for prose, as the paper prints it, with its source's marker: '91.2 (t)'
    for a secondary transcription, '97.1' for the excerpt; `unit`: '0.17 GB (t)', '5.3 p.p. (t)'.
    A figure published.csv does not hold is an error naming it."""
    path = Path(path) if path is not None else _data_file("published.csv")
    pub = load_published(path)
    hit = pub[(pub["table"] == table) & (pub["row"] == row) & (pub["group"] == group) & (pub["metric"] == metric)]
    if hit.empty:
        raise PadimError(f"published.csv has no figure for table={table!r}, row={row!r}, group={group!r}, "
                         f"metric={metric!r}")
    r = hit.iloc[0]
    text = _typed_values(str(path))[(table, row, group, metric)]
    if unit and r["unit"] not in ("", "count", "unstated"):
        text += " %" if r["unit"] == "%" else f" {r['unit']}"
    return text + (" (t)" if str(r["source"]).startswith("(t)") else "")
