"""The paper's claims (padim_lib/paper/data/claims.yaml): loading, verdicts on result rows, and a self-check.

A claim is one of the paper's sentences with a machine-checkable test (see the file's header); its
`origin` says where it comes from: "quote" (verbatim, from the excerpt), "paraphrase" (a sentence
of a section the excerpt lacks, in other words) or "table" (a comparison the published table
supports, not a sentence of the paper). `evaluate_claims` runs every test on reproduced result
rows, and gives a verdict only where every model the claim involves is comparable with the
paper's (per published row: `reasons`); `self_check` runs the same tests on the paper's own
published figures, as if they were a reproduction with zero-width intervals: what a perfect
reproduction would get. Every claim the table can test must hold there; where the paper's table
cannot support its sentence as worded, the claim says so in `table_conflict` ("ties" or
"contradicts") and `reading` states the test's reading of it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from padim_lib.errors import PadimError
from padim_lib.paper.published import load_published, published_value
from padim_lib.paper.stats import MissingResults, diff_ci, seed_values, sem, sem_ci

VERDICTS = ("holds", "does not hold", "inconclusive", "not comparable", "not tested")
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
TABLE_CONFLICTS = ("ties", "contradicts")
# where a claim comes from (the `origin` field; default "quote")
ORIGINS: dict[str, str] = {
    "quote": "the paper's sentence, quoted verbatim from the excerpt",
    "paraphrase": "a sentence of a section the excerpt lacks, given in other words (\"Not a quote\")",
    "table": "a comparison the published table supports, not a sentence of the paper (\"Not a quote\")",
}
NOT_A_QUOTE = "Not a quote"
COLUMNS = ["id", "claim", "source", "origin", "table", "test", "kind", "metric", "group", "run_as", "check",
           "published", "paper_table", "table_conflict", "reading", "reproduced", "ci_low", "ci_high", "unit",
           "verdict", "note"]


# ----------------------------------------------------------------------------- loading
def claim_configs(claim: Mapping[str, Any]) -> list[str]:
    """The configuration (row) names a claim refers to."""
    names: list[str] = [claim[f] for f in ("a", "b", "target", "config") if f in claim]
    for field in ("among", "others"):
        names.extend(claim.get(field, []))
    return list(dict.fromkeys(names))


def claim_origin(claim: Mapping[str, Any]) -> str:
    """Where the claim comes from: one of ORIGINS ("quote" unless the claim says otherwise)."""
    return str(claim.get("origin", "quote"))


def _check_claim(claim: Any, where: str, seen: set[str], published: pd.DataFrame) -> None:
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
    origin = claim_origin(claim)
    if origin not in ORIGINS:
        raise PadimError(f"{where}: origin={origin!r}; expected one of {list(ORIGINS)}")
    if (origin != "quote") != str(claim["quote"]).startswith(NOT_A_QUOTE):
        raise PadimError(f"{where}: origin {origin!r} and a quote that " +
                         ("does not start" if origin != "quote" else "starts") + f" with {NOT_A_QUOTE!r}; "
                         "a claim that is not a verbatim quote says so first")
    if claim.get("table_conflict", "") not in ("", *TABLE_CONFLICTS):
        raise PadimError(f"{where}: table_conflict={claim['table_conflict']!r}; expected one of {TABLE_CONFLICTS}")
    for field in ("min_diff_pp", "allowance_pp"):
        value = claim.get(field, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PadimError(f"{where}: {field}={value!r}; expected a number of percentage points")
    if claim.get("allowance_pp", 0.0) < 0:
        raise PadimError(f"{where}: allowance_pp={claim['allowance_pp']!r}; expected a number >= 0")
    if (claim.get("table_conflict") or claim.get("allowance_pp")) and not str(claim.get("reading", "")).strip():
        raise PadimError(f"{where}: a claim with table_conflict or allowance_pp needs a 'reading' saying why")
    rows = set(published.loc[published["table"] == claim["table"], "row"])
    unknown = [name for name in claim_configs(claim) if name not in rows]
    if unknown:
        raise PadimError(f"{where}: {unknown} are not rows of {claim['table']!r} in published.csv ({sorted(rows)})")


def load_claims(path: str | os.PathLike | None = None, published: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """The claims of claims.yaml as a list of dicts, validated.

    Checks: unique ids, known `test`, `kind` and `table_conflict`, the fields each test needs,
    numeric thresholds, a `reading` wherever the test departs from the literal sentence, and that
    every configuration a claim names is a row of its table in published.csv.
    """
    import yaml

    path = Path(path) if path is not None else Path(__file__).resolve().parent / "data" / "claims.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"claims file {path} does not exist")
    with path.open() as fh:
        doc = yaml.safe_load(fh)
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        raise PadimError(f"{path}: expected a mapping with a 'claims' list")
    published = load_published() if published is None else published
    seen: set[str] = set()
    for i, claim in enumerate(doc["claims"]):
        _check_claim(claim, f"{path}: claim #{i + 1} ({claim.get('id', '?') if isinstance(claim, dict) else '?'})",
                     seen, published)
        seen.add(claim["id"])
    return [dict(c) for c in doc["claims"]]


# ----------------------------------------------------------------------------- one claim's test
def _pp(x: float) -> float:
    return 100.0 * x


def _threshold(claim: Mapping[str, Any]) -> float:
    """The margin an ordering must exceed (p.p.): min_diff_pp less the rounding allowance."""
    return float(claim.get("min_diff_pp", 0.0)) - float(claim.get("allowance_pp", 0.0))


def _check_text(claim: Mapping[str, Any]) -> str:
    """The test in words, e.g. 'Rd 200 - PCA 200 > 1.2 p.p. (1.3 less 0.1 for rounding)'."""
    test, allow, t = claim["test"], float(claim.get("allowance_pp", 0.0)), _threshold(claim)
    m = float(claim.get("min_diff_pp", 0.0))
    how = "" if not allow else f" ({m:g} less {allow:g} for rounding)" if m else f" (ties within the {allow:g} rounding allowed)"
    if test in ("best", "beats_each"):
        a = claim["target"] if test == "best" else claim["a"]
        others = ", ".join(o for o in (claim["among"] if test == "best" else claim["others"]) if o != a)
        lhs = f"{a} - max({others})" if test == "best" else f"{a} - each of ({others})"
        return f"{lhs} > {t:g} p.p.{how}" if t else f"{lhs} > 0"
    if test == "greater":
        lhs = f"{claim['a']} - {claim['b']}"
        return f"{lhs} > {t:g} p.p.{how}" if t else f"{lhs} > 0"
    if test == "difference":
        pm = f" ± {allow:g}" if allow else ""
        return f"{claim['a']} - {claim['b']} = {float(claim['value_pp']):g}{pm} p.p. (meets the CI)"
    return f"{float(claim['low']):g} <= SEM over seeds of the {claim['group']} mean <= {float(claim['high']):g}"


def _margins(rows, a: str, others: Sequence[str], claim, by, kinds, level) -> dict[str, Any]:
    """Paired differences a - o for every o; "holds" when every CI lies above the threshold."""
    t = _threshold(claim)
    diffs = [diff_ci(rows, a, o, claim["metric"], claim["group"], by=by, kinds=kinds, level=level) for o in others]
    worst = min(diffs, key=lambda d: d["diff"])
    if all(_pp(d["ci_low"]) > t for d in diffs):
        verdict = "holds"
    elif any(_pp(d["ci_high"]) < t for d in diffs):
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


def _test(rows, claim, by, kinds, level) -> dict[str, Any]:
    """The claim's statistic on result rows, its CI and the verdict (MissingResults if it cannot)."""
    test = claim["test"]
    if test == "best":
        return _margins(rows, claim["target"], [o for o in claim["among"] if o != claim["target"]], claim, by, kinds, level)
    if test == "beats_each":
        return _margins(rows, claim["a"], list(claim["others"]), claim, by, kinds, level)
    if test in ("greater", "difference"):
        d = diff_ci(rows, claim["a"], claim["b"], claim["metric"], claim["group"], by=by, kinds=kinds, level=level)
        lo, hi = _pp(d["ci_low"]), _pp(d["ci_high"])
        if test == "greater":
            t = _threshold(claim)
            verdict = "holds" if lo > t else "does not hold" if hi < t else "inconclusive"
        else:  # the claimed gap, widened by the rounding allowance, must meet the CI
            v, allow = float(claim["value_pp"]), float(claim.get("allowance_pp", 0.0))
            verdict = "holds" if lo <= v + allow and hi >= v - allow else "does not hold"
        return {"reproduced": _pp(d["diff"]), "ci_low": lo, "ci_high": hi, "unit": "p.p.", "verdict": verdict, "note": ""}
    # seed_sem_between
    low, high = float(claim["low"]), float(claim["high"])
    seeds = seed_values(rows, claim["config"], claim["metric"], claim["group"], by=by, kinds=kinds)
    if len(seeds) < 2:
        raise MissingResults(f"{claim['config']!r} has {len(seeds)} seed(s); the seed SEM needs at least 2")
    lo, hi = sem_ci(seeds, level)
    verdict = "holds" if low <= lo and hi <= high else "does not hold" if hi < low or lo > high else "inconclusive"
    return {"reproduced": sem(seeds), "ci_low": lo, "ci_high": hi, "unit": "fraction", "verdict": verdict,
            "note": f"{len(seeds)} seeds; CI from the chi-square law of the variance"}


