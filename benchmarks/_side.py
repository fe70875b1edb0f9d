"""One measurement of one PaDiM implementation, run in a fresh process by bench_anomalib.py.

    python _side.py --side ours|anomalib|agree --config R18-Rd100 --pool POOL.pt --out RESULT.json

--side ours      padim_lib.methods.padim.detector.PaDiM, run with the project's .venv.
--side anomalib  anomalib.models.image.padim.torch_model.PadimModel, run with anomalib's env
                 (benchmarks/.anomalib-env, made by setup_anomalib_env.sh).
--side agree     both with identical random backbone weights and channel indices (anomalib's env
                 with the repository root on PYTHONPATH): do the Mahalanobis grids agree?

Both sides get the same preprocessed images (POOL.pt, written by bench_anomalib.py), fit on
`--n-train` of them (the pool cycled when it is smaller) in batches of 16, and predict the test
pool cycled to `--n-predict` images, best of `--repeats` runs (no new run once `--predict-budget`
seconds are spent). Neither side can fetch ImageNet weights here, so both use randomly
initialised backbones of the same architecture.

Memory is the process's resident set peak (VmHWM), reset through /proc/self/clear_refs before
each phase, so the fit peak and the predict peak are measured separately in one process. It
includes the interpreter, the imported libraries, the backbone and the image pool; the resident
set before the fit (`baseline_rss`) is reported alongside.

Only this file's standard-library and torch imports run at start; each side imports its own
library, so the same file serves both environments.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class Config:
    backbone: str
    layers: tuple[str, ...]
    dim: int | None  # None: every channel of the embedding (no reduction)
    channels: int  # embedding width before reduction


CONFIGS: dict[str, Config] = {
    "R18-Rd100": Config("resnet18", ("layer1", "layer2", "layer3"), 100, 448),
    "R18-448": Config("resnet18", ("layer1", "layer2", "layer3"), None, 448),
    "WR50-Rd550": Config("wide_resnet50_2", ("layer1", "layer2", "layer3"), 550, 1792),
}
BATCH = 16
# anomalib's batched torch.linalg.inv fails or hangs on CPU (MKL) above about this size.
INV_SAFE_DIM = 128


# ----------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def reset_peak() -> None:
    """Set the resident-set peak (VmHWM) to the current resident set (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def peak_bytes() -> int:
    return _status_kb("VmHWM") * 1024


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


# ----------------------------------------------------------------------------- data
class Cycle(Dataset):
    """`n` items {"image": (3, H, W)} cycling over a fixed pool (N_pool, 3, H, W), so that the
    number of images can grow without the data itself taking more memory."""

    def __init__(self, pool: torch.Tensor, n: int):
        self.pool, self.n = pool, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return {"image": self.pool[i % len(self.pool)]}


def image_loader(data: Dataset) -> DataLoader:
    """Batches (B, 3, H, W) of a Cycle, as padim_lib's own loader makes them."""
    return DataLoader(
        data, batch_size=BATCH, shuffle=False, collate_fn=lambda it: torch.stack([x["image"] for x in it])
    )


# ----------------------------------------------------------------------------- timing
class ForwardTimer:
    """Accumulates the wall time spent in `cls.forward` (patched at class level, so it also
    catches instances built later inside the library)."""

    def __init__(self, cls: type):
        self.seconds = 0.0
        self.calls = 0
        orig = cls.forward
        timer = self

        @functools.wraps(orig)
        def forward(module, *args, **kwargs):
            t0 = time.perf_counter()
            out = orig(module, *args, **kwargs)
            timer.seconds += time.perf_counter() - t0
            timer.calls += 1
            return out

        cls.forward = forward

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


def measure(
    fit: Callable[[], object],
    predict: Callable[[object], tuple[np.ndarray, np.ndarray]],
    timer: ForwardTimer,
    n_predict: int,
    repeats: int,
    do_predict: bool,
    budget_s: float = float("inf"),
) -> dict:
    """Run fit once and predict up to `repeats` times (fewer once the predict runs have taken
    `budget_s` seconds); wall and CPU times of the best run, peaks, the backbone's share.

    CPU time (time.process_time, all threads) is reported too: on a shared machine it is less
    sensitive to other processes than wall time. The load average brackets the run."""
    res: dict = {"baseline_rss": rss_bytes(), "load_before": os.getloadavg()[0]}
    reset_peak()
    timer.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    model = fit()
    res["fit_s"] = time.perf_counter() - t0
    res["fit_cpu_s"] = time.process_time() - c0
    res["fit_backbone_s"] = timer.seconds
    res["fit_peak"] = peak_bytes()
    res["rss_after_fit"] = rss_bytes()
    if not do_predict:
        res["load_after"] = os.getloadavg()[0]
        return res
    reset_peak()
    runs = []
    while len(runs) < repeats and sum(r[0] for r in runs) < budget_s:
        timer.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        maps, scores = predict(model)
        runs.append((time.perf_counter() - t0, time.process_time() - c0, timer.seconds))
    if maps.shape[0] != n_predict or not np.isfinite(maps).all():
        raise RuntimeError(
            f"predict returned maps {maps.shape} (finite: {np.isfinite(maps).all()}), expected {n_predict}"
        )
    best, cpu, backbone = min(runs)
    res.update(
        predict_peak=peak_bytes(),
        predict_s=best,
        predict_all_s=[r[0] for r in runs],
        predict_ips=n_predict / best,
        predict_cpu_s=min(r[1] for r in runs),
        predict_backbone_s=backbone,
        outside_share=1.0 - backbone / best,
        load_after=os.getloadavg()[0],
        scores=scores.tolist(),
    )
    return res


# ----------------------------------------------------------------------------- sides
def run_ours(cfg: Config, train: Dataset, test: Dataset, args) -> dict:
    from padim_lib.features.extractor import FeatureExtractor
    from padim_lib.methods.padim.detector import PaDiM

    timer = ForwardTimer(FeatureExtractor)
    reduce = None if cfg.dim is None else f"random:{cfg.dim}"

    def fit():
        est = PaDiM(
            backbone=cfg.backbone,
            layers=cfg.layers,
            reduce=reduce,
            pretrained=False,
            device="cpu",
            batch_size=BATCH,
            seed=args.seed,
            channels_last=args.channels_last,
            backbone_dtype="bfloat16" if args.bf16 else "float32",
            progress=False,
        )
        torch.manual_seed(args.seed)  # the random backbone is drawn inside fit: the same one every run
        return est.fit(train)

    res = measure(
        fit,
        lambda est: est.predict(test),
        timer,
        len(test),
        args.repeats,
        not args.fit_only,
        args.predict_budget,
    )
    res["settings"] = {"channels_last": args.channels_last, "bf16": args.bf16}
    return res


def chunked_cholesky_inv(matrices: torch.Tensor, chunk: int = 64, **_: object) -> torch.Tensor:
    """Stand-in for anomalib's batched torch.linalg.inv of SPD matrices (P, D, D): per chunk of
    positions, A^-1 = L^-T L^-1 with L = cholesky(A) and L^-1 from a triangular solve. (MKL's
    batched LU inverse fails or hangs here; batched torch.cholesky_inverse is ~10x slower than
    this on the same CPUs.)"""
    out = torch.empty(matrices.shape, dtype=matrices.dtype)
    eye = torch.eye(matrices.shape[-1], dtype=matrices.dtype)
    for p0 in range(0, matrices.shape[0], chunk):
        lower = torch.linalg.cholesky(matrices[p0 : p0 + chunk])
        inv_lower = torch.linalg.solve_triangular(lower, eye.expand_as(lower), upper=False)
        torch.bmm(inv_lower.mT, inv_lower, out=out[p0 : p0 + chunk])
    return out


def build_anomalib(cfg: Config, seed: int):
    from anomalib.models.image.padim.torch_model import PadimModel

    torch.manual_seed(seed)
    # n_features=None would mean anomalib's default (100 for resnet18): pass the full width instead.
    return PadimModel(
        backbone=cfg.backbone, layers=list(cfg.layers), pre_trained=False, n_features=cfg.dim or cfg.channels
    )


def anomalib_fit(model, train: Dataset):
    """What anomalib's Lightning module does in its single training epoch, without Lightning:
    forward in train mode fills the memory bank, then fit() estimates the Gaussians."""
    model.train()
    for images in image_loader(train):
        model(images)
    model.fit()
    return model.eval()


def anomalib_predict(model, test: Dataset) -> tuple[np.ndarray, np.ndarray]:
    maps, scores = [], []
    for images in image_loader(test):
        out = model(images)
        maps.append(out.anomaly_map[:, 0])
        scores.append(out.pred_score.reshape(-1))
    return torch.cat(maps).numpy(), torch.cat(scores).numpy()


def patch_inverse(cfg: Config, mode: str) -> bool:
    """Replace torch.linalg.inv (in this process only) by chunked_cholesky_inv when asked or
    when the Gaussians are larger than INV_SAFE_DIM; returns whether it did."""
    dim = cfg.dim or cfg.channels
    if mode == "never" or (mode == "auto" and dim <= INV_SAFE_DIM):
        return False
    torch.linalg.inv = chunked_cholesky_inv
    return True


def run_anomalib(cfg: Config, train: Dataset, test: Dataset, args) -> dict:
    import anomalib
    from anomalib.models.components.feature_extractors.timm import TimmFeatureExtractor

    timer = ForwardTimer(TimmFeatureExtractor)
    patched = patch_inverse(cfg, args.patch_inv)
    res = measure(
        lambda: anomalib_fit(build_anomalib(cfg, args.seed), train),
        lambda m: anomalib_predict(m, test),
        timer,
        len(test),
        args.repeats,
        not args.fit_only,
        args.predict_budget,
    )
    res["settings"] = {"anomalib": anomalib.__version__, "inverse_patched": patched}
    return res


def run_agree(cfg: Config, train: Dataset, test: Dataset, args) -> dict:
    """anomalib and padim_lib with the same random backbone and channel indices: compare the
    backbone features and the Mahalanobis distance grids (before each side's upsampling and
    smoothing, which differ: anomalib bilinear + torch "reflect" padding, ours bicubic + scipy "reflect")."""
    import tempfile

    import torchvision

    from padim_lib.features.extractor import FeatureExtractor, align_concat
    from padim_lib.methods.padim.detector import PaDiM

    if cfg.backbone != "resnet18":
        raise SystemExit(
            "--side agree is implemented for resnet18 only (timm and torchvision share its names)"
        )
    patch_inverse(cfg, args.patch_inv)
    model = build_anomalib(cfg, args.seed)
    # timm's features_only resnet keeps torchvision's parameter names but drops layer4 and fc;
    # those do not touch layer1-3, so any values complete the state dict.
    state = dict(torchvision.models.resnet18().state_dict())
    timm_state = model.feature_extractor.feature_extractor.state_dict()
    missing = [k for k in timm_state if k not in state]
    if missing:
        raise RuntimeError(f"timm resnet18 names not in torchvision's: {missing[:5]}")
    state.update(timm_state)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "resnet18-random.pt"
        torch.save(state, weights)
        # anomalib adds 0.01 I and then 1e-5 I to each covariance.
        est = PaDiM(
            backbone="resnet18",
            layers=cfg.layers,
            reduce=None if cfg.dim is None else f"random:{cfg.dim}",
            eps=0.01 + 1e-5,
            weights=str(weights),
            device="cpu",
            batch_size=BATCH,
            seed=args.seed,
            progress=False,
        ).fit(train)
        ours_ext = FeatureExtractor("resnet18", cfg.layers, weights=str(weights))
    index = est.model_[0].channel_index
    if index is not None:
        model.idx.copy_(index)  # Mahalanobis distance does not depend on the order of the dims
    anomalib_fit(model, train)
    images = torch.stack([test[i]["image"] for i in range(min(len(test), BATCH))])
    with torch.no_grad():
        feats_a = model.feature_extractor(images)
        feats_o = ours_ext(images)
        feat_diff = max(
            float((feats_a[k] - feats_o[k]).abs().max() / feats_o[k].abs().max()) for k in cfg.layers
        )
        emb_a = model.generate_embedding(feats_a)
        dist_a = model.anomaly_map_generator.compute_distance(
            emb_a, [model.gaussian.mean, model.gaussian.inv_covariance]
        )[:, 0]
        dist_o = est.model_[0](align_concat([feats_o[k] for k in cfg.layers]))
    rel = (dist_a - dist_o).abs() / dist_o.abs().clamp_min(1e-12)
    maps_o, scores_o = est.predict(images)
    maps_a, scores_a = anomalib_predict(model, Cycle(images, len(images)))
    return {
        "feature_max_rel_diff": feat_diff,
        "distance_max_rel_diff": float(rel.max()),
        "distance_median_rel_diff": float(rel.median()),
        "distance_mean": float(dist_o.mean()),
        "map_max_rel_diff": float(np.abs(maps_a - maps_o).max() / np.abs(maps_o).max()),
        "score_max_rel_diff": float(np.max(np.abs(scores_a - scores_o) / np.abs(scores_o))),
        "n_images": len(images),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=("ours", "anomalib", "agree"), required=True)
    ap.add_argument("--config", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--pool", type=Path, required=True, help="tensor file written by bench_anomalib.py")
    ap.add_argument("--out", type=Path, required=True, help="JSON result file")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-predict", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="predict runs at most (the best is kept)")
    ap.add_argument(
        "--predict-budget", type=float, default=90.0, help="no further predict run after this many s"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fit-only", action="store_true")
    ap.add_argument(
        "--patch-inv",
        choices=("auto", "always", "never"),
        default="auto",
        help=f"anomalib: chunked Cholesky for torch.linalg.inv (auto: when d > {INV_SAFE_DIM})",
    )
    ap.add_argument("--channels-last", action="store_true", help="ours: PaDiM(channels_last=True)")
    ap.add_argument("--bf16", action="store_true", help="ours: PaDiM(backbone_dtype='bfloat16')")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    pool = torch.load(args.pool, weights_only=True)
    train = Cycle(pool["train"], args.n_train)
    test = Cycle(pool["test"], args.n_predict)
    cfg = CONFIGS[args.config]
    run = {"ours": run_ours, "anomalib": run_anomalib, "agree": run_agree}[args.side]
    res = run(cfg, train, test, args)
    res.update(
        side=args.side,
        config=args.config,
        n_train=args.n_train,
        n_predict=args.n_predict,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        python=platform.python_version(),
    )
    args.out.write_text(json.dumps(res))
    print(f"{args.side} {args.config}: done", file=sys.stderr)


if __name__ == "__main__":
    main()
