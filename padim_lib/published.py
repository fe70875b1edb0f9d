"""Published figures and the paper's claims, kept as data in padim_lib/data/.

published.csv: one row per figure, columns table, row, group, metric, value, unit, source,
note. Values are as published (percent for AUROC / PRO; independent implementations that
publish fractions are stored x100, said in `note`). `source` names where a figure comes
from: the paper excerpt, a secondary transcription (marked "(t)", to be checked against
arXiv 2011.08785), or an independent implementation.

claims.yaml: the paper's sentences with a machine-checkable test each (see the file's header
and `padim_lib.stats.evaluate_claims`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from padim_lib.errors import PadimError

COLUMNS = ("table", "row", "group", "metric", "value", "unit", "source", "note")
KEY = ("table", "row", "group", "metric")
CLAIM_TESTS: dict[str, tuple[str, ...]] = {
    # test -> required fields besides the common ones
    "best": ("target", "among"),
    "greater": ("a", "b"),
    "difference": ("a", "b", "value_pp"),
    "beats_each": ("a", "others"),
    "seed_sem_between": ("config", "low", "high"),
}
CLAIM_COMMON = ("id", "quote", "source", "table", "test", "metric", "group", "kind")
CLAIM_KINDS = ("direction", "magnitude")


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


def load_claims(path: str | os.PathLike | None = None, published: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """The claims of claims.yaml as a list of dicts, validated.

    Checks: unique ids, known `test` and `kind`, the fields each test needs, and that every
    configuration a claim names is a row of its table in published.csv.
    """
    import yaml

    path = Path(path) if path is not None else _data_file("claims.yaml")
    if not path.is_file():
        raise FileNotFoundError(f"claims file {path} does not exist")
    with path.open() as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        raise PadimError(f"{path}: expected a mapping with a 'claims' list")
    published = load_published() if published is None else published
    claims: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, claim in enumerate(doc["claims"]):
        where = f"{path}: claim #{i + 1} ({claim.get('id', '?') if isinstance(claim, dict) else '?'})"
        if not isinstance(claim, dict):
            raise PadimError(f"{where}: expected a mapping")
        test = claim.get("test")
        if test not in CLAIM_TESTS:
            raise PadimError(f"{where}: test={test!r}; expected one of {sorted(CLAIM_TESTS)}")
        missing = [f for f in CLAIM_COMMON + CLAIM_TESTS[test] if f not in claim]
        if missing:
            raise PadimError(f"{where}: missing field(s) {missing}")
        if claim["kind"] not in CLAIM_KINDS:
            raise PadimError(f"{where}: kind={claim['kind']!r}; expected one of {CLAIM_KINDS}")
        if claim["id"] in seen:
            raise PadimError(f"{where}: duplicate id {claim['id']!r}")
        seen.add(claim["id"])
        rows = set(published.loc[published["table"] == claim["table"], "row"])
        unknown = [name for name in claim_configs(claim) if name not in rows]
        if unknown:
            raise PadimError(f"{where}: {unknown} are not rows of {claim['table']!r} in published.csv ({sorted(rows)})")
        claims.append(dict(claim))
    return claims


def claim_configs(claim: dict[str, Any]) -> list[str]:
    """The configuration (row) names a claim refers to."""
    names: list[str] = []
    for field in ("a", "b", "target", "config"):
        if field in claim:
            names.append(claim[field])
    for field in ("among", "others"):
        names.extend(claim.get(field, []))
    return list(dict.fromkeys(names))
