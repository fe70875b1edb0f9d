"""Figures shared by the book's notebooks (matplotlib + seaborn; no computation a test could not see).

Metric values come in as fractions (0..1) and are shown in percent, like the paper's tables.
Every function draws into a new figure or the given `ax` and returns it, so notebooks stay one call
per figure. Images: float arrays in [0, 1], (H, W, 3) or (3, H, W); maps and masks: (H, W).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.patches import Ellipse

METRIC_NAMES = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pro": "PRO (FPR ≤ 0.3)"}
GROUPS = ("textures", "objects", "all")


def setup() -> None:
    """The book's plotting style (call once per notebook)."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.bbox": "tight", "axes.titlesize": "medium"})


def metric_label(metric: str) -> str:
    return METRIC_NAMES.get(metric, metric)


def _as_hwc(image: np.ndarray) -> np.ndarray:
    """(3, H, W) or (H, W, 3) or (H, W) -> (H, W, 3) / (H, W) float in [0, 1]."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return np.clip(a, 0.0, 1.0)


# ----------------------------------------------------------------------------- results


def _whiskers(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(2, n) error-bar lengths; a missing bound draws no whisker. A percentile interval need not
    contain the full-set value, hence the clip at 0 (matplotlib refuses negative lengths)."""
    return np.vstack([np.nan_to_num(values - low).clip(0), np.nan_to_num(high - values).clip(0)])


