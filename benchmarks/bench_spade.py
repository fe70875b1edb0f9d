"""SPADE: padim_lib.methods.spade.detector against the algorithm of the most-used public SPADE code.

The peer, written here as that code does it (per test image: the gallery of its K nearest
training images' pixel features, one full torch.cdist to it, the minimum over the gallery), and
ours both get the same random features of Wide-ResNet-50-2's shapes (layer1-3: 256/512/1024
channels on 56/28/14 grids, layer4 average-pooled: 2048) and the same k = K = 50, kappa = 1,
sigma = 4, 224 x 224 maps. Both pixel modes are measured:

* concat: distances on the aligned, concatenated layers (1792 channels on the 56 x 56 grid);
  the peer builds that gallery; ours keeps each layer at its own resolution.
* sum: per-layer distances, each map upsampled and smoothed, then summed (the public code takes
  the mean; the peer here sums so that the maps compare; the mean is the sum / 3).

Printed: the largest relative difference between the two sides' maps and scores (target <= 1e-4),
predict throughput ours / peer (target >= 3) and predict peak memory ours / peer (target <= 0.5).

Memory: each side runs in a fresh process; after the features are made (and ours is fitted, its
copy of the raw training features dropped, so both hold one copy of the training and test
features; both import the same modules) the process's resident-set peak (VmHWM) is reset through /proc/self/clear_refs; the
predict peak is VmHWM at the end, and the "working" memory the peak minus the resident set just
before predict. The resident set counts everything torch allocates on the CPU (tracemalloc sees
none of it). The ratio is reported for both the working memory and the whole process peak.

    python benchmarks/bench_spade.py [--quick] [--n-train 60] [--n-test 3] [--threads 2]
        [--modes concat sum]

--quick: 28/14/7 grids (112 x 112 images), K = k = 20, 24 training and 2 test images. A run of
the default takes about 3 minutes on 2 quiet cores (12 minutes at load 12 on 2 cores) and about
6.5 GB of memory at its peak (the peer's concat distance matrix and gallery copies). Throughput is
wall time of predict; the CPU-time ratio is printed beside it, less sensitive to other processes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PIXEL = ("layer1", "layer2", "layer3")
CHANNELS = (256, 512, 1024)
GLOBAL_CHANNELS = 2048


def make_features(n: int, grid: int, seed: int) -> dict[str, torch.Tensor]:
    """Non-negative (post-ReLU-like) random maps of WR50's layer shapes; grid = layer1's side."""
    g = torch.Generator().manual_seed(seed)
    out = {
        name: torch.randn(n, c, grid >> i, grid >> i, generator=g).relu_()
        for i, (name, c) in enumerate(zip(PIXEL, CHANNELS, strict=True))
    }
    out["layer4"] = torch.randn(n, GLOBAL_CHANNELS, max(1, grid >> 3), max(1, grid >> 3), generator=g).relu_()
    return out


def _rss_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


# ----------------------------------------------------------------------------- the peer
def peer_predict(train, test, k, big_k, mode, size, sigma):
    """The public code's algorithm, per test image one full cdist against its whole gallery."""
    from padim_lib.features.extractor import align_concat
    from padim_lib.methods.postprocess import anomaly_maps

    dist = torch.cdist(test["layer4"].mean((2, 3)), train["layer4"].mean((2, 3)))
    values, index = torch.topk(dist, k=max(k, big_k), dim=1, largest=False)
    scores = values[:, :k].mean(1)
    maps = []
    for t in range(len(index)):
        near = index[t, :big_k]
        if mode == "concat":
            pairs = [(align_concat([train[x][near] for x in PIXEL]), align_concat([test[x][t : t + 1] for x in PIXEL]))]
        else:
            pairs = [(train[x][near], test[x][t : t + 1]) for x in PIXEL]
        total = None
        for topk_feat_map, test_map in pairs:
            h, w = test_map.shape[2:]
            feat_gallery = topk_feat_map.transpose(3, 1).flatten(0, 2)  # (K * h * w, C)
            dist_matrix = torch.cdist(test_map[0].flatten(1).T, feat_gallery)  # (h * w, K * h * w)
            score_map = torch.min(dist_matrix, dim=1)[0].view(1, h, w)
            m = anomaly_maps(score_map, size, sigma)
            total = m if total is None else total + m
            del topk_feat_map, feat_gallery, dist_matrix
        maps.append(total[0])
    return torch.stack(maps), scores


