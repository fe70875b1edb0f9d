"""Uncertainty for reproduced figures: bootstrap CIs, paired differences, seed SEM (claims: `claims`).

Input: tidy result rows (`experiments.ROW_COLUMNS`): one value per category x
configuration x seed x metric x replicate, where replicate -1 is the full test set and
0..B-1 are bootstrap resamples of the class's test images. `run_task` draws replicate b of a
class from a generator seeded by (category, b) only, so replicate b is the *same* resample for
every configuration of that class: differences between configurations are paired.

How group figures are built (the same way for the point value and for every replicate):
1. per class and seed: the row's value;
2. per group ("textures", "objects", "all") and seed: the mean over the group's classes;
3. per configuration: the mean over seeds (seeded configurations, e.g. Rd; others have one).
The 95 % CI is the percentile interval of step 3 over the bootstrap replicates, so it covers
the test-image sampling; seed variation is reported separately as the SEM over seeds of the
full-test-set value (what the paper reports for Rd).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from padim_lib.errors import PadimError
from padim_lib.paper.published import load_published

GROUP_OF_KIND = {"texture": "textures", "object": "objects"}
AGGREGATES = ("textures", "objects", "all")
PERCENT_METRICS = ("image_auroc", "pixel_auroc", "pro")


class MissingResults(PadimError):
    """The rows lack what a statistic needs (a configuration, a metric, replicates)."""


def sem(values: Iterable[float]) -> float:
    """Standard error of the mean, sd (ddof=1) / sqrt(n); NaN for fewer than two values."""
    x = np.asarray(list(values), dtype=float)
    if x.size < 2:
        return float("nan")
    return float(sps.sem(x, ddof=1))


def sem_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the SEM from the chi-square law of the sample variance (normal data).

    With n values and sample sd s: sd lies in [s sqrt((n-1)/q_hi), s sqrt((n-1)/q_lo)] with
    q the chi2(n-1) quantiles; dividing by sqrt(n) gives the SEM's interval. NaNs for n < 2.
    """
    x = np.asarray(list(values), dtype=float)
    n = x.size
    if n < 2:
        return float("nan"), float("nan")
    s = float(np.std(x, ddof=1))
    alpha = 1.0 - level
    lo = s * math.sqrt((n - 1) / sps.chi2.ppf(1 - alpha / 2, n - 1)) / math.sqrt(n)
    hi = s * math.sqrt((n - 1) / sps.chi2.ppf(alpha / 2, n - 1)) / math.sqrt(n)
    return lo, hi