def points_with_ci(
    df: pd.DataFrame,
    *,
    x: str,
    hue: str,
    value: str = "value",
    low: str | None = "ci_low",
    high: str | None = "ci_high",
    published: pd.DataFrame | None = None,
    order: Sequence[str] | None = None,
    hue_order: Sequence[str] | None = None,
    ax: Axes | None = None,
    ylabel: str = "",
) -> Axes:
    """Dodged points with 95 % interval whiskers, one colour per `hue`; values in %.

    df: one row per (x, hue) with `value` (fraction) and optional `low`/`high` interval bounds.
    published: rows (x, hue, value) drawn as black crosses at the same positions.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.9 * df[x].nunique() + 3), 3.6))
    order = list(order) if order is not None else list(dict.fromkeys(df[x]))
    hue_order = list(hue_order) if hue_order is not None else list(dict.fromkeys(df[hue]))
    width = 0.8
    step = width / max(len(hue_order), 1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, h in enumerate(hue_order):
        sub = df[df[hue] == h].set_index(x)
        xs, ys, los, his = [], [], [], []
        for i, name in enumerate(order):
            if name not in sub.index:
                continue
            row = sub.loc[name]
            xs.append(i - width / 2 + step * (k + 0.5))
            ys.append(100 * float(row[value]))
            los.append(100 * float(row[low]) if low and low in sub.columns and pd.notna(row[low]) else np.nan)
            his.append(100 * float(row[high]) if high and high in sub.columns and pd.notna(row[high]) else np.nan)
        ys_a, lo_a, hi_a = np.array(ys), np.array(los), np.array(his)
        yerr = _whiskers(ys_a, lo_a, hi_a) if len(ys) else None
        ax.errorbar(xs, ys, yerr=yerr, fmt="o", ms=5, capsize=3, color=colors[k % len(colors)], label=str(h))
        if published is not None and len(published):
            pub = published[published[hue] == h].set_index(x)
            px = [i - width / 2 + step * (k + 0.5) for i, n in enumerate(order) if n in pub.index]
            py = [100 * float(pub.loc[n, value]) for n in order if n in pub.index]
            ax.scatter(px, py, marker="x", color="black", s=30, zorder=5,
                       label="published" if k == 0 else None)
    ax.set_xticks(range(len(order)), order, rotation=30 if len(order) > 6 else 0, ha="right" if len(order) > 6 else "center")
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylabel(ylabel or "%")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return ax


def per_class_figure(
    summary: pd.DataFrame,
    metrics: Sequence[str],
    *,
    class_col: str = "category",
    label_col: str = "label",
    published: pd.DataFrame | None = None,
    labels: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
) -> Figure:
    """One panel per metric: reproduced value per class (and group) and configuration, with CIs.

    summary: columns class_col, label_col, metric, value, ci_low, ci_high (fractions).
    published: columns class_col, label_col, metric, value (e.g. the paper's group means).
    """
    n_x = len(classes) if classes is not None else summary[class_col].nunique()
    fig, axes = plt.subplots(len(metrics), 1, figsize=(max(9.0, 0.6 * n_x + 3), 3.4 * len(metrics)), squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        sub = summary[summary["metric"] == metric]
        pub = published[published["metric"] == metric] if published is not None else None
        points_with_ci(sub, x=class_col, hue=label_col, published=pub, order=classes, hue_order=labels,
                       ax=ax, ylabel=f"{metric_label(metric)} (%)")
        ax.set_xlabel("")
    fig.tight_layout()
    return fig


def roc_curve_ax(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, ax: Axes | None = None,
                 title: str = "", xlabel: str = "false positive rate", ylabel: str = "true positive rate") -> Axes:
    """ROC curves (fpr, tpr) per label, with the chance diagonal."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    for label, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=str(label), lw=1.4)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel=xlabel, ylabel=ylabel, title=title)
    ax.set_aspect("equal")
    return ax


def pro_curve_ax(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, fpr_limit: float = 0.3,
                 ax: Axes | None = None, title: str = "") -> Axes:
    """PRO against FPR per label, up to `fpr_limit` (the part PRO's AUC integrates), limit marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    for label, (fpr, pro) in curves.items():
        fpr, pro = np.asarray(fpr), np.asarray(pro)
        keep = fpr <= min(1.0, fpr_limit * 1.1)
        ax.plot(fpr[keep], pro[keep], label=str(label), lw=1.4)
    ax.axvline(fpr_limit, ls=":", color="grey", lw=1)
    ax.set(xlim=(0, min(1.0, fpr_limit * 1.1)), ylim=(0, 1.01), xlabel="false positive rate",
           ylabel="per-region overlap", title=title)
    return ax


def curve_grid(
    curves: Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]], kind: str = "roc", *,
    fpr_limit: float = 0.3, ncols: int = 4, title: str = "",
) -> Figure:
    """One panel per class: curves[class][label] = (x, y); kind 'roc', 'pixel_roc' or 'pro'."""
    if kind not in ("roc", "pixel_roc", "pro"):
        raise ValueError(f"kind: expected 'roc', 'pixel_roc' or 'pro', got {kind!r}")
    n = max(len(curves), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, (cls, per_label) in zip(axes.flat, curves.items(), strict=False):
        if kind == "pro":
            pro_curve_ax(per_label, fpr_limit=fpr_limit, ax=ax, title=cls)
        else:
            roc_curve_ax(per_label, ax=ax, title=cls, ylabel="true positive rate" if kind == "roc" else "pixel TPR")
    for ax in list(axes.flat)[len(curves):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1 / nrows, 1, 1))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize="small", frameon=False)
    return fig


def overlays(
    images: Sequence[np.ndarray] | np.ndarray,
    maps: Sequence[np.ndarray] | np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray | None = None,
    *,
    titles: Sequence[str] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    alpha: float = 0.5,
    suptitle: str = "",
    fig: Figure | SubFigure | None = None,
    ncols: int | None = None,
) -> Figure | SubFigure:
    """Columns = test images; rows: image with the ground truth outlined (red), anomaly map overlay.

    One colour scale for all maps of the figure (vmin/vmax default to their range), so brighter
    means more anomalous across the row, as the image score (max of the map) does.
    `fig`: draw into this (sub)figure instead of a new one; `ncols` (>= the number of images) keeps
    the columns of stacked subfigures the same width.
    """
    n = len(images)
    if len(maps) != n or (masks is not None and len(masks) != n):
        raise ValueError(f"overlays: got {n} images, {len(maps)} maps and {None if masks is None else len(masks)} masks")
    cols = max(n, ncols or 0)
    maps_a = [np.asarray(m, dtype=np.float32) for m in maps]
    lo = float(min(m.min() for m in maps_a)) if vmin is None else vmin
    hi = float(max(m.max() for m in maps_a)) if vmax is None else vmax
    if fig is None:
        fig = plt.figure(figsize=(2.2 * cols + 1.0, 4.8), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    im = None
    for j in range(n):
        img = _as_hwc(images[j])
        ax = axes[0, j]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        if masks is not None and np.asarray(masks[j]).any():
            ax.contour(np.asarray(masks[j]) > 0, levels=[0.5], colors="red", linewidths=1.0)
        if titles is not None:
            ax.set_title(titles[j], fontsize="small")
        ax = axes[1, j]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        im = ax.imshow(maps_a[j], cmap="jet", alpha=alpha, vmin=lo, vmax=hi)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    for ax in axes[:, n:].flat:  # padding columns of a stacked subfigure
        ax.set_visible(False)
    axes[0, 0].set_ylabel("image, truth")
    axes[1, 0].set_ylabel("anomaly map")
    if im is not None:  # an opaque colour bar: the overlay's alpha would wash it out
        bar = plt.cm.ScalarMappable(norm=im.norm, cmap=im.cmap)
        fig.colorbar(bar, ax=axes[1, :n].tolist(), shrink=0.8, label="Mahalanobis distance")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def overlay_grid(examples: Mapping[str, Mapping], *, title: str = "") -> Figure:
    """`overlays` for several classes in one figure: one subfigure (two rows) per class, titled
    with its name, each with its own colour scale (distances of different classes' models differ).

    examples: class -> keyword arguments of `overlays` (images, maps, masks, titles), e.g. StudyRun.examples.
    """
    if not examples:
        raise ValueError("overlay_grid: no classes to draw")
    cols = max(len(e["images"]) for e in examples.values())
    fig = plt.figure(figsize=(2.2 * cols + 1.0, 4.6 * len(examples)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(examples), 1))
    for sub, (name, kwargs) in zip(subfigs, examples.items(), strict=True):
        overlays(**kwargs, fig=sub, ncols=cols, suptitle=name)
    if title:
        fig.suptitle(title, fontweight="bold")
    return fig


def difference_figure(
    comparison: pd.DataFrame, *, row_col: str = "row", group_col: str = "group", metric_col: str = "metric",
) -> Figure:
    """Reproduced minus published, in p.p., per (row, group), one panel per metric, with 95 % CIs.

    comparison: columns row_col, group_col, metric_col, diff, diff_low, diff_high (percentage points).
    """
    metrics = list(dict.fromkeys(comparison[metric_col]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 0.45 * comparison[row_col].nunique() * 3 + 1.2),
                             squeeze=False, sharey=True)
    rows = list(dict.fromkeys(comparison[row_col]))
    groups = list(dict.fromkeys(comparison[group_col]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics, strict=True):
        sub = comparison[comparison[metric_col] == metric]
        for k, g in enumerate(groups):
            s = sub[sub[group_col] == g].set_index(row_col)
            ys = [i + (k - (len(groups) - 1) / 2) * 0.22 for i, r in enumerate(rows) if r in s.index]
            xs = np.array([float(s.loc[r, "diff"]) for r in rows if r in s.index])
            lo = np.array([float(s.loc[r, "diff_low"]) if "diff_low" in s.columns else np.nan for r in rows if r in s.index])
            hi = np.array([float(s.loc[r, "diff_high"]) if "diff_high" in s.columns else np.nan for r in rows if r in s.index])
            xerr = _whiskers(xs, lo, hi) if len(xs) else None
            ax.errorbar(xs, ys, xerr=xerr, fmt="o", ms=4, capsize=2, color=colors[k % len(colors)], label=str(g))
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), rows)
        ax.invert_yaxis()
        ax.set_xlabel("reproduced − published (p.p.)")
        ax.set_title(metric_label(metric))
    axes[0, -1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- the method, taught


def feature_maps_figure(image: np.ndarray, features: Mapping[str, np.ndarray], *, n_channels: int = 4) -> Figure:
    """The input and, per layer, its first `n_channels` channels (features[layer]: (C, h, w))."""
    rows = len(features)
    fig, axes = plt.subplots(rows, n_channels + 1, figsize=(1.9 * (n_channels + 1), 1.9 * rows), squeeze=False)
    for r, (layer, fmap) in enumerate(features.items()):
        fmap = np.asarray(fmap)
        if r == 0:
            axes[r, 0].imshow(_as_hwc(image))
        else:
            axes[r, 0].set_visible(False)
        for c in range(n_channels):
            ax = axes[r, c + 1]
            if c < fmap.shape[0]:
                ax.imshow(fmap[c], cmap="viridis")
            ax.set_title(f"{layer} ch {c}" if c == 0 else f"ch {c}", fontsize="x-small")
        axes[r, 1].set_ylabel(f"{fmap.shape[0]}×{fmap.shape[1]}×{fmap.shape[2]}", fontsize="x-small")
    axes[0, 0].set_title("input", fontsize="x-small")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.tight_layout()
    return fig


def embedding_figure(embedding: np.ndarray, layer_channels: Mapping[str, int], position: tuple[int, int]) -> Figure:
    """The aligned embedding (D, h, w): mean over each layer's channels, and the D-vector at `position`."""
    emb = np.asarray(embedding)
    i, j = position
    fig = plt.figure(figsize=(10, 2.9))
    n = len(layer_channels)
    grid = fig.add_gridspec(1, n + 1, width_ratios=[1] * n + [2.2])
    start = 0
    bounds = []
    for k, (layer, c) in enumerate(layer_channels.items()):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(emb[start:start + c].mean(axis=0), cmap="viridis")
        ax.scatter([j], [i], marker="s", facecolor="none", edgecolor="red", s=40)
        ax.set_title(f"{layer}: channels {start}–{start + c - 1}", fontsize="x-small")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        bounds.append(start)
        start += c
    ax = fig.add_subplot(grid[0, n])
    ax.plot(emb[:, i, j], lw=0.8)
    for b in bounds[1:]:
        ax.axvline(b - 0.5, color="grey", ls=":")
    ax.set(xlabel="embedding dimension", ylabel="activation", title=f"patch embedding at (i, j) = ({i}, {j}), D = {emb.shape[0]}")
    fig.tight_layout()
    return fig


def gaussian_figure(
    train_vectors: np.ndarray, test_vectors: Mapping[str, np.ndarray], *, eps: float = 0.01, ax: Axes | None = None,
) -> tuple[Axes, dict[str, float]]:
    """One patch position's Gaussian, seen in the plane of its two main axes.

    train_vectors (N, D): training embeddings at that position; test_vectors: label -> (D,).
    Draws the training vectors and the test vectors projected on the two leading eigenvectors of
    the covariance (N-1 divisor + eps I, as PaDiM fits it), with the projected 1, 2, 3 sigma
    ellipses. Returns the axes and each test vector's Mahalanobis distance in all D dimensions
    (the projection only illustrates; the score uses every dimension).
    """
    x = np.asarray(train_vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False) + eps * np.eye(x.shape[1])
    evals, evecs = np.linalg.eigh(cov)
    axes2 = evecs[:, ::-1][:, :2]  # (D, 2) leading eigenvectors
    proj = (x - mean) @ axes2
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4.4))
    ax.scatter(proj[:, 0], proj[:, 1], s=12, alpha=0.6, label=f"training patches (N = {len(x)})")
    cov2 = axes2.T @ cov @ axes2
    w, v = np.linalg.eigh(cov2)
    angle = np.degrees(np.arctan2(v[1, -1], v[0, -1]))
    for k in (1, 2, 3):
        ax.add_patch(Ellipse((0, 0), 2 * k * np.sqrt(w[-1]), 2 * k * np.sqrt(w[0]), angle=angle, fill=False,
                             color="black", lw=0.8, ls="-" if k == 1 else "--"))
    precision = np.linalg.inv(cov)
    distances: dict[str, float] = {}
    markers = ["*", "P", "X", "D"]
    for k, (label, vec) in enumerate(test_vectors.items()):
        d = np.asarray(vec, dtype=np.float64) - mean
        distances[label] = float(np.sqrt(d @ precision @ d))
        p = d @ axes2
        ax.scatter([p[0]], [p[1]], marker=markers[k % len(markers)], s=140, edgecolor="black", zorder=5,
                   label=f"{label}: distance {distances[label]:.1f}")
    ax.set(xlabel="first principal axis", ylabel="second principal axis")
    ax.legend(fontsize="x-small", loc="best")
    return ax, distances