# ----------------------------------------------------------------------------- one side
def run_side(args) -> None:
    torch.set_num_threads(args.threads)
    # Both sides import the same modules, so the resident sets differ by the algorithms' data only.
    from padim_lib.methods.spade.detector import SPADE
    size = (args.grid * 4, args.grid * 4)
    train = make_features(args.n_train, args.grid, seed=0)
    test = make_features(args.n_test, args.grid, seed=1)
    with torch.no_grad():
        if args.side == "ours":
            est = SPADE(backbone="wide_resnet50_2", layer_mode=args.mode, k=args.k, n_gallery=args.k,
                        device="cpu", progress=False)
            est.fit_features([train])
            del train  # the fitted gallery is the model: one copy of the training features, like the peer
            gc.collect()
            predict = lambda: est.predict_features([test], size)  # noqa: E731
        else:
            predict = lambda: peer_predict(train, test, args.k, args.k, args.mode, size, 4.0)  # noqa: E731
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current resident set
        base = _rss_kb("VmRSS")
        cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        maps, scores = predict()
        wall = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = _rss_kb("VmHWM")
    np.save(Path(args.out) / f"{args.side}_{args.mode}_maps.npy", np.asarray(maps, np.float32))
    np.save(Path(args.out) / f"{args.side}_{args.mode}_scores.npy", np.asarray(scores, np.float32))
    result = {
        "wall_s": wall,
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "base_mb": base / 1024,
        "peak_mb": peak / 1024,
        "working_mb": (peak - base) / 1024,
    }
    (Path(args.out) / f"{args.side}_{args.mode}.json").write_text(json.dumps(result))


# ----------------------------------------------------------------------------- driver
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="28/14/7 grids, k = K = 20, 24 train / 2 test images")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--k", type=int, default=None, help="k = K (default 50; 20 with --quick)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["concat", "sum"], choices=["concat", "sum"])
    p.add_argument("--side", choices=["ours", "peer"], help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--grid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        run_side(args)
        return
    grid = 28 if args.quick else 56
    n_train = args.n_train or (24 if args.quick else 60)
    n_test = args.n_test or (2 if args.quick else 3)
    k = args.k or (20 if args.quick else 50)
    print(f"SPADE predict, WR50 shapes: layer1-3 256/512/1024 ch on {grid}/{grid // 2}/{grid // 4} grids, "
          f"{n_train} train / {n_test} test images, k = K = {k}, kappa = 1, {args.threads} threads, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"{'mode':7s} {'side':5s} {'wall s':>8s} {'im/s':>7s} {'cpu s':>8s} {'peak MB':>8s} {'working MB':>11s}")
    verdicts = []
    with tempfile.TemporaryDirectory() as out:
        for mode in args.modes:
            res = {}
            for side in ("peer", "ours"):
                cmd = [sys.executable, __file__, "--side", side, "--mode", mode, "--grid", str(grid), "--out", out,
                       "--n-train", str(n_train), "--n-test", str(n_test), "--k", str(k),
                       "--threads", str(args.threads)]
                subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
                r = res[side] = json.loads((Path(out) / f"{side}_{mode}.json").read_text())
                print(f"{mode:7s} {side:5s} {r['wall_s']:8.2f} {n_test / r['wall_s']:7.3f} {r['cpu_s']:8.2f} "
                      f"{r['peak_mb']:8.0f} {r['working_mb']:11.0f}")
            rel = 0.0
            for what in ("maps", "scores"):
                a, b = (np.load(Path(out) / f"{s}_{mode}_{what}.npy") for s in ("ours", "peer"))
                rel = max(rel, float(np.max(np.abs(a - b) / np.abs(b))))
            speed = res["peer"]["wall_s"] / res["ours"]["wall_s"]
            cpu = res["peer"]["cpu_s"] / res["ours"]["cpu_s"]
            work = res["ours"]["working_mb"] / res["peer"]["working_mb"]
            peak = res["ours"]["peak_mb"] / res["peer"]["peak_mb"]
            print(f"  {mode}: max relative difference {rel:.2e} (target <= 1e-4); throughput ours/peer {speed:.2f}x "
                  f"(cpu time {cpu:.2f}x; target >= 3); memory ours/peer: working {work:.3f}, "
                  f"process peak {peak:.3f} (target <= 0.5)")
            verdicts.append((mode, rel <= 1e-4, speed >= 3, work <= 0.5))
    for mode, equal, fast, small in verdicts:
        print(f"{mode}: maps equal {'yes' if equal else 'NO'}, >= 3x throughput {'yes' if fast else 'NO'}, "
              f"<= 0.5x working memory {'yes' if small else 'NO'}")


if __name__ == "__main__":
    main()