def percentile_ci(replicates: Sequence[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of replicate values; NaNs when there are none."""
    x = np.asarray(replicates, dtype=float)
    if not 0 < level < 1:
        raise PadimError(f"level={level!r}; expected a confidence level in (0, 1)")
    if x.size == 0:
        return float("nan"), float("nan")
    alpha = 1.0 - level
    lo, hi = np.quantile(x, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------- row handling
def _prepare(rows: pd.DataFrame, by: str, kinds: Mapping[str, str] | None) -> pd.DataFrame:
    """Validated [by, category, kind, metric, seed, replicate, value] frame."""
    needed = [by, "category", "metric", "value", "replicate"]
    missing = [c for c in needed if c not in rows.columns]
    if missing:
        raise PadimError(f"rows: missing column(s) {missing}; expected the tidy result columns")
    df = rows.copy()
    if "seed" not in df.columns:
        df["seed"] = 0
    if kinds is not None:
        df["kind"] = df["category"].map(dict(kinds))
        unknown = sorted(df.loc[df["kind"].isna(), "category"].unique())
        if unknown:
            raise PadimError(f"kinds: no kind given for categories {unknown}")
    elif "kind" not in df.columns:
        raise PadimError("rows: no 'kind' column; pass kinds={category: 'texture'|'object'|...}")
    df = df[df[by].notna() & (df[by].astype(str) != "")]
    df = df[[by, "category", "kind", "metric", "seed", "replicate", "value"]].copy()
    df["replicate"] = df["replicate"].astype(int)
    df["value"] = df["value"].astype(float)
    dup = df.duplicated([by, "category", "metric", "seed", "replicate"], keep=False)
    if dup.any():
        first = df.loc[dup].iloc[0]
        raise PadimError(
            f"rows: {by} {first[by]!r} has several values for category {first['category']!r}, metric "
            f"{first['metric']!r}, seed {first['seed']}, replicate {first['replicate']}: two configurations "
            f"share this {by} (give them distinct labels) or a result was loaded twice"
        )
    return df


def _in_group(df: pd.DataFrame, group: str) -> pd.DataFrame:
    """Rows of the classes in `group`: a class name, "textures", "objects", another kind name, or "all"."""
    if group == "all":
        return df
    kind = {v: k for k, v in GROUP_OF_KIND.items()}.get(group)
    if kind is not None:
        return df[df["kind"] == kind]
    if (df["category"] == group).any():
        return df[df["category"] == group]
    return df[df["kind"] == group]


def _series(df: pd.DataFrame, group: str, classes: Iterable[str] | None = None) -> dict[str, Any]:
    """One configuration's rows (df) -> the group's value per replicate, seed values, counts.

    Returns {"full": value at replicate -1 (mean over seeds), "reps": Series replicate -> value
    (replicates >= 0 complete for every class and seed), "seed_values": Series seed -> full-set
    value, "n_classes", "classes"}. Raises MissingResults when there is nothing to summarise.
    """
    sub = _in_group(df, group)
    if classes is not None:
        sub = sub[sub["category"].isin(list(classes))]
    full = sub[sub["replicate"] == -1]
    if full.empty:
        raise MissingResults(f"no full-test-set rows for group {group!r}")
    cls = sorted(full["category"].unique())
    per_seed = sub.groupby(["seed", "replicate"])["value"].agg(["mean", "count"])
    # A replicate counts only if every class of the group has it (else the mean changes meaning).
    per_seed = per_seed[per_seed["count"] == len(cls)]
    seed_values = per_seed.xs(-1, level="replicate")["mean"] if -1 in per_seed.index.get_level_values(1) else None
    if seed_values is None or seed_values.empty:
        raise MissingResults(f"group {group!r}: the classes' full-test-set rows are incomplete")
    reps = per_seed[per_seed.index.get_level_values("replicate") >= 0]
    by_rep = reps.groupby(level="replicate")["mean"].agg(["mean", "count"])
    by_rep = by_rep[by_rep["count"] == len(seed_values)]["mean"]
    return {
        "full": float(seed_values.mean()),
        "reps": by_rep,
        "seed_values": seed_values,
        "n_classes": len(cls),
        "classes": cls,
    }


def _groups_of(df: pd.DataFrame) -> list[str]:
    """Class names (in row order) then the aggregates that have classes."""
    classes = list(dict.fromkeys(df["category"]))
    kinds = list(dict.fromkeys(df["kind"]))
    aggregates = [GROUP_OF_KIND[k] for k in ("texture", "object") if k in kinds]
    aggregates += [k for k in kinds if k not in GROUP_OF_KIND]
    return classes + aggregates + ["all"]


def summarise(
    rows: pd.DataFrame, kinds: Mapping[str, str] | None = None, *, level: float = 0.95, by: str = "label"
) -> pd.DataFrame:
    """Per configuration (`by`), metric and group: value, bootstrap CI, seed SEM.

    Groups: every class (scope "class"), then "textures", "objects" (other kinds by name) and
    "all" (scope "aggregate"), each computed per replicate from the same resamples. Columns:
    [by, (label / published_row), group, scope, metric, value, ci_low, ci_high, n_replicates,
    n_seeds, seed_sem, n_classes]; values as in the rows (fractions).
    """
    df = _prepare(rows, by, kinds)
    extra = [c for c in ("label", "published_row") if c in rows.columns and c != by]
    names_extra = rows.drop_duplicates(by).set_index(by)[extra] if extra else None
    class_names = set(df["category"])
    out = []
    for (name, metric), sub in df.groupby([by, "metric"], sort=False):
        for group in _groups_of(sub):
            s = _series(sub, group)
            lo, hi = percentile_ci(s["reps"].to_numpy(), level)
            record = {by: name}
            if names_extra is not None:
                record.update(names_extra.loc[name].to_dict())
            record.update(
                group=group,
                scope="class" if group in class_names else "aggregate",
                metric=metric,
                value=s["full"],
                ci_low=lo,
                ci_high=hi,
                n_replicates=len(s["reps"]),
                n_seeds=len(s["seed_values"]),
                seed_sem=sem(s["seed_values"]),
                n_classes=s["n_classes"],
            )
            out.append(record)
    return pd.DataFrame(out)


def seed_values(
    rows: pd.DataFrame, name: str, metric: str, group: str = "all", *, by: str = "label",
    kinds: Mapping[str, str] | None = None,
) -> pd.Series:
    """Full-test-set value of a class or group per seed (index: seed) for one configuration."""
    df = _prepare(rows[(rows[by] == name) & (rows["metric"] == metric)], by, kinds)
    if df.empty:
        raise MissingResults(f"no rows for {by}={name!r}, metric {metric!r}")
    return _series(df, group)["seed_values"]


def diff_ci(
    rows: pd.DataFrame, a: str, b: str, metric: str, group: str = "all", *, by: str = "label",
    kinds: Mapping[str, str] | None = None, level: float = 0.95,
) -> dict[str, Any]:
    """Paired difference a - b of a metric for a class or group, with its bootstrap CI.

    Both sides use the classes they share and the replicates they share; replicate b is the
    same resample of test images on both sides, so the CI reflects the paired difference (much
    narrower than two separate intervals would suggest). Returns {a, b, metric, group, value_a,
    value_b, diff, ci_low, ci_high, n_replicates, n_classes}.
    """
    sel = rows[rows[by].isin([a, b]) & (rows["metric"] == metric)]
    df = _prepare(sel, by, kinds)
    for name in (a, b):
        if not (df[by] == name).any():
            raise MissingResults(f"no rows for {by}={name!r}, metric {metric!r}")
    da, db = df[df[by] == a], df[df[by] == b]
    shared = sorted(set(_in_group(da, group)["category"]) & set(_in_group(db, group)["category"]))
    if not shared:
        raise MissingResults(f"{a!r} and {b!r} share no class in group {group!r}")
    sa, sb = _series(da, group, shared), _series(db, group, shared)
    common = sa["reps"].index.intersection(sb["reps"].index)
    d = (sa["reps"].loc[common] - sb["reps"].loc[common]).to_numpy()
    lo, hi = percentile_ci(d, level)
    return {
        "a": a, "b": b, "metric": metric, "group": group,
        "value_a": sa["full"], "value_b": sb["full"], "diff": sa["full"] - sb["full"],
        "ci_low": lo, "ci_high": hi, "n_replicates": len(common), "n_classes": len(shared),
    }


def compare_published(
    summary: pd.DataFrame, table: str, *, published: pd.DataFrame | None = None, by: str = "published_row",
    comparable: bool = True,
) -> pd.DataFrame:
    """Reproduced figures (from `summarise`) next to the published ones of `table`, in percent.

    Joins summary[by] to published.row on (group, metric). Columns added: reproduced, ci_low,
    ci_high, seed_sem (percent), published (percent), difference (p.p., reproduced - published),
    source, note, comparable. Rows without a published figure keep NaN there.
    """
    published = load_published() if published is None else published
    pub = published[published["table"] == table][["row", "group", "metric", "value", "source", "note"]]
    pub = pub.rename(columns={"row": by, "value": "published"})
    s = summary[summary["metric"].isin(PERCENT_METRICS)].copy()
    for col in ("value", "ci_low", "ci_high", "seed_sem"):
        s[col] = s[col] * 100.0
    s = s.rename(columns={"value": "reproduced"})
    out = s.merge(pub, on=[by, "group", "metric"], how="left")
    out["difference"] = out["reproduced"] - out["published"]
    out["comparable"] = bool(comparable)
    return out
