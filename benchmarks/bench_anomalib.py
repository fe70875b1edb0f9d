"""padim_lib's PaDiM against anomalib's, on CPU: fit time, predict throughput, peak memory.

    .venv/bin/python benchmarks/bench_anomalib.py            # everything (about 15 min, ~20 GB free RAM)
    .venv/bin/python benchmarks/bench_anomalib.py --configs R18-Rd100 --no-growth   # quick look

anomalib 2.7.0 lives in its own environment (benchmarks/setup_anomalib_env.sh makes
benchmarks/.anomalib-env; it is not a project dependency). Each measurement runs in a fresh
subprocess (benchmarks/_side.py) so that peak memories do not mix; see that file for the
protocol. Both sides: the same synthetic class (padim_lib.datasets.make_synthetic, preprocessed
to 224 x 224 by padim_lib's Preprocess), the same architecture with random weights (neither can
fetch ImageNet weights here), batch 16, the same number of threads.

Targets (issue 3): R18-Rd100 predict throughput >= 1.0x anomalib's with <= 15 % of our predict
time outside the backbone forward; R18-448 and WR50-Rd550 throughput >= 1.3x; WR50-Rd550 fit
peak memory at 200 training images <= 0.5x anomalib's, and growing < 10 % from 50 to 400 images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIDE = HERE / "_side.py"
DEFAULT_ANOMALIB_PYTHON = HERE / ".anomalib-env" / "bin" / "python"
CONFIG_NAMES = ("R18-Rd100", "R18-448", "WR50-Rd550")
GB = 1024**3

# Issue 3's reference figures for anomalib 2.7.0 (2 cores, batch 16, 100 training images).
REFERENCE = {
    "R18-Rd100": {"fit_s": 4.1, "predict_ips": 34.0, "fit_peak_gb": 1.85},
    "WR50-Rd550": {"fit_s": 61.0, "predict_ips": 4.6, "fit_peak_gb": 16.9},
}
# Free memory (GB, MemAvailable) wanted before a WR50 run: anomalib's fit peaks near 17-19 GB.
NEED_GB = {("anomalib", "WR50-Rd550"): 20.0, ("ours", "WR50-Rd550"): 6.0}


def mem_available_gb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return float("nan")


def make_pool(workdir: Path, category: str, n_train: int, seed: int) -> Path:
    """Synthetic class -> preprocessed tensors {"train": (N, 3, 224, 224), "test": ..., "labels",
    "masks"} in one file that both sides load."""
    from padim_lib.datasets import AnomalyFolder, Preprocess, make_synthetic

    root = make_synthetic(workdir / "synthetic", seed=seed, n_train=n_train, categories=[category])
    pre = Preprocess()
    tensors = {}
    for split in ("train", "test"):
        ds = AnomalyFolder(root, category, split, preprocess=pre)
        items = [ds[i] for i in range(len(ds))]
        tensors[split] = torch.stack([it["image"] for it in items])
        if split == "test":
            tensors["labels"] = torch.as_tensor(ds.labels)
            tensors["masks"] = torch.stack([it["mask"] for it in items])
    path = workdir / "pool.pt"
    torch.save(tensors, path)
    return path


class Runner:
    """Starts _side.py measurements in fresh subprocesses with a time limit."""

    def __init__(self, args, pool: Path, workdir: Path):
        self.args, self.pool, self.workdir = args, pool, workdir
        self.count = 0

    def __call__(
        self, side: str, config: str, *, n_train: int, extra: Sequence[str] = (), fit_only=False
    ) -> dict:
        a = self.args
        python = sys.executable if side == "ours" else str(a.anomalib_python)
        self.count += 1
        out = self.workdir / f"run{self.count:02d}-{side}-{config}-{n_train}.json"
        cmd = [
            python,
            str(SIDE),
            "--side",
            side,
            "--config",
            config,
            "--pool",
            str(self.pool),
            "--out",
            str(out),
            "--n-train",
            str(n_train),
            "--n-predict",
            str(a.n_predict),
            "--repeats",
            str(a.repeats),
            "--predict-budget",
            str(a.predict_budget),
            "--threads",
            str(a.threads),
            "--seed",
            str(a.seed),
            *extra,
        ]
        if fit_only:
            cmd.append("--fit-only")
        label = " ".join([side, config, f"N={n_train}", *extra] + (["fit only"] if fit_only else []))
        need = NEED_GB.get((side if side != "agree" else "anomalib", config), 0.0)
        avail = mem_available_gb()
        if avail < need and not a.force:
            print(
                f"[skip] {label}: {avail:.1f} GB available, {need:.0f} GB wanted (--force to run anyway)",
                flush=True,
            )
            return {"error": f"skipped: {avail:.1f} GB available < {need:.0f} GB"}
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        if side == "agree":  # anomalib's env with padim_lib importable
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        print(f"[run ] {label} (MemAvailable {avail:.1f} GB, load {os.getloadavg()[0]:.1f})", flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=a.timeout)
        except subprocess.TimeoutExpired:
            print(f"[fail] {label}: no result within {a.timeout} s (killed)", flush=True)
            return {"error": f"timeout after {a.timeout} s"}
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            reason = (
                "killed by signal 9 (out of memory?)" if proc.returncode == -9 else f"exit {proc.returncode}"
            )
            print(f"[fail] {label}: {reason}: {' | '.join(tail)}", flush=True)
            return {"error": f"{reason}: {tail[-1] if tail else ''}"}
        print(f"[done] {label} in {time.perf_counter() - t0:.0f} s", flush=True)
        res = json.loads(out.read_text())
        if res.get("predict_cpu_s"):
            res["predict_ipcs"] = res["n_predict"] / res["predict_cpu_s"]
        return res


# ----------------------------------------------------------------------------- report
def _gb(res: dict, key: str) -> str:
    return f"{res[key] / GB:.2f}" if key in res else "-"


def _num(res: dict, key: str, fmt: str) -> str:
    return format(res[key], fmt) if key in res else "-"


def _ratio(a: dict, b: dict, key: str) -> float | None:
    return a[key] / b[key] if key in a and key in b and b[key] else None


def _r(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


# (header, result key, format, ratio shown); rates are per wall second and per CPU second.
COLUMNS = (
    ("fit s", "fit_s", ".1f", True),
    ("fit cpu-s", "fit_cpu_s", ".1f", True),
    ("im/s", "predict_ips", ".1f", True),
    ("im/cpu-s", "predict_ipcs", ".2f", True),
    ("outside bb", "outside_share", ".0%", False),
    ("base GB", "baseline_rss", "gb", True),
    ("fit pk GB", "fit_peak", "gb", True),
    ("pred pk GB", "predict_peak", "gb", True),
    ("load", "load_before", ".1f", False),
)
WIDTH = 11


def _cell(res: dict, key: str, fmt: str) -> str:
    if key not in res:
        return "-"
    return f"{res[key] / GB:.2f}" if fmt == "gb" else format(res[key], fmt)


def row_lines(config: str, ours: dict, anom: dict) -> list[str]:
    lines = []
    for side, res in (("ours", ours), ("anomalib", anom)):
        if "error" in res:
            lines.append(f"{config:<11} {side:<9} {res['error']}")
            continue
        cells = "".join(f"{_cell(res, key, fmt):>{WIDTH}}" for _, key, fmt, _ in COLUMNS)
        note = " inv patched" if res.get("settings", {}).get("inverse_patched") else ""
        lines.append(f"{config:<11} {side:<9} {res['n_train']:>4}{cells}{note}")
    cells = "".join(f"{_r(_ratio(ours, anom, key)) if show else '':>{WIDTH}}" for _, key, _, show in COLUMNS)
    lines.append(f"{config:<11} {'ratio':<9} {'':>4}{cells}".rstrip())
    return lines


def target(
    name: str, value: float | None, limit: float, higher_is_better: bool, fmt: str, note: str = ""
) -> str:
    """One line: [met ] / [MISS] / [n/a ], the value, the limit and an optional note."""
    if value is None:
        return f"  [n/a ] {name}: not measured"
    ok = value >= limit if higher_is_better else value <= limit
    rel = "\u2265" if higher_is_better else "\u2264"
    return f"  [{'met ' if ok else 'MISS'}] {name}: {value:{fmt}} (target {rel} {limit:{fmt}}){note}"


def throughput_target(rows: dict, config: str, limit: float) -> str:
    o, a = rows[config]["ours"], rows[config]["anomalib"]
    cpu = _ratio(o, a, "predict_ipcs")
    note = "" if cpu is None else f"; per CPU second {cpu:.2f}"
    return target(
        f"{config} predict throughput ours/anomalib", _ratio(o, a, "predict_ips"), limit, True, ".2f", note
    )


def report(results: dict, args) -> str:
    out = []
    head = f"{'config':<11} {'side':<9} {'N':>4}" + "".join(f"{h:>{WIDTH}}" for h, *_ in COLUMNS)
    out += [head, "-" * len(head)]
    for config in args.configs:
        out += row_lines(config, results["rows"][config]["ours"], results["rows"][config]["anomalib"])
    out.append(
        f"(fit: N training images, model construction included; im/s: predict throughput on {args.n_predict} "
        f"images, batch 16, best of up to {args.repeats} runs; cpu-s: process CPU seconds, all threads; "
        "outside bb: share of predict time outside the backbone forward; base: RSS before the fit; "
        "pk: RSS peaks of fit and predict; load: 1-min load average at the start; ratio: ours / anomalib)"
    )
    for config, ref in REFERENCE.items():
        if config in args.configs and args.n_train == 100:
            a = results["rows"][config]["anomalib"]
            out.append(
                f"issue reference, anomalib {config}: fit {ref['fit_s']} s, {ref['predict_ips']} im/s, "
                f"peak {ref['fit_peak_gb']} GB; here fit {_num(a, 'fit_s', '.1f')} s, "
                f"{_num(a, 'predict_ips', '.1f')} im/s, peak {_gb(a, 'fit_peak')} GB"
            )

    growth = results.get("growth", {})
    if growth:
        out.append("")
        out.append("WR50-Rd550 fit peak memory (GB) by number of training images:")
        for side in ("ours", "anomalib"):
            for n, res in sorted(growth.get(side, {}).items(), key=lambda kv: int(kv[0])):
                value = res.get("error") or f"{_gb(res, 'fit_peak')}  (fit {res['fit_s']:.0f} s)"
                out.append(f"  {side:<8} N={int(n):>3}: {value}")

    out.append("")
    out.append("Targets (issue 3):")
    rows = results["rows"]
    if "R18-Rd100" in rows:
        out.append(throughput_target(rows, "R18-Rd100", 1.0))
        share = rows["R18-Rd100"]["ours"].get("outside_share")
        out.append(
            target("R18-Rd100 share of our predict time outside the backbone", share, 0.15, False, ".1%")
        )
    for config in ("R18-448", "WR50-Rd550"):
        if config in rows:
            out.append(throughput_target(rows, config, 1.3))
    if growth:
        ours_g, anom_g = growth.get("ours", {}), growth.get("anomalib", {})
        n_mem, lo, hi = str(args.memory_n), str(min(args.growth)), str(max(args.growth))
        ratio = _ratio(ours_g.get(n_mem, {}), anom_g.get(n_mem, {}), "fit_peak")
        out.append(target(f"WR50-Rd550 fit peak at N={n_mem} ours/anomalib", ratio, 0.5, False, ".2f"))
        g = _ratio(ours_g.get(hi, {}), ours_g.get(lo, {}), "fit_peak")
        growth_name = f"WR50-Rd550 our fit peak growth N={lo} -> {hi}"
        out.append(target(growth_name, None if g is None else g - 1, 0.10, False, ".1%"))

    agree = results.get("agree")
    if agree:
        out.append("")
        out.append(
            "Agreement with anomalib, same random resnet18 weights and channels (R18-Rd100, "
            f"{agree.get('n_images', '?')} test images):"
        )
        if "error" in agree:
            out.append(f"  {agree['error']}")
        else:
            out.append(
                f"  backbone features max rel diff {agree['feature_max_rel_diff']:.1e}; Mahalanobis grid "
                f"max rel diff {agree['distance_max_rel_diff']:.1e} "
                f"(median {agree['distance_median_rel_diff']:.1e}, "
                f"mean distance {agree.get('distance_mean', float('nan')):.1f})"
            )
            out.append(
                f"  final maps max diff / max {agree['map_max_rel_diff']:.1e}, image scores max rel diff "
                f"{agree['score_max_rel_diff']:.1e} (upsampling differs: ours bicubic, anomalib bilinear)"
            )

    fast = results.get("fast")
    if fast:
        out.append("")
        out.append(
            "Optional: PaDiM(channels_last=True, backbone_dtype='bfloat16') (ours only; fit and predict both "
            "use it; random weights here, bench_precision.py measures the effect with real weights):"
        )
        for config, entry in fast.items():
            base, res = rows[config]["ours"], entry["result"]
            if "error" in res:
                out.append(f"  {config}: {res['error']}")
                continue
            out.append(
                f"  {config}: predict {res['predict_ips']:.1f} im/s ({_r(_ratio(res, base, 'predict_ips'))} "
                f"fp32), fit {res['fit_s']:.1f} s ({_r(_ratio(res, base, 'fit_s'))}); image AUROC "
                f"{entry['auroc_fast']:.3f} vs {entry['auroc_fp32']:.3f} fp32, scores Spearman "
                f"{entry['spearman']:.4f}, max rel diff {entry['score_max_rel_diff']:.1e}"
            )
    return "\n".join(out)


def fast_effect(base: dict, fast: dict, labels: np.ndarray) -> dict:
    """Image AUROC (test pool) and score agreement of a channels-last/bf16 run vs fp32."""
    from scipy.stats import spearmanr

    from padim_lib.metrics.image import image_auroc

    n = len(labels)
    s0, s1 = np.asarray(base["scores"][:n]), np.asarray(fast["scores"][:n])
    return {
        "result": fast,
        "auroc_fp32": image_auroc(labels, s0),
        "auroc_fast": image_auroc(labels, s1),
        "spearman": float(spearmanr(s0, s1).statistic),
        "score_max_rel_diff": float(np.max(np.abs(s1 - s0) / np.abs(s0))),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", choices=CONFIG_NAMES, default=list(CONFIG_NAMES))
    ap.add_argument("--n-train", type=int, default=100, help="training images for the comparison rows")
    ap.add_argument("--n-predict", type=int, default=32, help="images per predict run")
    ap.add_argument(
        "--repeats", type=int, default=3, help="predict runs per measurement at most (best is kept)"
    )
    ap.add_argument(
        "--predict-budget",
        type=float,
        default=90.0,
        help="seconds of predict runs after which no repeat starts",
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--category", default="washer", help="synthetic class")
    ap.add_argument(
        "--growth",
        type=int,
        nargs="+",
        default=[50, 200, 400],
        help="training-set sizes for our WR50-Rd550 fit peak",
    )
    ap.add_argument("--memory-n", type=int, default=200, help="N of the WR50-Rd550 fit-peak comparison")
    ap.add_argument("--no-growth", action="store_true", help="skip the WR50-Rd550 fit-peak runs")
    ap.add_argument("--no-agree", action="store_true", help="skip the same-weights agreement check")
    ap.add_argument("--fast", action="store_true", help="also run ours with a channels-last + bf16 backbone")
    ap.add_argument("--anomalib-python", type=Path, default=DEFAULT_ANOMALIB_PYTHON)
    ap.add_argument("--workdir", type=Path, help="keep data and per-run JSON here (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write all results to this file")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per measurement before it is killed")
    ap.add_argument("--force", action="store_true", help="run WR50 even when free memory looks short")
    args = ap.parse_args(argv)
    if not args.anomalib_python.exists():
        sys.exit(
            f"{args.anomalib_python} not found: run benchmarks/setup_anomalib_env.sh first "
            "(or pass --anomalib-python)"
        )
    # WR50 last: anomalib's fit needs most of the machine's memory.
    args.configs = [c for c in CONFIG_NAMES if c in args.configs]

    with tempfile.TemporaryDirectory(prefix="padim-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        n_pool = min(args.n_train, 100) if args.no_growth else 100
        pool = make_pool(workdir, args.category, n_pool, args.seed)
        run = Runner(args, pool, workdir)
        print(
            f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
            f"MemAvailable {mem_available_gb():.1f} GB",
            flush=True,
        )
        results: dict = {"rows": {}, "settings": vars(args) | {"anomalib_python": str(args.anomalib_python)}}
        if not args.no_agree:
            results["agree"] = run("agree", "R18-Rd100", n_train=args.n_train)
        for config in args.configs:
            results["rows"][config] = {
                side: run(side, config, n_train=args.n_train) for side in ("ours", "anomalib")
            }
            if args.fast and "error" not in results["rows"][config]["ours"]:
                res = run("ours", config, n_train=args.n_train, extra=["--channels-last", "--bf16"])
                labels = torch.load(pool, weights_only=True)["labels"].numpy()
                results.setdefault("fast", {})[config] = (
                    {"result": res}
                    if "error" in res
                    else fast_effect(results["rows"][config]["ours"], res, labels)
                )
        if not args.no_growth:
            growth: dict = {"ours": {}, "anomalib": {}}
            for n in sorted(set(args.growth) | {args.memory_n}):
                growth["ours"][str(n)] = run("ours", "WR50-Rd550", n_train=n, fit_only=True)
            growth["anomalib"][str(args.memory_n)] = run(
                "anomalib", "WR50-Rd550", n_train=args.memory_n, fit_only=True
            )
            results["growth"] = growth
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        print()
        print(report(results, args))


if __name__ == "__main__":
    main()