# ----------------------------------------------------------------------------- the paper's own figures
def paper_rows(claim: Mapping[str, Any], published: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's figures for a claim's configurations as result rows with zero-width intervals.

    One pseudo-class holds the claim group's published figure (as a fraction) per configuration,
    at replicate -1 and at replicate 0, so every bootstrap interval is the point itself.
    Configurations without a published figure get no rows.
    """
    published = load_published() if published is None else published
    group = claim["group"]
    kind = {"textures": "texture", "objects": "object"}.get(group, group)
    out = []
    for name in claim_configs(claim):
        value = published_value(published, claim["table"], name, group, claim["metric"])
        if value is not None:
            out += [{"label": name, "published_row": name, "category": f"paper ({group})", "kind": kind,
                     "metric": claim["metric"], "seed": 0, "replicate": r, "value": value / 100.0} for r in (-1, 0)]
    return pd.DataFrame(out, columns=["label", "published_row", "category", "kind", "metric", "seed", "replicate",
                                      "value"])


def _paper_side(claim: Mapping[str, Any], published: pd.DataFrame) -> dict[str, Any]:
    """The claim's test on the paper's own figures: {published: statistic or None, paper_table: verdict or 'n/a'}."""
    if claim["test"] == "seed_sem_between":  # the paper gives the range it claims, not the seeds' values
        return {"published": None, "paper_table": "n/a"}
    try:
        r = _test(paper_rows(claim, published), claim, "published_row", None, 0.95)
    except MissingResults:
        return {"published": None, "paper_table": "n/a"}
    return {"published": r["reproduced"], "paper_table": r["verdict"]}


def self_check(claims: Sequence[Mapping[str, Any]] | None = None, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every claim's test on the paper's own figures: what a perfect reproduction would get.

    One row per claim: id, claim (the quote), check (the test in words), published (the tested
    statistic on the paper's figures, p.p.), verdict ("n/a" where the paper publishes no figure to
    test, e.g. the seed SEM's range), table_conflict ("ties", "contradicts" or ""), reading, and
    note (the reading, or why the verdict is "n/a").
    """
    published = load_published() if published is None else published
    claims = load_claims(published=published) if claims is None else claims
    out = []
    for claim in claims:
        paper = _paper_side(claim, published)
        reading = " ".join(claim.get("reading", "").split())
        untestable = "the paper publishes the range it claims, not the figures the test needs"
        out.append({"id": claim["id"], "claim": claim["quote"], "check": _check_text(claim),
                    "published": paper["published"], "verdict": paper["paper_table"],
                    "table_conflict": claim.get("table_conflict", ""), "reading": reading,
                    "note": reading or (untestable if paper["paper_table"] == "n/a" else "")})
    return pd.DataFrame(out, columns=["id", "claim", "check", "published", "verdict", "table_conflict", "reading", "note"])


# ----------------------------------------------------------------------------- all claims
def not_comparable_reasons(claim: Mapping[str, Any], reasons: Mapping[tuple[str, str], Sequence[str]] | None
                           ) -> list[str]:
    """Why the claim's models in this run are not the paper's: the reasons (set-up and model) of
    every configuration it names, from `reasons` ((table, published row) -> reasons; None: the
    paper's own models); a row `reasons` does not know is a reason too. Empty: comparable."""
    if reasons is None:
        return []
    out: list[str] = []
    for name in claim_configs(claim):
        known = reasons.get((claim["table"], name))
        found = [f"no run of the paper's {name} to compare"] if known is None else list(known)
        out += [r for r in found if r not in out]
    return out


def evaluate_claims(
    rows: pd.DataFrame,
    claims: Sequence[Mapping[str, Any]] | None = None,
    kinds: Mapping[str, str] | None = None,
    *,
    reasons: Mapping[tuple[str, str], Sequence[str]] | None = None,
    level: float = 0.95,
    published: pd.DataFrame | None = None,
    by: str | None = None,
) -> pd.DataFrame:
    """Test each claim on the reproduced rows; one row per claim (columns COLUMNS).

    Configurations are found by `by` (default: "published_row" when the rows have it, else
    "label"). Verdicts: "holds" (every CI beyond the claimed threshold / the claimed value, give
    or take its rounding allowance, meets the CI), "does not hold" (a CI entirely on the other side
    / the value outside), "inconclusive" (CI straddles), "not comparable" and "not tested" (the rows
    lack what the test needs, e.g. pixel metrics without masks; `note` says what).

    `reasons`: (published table, row) -> what the run's model behind that row, and the run's
    set-up, change from the paper's (`paper.run.StudyRun.row_reasons`); None: the rows are the
    paper's own models on the paper's set-up. A claim of any kind (direction or magnitude) gets a
    verdict only when every configuration it names has no reason; otherwise it is "not comparable"
    and `note` names the models and what differs (the reproduced number, its CI and what the test
    gives on these rows are still shown). Differences are in p.p.; `published` and `paper_table`
    are the same test on the paper's own figures (see `self_check`), `origin`, `table_conflict`
    and `reading` come from the claim; `run_as` names the run's configurations behind the paper's
    names where they differ ("Rd 100 = Rd 40" on the embedded profile).
    """
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
        try:
            names = claim_configs(claim)
            conflict = claim.get("table_conflict", "")
            base = {
                "id": claim["id"], "claim": claim["quote"], "source": claim["source"], "origin": claim_origin(claim),
                "table": claim["table"], "test": claim["test"], "kind": claim["kind"], "metric": claim["metric"],
                "group": claim["group"],
                "run_as": ", ".join(f"{n} = {shown[n]}" for n in names if n in shown and shown[n] != n),
                "check": _check_text(claim), "table_conflict": conflict,
                "reading": " ".join(claim.get("reading", "").split()),
            } | _paper_side(claim, published)
            try:
                result = _test(rows, claim, by, kinds, level)
            except MissingResults as err:
                result = {"verdict": "not tested", "note": str(err)}
            why = not_comparable_reasons(claim, reasons)
        except KeyError as err:
            raise PadimError(f"claim {claim.get('id')!r}: missing field {err}") from err
        if why and result["verdict"] != "not tested":
            gives = f"the test on these rows gives {result['verdict']!r}"
            result["note"] = "; ".join(x for x in ("not comparable with the paper's set-up: " + "; ".join(why), gives,
                                                   result.get("note", "")) if x)
            result["verdict"] = "not comparable"
        if conflict:  # the book shows `note` under the test: say that the reading is not the literal one
            result["note"] = "; ".join(x for x in (f"the paper's table {conflict}: see the self-check", result["note"]) if x)
        out.append(base | result)
    return pd.DataFrame(out).reindex(columns=COLUMNS)
