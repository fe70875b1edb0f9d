"""Figures of the detection, non-aligned and STC chapters (the tables' figures are in padim_lib.report.plots)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from padim_lib.report.plots import metric_label, overlays


def nonaligned_figure(run: Any, metric: str = "pixel_auroc") -> Figure:
    """Per class and "all": each method's value on the aligned data (filled) and on every
    non-aligned version (open), in percent. `run`: the non-aligned study's paper.run.StudyRun."""
    labels = run.labels()
    aligned = run.summary("aligned")
    aligned = aligned[aligned["metric"] == metric]
    groups = [g for g in dict.fromkeys(aligned["group"]) if g in run.classes] + ["all"]
    versions = {v: run.summary(v) for v in run.version_names()}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 3), 3.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(len(labels), 1)
    for k, label in enumerate(labels):
        color = colors[k % len(colors)]
        for i, group in enumerate(groups):
            x = i - 0.4 + width * (k + 0.5)
            hit = aligned[(aligned["label"] == label) & (aligned["group"] == group)]
            if len(hit):
                ax.plot(x, 100 * hit["value"].iloc[0], "o", color=color, label=label if i == 0 else None)
            vals = [s[(s["label"] == label) & (s["group"] == group) & (s["metric"] == metric)]["value"]
                    for s in versions.values()]
            vals = np.array([100 * float(v.iloc[0]) for v in vals if len(v)])
            ax.plot(np.full(len(vals), x), vals, "o", mfc="none", color=color, ms=5)
    ax.plot([], [], "o", mfc="none", color="grey", label="non-aligned versions")
    ax.set_xticks(range(len(groups)), groups)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel(f"{metric_label(metric)} (%)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def scene_figure(summary: Any, labels: list[str], published: Any, metrics: tuple[str, ...]) -> Figure:
    """One panel per metric: each configuration's value per STC scene and the mean over scenes
    ("all"), with 95 % intervals; the paper's means as black crosses."""
    from padim_lib.report.plots import points_with_ci

    groups = [g for g in dict.fromkeys(summary["group"]) if g != "other"]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(7.0, 0.6 * len(groups) + 3), 3.2 * len(metrics)),
                             squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        sub = summary[(summary["metric"] == metric) & summary["group"].isin(groups)]
        pub = published[published["metric"] == metric] if published is not None and len(published) else None
        points_with_ci(sub, x="group", hue="label", published=pub, order=groups, hue_order=labels, ax=ax,
                       ylabel=f"{metric_label(metric)} (%)")
        ax.set_xlabel("scene")
    fig.tight_layout()
    return fig


def maps_figure(art: Mapping[str, Any], suptitle: str = "") -> Figure:
    """A task's example test images over their anomaly maps (one colour scale for the row), the
    ground truth outlined, each titled with its defect type and image score. `art`: the task's
    stored arrays (example_images (N,H,W,3) uint8, example_maps (N,H,W), example_masks (N,H,W),
    example_index (N,) into defect_types and scores)."""
    titles = [f"{art['defect_types'][i]}, score {float(art['scores'][i]):.1f}" for i in art["example_index"]]
    # given no figure, overlays draws a new one
    return cast(Figure, overlays(images=art["example_images"].astype("float32") / 255.0,
                                 maps=art["example_maps"].astype("float32"), masks=art["example_masks"],
                                 titles=titles, suptitle=suptitle))
