"""Statistics on hand-made result rows whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from padim_lib.errors import PadimError
from padim_lib.stats import (
    compare_published,
    diff_ci,
    evaluate_claims,
    percentile_ci,
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


def _claim(**kw):
    base = dict(id="c", quote="q", source="s", table="Table I", metric="pixel_auroc", group="all", kind="direction")
    return base | kw


def test_claim_verdicts():
    rng = np.random.default_rng(5)
    base = rng.uniform(0.85, 0.95, B)
    noise = rng.normal(0, 0.01, B)
    small = rng.normal(0, 0.002, B)
    rows = make_rows({
        "Layer 1": {"tex": (0.90, base), "obj": (0.90, base)},
        "Layer 2": {"tex": (0.92, base + 0.02 + small), "obj": (0.92, base + 0.02 + small)},
        "Layer 3": {"tex": (0.90, base + noise), "obj": (0.90, base + noise)},
    })
    claims = [
        _claim(id="holds", test="greater", a="Layer 2", b="Layer 1"),
        _claim(id="fails", test="greater", a="Layer 1", b="Layer 2"),
        _claim(id="unsure", test="greater", a="Layer 3", b="Layer 1"),
        _claim(id="best2", test="best", target="Layer 2", among=["Layer 1", "Layer 2", "Layer 3"]),
        _claim(id="best1", test="best", target="Layer 1", among=["Layer 1", "Layer 2", "Layer 3"]),
        _claim(id="each", test="beats_each", a="Layer 2", others=["Layer 1", "Layer 3"]),
        _claim(id="each-unsure", test="beats_each", a="Layer 3", others=["Layer 1"]),
        _claim(id="each-fails", test="beats_each", a="Layer 3", others=["Layer 1", "Layer 2"]),
        _claim(id="gap-ok", test="difference", a="Layer 2", b="Layer 1", value_pp=2.0, kind="magnitude"),
        _claim(id="gap-bad", test="difference", a="Layer 2", b="Layer 1", value_pp=1.1, kind="magnitude"),
        _claim(id="atleast", test="greater", a="Layer 2", b="Layer 1", min_diff_pp=1.3, kind="magnitude"),
        _claim(id="missing", test="greater", a="Layer 2", b="PaDiM-R18"),
        _claim(id="nopro", test="greater", a="Layer 2", b="Layer 1", metric="pro"),
    ]
    v = evaluate_claims(rows, claims).set_index("id")
    assert v.loc["holds", "verdict"] == "holds"
    assert v.loc["holds", "reproduced"] == pytest.approx(2.0)  # p.p.
    assert v.loc["fails", "verdict"] == "does not hold"
    assert v.loc["unsure", "verdict"] == "inconclusive"
    assert v.loc["best2", "verdict"] == "holds"
    assert v.loc["best1", "verdict"] == "does not hold"
    # Layer 3 = Layer 1 + N(0, 0.01) per replicate: its margin over Layer 1 straddles 0
    assert v.loc["each", "verdict"] == "holds"
    assert v.loc["each-unsure", "verdict"] == "inconclusive"
    assert v.loc["each-fails", "verdict"] == "does not hold"
    assert v.loc["gap-ok", "verdict"] == "holds" and v.loc["gap-bad", "verdict"] == "does not hold"
    assert v.loc["atleast", "verdict"] == "holds"
    assert v.loc["missing", "verdict"] == "not tested" and "PaDiM-R18" in v.loc["missing", "note"]
    assert v.loc["nopro", "verdict"] == "not tested"
    # published statistics come from the paper's table: Layer 2 - Layer 1 = 95.7 - 94.8
    assert v.loc["holds", "published"] == pytest.approx(0.9)
    assert v.loc["best2", "paper_table"] == "tie"  # Layer 2 and Layer 3 are both 95.7 (all)

    nc = evaluate_claims(rows, claims, comparable=False).set_index("id")
    assert nc.loc["gap-ok", "verdict"] == "not comparable" and nc.loc["atleast", "verdict"] == "not comparable"
    assert nc.loc["gap-ok", "reproduced"] == pytest.approx(2.0)  # still shown
    assert nc.loc["holds", "verdict"] == "holds"  # direction claims are still tested


def test_seed_sem_claim():
    rng = np.random.default_rng(6)
    tiny = {s: {"tex": (0.9 + 1e-6 * rng.normal(), [0.9] * 5)} for s in range(10)}
    big = {s: {"tex": (0.9 + 1e-2 * rng.normal(), [0.9] * 5)} for s in range(10)}
    rows = pd.concat([make_rows({"Rd 100": tiny}), make_rows({"Rd 200": big})])
    claim = dict(test="seed_sem_between", low=1e-7, high=1e-4, table="Table II", kind="magnitude")
    claims = [_claim(id="tiny", config="Rd 100", **claim), _claim(id="big", config="Rd 200", **claim)]
    v = evaluate_claims(rows, claims).set_index("id")
    assert v.loc["tiny", "verdict"] == "holds" and 1e-7 < v.loc["tiny", "reproduced"] < 1e-4
    assert v.loc["big", "verdict"] == "does not hold"
    assert v.loc["tiny", "ci_low"] < v.loc["tiny", "reproduced"] < v.loc["tiny", "ci_high"]


def test_shipped_claims_run_on_rows_named_like_the_paper():
    rng = np.random.default_rng(7)
    base = rng.uniform(0.85, 0.95, B)
    names = {"Layer 1": 0.90, "Layer 2": 0.91, "Layer 3": 0.92, "Layer 1+2+3": 0.93, "PaDiM-R18": 0.95,
             "PCA 100": 0.90, "PCA 200": 0.91}
    spec = {n: {"tex": (v, base + v), "obj": (v, base + v)} for n, v in names.items()}
    spec |= {f"Rd {d}": {s: {"tex": (0.94 + 1e-6 * s, base + 0.94), "obj": (0.94, base + 0.94)} for s in range(3)} for d in (100, 200)}
    rows = pd.concat([make_rows(spec), make_rows(spec, "pro")])
    v = evaluate_claims(rows, comparable=False)
    assert len(v) >= 15 and v["id"].is_unique
    assert set(v["verdict"]) <= {"holds", "does not hold", "inconclusive", "not comparable", "not tested"}
    d = v.set_index("id")
    assert d.loc["layer3-best-auroc", "verdict"] == "holds"
    assert d.loc["layer2-better-pro-than-layer3", "verdict"] == "does not hold"  # by construction here
    assert d.loc["rd100-beats-pca100-auroc", "verdict"] == "holds"
    assert (v.loc[v["kind"] == "magnitude", "verdict"] == "not comparable").all()


def test_compare_published_in_percent():
    rng = np.random.default_rng(8)
    rows = make_rows({"Layer 1": {"tex": (0.931, rng.uniform(0.9, 0.95, B)), "obj": (0.956, rng.uniform(0.9, 1, B))}})
    s = summarise(rows, by="published_row")
    c = compare_published(s, "Table I").set_index("group")
    assert c.loc["textures", "published"] == pytest.approx(93.1)
    assert c.loc["textures", "reproduced"] == pytest.approx(93.1)
    assert c.loc["all", "difference"] == pytest.approx(np.mean([93.1, 95.6]) - 94.8)
    assert np.isnan(c.loc["tex", "published"])  # class rows have no published figure in Table I


# ----------------------------------------------------------------------------- fast bootstrap engines
def _pixel_case(seed: int, quant: float | None, dtype=np.float32, n: int = 12, h: int = 20):
    """Random test set: a third good images, defective ones with 1-3 rectangles; quant > 0 makes ties."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, h, h), np.uint8)
    for i in range(n // 3, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, h - 4, 2)
            masks[i, y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = 1
    maps = rng.normal(size=(n, h, h)) + masks * rng.uniform(0, 2)
    if quant:
        maps = np.round(maps * quant) / quant
    return masks, maps.astype(dtype)


@pytest.mark.parametrize("quant", [None, 2.0, 8.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bootstrap_pixel_metrics_equal_pixel_scores(quant, dtype):
    from padim_lib.metrics import PixelScores
    from padim_lib.stats import BootstrapPixelMetrics

    rng = np.random.default_rng(11)
    for seed in range(4):
        masks, maps = _pixel_case(seed, quant, dtype)
        ref = PixelScores(masks, maps)
        for checkpoints, limit in ((1, 0.3), (7, 0.3), (128, 0.05), (7, 1.0)):
            fast = BootstrapPixelMetrics(masks, maps, fpr_limit=limit, checkpoints=checkpoints)
            for k in range(6):
                w = np.ones(len(maps), int) if k == 0 else np.bincount(rng.integers(0, len(maps), len(maps)), minlength=len(maps))
                if w @ masks.reshape(len(maps), -1).sum(1) == 0:
                    continue  # no defect pixel drawn: undefined for both
                assert fast.pixel_auroc(w) == pytest.approx(ref.pixel_auroc(w), abs=1e-12)
                assert fast.pro_auc(w) == pytest.approx(ref.pro_auc(w, fpr_limit=limit), abs=1e-12)


def test_bootstrap_pixel_metrics_curves():
    from sklearn.metrics import roc_curve

    from padim_lib.metrics import PixelScores
    from padim_lib.stats import BootstrapPixelMetrics

    masks, maps = _pixel_case(3, 4.0)
    fast = BootstrapPixelMetrics(masks, maps)
    fpr, tpr, _ = roc_curve(masks.ravel(), maps.ravel(), drop_intermediate=False)
    got = fast.roc_curve()
    np.testing.assert_allclose(got[0], fpr, atol=1e-12)
    np.testing.assert_allclose(got[1], tpr, atol=1e-12)
    for a, b in zip(fast.pro_curve(), PixelScores(masks, maps).pro_curve(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-12)
    with pytest.raises(PadimError, match="image_weights"):
        fast.pixel_auroc(np.ones(3))
    with pytest.raises(PadimError, match="defect"):
        BootstrapPixelMetrics(np.zeros_like(masks), maps)


def test_bootstrap_image_auroc_equals_sklearn_weights():
    from padim_lib.metrics import image_auroc
    from padim_lib.stats import BootstrapImageAUROC

    rng = np.random.default_rng(12)
    labels = np.r_[np.zeros(7, int), np.ones(9, int)]
    scores = np.round(rng.normal(size=16) + labels, 1)  # ties included
    fast = BootstrapImageAUROC(labels, scores)
    assert fast.auroc() == pytest.approx(image_auroc(labels, scores))
    for _ in range(20):
        w = np.r_[np.bincount(rng.integers(0, 7, 7), minlength=7), np.bincount(rng.integers(0, 9, 9), minlength=9)]
        assert fast.auroc(w) == pytest.approx(image_auroc(labels, scores, sample_weight=w), abs=1e-12)
