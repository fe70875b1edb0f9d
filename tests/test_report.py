"""The report's tables state what their intervals rest on: B bootstrap resamples and the seeds."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from padim_lib.paper import stats
from padim_lib.report import display as report


def _rows(bootstrap: int, seeds: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    records = []
    for cat, kind in (("brick", "texture"), ("chip", "object")):
        for seed, rep in itertools.product(range(seeds), range(-1, bootstrap)):
            records.append({"label": "Rd 40", "published_row": "Rd 100", "category": cat, "kind": kind, "seed": seed,
                            "metric": "pixel_auroc", "replicate": rep, "value": 0.9 + 0.01 * rng.random()})
    return pd.DataFrame(records)


def test_comparison_caption_states_the_bootstrap_count_and_the_seeds():
    for bootstrap, seeds in ((5, 3), (100, 10)):
        summary = stats.summarise(_rows(bootstrap, seeds), by="published_row")
        comparison = stats.compare_published(summary.assign(label="Rd 40"), "Table II")
        caption = report.comparison_table(comparison, "pixel_auroc", seed_sem=True).caption
        assert f"B = {bootstrap} bootstrap resamples" in caption and f"{seeds} seed(s)" in caption
