"""The report's tables state what their intervals rest on: B bootstrap resamples and the seeds."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from padim_lib.errors import PadimError
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


def test_vae_budget_sentence_and_departures_table_follow_the_configuration():
    """The short-budget sentence (and the reason given for it) appears only for a short training."""
    from padim_lib.engine.config import ExperimentConfig

    short = ExperimentConfig(method="vae", backbone="efficientnet_lite0",
                             params={"epochs": 4, "images_per_epoch": 256, "batch_size": 16, "image_size": 96})
    full = ExperimentConfig(method="vae", backbone="resnet18")  # the VAE's defaults are the paper's budget
    note = report.budget_note(short, "No more fits here.")
    assert note.startswith("That is 0.2 % of the paper's optimisation steps") and note.endswith("No more fits here.")
    assert report.budget_note(full, "No more fits here.") == ("It is trained with the paper's budget "
                                                              "(100 epochs of 10,000 images).")
    table = report.departures_table(short)
    assert list(table.columns) == ["this run", "the paper"]
    assert table.loc["encoder", "the paper"] == "resnet18" and table.loc["batch size", "this run"] == "16"
    assert table.loc["training budget", "this run"] == "4 epochs x 256 images = 64 steps"
    assert "short budget" not in report.departures_table(full).index


def test_value_text_reads_one_configuration_and_refuses_a_missing_one():
    summary = pd.DataFrame({"label": ["VAE", "VAE"], "metric": ["pixel_auroc"] * 2, "group": ["all", "brick"],
                            "value": [0.7431, 0.8], "ci_low": [0.70, 0.75], "ci_high": [0.78, 0.85]})
    assert report.value_text(summary, "VAE", "pixel_auroc") == "74.3 [70.0, 78.0] %"
    with pytest.raises(PadimError, match="no pro of 'VAE'"):
        report.value_text(summary, "VAE", "pro")
