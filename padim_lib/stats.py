"""Uncertainty for reproduced figures: bootstrap CIs, paired differences, seed SEM, claim verdicts.

Input: tidy result rows (columns: experiments.ROW_COLUMNS): one value per category x
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
from padim_lib.metrics import partial_area

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


def _paper_side(claim: Mapping[str, Any], published: pd.DataFrame) -> dict[str, Any]:
    """The claim's statistic on the paper's own (rounded) table, and a readable description."""
    test = claim["test"]
    pub = {n: _published_pp(published, claim, n) for n in _names(claim)}
    missing = None in pub.values()
    if test in ("best", "beats_each"):
        a = claim["target"] if test == "best" else claim["a"]
        others = [o for o in (claim["among"] if test == "best" else claim["others"]) if o != a]
        value = None if missing else pub[a] - max(pub[o] for o in others)
        check = f"{a} - max({', '.join(others)}) > 0" if test == "best" else f"{a} - each of ({', '.join(others)}) > 0"
        return {"check": check, "published": value, "paper_table": _paper_order(value)}
    if test == "greater":
        m = float(claim.get("min_diff_pp", 0.0))
        value = None if missing else pub[claim["a"]] - pub[claim["b"]]
        check = f"{claim['a']} - {claim['b']} > {m:g} p.p." if m else f"{claim['a']} - {claim['b']} > 0"
        return {"check": check, "published": value, "paper_table": _paper_order(value, m)}
    if test == "difference":
        v = float(claim["value_pp"])
        diff = None if missing else pub[claim["a"]] - pub[claim["b"]]
        paper = "n/a" if diff is None else ("holds" if abs(diff - v) < 0.05 + 1e-9 else "does not hold")
        return {"check": f"{claim['a']} - {claim['b']} = {v:g} p.p. (inside the CI)", "published": v, "paper_table": paper}
    low, high = float(claim["low"]), float(claim["high"])
    return {"check": f"{low:g} <= SEM over seeds of the {claim['group']} mean <= {high:g}", "published": None,
            "paper_table": "n/a"}


def _names(claim: Mapping[str, Any]) -> list[str]:
    from padim_lib.published import claim_configs

    return claim_configs(dict(claim))


def _margins(rows, a: str, others: Sequence[str], claim, by, kinds, level) -> dict[str, Any]:
    """Paired differences a - o for every o; verdict "holds" when all CIs are above 0."""
    diffs = [diff_ci(rows, a, o, claim["metric"], claim["group"], by=by, kinds=kinds, level=level) for o in others]
    worst = min(diffs, key=lambda d: d["diff"])
    if all(d["ci_low"] > 0 for d in diffs):
        verdict = "holds"
    elif any(d["ci_high"] < 0 for d in diffs):
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    values = {d["b"]: d["value_b"] for d in diffs} | {a: diffs[0]["value_a"]}
    best = max(values, key=values.get)
    return {
        "reproduced": _pp(worst["diff"]), "ci_low": _pp(worst["ci_low"]), "ci_high": _pp(worst["ci_high"]),
        "unit": "p.p.", "verdict": verdict,
        "note": f"best reproduced: {best} ({_pp(values[best]):.2f} %); smallest margin: vs {worst['b']}",
    }


def _reproduced_side(rows, claim, by, kinds, level) -> dict[str, Any]:
    """The claim's statistic on the reproduced rows, its CI and the verdict (MissingResults if it cannot)."""
    test = claim["test"]
    if test == "best":
        return _margins(rows, claim["target"], [o for o in claim["among"] if o != claim["target"]], claim, by, kinds, level)
    if test == "beats_each":
        return _margins(rows, claim["a"], list(claim["others"]), claim, by, kinds, level)
    if test in ("greater", "difference"):
        d = diff_ci(rows, claim["a"], claim["b"], claim["metric"], claim["group"], by=by, kinds=kinds, level=level)
        lo, hi = _pp(d["ci_low"]), _pp(d["ci_high"])
        if test == "greater":
            verdict = _verdict_greater(lo, hi, float(claim.get("min_diff_pp", 0.0)))
        else:
            verdict = "holds" if lo <= float(claim["value_pp"]) <= hi else "does not hold"
        return {"reproduced": _pp(d["diff"]), "ci_low": lo, "ci_high": hi, "unit": "p.p.", "verdict": verdict, "note": ""}
    # seed_sem_between
    name, low, high = claim["config"], float(claim["low"]), float(claim["high"])
    df = _prepare(rows[(rows[by] == name) & (rows["metric"] == claim["metric"])], by, kinds)
    if df.empty:
        raise MissingResults(f"no rows for {by}={name!r}, metric {claim['metric']!r}")
    seeds = _series(df, claim["group"])["seed_values"]
    if len(seeds) < 2:
        raise MissingResults(f"{name!r} has {len(seeds)} seed(s); the seed SEM needs at least 2")
    lo, hi = sem_ci(seeds, level)
    if low <= lo and hi <= high:
        verdict = "holds"
    elif hi < low or lo > high:
        verdict = "does not hold"
    else:
        verdict = "inconclusive"
    return {"reproduced": sem(seeds), "ci_low": lo, "ci_high": hi, "unit": "fraction", "verdict": verdict,
            "note": f"{len(seeds)} seeds; CI from the chi-square law of the variance"}


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
    that table itself says about the claim ("tie" when its rounded figures are equal); `run_as`
    names the run's configurations behind the paper's names where they differ ("Rd 100 = Rd 40" on the embedded profile).
    """
    from padim_lib.published import load_claims, load_published

    published = load_published() if published is None else published
    claims = load_claims(published=published) if claims is None else claims
    if rows.empty:  # nothing reproduced yet: every claim "not tested", the paper's side still shown
        rows = pd.DataFrame(columns=["label", "published_row", "category", "kind", "metric", "seed", "replicate", "value"])
    if by is None:
        has_pub = "published_row" in rows.columns and (rows["published_row"].fillna("").astype(str) != "").any()
        by = "published_row" if has_pub else "label"
    # What each published row name stands for in this run (e.g. "Rd 100" -> "Rd 40" on the embedded profile, Lite0 with dims [40, 80]).
    shown = {}
    if by != "label" and "label" in rows.columns and len(rows):
        shown = rows.drop_duplicates(by).set_index(by)["label"].to_dict()
    out = []
    for claim in claims:
        names = _names(claim)
        base = {
            "id": claim["id"], "claim": claim["quote"], "source": claim["source"], "table": claim["table"],
            "test": claim["test"], "kind": claim["kind"], "metric": claim["metric"], "group": claim["group"],
            "run_as": ", ".join(f"{n} = {shown[n]}" for n in names if n in shown and shown[n] != n),
        }
        try:
            result = _paper_side(claim, published)
            try:
                result |= _reproduced_side(rows, claim, by, kinds, level)
            except MissingResults as err:
                result |= {"verdict": "not tested", "note": str(err)}
        except KeyError as err:
            raise PadimError(f"claim {claim.get('id')!r}: missing field {err}") from err
        if claim["kind"] == "magnitude" and not comparable and result["verdict"] != "not tested":
            result["note"] = ("the run's set-up differs from the paper's; " + result.get("note", "")).rstrip("; ")
            result["verdict"] = "not comparable"
        out.append(base | result)
    columns = ["id", "claim", "source", "table", "test", "kind", "metric", "group", "run_as", "check", "published",
               "paper_table", "reproduced", "ci_low", "ci_high", "unit", "verdict", "note"]
    return pd.DataFrame(out).reindex(columns=columns)


# ----------------------------------------------------------------------------- fast pixel bootstrap
_STRUCTURE_2D_IN_3D = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_2D_IN_3D[1] = True  # 8-connectivity within an image, none across images


class BootstrapPixelMetrics:
    """Pixel AUROC and AU-PRO of one test set under many image weightings, exactly and fast.

    Same definitions as `metrics.PixelScores` (a pixel is marked at threshold t when score >= t;
    regions are 8-connected per image; tied scores form one curve point; trapezoid rule; AU-PRO
    up to `fpr_limit`, divided by it; image weights are repeat counts) and the same numbers up
    to float rounding, but a weighting costs O(N^2 + P / C) instead of a pass over all P pixels.

    Why this is possible: both areas are sums over (defect-free pixel q, defect pixel p) pairs
    whose weights factor per image. With all pixels sorted once by descending score,
      pixel AUROC(w) = sum_ij w_j w_i A_ji / ((w . pos)(w . neg)),
      A_ji = #(q in image j, p in image i, s_p > s_q) + 0.5 #(... s_p = s_q),
    and the PRO area up to a run boundary b is, with CN_j(b) the defect-free pixels of image j
    ranked before b and G_i(b) the region fractions (1 / region size per pixel) of image i there,
      sum_ij w_j w_i [CN_j(b) G_i(b) - Q_ji(b)] / ((w . neg)(w . regions)),
    where Q(b) accumulates, over defect pixels p ranked before b, a_p times the defect-free
    pixels ranked before p's run (plus half of those tied with it). CN, G and Q are stored at C
    checkpoints; a weighting finds the checkpoint before its own FPR = fpr_limit crossing and
    walks the few pixels to the crossing (interpolating there as PixelScores does).

    masks, maps: (N, H, W). Memory: O(P) during construction, O(C N^2) afterwards.
    """

    def __init__(
        self, masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3, checkpoints: int = 128,
        memory_budget: int = 256 * 1024**2,
    ):
        from scipy import ndimage

        masks, maps = np.asarray(masks), np.asarray(maps)
        if maps.ndim != 3 or masks.shape != maps.shape:
            raise PadimError(f"masks {masks.shape} and maps {maps.shape}: expected equal (N, H, W) shapes")
        if not 0 < fpr_limit <= 1:
            raise PadimError(f"fpr_limit={fpr_limit!r}; expected a number in (0, 1]")
        if not np.all(np.isfinite(maps)):
            raise PadimError("maps: contains NaN or infinite scores")
        m = masks != 0
        n, hw = maps.shape[0], maps[0].size
        self.num_images, self.fpr_limit = n, float(fpr_limit)
        labels, n_regions = ndimage.label(m, structure=_STRUCTURE_2D_IN_3D)
        if n_regions == 0 or m.all():
            raise PadimError("masks: need both defect and defect-free pixels for pixel AUROC and PRO")
        region_sizes = np.bincount(labels.ravel(), minlength=n_regions + 1)[1:]
        region_image = np.zeros(n_regions, np.int64)
        flat_labels = labels.ravel()
        where = np.flatnonzero(flat_labels)
        region_image[flat_labels[where] - 1] = where // hw
        self.regions = np.bincount(region_image, minlength=n).astype(np.float64)  # (N,) regions per image
        self.pos = m.reshape(n, hw).sum(1).astype(np.float64)  # (N,) defect pixels
        self.neg = hw - self.pos  # (N,) defect-free pixels

        # One sort: descending score, defect pixels first inside a run of tied scores (so the
        # defect-free pixels before a defect pixel are exactly those of earlier runs).
        is_pos = m.ravel()
        order, s = _sort_desc_pos_first(maps.ravel(), is_pos)
        self._img = order // hw
        self._pos = is_pos[order]
        reg = flat_labels[order]
        self._a = np.where(self._pos, 1.0 / region_sizes[np.maximum(reg, 1) - 1], 0.0)  # region fraction per pixel
        del order, reg, labels, flat_labels
        run_start = np.empty(s.size, bool)
        run_start[0] = True
        np.not_equal(s[1:], s[:-1], out=run_start[1:])
        self._run_end = np.append(run_start[1:], True)  # last pixel of each run
        starts = np.flatnonzero(run_start)
        # Checkpoint boundaries at run starts, about P / C pixels apart; C bounded by the memory
        # of the (C + 1) N x N matrices kept.
        checkpoints = int(max(4, min(checkpoints, memory_budget // (16 * n * n) - 1)))
        want = np.linspace(0, s.size, checkpoints + 1)[1:-1]
        inner = starts[np.searchsorted(starts, want).clip(0, len(starts) - 1)]
        self._b = np.unique(np.concatenate([[0], inner[inner > 0], [s.size]]))
        c = len(self._b) - 1
        interval = np.repeat(np.arange(c), np.diff(self._b))  # (P,) checkpoint interval of each pixel
        neg_i, pos_i = np.flatnonzero(~self._pos), np.flatnonzero(self._pos)
        # CN, G at checkpoints: (C+1, N), row c = pixels ranked before b_c.
        self._cn = np.zeros((c + 1, n))
        self._cn[1:] = np.bincount(interval[neg_i] * n + self._img[neg_i], minlength=c * n).reshape(c, n).cumsum(0)
        self._g = np.zeros((c + 1, n))
        self._g[1:] = np.bincount(interval[pos_i] * n + self._img[pos_i], weights=self._a[pos_i], minlength=c * n).reshape(c, n).cumsum(0)

        # NB(p): defect-free pixels per image ranked before defect pixel p, (N,) per p, in blocks.
        gap = np.cumsum(self._pos)[neg_i]  # defect pixels before each defect-free pixel (non-decreasing)
        dq = np.zeros((c + 1, n, n))  # dq[c, i, j]: sum of a_p NB_j(p) over p in interval c-1, image i
        auc_pairs = np.zeros((n, n))  # [i, j]: sum over p in image i of NB_j(p)
        carry = np.zeros(n)
        block = max(1, (1 << 22) // max(n, 1))
        for t0 in range(0, len(pos_i), block):
            t1 = min(t0 + block, len(pos_i))
            lo, hi = np.searchsorted(gap, [t0, t1])
            counts = np.bincount((gap[lo:hi] - t0) * n + self._img[neg_i[lo:hi]], minlength=(t1 - t0) * n)
            nb = counts.reshape(t1 - t0, n).cumsum(0) + carry  # (block, N)
            carry = nb[-1].copy()  # negatives with gap t1 (after p_{t1-1}) start the next block
            p = pos_i[t0:t1]
            img_p = self._img[p]
            _add_rows(auc_pairs, img_p, nb)
            _add_rows(dq.reshape((c + 1) * n, n), (interval[p] + 1) * n + img_p, nb * self._a[p, None])
        # Half of the defect-free pixels tied with a defect pixel (runs holding both kinds).
        half_auc, half_q = _tied_pairs(self._img, self._pos, self._a, run_start, self._run_end, interval, n, c)
        self._q = (dq.cumsum(0) + 0.5 * half_q).transpose(0, 2, 1)  # (C+1, N_j, N_i)
        self._auc = np.outer(self.neg, self.pos) - auc_pairs.T - 0.5 * half_auc.T  # (N_j, N_i)

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Unweighted pixel ROC (fpr, tpr), one point per distinct score from (0, 0) to (1, 1)."""
        fp = np.cumsum(~self._pos)[self._run_end]
        tp = np.cumsum(self._pos)[self._run_end]
        return np.r_[0.0, fp / self.neg.sum()], np.r_[0.0, tp / self.pos.sum()]

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Unweighted PRO curve (fpr, pro), one point per distinct score from (0, 0) to (1, 1)."""
        fp = np.cumsum(~self._pos)[self._run_end]
        pro = np.minimum(np.cumsum(self._a)[self._run_end] / self.regions.sum(), 1.0)
        pro[-1] = 1.0  # every region fully marked at the lowest score; drop the sum's rounding
        return np.r_[0.0, fp / self.neg.sum()], np.r_[0.0, pro]

    def _weights(self, w) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64)
        if w.shape != (self.num_images,) or (w < 0).any():
            raise PadimError(f"image_weights: expected ({self.num_images},) non-negative repeat counts, got {w.shape}")
        if w @ self.pos == 0 or w @ self.neg == 0:
            raise PadimError("image_weights: the weighted images lack defect or defect-free pixels")
        return w

    def pixel_auroc(self, image_weights=None) -> float:
        """Pixel ROC AUC under image repeat counts (None = each image once)."""
        w = self._weights(np.ones(self.num_images) if image_weights is None else image_weights)
        return float(w @ self._auc @ w / ((w @ self.pos) * (w @ self.neg)))

    def pro_auc(self, image_weights=None) -> float:
        """AU-PRO up to fpr_limit, divided by it, under image repeat counts (None = each image once)."""
        w = self._weights(np.ones(self.num_images) if image_weights is None else image_weights)
        fp_total, r_total = w @ self.neg, w @ self.regions
        limit = self.fpr_limit * fp_total
        fp = self._cn @ w  # (C+1,) non-decreasing
        c = int(np.searchsorted(fp, limit, side="right")) - 1
        area = ((self._cn[c] @ w) * (self._g[c] @ w) - w @ self._q[c] @ w) / (fp_total * r_total)
        if c < len(self._b) - 1:  # walk the pixels of the next interval up to the crossing
            sl = slice(self._b[c], self._b[c + 1])
            wi = w[self._img[sl]]
            ends = self._run_end[sl]
            x = np.concatenate([[fp[c]], fp[c] + np.cumsum(np.where(self._pos[sl], 0.0, wi))[ends]]) / fp_total
            y = np.concatenate([[self._g[c] @ w], (self._g[c] @ w) + np.cumsum(wi * self._a[sl])[ends]]) / r_total
            area += partial_area(x, np.minimum(y, 1.0), self.fpr_limit)
        return float(area / self.fpr_limit)


def _sort_desc_pos_first(scores: np.ndarray, is_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel order by descending score, defect pixels first among ties; returns (order, sorted scores).

    float32 scores (or exactly representable ones) are sorted as packed uint64 keys (score bits,
    defect flag, index): a value sort, about twice as fast as an argsort. Others: stable argsort.
    """
    p = scores.size
    s32 = scores.astype(np.float32)
    if p < 2**31 and (scores.dtype == np.float32 or np.array_equal(s32, scores)):
        s32 = s32 + np.float32(0.0)  # -0.0 -> +0.0: they tie, as for ==
        bits = s32.view(np.uint32)
        ascending = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
        key = (~ascending).astype(np.uint64) << np.uint64(32)
        key |= (~is_pos).astype(np.uint64) << np.uint64(31)
        key |= np.arange(p, dtype=np.uint64)
        key.sort()
        order = (key & np.uint64(0x7FFFFFFF)).astype(np.int64)
        return order, s32[order]
    pre = np.concatenate([np.flatnonzero(is_pos), np.flatnonzero(~is_pos)])
    order = pre[np.argsort(-scores[pre].astype(np.float64), kind="stable")]
    return order, scores[order]


