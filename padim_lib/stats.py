"""Uncertainty for reproduced figures: bootstrap CIs, paired differences, seed SEM, claim verdicts.

Input: tidy result rows (see INTERFACES "tidy row columns"): one value per category x
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

GROUP_OF_KIND = {"texture": "textures", "object": "objects"}
AGGREGATES = ("textures", "objects", "all")
PERCENT_METRICS = ("image_auroc", "pixel_auroc", "pro")
VERDICTS = ("holds", "does not hold", "inconclusive", "not comparable", "not tested")


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


def bootstrap_ci(
    rows: pd.DataFrame, name: str, metric: str, group: str = "all", *, by: str = "label",
    kinds: Mapping[str, str] | None = None, level: float = 0.95,
) -> tuple[float, float, float]:
    """(value, ci_low, ci_high) of one configuration's metric for a class or group."""
    df = _prepare(rows[(rows[by] == name) & (rows["metric"] == metric)], by, kinds)
    if df.empty:
        raise MissingResults(f"no rows for {by}={name!r}, metric {metric!r}")
    s = _series(df, group)
    return (s["full"], *percentile_ci(s["reps"].to_numpy(), level))


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
    from padim_lib.published import load_published

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


# ----------------------------------------------------------------------------- claims
def _pp(x: float) -> float:
    return 100.0 * x


def _verdict_greater(lo: float, hi: float, threshold: float) -> str:
    if lo > threshold:
        return "holds"
    if hi < threshold:
        return "does not hold"
    return "inconclusive"


def _published_pp(published: pd.DataFrame, claim: dict, name: str) -> float | None:
    from padim_lib.published import published_value

    return published_value(published, claim["table"], name, claim["group"], claim["metric"])


def _paper_order(diff: float | None, threshold: float = 0.0) -> str:
    """What the paper's own (rounded) table says about `diff > threshold`."""
    if diff is None:
        return "n/a"
    eps = 1e-9  # the table is rounded to 0.1 p.p.; "at least 1.3" is met by exactly 1.3
    if threshold > 0:
        return "holds" if diff >= threshold - eps else "does not hold"
    if abs(diff) < eps:
        return "tie"
    return "holds" if diff > 0 else "does not hold"


def _claim_best(rows, claim, published, by, kinds, level) -> dict[str, Any]:
    target, others = claim["target"], [x for x in claim["among"] if x != claim["target"]]
    diffs = [diff_ci(rows, target, o, claim["metric"], claim["group"], by=by, kinds=kinds, level=level) for o in others]
    worst = min(diffs, key=lambda d: d["diff"])
    values = {d["b"]: d["value_b"] for d in diffs} | {target: diffs[0]["value_a"]}
    best = max(values, key=values.get)
    if all(d["ci_low"] > 0 for d in diffs):
        verdict = "holds"
    elif any(d["ci_high"] < 0 for d in diffs):
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    pub = {n: _published_pp(published, claim, n) for n in claim["among"]}
    pub_margin = None if None in pub.values() else pub[target] - max(pub[o] for o in others)
    return {
        "check": f"{target} - max({', '.join(others)}) > 0",
        "published": pub_margin, "paper_table": _paper_order(pub_margin),
        "reproduced": _pp(worst["diff"]), "ci_low": _pp(worst["ci_low"]), "ci_high": _pp(worst["ci_high"]),
        "unit": "p.p.", "verdict": verdict,
        "note": f"best reproduced: {best} ({_pp(values[best]):.2f} %); margin and CI vs {worst['b']}",
    }


def _claim_greater(rows, claim, published, by, kinds, level) -> dict[str, Any]:
    a, b, m = claim["a"], claim["b"], float(claim.get("min_diff_pp", 0.0))
    d = diff_ci(rows, a, b, claim["metric"], claim["group"], by=by, kinds=kinds, level=level)
    pa, pb = _published_pp(published, claim, a), _published_pp(published, claim, b)
    pub = None if pa is None or pb is None else pa - pb
    return {
        "check": f"{a} - {b} > {m:g} p.p." if m else f"{a} - {b} > 0",
        "published": pub, "paper_table": _paper_order(pub, m),
        "reproduced": _pp(d["diff"]), "ci_low": _pp(d["ci_low"]), "ci_high": _pp(d["ci_high"]),
        "unit": "p.p.", "verdict": _verdict_greater(_pp(d["ci_low"]), _pp(d["ci_high"]), m), "note": "",
    }


def _claim_difference(rows, claim, published, by, kinds, level) -> dict[str, Any]:
    a, b, v = claim["a"], claim["b"], float(claim["value_pp"])
    d = diff_ci(rows, a, b, claim["metric"], claim["group"], by=by, kinds=kinds, level=level)
    lo, hi = _pp(d["ci_low"]), _pp(d["ci_high"])
    pa, pb = _published_pp(published, claim, a), _published_pp(published, claim, b)
    pub = None if pa is None or pb is None else pa - pb
    paper = "n/a" if pub is None else ("holds" if abs(pub - v) < 0.05 + 1e-9 else "does not hold")
    return {
        "check": f"{a} - {b} = {v:g} p.p. (inside the CI)",
        "published": v, "paper_table": paper,
        "reproduced": _pp(d["diff"]), "ci_low": lo, "ci_high": hi,
        "unit": "p.p.", "verdict": "holds" if lo <= v <= hi else "does not hold", "note": "",
    }


