"""The VAE on the embedded synthetic set: per-class pixel and image AUROC, training time, and peers.

Ours: the VAE with the embedded profile's stand-in encoder (EfficientNet-Lite0, its shipped
ImageNet weights) at the book's budget. Peers measured in the same run, on the same classes and
test images: the same VAE with a random-init encoder at the same budget (what the embedded profile
had before), and PaDiM (Lite0, default layers, no reduction: the synthetic set's calibration
model). A budget table gives the mean AUROC after each of `--epochs-list` epochs, from one
training per class (a longer run's epoch e is the shorter run's last: constant learning rate, the
same augmented set, resumed from the checkpoint of epoch e).

    python benchmarks/bench_vae.py [--data data/synthetic] [--classes brick washer ...]
        [--epochs 4] [--images-per-epoch 256] [--batch-size 16] [--image-size 96]
        [--epochs-list 1 2 4 8] [--threads 1] [--jobs 2] [--no-peers]

Each class runs in its own process (`--jobs` at a time, `--threads` torch threads each). Times are
wall and CPU seconds of `fit` (the CPU time is less sensitive to other processes on the machine).
The synthetic set is made (`make_synthetic`, the book's default size) when `--data` has none.
Target: mean pixel AUROC >= 0.70 at the book's budget.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

TARGET = 0.70


def _scores(detector, test, masks) -> tuple[float, float]:
    from padim_lib.metrics.image import image_auroc
    from padim_lib.metrics.pixel import PixelScores

    maps, scores = detector.predict(test)
    return PixelScores(masks, maps, fpr_limit=0.3).pixel_auroc(), image_auroc(np.asarray(test.labels), scores)


def _fit(detector, train) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    detector.fit(train)
    return time.perf_counter() - w, time.process_time() - c


def run_class(args: argparse.Namespace, category: str) -> dict:
    """Every measurement of one class (runs in a worker process)."""
    import torch

    from padim_lib.datasets import open_dataset
    from padim_lib.datasets.preprocess import Preprocess
    from padim_lib.methods.padim.detector import PaDiM
    from padim_lib.methods.vae.detector import VAE

    torch.set_num_threads(args.threads)
    pre = Preprocess()  # the embedded profile's test view: 256 -> 224
    test = open_dataset(args.data, category, "test", pre)
    masks = np.stack([test[i]["mask"].numpy() for i in range(len(test))])
    size = args.image_size
    common = dict(backbone="efficientnet_lite0", images_per_epoch=args.images_per_epoch, batch_size=args.batch_size,
                  image_size=size, aug_resize=round(size * 292 / 256), aug_crop=round(size * 282 / 256),
                  device="cpu", progress=False)
    out: dict = {"category": category, "budget": []}
    with tempfile.TemporaryDirectory() as work:
        train = None
        fit_s = cpu_s = 0.0
        for epochs in sorted(set(args.epochs_list) | {args.epochs}):
            vae = VAE(epochs=epochs, pretrained=True, checkpoint_dir=work, **common)
            train = train if train is not None else vae.training_data(args.data, category, pre)
            w, c = _fit(vae, train)  # resumes from the previous epochs' checkpoint
            fit_s, cpu_s = fit_s + w, cpu_s + c
            px, img = _scores(vae, test, masks)
            out["budget"].append({"epochs": epochs, "pixel": px, "image": img, "fit_s": fit_s, "cpu_s": cpu_s,
                                  "loss": vae.loss_history_["epoch_loss"][-1]})
            if epochs == args.epochs:
                out["vae"] = {"pixel": px, "image": img, "fit_s": fit_s, "cpu_s": cpu_s,
                              "weights": vae.encoder_weights_, "loss": vae.loss_history_["epoch_loss"]}
    if args.peers:
        vae = VAE(epochs=args.epochs, pretrained=False, **common)
        w, c = _fit(vae, vae.training_data(args.data, category, pre))
        px, img = _scores(vae, test, masks)
        out["random"] = {"pixel": px, "image": img, "fit_s": w, "cpu_s": c}
        padim = PaDiM(backbone="efficientnet_lite0", device="cpu", progress=False)
        w, c = _fit(padim, open_dataset(args.data, category, "train", pre))
        px, img = _scores(padim, test, masks)
        out["padim"] = {"pixel": px, "image": img, "fit_s": w, "cpu_s": c}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--classes", nargs="+", default=None, help="default: every class of the set")
    p.add_argument("--epochs", type=int, default=4, help="the budget measured against the peers")
    p.add_argument("--images-per-epoch", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--epochs-list", type=int, nargs="*", default=[1, 2, 4, 8], help="the budget table's epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2, help="classes measured at once (one process each)")
    p.add_argument("--no-peers", dest="peers", action="store_false", help="skip the random-init VAE and PaDiM")
    args = p.parse_args()

    from padim_lib.datasets import category_kinds
    from padim_lib.datasets.synthetic import make_synthetic
    from padim_lib.methods.vae.departures import steps

    if not (Path(args.data) / "dataset.json").is_file():
        make_synthetic(args.data)
    kinds = category_kinds(args.data)
    classes = args.classes or sorted(kinds, key=lambda c: (kinds[c], c))
    n_steps = steps({"epochs": args.epochs, "images_per_epoch": args.images_per_epoch, "batch_size": args.batch_size})
    print(f"VAE on {args.data} ({len(classes)} classes): EfficientNet-Lite0 stand-in encoder (shipped ImageNet "
          f"weights), {args.image_size} px ({args.image_size // 32}x{args.image_size // 32} latent), batch "
          f"{args.batch_size}, {args.epochs} epochs x {args.images_per_epoch} images = {n_steps} steps; "
          f"{args.threads} thread(s) x {args.jobs} job(s), load {os.getloadavg()[0]:.1f}", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_class, args, c): c for c in classes}
        done = {}
        for future in as_completed(futures):
            r = done[futures[future]] = future.result()
            print(f"  {r['category']}: VAE pixel AUROC {r['vae']['pixel']:.3f}, fit {r['vae']['fit_s']:.0f} s "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    results = [done[c] for c in classes]
    wall = time.perf_counter() - t0

    head = f"{'class':8s} {'kind':8s} {'VAE px':>7s} {'img':>6s} {'fit s':>6s} {'cpu s':>6s}"
    if args.peers:
        head += f" | {'rand px':>7s} {'img':>6s} | {'PaDiM px':>8s} {'img':>6s} {'fit s':>6s}"
    print(head)

    def mean(side: str, key: str) -> float:
        return float(np.mean([r[side][key] for r in results]))

    def row(name: str, kind: str, value) -> str:  # value(side, key) -> float
        line = f"{name:8s} {kind:8s} {value('vae', 'pixel'):7.3f} {value('vae', 'image'):6.3f} " \
               f"{value('vae', 'fit_s'):6.0f} {value('vae', 'cpu_s'):6.0f}"
        if args.peers:
            line += f" | {value('random', 'pixel'):7.3f} {value('random', 'image'):6.3f} | " \
                    f"{value('padim', 'pixel'):8.3f} {value('padim', 'image'):6.3f} {value('padim', 'fit_s'):6.1f}"
        return line

    for r in results:
        print(row(r["category"], kinds.get(r["category"], "?"), lambda side, key, r=r: r[side][key]))
    print(row("mean", "", mean))
    print(f"encoder weights: {results[0]['vae']['weights']}; benchmark wall time {wall:.0f} s")
    if args.peers:
        print(f"ratios (same run): pixel AUROC VAE / random-init VAE {mean('vae', 'pixel') / mean('random', 'pixel'):.2f}, "
              f"VAE / PaDiM {mean('vae', 'pixel') / mean('padim', 'pixel'):.2f}; training time VAE / random-init VAE "
              f"{mean('vae', 'cpu_s') / mean('random', 'cpu_s'):.2f} (cpu), VAE / PaDiM fit "
              f"{mean('vae', 'cpu_s') / mean('padim', 'cpu_s'):.2g} (cpu)")
    print("budget (one training per class, evaluated after each epoch count):")
    print(f"{'epochs':>6s} {'steps':>6s} {'images':>7s} {'px AUROC':>9s} {'img AUROC':>9s} {'fit s':>6s} {'cpu s':>6s} "
          f"{'loss':>8s}")
    for k, epochs in enumerate(sorted(set(args.epochs_list) | {args.epochs})):
        rows = [r["budget"][k] for r in results]
        s = steps({"epochs": epochs, "images_per_epoch": args.images_per_epoch, "batch_size": args.batch_size})
        print(f"{epochs:6d} {s:6d} {epochs * args.images_per_epoch:7d} {np.mean([b['pixel'] for b in rows]):9.3f} "
              f"{np.mean([b['image'] for b in rows]):9.3f} {np.mean([b['fit_s'] for b in rows]):6.0f} "
              f"{np.mean([b['cpu_s'] for b in rows]):6.0f} {np.mean([b['loss'] for b in rows]):8.0f}")
    got = mean("vae", "pixel")
    print(f"target mean pixel AUROC >= {TARGET:.2f} at {args.epochs} epochs: {'yes' if got >= TARGET else 'NO'} ({got:.3f})")


if __name__ == "__main__":
    main()