def _add_rows(target: np.ndarray, index: np.ndarray, rows: np.ndarray) -> None:
    """target[index[k]] += rows[k] for repeated indices (sort + reduceat; np.add.at is slow)."""
    if len(index) == 0:
        return
    order = np.argsort(index, kind="stable")
    idx = index[order]
    first = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    target[idx[first]] += np.add.reduceat(rows[order], first, axis=0)


def _tied_pairs(img, is_pos, a, run_start, run_end, interval, n, c) -> tuple[np.ndarray, np.ndarray]:
    """For runs holding defect and defect-free pixels: sum over runs of outer(pos counts, neg counts).

    Returns ([i, j] with counts, and (C+1, i, j) with region fractions, cumulative over checkpoints).
    """
    half_auc, half_q = np.zeros((n, n)), np.zeros((c + 1, n, n))
    tied = np.flatnonzero(~(run_start & run_end))  # pixels in runs of two or more (rare for float maps)
    if tied.size == 0:
        return half_auc, half_q
    run = np.cumsum(run_start[tied]) - 1  # tied pixels come in whole runs, so this numbers them
    k = int(run[-1]) + 1
    pos_t = is_pos[tied]
    mixed = (np.bincount(run, weights=pos_t, minlength=k) > 0) & (np.bincount(run, weights=~pos_t, minlength=k) > 0)
    sel = mixed[run]
    if not sel.any():
        return half_auc, half_q
    ids, local = np.unique(run[sel], return_inverse=True)
    k = len(ids)
    pix = tied[sel]
    key = local * n + img[pix]
    pos_n = np.bincount(key, weights=is_pos[pix], minlength=k * n).reshape(k, n)
    pos_a = np.bincount(key, weights=a[pix], minlength=k * n).reshape(k, n)
    neg_n = np.bincount(key, weights=~is_pos[pix], minlength=k * n).reshape(k, n)
    run_interval = np.zeros(k, np.int64)
    run_interval[local] = interval[pix]
    half_auc += pos_n.T @ neg_n
    for ci in np.unique(run_interval):
        rows = run_interval == ci
        half_q[ci + 1] += pos_a[rows].T @ neg_n[rows]
    return half_auc, half_q.cumsum(0)


