"""Effect of the optional fast backbone settings (channels-last, bfloat16) on speed and on the metrics,
with real ImageNet weights (default: EfficientNet-Lite0's shipped checkpoint) on the synthetic set.

For every class and setting: fit on the training images, predict the test images (held in memory,
so no image decoding is timed), then image AUROC, pixel AUROC and PRO. Printed beside float32 (the
peer, measured in the same run): predict throughput ratio, metric differences, the Spearman
correlation of image scores and the largest map difference relative to the map range.

    .venv/bin/python benchmarks/bench_precision.py [--data DIR] [--backbone efficientnet_lite0]
        [--weights PATH] [--reduce random:100] [--threads 2]

Without --data a synthetic set (make_synthetic defaults: 4 classes) is generated in a temp folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from padim_lib.datasets import Preprocess, list_categories, make_synthetic, open_dataset
from padim_lib.engine.evaluation import metrics_from_maps
from padim_lib.features.extractor import bfloat16_is_fast
from padim_lib.methods.padim.detector import PaDiM

SETTINGS = {
    "float32": {},
    "channels-last": {"channels_last": True},
    "bfloat16": {"backbone_dtype": "bfloat16"},
    "channels-last + bfloat16": {"channels_last": True, "backbone_dtype": "bfloat16"},
}
METRICS = ("image_auroc", "pixel_auroc", "pro")


def load_split(root: Path, category: str, split: str) -> dict:
    data = open_dataset(root, category, split, Preprocess())
    items = [data[i] for i in range(len(data))]
    out = {"images": torch.stack([it["image"] for it in items]), "labels": np.array([it["label"] for it in items])}
    if split == "test":
        out["masks"] = np.stack([np.asarray(it["mask"], np.uint8) for it in items]) if data.has_masks else None
    return out


def run(root: Path, category: str, args, kw: dict) -> dict:
    train, test = load_split(root, category, "train"), load_split(root, category, "test")
    weights = {"weights": args.weights} if args.weights else {}
    est = PaDiM(
        backbone=args.backbone, reduce=args.reduce, device="cpu", batch_size=16, progress=False, **weights, **kw
    )
    t0 = time.perf_counter()
    est.fit(train["images"])
    fit_s = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        maps, scores = est.predict(test["images"])
        times.append(time.perf_counter() - t0)
    res = metrics_from_maps(test["labels"], scores, test["masks"], maps)
    return {**res, "fit_s": fit_s, "ips": len(scores) / min(times), "maps": maps, "scores": scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="MVTec-layout root (default: a fresh synthetic set)")
    ap.add_argument("--categories", nargs="+", default=None)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default=None, help="local weights file (the paper's backbones)")
    ap.add_argument("--reduce", default=None, help="e.g. random:100 (default: the full embedding)")
    ap.add_argument("--repeats", type=int, default=3, help="predict runs per setting (best is kept)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"bfloat16 native on this CPU: {bfloat16_is_fast('cpu')}; threads {args.threads}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else Path(tmp)
        if not args.data:
            make_synthetic(root, seed=0)
        categories = args.categories or list_categories(root)
        header = f"{'class':10s} {'setting':26s} {'fit s':>6s} {'im/s':>6s} {'speed':>6s} " + " ".join(
            f"{m:>11s} {'diff':>7s}" for m in METRICS
        )
        print(header + f" {'Spearman':>8s} {'map diff':>8s}")
        print("-" * (len(header) + 18))
        for category in categories:
            base = None
            for name, kw in SETTINGS.items():
                r = run(root, category, args, kw)
                base = base or r
                cells = []
                for m in METRICS:
                    v, v0 = r[m], base[m]
                    cells.append("        n/a     n/a" if v is None else f"{v:11.4f} {v - v0:+7.4f}")
                rho = spearmanr(base["scores"], r["scores"]).statistic
                span = float(base["maps"].max() - base["maps"].min())
                diff = float(np.abs(r["maps"] - base["maps"]).max()) / span
                print(
                    f"{category:10s} {name:26s} {r['fit_s']:6.1f} {r['ips']:6.1f} {r['ips'] / base['ips']:5.2f}x "
                    + " ".join(cells)
                    + f" {rho:8.4f} {diff:8.1e}"
                )
    print("(speed: predict throughput / float32's; diff: metric - float32's; map diff: max |map - float32 map| / map range)")


if __name__ == "__main__":
    main()