def map_steps_figure(
    image: np.ndarray, distances: np.ndarray, upsampled: np.ndarray, smoothed: np.ndarray,
    mask: np.ndarray | None = None, *, score: float | None = None,
) -> Figure:
    """Input (truth outlined), the Mahalanobis grid (h, w), bicubic upsampling (H, W), Gaussian smoothing."""
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.3), layout="constrained")
    img = _as_hwc(image)
    axes[0].imshow(img)
    if mask is not None and np.asarray(mask).any():
        axes[0].contour(np.asarray(mask) > 0, levels=[0.5], colors="red", linewidths=1.0)
    axes[0].set_title("test image, truth in red", fontsize="small")
    lo = float(min(np.min(distances), np.min(upsampled), np.min(smoothed)))
    hi = float(max(np.max(distances), np.max(upsampled), np.max(smoothed)))
    steps = [(distances, f"distance grid {distances.shape[0]}×{distances.shape[1]}"),
             (upsampled, f"bicubic to {upsampled.shape[0]}×{upsampled.shape[1]}"),
             (smoothed, "Gaussian filter" + (f"; score = max = {score:.1f}" if score is not None else ""))]
    im = None
    for ax, (m, title) in zip(axes[1:], steps, strict=True):
        im = ax.imshow(m, cmap="jet", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize="small")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    fig.colorbar(im, ax=axes.tolist(), shrink=0.8, label="Mahalanobis distance")
    return fig