class BootstrapImageAUROC:
    """Image AUROC under image repeat counts in O(N^2): labels (N,) 1 = defective, scores (N,).

    AUROC(w) = sum_ij w_i w_j K_ij / ((w . y)(w . (1 - y))), K_ij = [y_i = 1, y_j = 0] ([s_i > s_j] + 0.5 [s_i = s_j]),
    which equals `metrics.image_auroc(labels, scores, sample_weight=w)`.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray):
        y = np.asarray(labels) != 0
        s = np.asarray(scores, dtype=np.float64)
        if y.shape != s.shape or y.ndim != 1:
            raise PadimError(f"labels {y.shape} and scores {s.shape}: expected equal (N,) shapes")
        if y.all() or not y.any():
            raise PadimError("labels: image AUROC needs good and defective images")
        self.y = y.astype(np.float64)
        order = (s[:, None] > s[None, :]) + 0.5 * (s[:, None] == s[None, :])
        self.k = order * (y[:, None] & ~y[None, :])

    def auroc(self, image_weights=None) -> float:
        w = np.ones(len(self.y)) if image_weights is None else np.asarray(image_weights, dtype=np.float64)
        den = (w @ self.y) * (w @ (1.0 - self.y))
        if den == 0:
            raise PadimError("image_weights: the weighted images lack good or defective ones")
        return float(w @ self.k @ w / den)
