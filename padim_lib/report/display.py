"""Report helpers: result summaries -> the book's tables, sentences and notes (figures: padim_lib.report.plots).

Inputs are the frames of padim_lib.paper.stats (`summarise`: per label, metric and class / group a value
with its 95 % CI; `compare_published`: reproduced vs published in percent; `evaluate_claims`:
one verdict per claim) and the cached features of one class (the method chapter). Outputs are
pandas Stylers (HTML tables in the book), short strings for `glue`, and MyST admonitions.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from padim_lib.errors import PadimError
from padim_lib.features.extractor import align_concat
from padim_lib.methods.vae.departures import departures_of
from padim_lib.paper import stats
from padim_lib.paper.published import load_published, published_text, published_value

if TYPE_CHECKING:  # pandas' Styler imports jinja2
    from pandas.io.formats.style import Styler


def fmt_ci(value: float, low: float, high: float, digits: int = 1) -> str:
    """'96.3 [95.1, 97.0]' (percent values in, as given)."""
    if any(math.isnan(float(v)) for v in (low, high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def comparison_table(comparison: pd.DataFrame, metric: str, *, labels: Sequence[str] | None = None, seed_sem: bool = False,
                     groups: Sequence[str] = ("textures", "objects", "all")) -> Styler:
    """The paper's layout for one metric: rows configurations, columns groups; each cell the
    reproduced value [95 % CI], then the published value and the difference (p.p.).

    comparison: stats.compare_published output (percent). `seed_sem`: add the SEM over seeds of the
    "all" value (as a fraction, the paper's scale) for configurations run with several seeds.
    Returns a pandas Styler (HTML in the book) captioned with the published figures' sources.
    """
    from padim_lib.report.plots import metric_label

    sub = comparison[comparison["metric"] == metric]
    order = list(labels) if labels is not None else list(dict.fromkeys(sub["label"]))
    shown = [g for g in groups if (sub["group"] == g).any()]
    records, sources = {}, []
    for label in order:
        cells = {}
        for group in shown:
            hit = sub[(sub["label"] == label) & (sub["group"] == group)]
            if hit.empty:
                cells[group] = ""
                continue
            r = hit.iloc[0]
            text = f"<b>{r['reproduced']:.1f}</b>"
            if not math.isnan(float(r["ci_low"])):
                text += f" [{r['ci_low']:.1f}, {r['ci_high']:.1f}]"
            pub = r["published"]
            if pub is not None and not math.isnan(float(pub)):
                text += f"<br><small>paper {pub:.1f} · Δ {r['difference']:+.1f}</small>"
                sources.append(str(r["source"]))
            cells[group] = text
        if seed_sem:
            hit = sub[(sub["label"] == label) & (sub["group"] == "all")]
            n = int(hit.iloc[0]["n_seeds"]) if len(hit) else 1
            cells["seeds"] = str(n)
            cells["SEM over seeds (all)"] = f"{float(hit.iloc[0]['seed_sem']) / 100:.1e}" if n > 1 else "–"
        records[label] = cells
    df = pd.DataFrame.from_dict(records, orient="index").rename_axis("configuration")
    replicates = sorted({int(n) for n in sub.get("n_replicates", pd.Series(dtype=int)).dropna()})
    seeds = sorted({int(n) for n in sub.get("n_seeds", pd.Series(dtype=int)).dropna()})
    basis = (f"intervals from B = {'/'.join(map(str, replicates)) or 0} bootstrap resamples of the test images"
             f", {'/'.join(map(str, seeds)) or 1} seed(s) per configuration")
    caption = (f"{metric_label(metric)} (%): reproduced [95 % CI]; paper value and difference "
               f"reproduced − paper in p.p.; {basis}. "
               f"Published figures: {'; '.join(dict.fromkeys(sources)) or 'none'}.")
    styles = [{"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 0.9em;"},
              {"selector": "td", "props": "text-align: center; white-space: nowrap;"}]
    return df.style.set_caption(caption).set_table_styles(styles)


def class_table(summary: pd.DataFrame, metric: str, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-class values (percent, 95 % CI) of one metric: rows classes and groups, columns labels."""
    sub = summary[summary["metric"] == metric]
    order = list(labels) if labels is not None else list(dict.fromkeys(sub["label"]))
    table = {}
    for label in order:
        s = sub[sub["label"] == label].set_index("group")
        table[label] = {g: fmt_ci(100 * r["value"], 100 * r["ci_low"], 100 * r["ci_high"]) for g, r in s.iterrows()}
    return pd.DataFrame(table).rename_axis("class / group")


def diff_text(rows: pd.DataFrame, a: str, b: str, metric: str, group: str = "all") -> str:
    """'+1.2 p.p. (95 % CI +0.8 to +1.6)' for a - b, paired over the same bootstrap resamples."""
    d = stats.diff_ci(rows, a, b, metric, group)
    text = f"{100 * d['diff']:+.1f} p.p."
    if not math.isnan(d["ci_low"]):
        text += f" (95 % CI {100 * d['ci_low']:+.1f} to {100 * d['ci_high']:+.1f})"
    return text


def published_diff(table: str, a: str, b: str, metric: str, group: str = "all") -> str:
    """The same difference in the paper's table, '+1.1 p.p.' ('n/a' when a figure is missing).

    `a`, `b`: published row names (a configuration's `published_row`; "" = none: 'n/a')."""
    if not a or not b:
        return "n/a"
    pub = load_published()
    va, vb = published_value(pub, table, a, group, metric), published_value(pub, table, b, group, metric)
    return "n/a" if va is None or vb is None else f"{va - vb:+.1f} p.p."


def averaging_table(averages: pd.DataFrame, run: Any) -> pd.DataFrame:
    """`paper.stc.averages` in percent, per configuration and metric: the mean over scenes [95 % CI],
    the AUROC pooled over all frames of all scenes, and the paper's figure for the row (its
    averaging not stated) with its source marker ("–" where it gives none)."""
    names = {"pixel_auroc": "pixel AUROC", "image_auroc": "frame AUROC"}
    out = []
    for _, r in averages.iterrows():
        row = run.published_row(r["label"])
        try:
            paper = published_text(run.table, row, "all", r["metric"]) if row else "–"
        except PadimError:  # the paper gives no such figure (the frame AUROC)
            paper = "–"
        pooled = "– (stored before pooling was kept: re-run)" if math.isnan(r["pooled"]) else f"{100 * r['pooled']:.1f}"
        out.append({"configuration": r["label"], "metric": names.get(r["metric"], r["metric"]),
                    "mean over scenes [95 % CI]": fmt_ci(100 * r["mean"], 100 * r["ci_low"], 100 * r["ci_high"]),
                    "pooled over all frames": pooled, "paper (averaging not stated)": paper})
    return pd.DataFrame(out).set_index(["configuration", "metric"])


def best_label(summary: pd.DataFrame, labels: Sequence[str], metric: str, group: str = "all") -> str:
    """The label among `labels` with the highest value of `metric` for `group`, e.g. 'Layer 3 (97.2 %)'."""
    sub = summary[(summary["metric"] == metric) & (summary["group"] == group) & summary["label"].isin(labels)]
    if sub.empty:
        raise PadimError(f"no {metric} for group {group!r} and labels {list(labels)}")
    r = sub.loc[sub["value"].idxmax()]
    return f"{r['label']} ({100 * r['value']:.1f} %)"


def seed_sem_text(summary: pd.DataFrame, labels: Sequence[str], metric: str = "pixel_auroc", group: str = "all") -> str:
    """'2.1e-04 (Rd 40), 9.8e-05 (Rd 80)': SEM over seeds of the group mean, as a fraction."""
    parts = []
    for label in labels:
        hit = summary[(summary["label"] == label) & (summary["metric"] == metric) & (summary["group"] == group)]
        if len(hit) and int(hit.iloc[0]["n_seeds"]) > 1:
            parts.append(f"{float(hit.iloc[0]['seed_sem']):.1e} ({label})")
    return ", ".join(parts) or "not available (one seed)"


def differences(comparison: pd.DataFrame) -> pd.DataFrame:
    """Reproduced - published per (row, group, metric), p.p., with the reproduced CI shifted alike."""
    sub = comparison.dropna(subset=["published"])
    out = sub.assign(row=sub["label"], diff=sub["difference"], diff_low=sub["ci_low"] - sub["published"],
                     diff_high=sub["ci_high"] - sub["published"])
    return out[["row", "group", "metric", "diff", "diff_low", "diff_high"]].reset_index(drop=True)


VERDICT_COLOURS = {"holds": "#d4edda", "does not hold": "#f8d7da", "inconclusive": "#fff3cd",
                   "not comparable": "#e2e3e5", "not tested": "#e2e3e5"}


def claims_table(verdicts: pd.DataFrame, names: Mapping[str, str] | None = None) -> Styler:
    """stats.evaluate_claims output as a styled table, one block of rows per quoted sentence.

    Rows are grouped by (table, the paper's sentence, claim id); columns: the test (with this run's
    configuration names when `names` maps published rows to them, and the chapter whose run tested
    it when `verdicts` has a "chapter" column: `paper.run.chapter_verdicts`), reproduced value
    [95 % CI], the same quantity on the paper's table, and the verdict (coloured).
    """
    names = dict(names or {})
    pattern = re.compile("|".join(re.escape(k) for k in sorted(names, key=len, reverse=True))) if names else None

    def own_names(r) -> dict[str, str]:  # the row's own run's names ("Rd 100 = Rd 40, ..."): several runs' verdicts
        run_as = r.get("run_as") if not names else None
        return dict(p.split(" = ", 1) for p in run_as.split(", ") if " = " in p) if isinstance(run_as, str) else {}

    def test(r) -> str:
        check = str(r["check"]) if isinstance(r["check"], str) else str(r["test"])
        text = pattern.sub(lambda m: names[m.group(0)], check) if pattern else check
        for paper_name, run_name in sorted(own_names(r).items(), key=lambda kv: -len(kv[0])):
            text = text.replace(paper_name, run_name)
        note = r["note"] if isinstance(r["note"], str) else ""
        note = f"; {note}" if note else ""
        chapter = f"chapter {r['chapter']}: " if isinstance(r.get("chapter"), str) and r["chapter"] else ""
        return f"{text}<br><small>{chapter}{r['metric']}, {r['group']}{note}</small>"

    def number(r) -> str:
        value = r.get("reproduced")
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if r["unit"] == "fraction":
            return f"{value:.1e}<br>[{r['ci_low']:.1e}, {r['ci_high']:.1e}]"
        return f"{value:+.1f} p.p.<br>[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]"

    def paper(r) -> str:
        pub = r.get("published")
        if pub is None or (isinstance(pub, float) and math.isnan(pub)):
            return str(r.get("paper_table", "n/a"))
        return f"{pub:+.1f} p.p.<br>({r['paper_table']})"

    # The claim id keeps the index unique (Styler.map needs it); it is hidden, and rows sharing a
    # sentence show it once (Styler spans equal index values).
    sentences = [f"“{q.strip()}” ({t})" for q, t in zip(verdicts["claim"], verdicts["table"], strict=True)]
    ids = verdicts["id"] if "chapter" not in verdicts else verdicts["id"] + " @" + verdicts["chapter"].astype(str)
    index = pd.MultiIndex.from_arrays([sentences, ids], names=["the paper's sentence", "claim"])
    df = pd.DataFrame({
        "tested as": [test(r) for _, r in verdicts.iterrows()],
        "reproduced [95 % CI]": [number(r) for _, r in verdicts.iterrows()],
        "paper's table": [paper(r) for _, r in verdicts.iterrows()],
        "verdict": list(verdicts["verdict"]),
    }, index=index)
    styles = [
        {"selector": "th.row_heading", "props": "text-align: left; vertical-align: top; font-weight: normal;"
                                                "font-style: italic; min-width: 16em;"},
        {"selector": "td", "props": "vertical-align: top; text-align: left;"},
    ]
    used = {k: v for k, v in names.items() if pattern and any(k in str(c) for c in verdicts["check"])}
    caption = ("This run's configurations stand for the paper's: "
               + ", ".join(f"{v} for {k}" for k, v in used.items()) + ".") if used else ""
    styles.append({"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 0.9em;"})
    return (df.style.set_table_styles(styles).set_caption(caption).hide(axis="index", level="claim")
            .map(lambda v: f"background-color: {VERDICT_COLOURS.get(v, 'white')};", subset=["verdict"]))


# ----------------------------------------------------------------------------- notes


def comparability_note(profile: str, comparable: bool, reasons: Sequence[str]) -> str:
    """A MyST admonition for the intro: plain words on whether the numbers compare with the paper's."""
    if comparable:
        return (
            ":::{note}\nThis run uses the paper's set-up (MVTec AD, ResNet18, 256/224 preprocessing), so "
            "its numbers can be compared with the published ones; differences are shown with 95 % "
            "intervals.\n:::\n"
        )
    why = "; ".join(reasons)
    return (
        f":::{{warning}}\n**The numbers in this book are not comparable with the paper's.** This run "
        f"(profile `{profile}`) differs from the paper's set-up: {why}. It exercises the whole "
        "pipeline and runs the tests of the paper's claims on other data; the published figures are "
        "shown for orientation only, and a claim whose models or set-up differ from the paper's, an "
        "ordering as much as a magnitude, gets no verdict: it is marked *not comparable*, with what "
        "differs. Run `padim book --profile paper` with MVTec AD in `data/mvtec` to compare.\n:::\n"
    )


def runs_note(runs: Mapping[str, Any]) -> str:
    """One MyST admonition for several chapters' runs: whether they use the paper's set-up and
    models, and for each that does not, why (its `StudyRun.reasons`)."""
    off = {name: r.reasons for name, r in runs.items() if not r.comparable}
    if not off:
        return (":::{note}\nEvery chapter's run uses the paper's set-up and models, so every claim below is "
                "judged; read the verdicts with their intervals.\n:::\n")
    lines = "\n".join(f"- **{name}**: " + "; ".join(reasons) for name, reasons in off.items())
    return (":::{warning}\nThese chapters' runs differ from the paper's set-up or models: a claim they test gets a "
            "verdict only if none of the differences touches a model it names; otherwise it is *not comparable* (what "
            "the test gives on their rows is in its note):\n\n" + lines + "\n:::\n")


DRY_RUN_TITLE = "Random weights: a dry run, the numbers mean nothing"


def dry_run_note() -> str:
    """The MyST warning every chapter shows when its networks ran on random weights (`pretrained=False`)."""
    return (f":::{{admonition}} {DRY_RUN_TITLE}\n:class: warning\n\nEvery network of this chapter ran with "
            "randomly initialised weights (`pretrained=False`), not ImageNet's. This run shows only that the "
            "code path works end to end (no crash, no missing parameter, no shape error); its figures say "
            "nothing about PaDiM, its baselines or the paper. Run with `pretrained=True` (the default) for "
            "numbers that mean something.\n:::\n")


def table_note(run: Any) -> str:
    """A chapter's MyST admonition on whether its table compares with the paper's."""
    if run.comparable:
        return (":::{note}\nThis run uses the paper's set-up, so the differences to the published figures "
                "are meaningful; read them with their intervals.\n:::\n")
    return (":::{warning}\nNot comparable with the paper: " + "; ".join(run.reasons) + ". The published "
            "figures are shown for orientation only; compare orderings, not values.\n:::\n")



def departures_table(config: Any) -> pd.DataFrame:
    """A VAE configuration's departures from the paper's VAE (and what the paper leaves open), one
    row each: index "what", columns "this run", "the paper" (methods.vae.departures)."""
    rows = departures_of(config)
    return (pd.DataFrame([(d.what, d.here, d.paper) for d in rows], columns=["what", "this run", "the paper"])
            .set_index("what"))


def budget_note(config: Any, short_why: str = "") -> str:
    """The sentence on a VAE's training budget: how far short of the paper's it is, followed by
    `short_why`, only when it is short; otherwise that it trains with the paper's budget."""
    short = [d.sentence for d in departures_of(config) if d.what == "short budget"]
    return f"{short[0]} {short_why}".strip() if short else "It is trained with the paper's budget (100 epochs of 10,000 images)."


def value_text(summary: pd.DataFrame, label: str, metric: str, group: str = "all") -> str:
    """'74.3 [70.1, 78.0] %': one configuration's value (summary rows, fractions) in percent with its CI."""
    hit = summary[(summary["label"] == label) & (summary["metric"] == metric) & (summary["group"] == group)]
    if hit.empty:
        raise PadimError(f"no {metric} of {label!r} for group {group!r} in this run")
    r = hit.iloc[0]
    return fmt_ci(100 * r["value"], 100 * r["ci_low"], 100 * r["ci_high"]) + " %"


# ----------------------------------------------------------------------------- figure captions
# A figure's caption lives in its cell's metadata, {"mystnb": {"figure": {"caption": ..., "name": "fig-..."}}}
# (myst-nb wraps the cell's image in a numbered figure); the run-dependent part of the caption, the
# data it was computed on, is glued text from `data_caption`, pasted with a {glue:text} role.

# What a caption calls a generated set, by the generator recorded in its dataset.json.
GENERATED_SETS = {
    "padim_lib.datasets.synthetic": "the synthetic MVTec-like set",
    "padim_lib.datasets.synthetic_stc": "the synthetic STC-like set",
    "padim_lib.datasets.nonaligned": "the non-aligned (moved and rotated) set",
}


def dataset_name(data_root: str | os.PathLike, classes: Sequence[str] | None = None) -> str:
    """'MVTec AD', 'the synthetic MVTec-like set', ...: the data at `data_root` as a caption names it.

    A generated set is named by the generator its dataset.json records; a folder without one is
    'MVTec AD' only when the published split counts of `classes` (None: all) match.
    """
    root = Path(data_root)
    manifest = root / "dataset.json"
    if manifest.is_file():
        try:
            generator = str(json.loads(manifest.read_text()).get("generator", ""))
        except (OSError, ValueError, AttributeError):  # unreadable or not a JSON object
            generator = ""
        return GENERATED_SETS.get(generator.split(" v")[0], f"the generated set {root.name}")
    from padim_lib.datasets import check_split_counts

    try:
        problems = check_split_counts(root, classes)
    except Exception as exc:  # noqa: BLE001 - a partial or odd folder is named, not a crash
        problems = [str(exc)]
    return "MVTec AD" if not problems else f"the image folder {root.name}"


def data_caption(data_root: str | os.PathLike, classes: Sequence[str] | str | None, backbone: str, *,
                 split: str = "test", max_names: int = 5) -> str:
    """The 'on which data' of a figure caption, e.g. 'the test images of 2 classes (brick, washer) of
    the synthetic MVTec-like set; backbone efficientnet_lite0'. `classes` None: every class there;
    more than `max_names` classes are counted, not named (the figure's panels name them)."""
    if isinstance(classes, str):
        classes = [classes]
    if classes is None:
        from padim_lib.datasets import list_categories

        classes = list_categories(data_root)
    names = list(dict.fromkeys(classes))
    if len(names) == 1:
        which = f"class {names[0]}"
    elif len(names) <= max_names:
        which = f"{len(names)} classes ({', '.join(names)})"
    else:
        which = f"{len(names)} classes"
    return f"the {split} images of {which} of {dataset_name(data_root, names)}; backbone {backbone}"


# ----------------------------------------------------------------------------- the method chapter


def embedding_of(features: Mapping[str, torch.Tensor], index: int) -> torch.Tensor:
    """The aligned, concatenated embedding (D, h, w) float32 of image `index` of cached features."""
    return align_concat([f[index : index + 1].float() for f in features.values()])[0]


def patch_vectors(features: Mapping[str, torch.Tensor], position: tuple[int, int], *, batch_size: int = 32) -> np.ndarray:
    """Embedding vectors at one grid position of every image of cached features: numpy (N, D)."""
    i, j = position
    n = int(next(iter(features.values())).shape[0])
    out = [
        align_concat([f[s : s + batch_size].float() for f in features.values()])[:, :, i, j].numpy()
        for s in range(0, n, batch_size)
    ]
    return np.concatenate(out)


def threshold_table(held: Any, rates: Mapping[str, float | None]) -> pd.DataFrame:
    """The thresholds of a `padim_lib.engine.threshold.HoldoutThreshold` and the false- and true-positive
    rates they give on a test set (`HoldoutThreshold.test_rates`), one row for images, one for pixels."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.1f} %"

    rows = {
        level: {"threshold": f"{value:.2f}", "test FPR": pct(rates[f"{level}_fpr"]), "test TPR": pct(rates[f"{level}_tpr"])}
        for level, value in (("image", held.image_threshold), ("pixel", held.pixel_threshold))
    }
    return pd.DataFrame.from_dict(rows, orient="index")