def score_figure(scores: np.ndarray, labels: np.ndarray, *, ax: Axes | None = None, title: str = "") -> Axes:
    """Image scores (max of each map) of good and defective test images, one strip each."""
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 2.4))
    df = pd.DataFrame({"score": np.asarray(scores, dtype=float),
                       "test image": np.where(np.asarray(labels) > 0, "defective", "good")})
    sns.stripplot(data=df, x="score", y="test image", hue="test image", order=["good", "defective"],
                  hue_order=["good", "defective"], ax=ax, size=6, jitter=0.2, legend=False)
    ax.set(xlabel="image score = max of the anomaly map", ylabel="", title=title)
    return ax


def examples_figure(examples: pd.DataFrame, *, cell: float = 1.6) -> Figure:
    """A grid of example images, one row per class (columns of `examples`: class, defect_type,
    path, mask_path or None), each defect's ground-truth mask outlined in magenta."""
    from PIL import Image

    groups = list(examples.groupby("class", sort=False))
    ncol = max(len(g) for _, g in groups)
    fig, axes = plt.subplots(len(groups), ncol, figsize=(cell * ncol, cell * len(groups)), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, (category, group) in enumerate(groups):
        for c, row in enumerate(group.itertuples()):
            ax = axes[r, c]
            with Image.open(row.path) as img:
                ax.imshow(np.asarray(img.convert("RGB")))
            if isinstance(row.mask_path, str):  # None / NaN for a good image
                with Image.open(row.mask_path) as m:
                    ax.contour(np.asarray(m.convert("L")) > 0, levels=[0.5], colors="magenta", linewidths=0.8)
            ax.set_title(row.defect_type, fontsize="x-small")
        axes[r, 0].text(-0.08, 0.5, category, transform=axes[r, 0].transAxes, rotation=90, ha="right",
                        va="center", fontsize="small")
    fig.tight_layout()
    return fig


def mask_area_figure(areas: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Mask areas (column `area`, share of the image) per class as a strip plot on a log axis."""
    import seaborn as sns

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.2))
    data = areas.assign(percent=areas["area"] * 100)
    sns.stripplot(data=data, x="class", y="percent", hue="defect_type", ax=ax, size=4, jitter=0.25, legend=False)
    ax.set_yscale("log")
    ax.set_ylabel("mask area (% of image)")
    ax.set_xlabel("")
    return ax