def _claim_beats_each(rows, claim, published, by, kinds, level) -> dict[str, Any]:
    a, others = claim["a"], list(claim["others"])
    diffs = [diff_ci(rows, a, o, claim["metric"], claim["group"], by=by, kinds=kinds, level=level) for o in others]
    worst = min(diffs, key=lambda d: d["diff"])
    if all(d["ci_low"] > 0 for d in diffs):
        verdict = "holds"
    elif any(d["ci_high"] < 0 for d in diffs):
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    pub_a = _published_pp(published, claim, a)
    pub_o = [_published_pp(published, claim, o) for o in others]
    pub = None if pub_a is None or None in pub_o else pub_a - max(pub_o)
    return {
        "check": f"{a} - each of ({', '.join(others)}) > 0",
        "published": pub, "paper_table": _paper_order(pub),
        "reproduced": _pp(worst["diff"]), "ci_low": _pp(worst["ci_low"]), "ci_high": _pp(worst["ci_high"]),
        "unit": "p.p.", "verdict": verdict, "note": f"smallest margin: vs {worst['b']}",
    }


def _claim_seed_sem(rows, claim, published, by, kinds, level) -> dict[str, Any]:
    name, low, high = claim["config"], float(claim["low"]), float(claim["high"])
    sel = rows[(rows[by] == name) & (rows["metric"] == claim["metric"])]
    df = _prepare(sel, by, kinds)
    if df.empty:
        raise MissingResults(f"no rows for {by}={name!r}, metric {claim['metric']!r}")
    seeds = _series(df, claim["group"])["seed_values"]
    if len(seeds) < 2:
        raise MissingResults(f"{name!r} has {len(seeds)} seed(s); the seed SEM needs at least 2")
    value = sem(seeds)
    lo, hi = sem_ci(seeds, level)
    if low <= lo and hi <= high:
        verdict = "holds"
    elif hi < low or lo > high:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    return {
        "check": f"{low:g} <= SEM over seeds of the {claim['group']} mean <= {high:g}",
        "published": None, "paper_table": "n/a",
        "reproduced": value, "ci_low": lo, "ci_high": hi, "unit": "fraction",
        "verdict": verdict, "note": f"{len(seeds)} seeds; CI from the chi-square law of the variance",
    }


_CLAIM_TESTS = {
    "best": _claim_best,
    "greater": _claim_greater,
    "difference": _claim_difference,
    "beats_each": _claim_beats_each,
    "seed_sem_between": _claim_seed_sem,
}


def evaluate_claims(
    rows: pd.DataFrame,
    claims: Sequence[Mapping[str, Any]] | None = None,
    kinds: Mapping[str, str] | None = None,
    comparable: bool = True,
    *,
    level: float = 0.95,
    published: pd.DataFrame | None = None,
    by: str | None = None,
) -> pd.DataFrame:
    """Test each claim on the reproduced rows; one row per claim.

    Configurations are found by `by` (default: "published_row" when the rows have it, else
    "label"). Verdicts: "holds" (CI entirely on the claimed side / the claimed value inside
    the CI), "does not hold" (CI entirely on the other side / value outside), "inconclusive"
    (CI straddles), "not comparable" (a magnitude claim when `comparable` is False: the
    reproduced number and CI are still shown) and "not tested" (the rows lack what the test
    needs, e.g. pixel metrics without masks; `note` says what). Differences are in p.p.;
    `published` is the same statistic on the paper's (rounded) table and `paper_table` what
    that table itself says about the claim ("tie" when its rounded figures are equal).
    """
    from padim_lib.published import load_claims, load_published

    published = load_published() if published is None else published
    claims = load_claims(published=published) if claims is None else claims
    if by is None:
        has_pub = "published_row" in rows.columns and (rows["published_row"].fillna("").astype(str) != "").any()
        by = "published_row" if has_pub else "label"
    out = []
    for claim in claims:
        base = {
            "id": claim["id"], "claim": claim["quote"], "source": claim["source"], "table": claim["table"],
            "test": claim["test"], "kind": claim["kind"], "metric": claim["metric"], "group": claim["group"],
        }
        try:
            result = _CLAIM_TESTS[claim["test"]](rows, claim, published, by, kinds, level)
        except MissingResults as err:
            result = {"verdict": "not tested", "note": str(err)}
        except KeyError as err:
            raise PadimError(f"claim {claim.get('id')!r}: missing field {err}") from err
        if claim["kind"] == "magnitude" and not comparable and result["verdict"] != "not tested":
            result["note"] = ("the run's set-up differs from the paper's; " + result.get("note", "")).rstrip("; ")
            result["verdict"] = "not comparable"
        out.append(base | result)
    columns = ["id", "claim", "source", "table", "test", "kind", "metric", "group", "check", "published",
               "paper_table", "reproduced", "ci_low", "ci_high", "unit", "verdict", "note"]
    return pd.DataFrame(out).reindex(columns=columns)
