"""Figures of the method comparison and of the complexity chapter (matplotlib; no computation).

Inputs come from padim_lib.paper.baselines (`side_by_side`, `reconstructions`, a run's loss-curve
artifacts) and padim_lib.paper.complexity (`scaling` frames). Images: float (k, H, W, 3) in [0, 1];
maps and masks (k, H, W).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure, SubFigure


def side_by_side_figure(images: np.ndarray, masks: np.ndarray, maps: Mapping[str, np.ndarray],
                        titles: Sequence[str] = (), suptitle: str = "",
                        fig: Figure | SubFigure | None = None) -> Figure | SubFigure:
    """Rows: test images; columns: the image with its ground truth (red), then each method's map.

    Each map is scaled to its own method's range over the shown images (methods measure different
    distances), so a column compares images, a row compares where each method looks.
    `fig`: draw into this (sub)figure instead of a new one (see `side_by_side_grid`).
    """
    k, names = len(images), list(maps)
    if any(len(m) != k for m in maps.values()) or len(masks) != k:
        raise ValueError(f"side_by_side_figure: {k} images, masks {len(masks)}, maps {[len(m) for m in maps.values()]}")
    if fig is None:
        fig = plt.figure(figsize=_side_by_side_size(k, len(names)), layout="constrained")
    axes = fig.subplots(k, 1 + len(names), squeeze=False)
    for i in range(k):
        axes[i, 0].imshow(images[i])
        if np.asarray(masks[i]).any():
            axes[i, 0].contour(np.asarray(masks[i]) > 0, levels=[0.5], colors="red", linewidths=1.0)
        axes[i, 0].set_ylabel(titles[i] if i < len(titles) else "", fontsize="small")
        for j, name in enumerate(names, start=1):
            m = np.asarray(maps[name], np.float32)
            axes[i, j].imshow(images[i])
            axes[i, j].imshow(m[i], cmap="jet", alpha=0.5, vmin=float(m.min()), vmax=float(m.max()))
    for j, name in enumerate(["image, truth", *names]):
        axes[0, j].set_title(name, fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def _side_by_side_size(rows: int, methods: int) -> tuple[float, float]:
    return 2.0 * (1 + methods), 2.0 * rows + 0.4


def side_by_side_grid(blocks: Mapping[str, Mapping]) -> Figure:
    """`side_by_side_figure` for several classes in one figure: one subfigure per class, titled with
    its name, stacked. blocks: class -> keyword arguments of `side_by_side_figure` (images, masks,
    maps, titles), e.g. padim_lib.paper.baselines.side_by_side(run, class)."""
    if not blocks:
        raise ValueError("side_by_side_grid: no classes to draw")
    methods = max(len(b["maps"]) for b in blocks.values())
    heights = [_side_by_side_size(len(b["images"]), methods)[1] for b in blocks.values()]
    fig = plt.figure(figsize=(_side_by_side_size(1, methods)[0], sum(heights)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(blocks), 1, height_ratios=heights))
    for sub, (name, kwargs) in zip(subfigs, blocks.items(), strict=True):
        side_by_side_figure(**kwargs, suptitle=name, fig=sub)
    return fig


def reconstruction_figure(inputs: np.ndarray, outputs: np.ndarray, titles: Sequence[str] = (),
                          suptitle: str = "") -> Figure:
    """Two rows: the VAE's inputs and its reconstructions."""
    k = len(inputs)
    fig, axes = plt.subplots(2, k, figsize=(2.0 * k + 0.6, 4.4), squeeze=False, layout="constrained")
    for j in range(k):
        axes[0, j].imshow(inputs[j])
        axes[1, j].imshow(outputs[j])
        if j < len(titles):
            axes[0, j].set_title(titles[j], fontsize="small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("reconstruction")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def loss_figure(curves: Mapping[str, np.ndarray], ylabel: str = "loss per image", xlabel: str = "epoch") -> Figure:
    """One line per curve (e.g. per class: the VAE's mean training loss per epoch, artifact
    "loss_epoch_loss", or per optimisation step, "loss_step_loss" with xlabel="step"), log y axis."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for name, values in curves.items():
        values = np.asarray(values, np.float64)
        marker = "o" if len(values) <= 50 else None  # a per-step curve is a line
        ax.plot(np.arange(1, len(values) + 1), values, marker=marker, markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    if curves:
        ax.legend(fontsize="small")
    return fig


def scaling_figure(frame: pd.DataFrame, factor: str, *, quantities: Sequence[str] = ("fit_s", "predict_s", "memory_mb"),
                   expected: str = "expected_mb") -> Figure:
    """Measured fit time, predict time and model memory against `factor` (d, n_train or image size),
    medians with their min-max spread, log-log. Dashed: the positions x d^2 law; in bytes (x 4 B)
    for memory, and for the times proportional to it (x n_train for fitting), drawn through the
    largest measurement, so a measured slope below it shows costs that do not grow with d."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    labels = {"fit_s": "fit time (s)", "predict_s": "predict time per image (s)", "memory_mb": "model memory (MB)"}
    fig, axes = plt.subplots(1, len(quantities), figsize=(4.0 * len(quantities), 3.4), squeeze=False,
                             layout="constrained")
    x = frame[factor].to_numpy(float)
    law = frame[expected].to_numpy(float) if expected in frame else None
    for ax, q in zip(axes[0], quantities, strict=True):
        y = frame[q].to_numpy(float)
        lo = frame[f"{q}_min"].to_numpy(float) if f"{q}_min" in frame else y
        hi = frame[f"{q}_max"].to_numpy(float) if f"{q}_max" in frame else y
        ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label="measured (median, min-max)")
        if law is not None:
            if q == "memory_mb":
                ref, text = law, "positions × (d² + d) × 4 B"
            else:
                ref = law * (frame["n_train"].to_numpy(float) if q == "fit_s" else 1.0)
                ref, text = ref * y[-1] / ref[-1], "∝ positions × d²" + (" × n" if q == "fit_s" else "")
            ax.plot(x, ref, "k--", label=text)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(x)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(factor)
        ax.set_ylabel(labels.get(q, q))
        ax.legend(fontsize="x-small")
    return fig
