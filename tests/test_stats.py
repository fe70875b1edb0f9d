"""Statistics on hand-made result rows whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from padim_lib.errors import PadimError
from padim_lib.paper.stats import (
    compare_published,
    diff_ci,
    percentile_ci,
    seed_values,
    sem,
    sem_ci,
    summarise,
)

KINDS = {"tex": "texture", "obj": "object", "obj2": "object"}
B = 200


def make_rows(spec: dict, metric: str = "pixel_auroc") -> pd.DataFrame:
    """spec: {label: {category: (full, replicates array)}} or {label: {seed: {category: (...)}}}."""
    out = []
    for label, per in spec.items():
        seeded = all(isinstance(k, int) for k in per)
        for seed, classes in (per.items() if seeded else [(0, per)]):
            for cat, (full, reps) in classes.items():
                for r, v in [(-1, full)] + list(enumerate(reps)):
                    out.append(
                        dict(category=cat, kind=KINDS[cat], config_key=f"{label}-{seed}", label=label,
                             published_row=label, seed=seed, metric=metric, value=float(v), replicate=r)
                    )
    return pd.DataFrame(out)


def test_sem_matches_definition():
    x = [1.0, 2.0, 3.0, 4.0]
    assert sem(x) == pytest.approx(np.std(x, ddof=1) / 2.0)
    assert np.isnan(sem([0.5]))


def test_sem_ci_covers_true_sem_at_nominal_rate():
    rng = np.random.default_rng(0)
    true_sem = 1.0 / np.sqrt(5)
    hits = 0
    for _ in range(2000):
        lo, hi = sem_ci(rng.normal(size=5), 0.9)
        hits += lo <= true_sem <= hi
    assert 0.87 < hits / 2000 < 0.93


def test_percentile_ci_known_values():
    lo, hi = percentile_ci(np.arange(101) / 100.0, 0.95)
    assert (lo, hi) == pytest.approx((0.025, 0.975))
    with pytest.raises(PadimError, match="level"):
        percentile_ci([0.1], 1.5)


def test_summarise_groups_use_the_same_replicates():
    rng = np.random.default_rng(1)
    reps = {c: rng.uniform(0.8, 1.0, B) for c in KINDS}
    rows = make_rows({"A": {c: (0.9 + i / 100, reps[c]) for i, c in enumerate(KINDS)}})
    s = summarise(rows).set_index("group")
    assert list(s.index) == ["tex", "obj", "obj2", "textures", "objects", "all"]
    assert s.loc["all", "value"] == pytest.approx(np.mean([0.90, 0.91, 0.92]))
    assert s.loc["objects", "value"] == pytest.approx(np.mean([0.91, 0.92]))
    # the group's replicate b is the mean of the classes' replicate b (not independent draws)
    all_reps = (reps["tex"] + reps["obj"] + reps["obj2"]) / 3
    assert (s.loc["all", "ci_low"], s.loc["all", "ci_high"]) == pytest.approx(np.quantile(all_reps, [0.025, 0.975]))
    assert (s.loc["obj", "ci_low"], s.loc["obj", "ci_high"]) == pytest.approx(np.quantile(reps["obj"], [0.025, 0.975]))
    assert s.loc["all", "scope"] == "aggregate" and s.loc["tex", "scope"] == "class"
    assert s.loc["all", "n_classes"] == 3 and s.loc["all", "n_replicates"] == B
    assert np.isnan(s.loc["all", "seed_sem"]) and s.loc["all", "n_seeds"] == 1


def test_summarise_seeded_config_mean_and_sem_over_seeds():
    rng = np.random.default_rng(2)
    fulls = {0: 0.90, 1: 0.92, 2: 0.97}
    spec = {"Rd": {s: {"tex": (f, rng.uniform(0, 1, B)), "obj": (f + 0.02, rng.uniform(0, 1, B))} for s, f in fulls.items()}}
    s = summarise(make_rows(spec)).set_index("group")
    group_means = [f + 0.01 for f in fulls.values()]
    assert s.loc["all", "value"] == pytest.approx(np.mean(group_means))
    assert s.loc["all", "seed_sem"] == pytest.approx(np.std(group_means, ddof=1) / np.sqrt(3))
    assert s.loc["tex", "seed_sem"] == pytest.approx(np.std(list(fulls.values()), ddof=1) / np.sqrt(3))
    assert s.loc["all", "n_seeds"] == 3


def test_two_configs_under_one_label_are_an_error():
    rows = make_rows({"A": {"tex": (0.9, [0.9])}})
    with pytest.raises(PadimError, match="share this label"):
        summarise(pd.concat([rows, rows.assign(config_key="other")]))


def test_paired_difference_is_narrow_when_unpaired_intervals_overlap():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.80, 0.95, B)  # large resampling spread, shared by both configurations
    rows = make_rows({"A": {"tex": (0.885, base + 0.005)}, "B": {"tex": (0.88, base)}})
    s = summarise(rows).set_index(["label", "group"])
    # unpaired: the two intervals overlap almost entirely
    assert s.loc[("A", "all"), "ci_low"] < s.loc[("B", "all"), "ci_high"]
    d = diff_ci(rows, "A", "B", "pixel_auroc", "all")
    assert d["diff"] == pytest.approx(0.005)
    assert d["ci_low"] == pytest.approx(0.005) and d["ci_high"] == pytest.approx(0.005)
    assert d["n_replicates"] == B and d["n_classes"] == 1


def test_diff_uses_shared_classes_only_and_reports_missing():
    rng = np.random.default_rng(4)
    r = rng.uniform(0.8, 1.0, B)
    rows = make_rows({"A": {"tex": (0.9, r), "obj": (0.5, r)}, "B": {"tex": (0.8, r)}})
    d = diff_ci(rows, "A", "B", "pixel_auroc", "all")
    assert d["n_classes"] == 1 and d["diff"] == pytest.approx(0.1)
    with pytest.raises(PadimError, match="no rows"):
        diff_ci(rows, "A", "C", "pixel_auroc")


def test_compare_published_in_percent():
    rng = np.random.default_rng(8)
    rows = make_rows({"Layer 1": {"tex": (0.931, rng.uniform(0.9, 0.95, B)), "obj": (0.956, rng.uniform(0.9, 1, B))}})
    s = summarise(rows, by="published_row")
    c = compare_published(s, "Table I").set_index("group")
    assert c.loc["textures", "published"] == pytest.approx(93.1)
    assert c.loc["textures", "reproduced"] == pytest.approx(93.1)
    assert c.loc["all", "difference"] == pytest.approx(np.mean([93.1, 95.6]) - 94.8)
    assert np.isnan(c.loc["tex", "published"])  # class rows have no published figure in Table I


def test_seed_values_are_the_full_set_group_value_per_seed():
    spec = {"Rd": {s: {"tex": (0.90 + s / 100, [0.5] * 3), "obj": (0.80, [0.5] * 3)} for s in range(3)}}
    v = seed_values(make_rows(spec), "Rd", "pixel_auroc", "all")
    assert list(v.index) == [0, 1, 2]
    assert v.to_numpy() == pytest.approx([0.85, 0.855, 0.86])
    with pytest.raises(PadimError, match="no rows"):
        seed_values(make_rows(spec), "PCA", "pixel_auroc")
