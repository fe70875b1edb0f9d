"""The summary's reproducibility report: what this run reproduced and what in it differs from the
paper's set-up, computed from the runs themselves.

Every study run (`paper.run.StudyRun`: what each chapter computes, and what the summary rebuilds
with `report.chapter_studies`) carries the published table it is set against (`table`), whether its
set-up is the paper's (`comparable`) and each reason it is not (`reasons`).
`setup_differences` gathers those reasons, one row per distinct difference with the parts it applies
to; `report_values` gives the few sentences and counts the report pastes in (myst-nb glue).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

# What the report calls each part: published.csv's table names -> the book's words
PART_NAMES = {
    "Table I": "Table I",
    "Table II": "Table II",
    "Localization": "the baselines",
    "Image AUROC": "image-level detection",
    "Non-aligned": "non-aligned MVTec AD",
    "STC": "ShanghaiTech Campus",
    "Per-class pixel AUROC": "the per-class pixel AUROC",
    "Complexity": "time and memory",
}


def part_name(run: Any) -> str:
    """The report's name for a run's part of the study (its published table's name if unknown)."""
    table = str(run.table)
    return PART_NAMES.get(table, table)


def setup_differences(runs: Sequence[Any]) -> pd.DataFrame:
    """One row per distinct reason some run is not the paper's set-up, in the order first met, with the
    parts it applies to. Columns: difference, parts (a list of part names)."""
    found: dict[str, list[str]] = {}
    for run in runs:
        for reason in run.reasons:
            parts = found.setdefault(str(reason), [])
            if part_name(run) not in parts:
                parts.append(part_name(run))
    return pd.DataFrame({"difference": list(found), "parts": list(found.values())}, columns=["difference", "parts"])


def differences_markdown(runs: Sequence[Any]) -> str:
    """`setup_differences` as a Markdown list ('- difference (parts)'), or a sentence when there is none."""
    diffs = setup_differences(runs)
    if diffs.empty:
        return "None: every part of this run used the paper's set-up."
    return "\n".join(f"- {d} ({', '.join(p)})" for d, p in zip(diffs["difference"], diffs["parts"], strict=True))


def scope_sentence(runs: Sequence[Any]) -> str:
    """Whether this run's figures come from the paper's set-up, in plain words."""
    differing = [part_name(r) for r in runs if not r.comparable]
    if not differing:
        return ("Every part of this run used the paper's set-up (its data, networks and preprocessing), "
                "so its figures can be set against the published ones.")
    return (f"The figures of this run do not come from the paper's set-up: {len(differing)} of its "
            f"{len(runs)} parts ({', '.join(differing)}) differ from it in {len(setup_differences(runs))} "
            "ways, listed below. They test whether the paper's conclusions carry over to this set-up; "
            "they do not reproduce the paper's numbers.")


def published_sources() -> dict[str, Any]:
    """How many of the paper's figures the book compares against come from the paper excerpt and how
    many from a secondary transcription (marked "(t)" in published.csv), and the parts the transcribed
    ones belong to. Independent implementations' figures are not the paper's and are left out."""
    from padim_lib.paper.published import load_published

    published = load_published()
    source = published["source"].str.strip()
    transcribed = published[source.str.startswith("(t)")]
    return {
        "excerpt": int(source.str.startswith("paper excerpt").sum()),
        "transcribed": len(transcribed),
        "transcribed_parts": [PART_NAMES.get(t, t) for t in dict.fromkeys(transcribed["table"])],
    }


def report_values(runs: Sequence[Any], *, profile: str, device: str = "auto") -> dict[str, str | int]:
    """The values the reproducibility report pastes: the profile, the scope sentence, the number of parts
    and of those on the paper's set-up, the number of differences, the published figures by source, the
    hardware `device` names on this machine."""
    from padim_lib.report.provenance import machine_description

    sources = published_sources()
    return {
        "rr_profile": profile,
        "rr_scope": scope_sentence(runs),
        "rr_n_parts": len(runs),
        "rr_n_comparable": sum(bool(r.comparable) for r in runs),
        "rr_n_differences": len(setup_differences(runs)),
        "rr_n_published": sources["excerpt"] + sources["transcribed"],
        "rr_n_transcribed": sources["transcribed"],
        "rr_transcribed_parts": ", ".join(sources["transcribed_parts"]),
        "rr_hardware": machine_description(device),
    }
