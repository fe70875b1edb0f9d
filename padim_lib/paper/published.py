"""Published figures, kept as data in padim_lib/paper/data/published.csv.

published.csv: one row per figure, columns table, row, group, metric, value, unit, source,
note. Values are as published (percent for AUROC / PRO; independent implementations that
publish fractions are stored x100, said in `note`). `source` names where a figure comes
from: the paper excerpt, a secondary transcription (marked "(t)", to be checked against
arXiv 2011.08785), or an independent implementation.

The paper's claims about these figures (claims.yaml) are read and tested by `padim_lib.paper.claims`.
"""

from __future__ import annotations

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
