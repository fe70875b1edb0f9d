"""How hard is the synthetic set? Per class: the joint PaDiM model's pixel AUROC, image AUROC and
PRO, checked against the difficulty target stated in padim_lib/datasets/synthetic/__init__.py.

The model is the one the target names: PaDiM on EfficientNet-Lite0 with its shipped ImageNet
weights, the backbone's default layers, concatenated, no reduction, 256 -> 224 preprocessing. No
other configuration is fitted: the set's difficulty is calibrated on this model alone.

    .venv/bin/python benchmarks/bench_synthetic_difficulty.py [--data DIR] [--categories brick chip]
        [--seed 0] [--n-train 60] [--n-test-good 10] [--n-test-defect 20] [--threads 2]

Without --data the set is generated (make_synthetic with the given counts) in a temp folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from padim_lib.datasets import Preprocess, category_kinds, make_synthetic, open_dataset
from padim_lib.engine.evaluation import metrics_from_maps
from padim_lib.methods.padim.detector import PaDiM

TARGET = (0.88, 0.99)  # pixel AUROC per class, the package docstring's target


def load_split(root: Path, category: str, split: str) -> dict:
    data = open_dataset(root, category, split, Preprocess())
    items = [data[i] for i in range(len(data))]
    out = {"images": torch.stack([it["image"] for it in items]), "labels": np.array([it["label"] for it in items])}
    if split == "test":
        out["masks"] = np.stack([np.asarray(it["mask"], np.uint8) for it in items])
    return out


def difficulty(root: Path, category: str) -> dict:
    """Fit the joint model on the class's training images and score its test images."""
    train, test = load_split(root, category, "train"), load_split(root, category, "test")
    t0 = time.perf_counter()
    model = PaDiM(backbone="efficientnet_lite0", device="cpu", progress=False).fit(train["images"])
    maps, scores = model.predict(test["images"])
    res = metrics_from_maps(test["labels"], scores, test["masks"], maps)
    return {**res, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="a synthetic set (default: generate one in a temp folder)")
    ap.add_argument("--categories", nargs="+", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=60)
    ap.add_argument("--n-test-good", type=int, default=10)
    ap.add_argument("--n-test-defect", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp) / "synthetic"
        t0 = time.perf_counter()
        if not args.data:
            make_synthetic(root, seed=args.seed, n_train=args.n_train, n_test_good=args.n_test_good,
                           n_test_defect=args.n_test_defect, categories=args.categories)
        print(f"data set at {root} ready in {time.perf_counter() - t0:.1f} s; threads {args.threads}")
        kinds = category_kinds(root)
        categories = args.categories or list(kinds)
        lo, hi = TARGET
        print(f"target: pixel AUROC per class in [{lo:.0%}, {hi:.0%}]")
        print(f"{'class':8s} {'kind':8s} {'pixel AUROC':>11s} {'image AUROC':>11s} {'PRO':>7s} {'s':>6s}  target")
        pixel = []
        for category in categories:
            r = difficulty(root, category)
            pixel.append(r["pixel_auroc"])
            verdict = "inside" if lo <= r["pixel_auroc"] <= hi else ("too hard" if r["pixel_auroc"] < lo else "too easy")
            print(f"{category:8s} {kinds[category]:8s} {r['pixel_auroc']:11.4f} {r['image_auroc']:11.4f} "
                  f"{r['pro']:7.4f} {r['seconds']:6.1f}  {verdict}", flush=True)
        inside = sum(lo <= p <= hi for p in pixel)
        print(f"{inside} of {len(pixel)} classes inside the target; pixel AUROC from {min(pixel):.4f} to "
              f"{max(pixel):.4f}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
