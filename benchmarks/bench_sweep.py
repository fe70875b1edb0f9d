"""Sweep engine benchmark: the embedded study in-process vs on a LocalCluster, and Dask's cost per task.

    python benchmarks/bench_sweep.py                                  # the whole embedded study
    python benchmarks/bench_sweep.py --classes washer --seeds 2       # a smaller grid
    python benchmarks/bench_sweep.py --classes washer brick --seeds 1 --max-train 30 --bootstrap 20
    python benchmarks/bench_sweep.py --skip-study --noop-tasks 400    # scheduling overhead only

Part 1 runs the study (examples/study-embedded.yaml, optionally cut down) twice from an empty
cache, in-process and with `local_cluster=N` (wall time includes starting the cluster and the
workers' imports), and prints both wall times and their ratio.
Part 2 measures the overhead per task with a no-op task function on an already started, warmed-up
cluster and in-process: (wall - compute) / tasks, compute being zero. It includes storing each
task's rows (one small Parquet file) and, on Dask, submission, scheduling and result traffic.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from padim_lib.engine import studyfile as study  # noqa: E402
from padim_lib.engine import sweep  # noqa: E402


def noop_features(spec, cache_dir, *, device="auto", progress=True) -> str:
    """Stands in for featcache.ensure_features: no work, a path to pass on."""
    return str(Path(cache_dir) / f"{spec.category}-{spec.split}.noop")


def noop_task(task, cache_dir, *, device, bootstrap, feature_paths):
    """Stands in for experiments.run_task: one tiny row, no arrays."""
    return pd.DataFrame({"category": [task.category], "metric": ["pro"], "value": [0.0], "replicate": [-1]}), None


def study_tasks(path: Path, classes: list[str] | None, seeds: int | None, max_train: int | None,
                bootstrap: int | None):
    spec = study.load_study(path)
    if bootstrap is not None:
        spec["bootstrap"] = bootstrap
    if classes:
        spec["classes"] = classes
    if seeds is not None:
        spec["seeds"] = list(range(seeds))
    if max_train is not None:
        spec["base"] = {**(spec.get("base") or {}), "max_train": max_train}
    return spec, study.expand(spec, source=str(path))


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def torch_default_threads() -> int:
    import torch

    return torch.get_num_threads()


def load() -> str:
    """The 1-minute load average: on a shared machine, timings only mean something next to it."""
    return f"load {os.getloadavg()[0]:.1f}"


def bench_study(args: argparse.Namespace, scratch: Path) -> None:
    spec, tasks = study_tasks(args.study, args.classes, args.seeds, args.max_train, args.bootstrap)
    n_features = len({s for t in tasks for s in t.feature_specs()})
    print(f"study {args.study.name}: {len(tasks)} tasks, {n_features} feature jobs, "
          f"classes {sorted({t.category for t in tasks})}, bootstrap {spec.get('bootstrap', 200)}", flush=True)
    common = dict(device=spec.get("device", "auto"), bootstrap=spec.get("bootstrap", 200), progress=args.progress)
    before = load()
    wall_local = timed(sweep.run, tasks, scratch / "inproc", torch_threads=args.torch_threads, **common)
    threads = args.torch_threads or f"torch default {torch_default_threads()}"
    print(f"  in-process ({threads} threads): {wall_local:8.1f} s  ({wall_local / len(tasks):.2f} s/task; "
          f"{before} -> {load()})", flush=True)
    before = load()
    wall_dask = timed(sweep.run, tasks, scratch / "dask", local_cluster=args.workers, **common)
    print(f"  LocalCluster({args.workers} workers): {wall_dask:8.1f} s  ({wall_dask / len(tasks):.2f} s/task, "
          f"incl. cluster start; {before} -> {load()})", flush=True)
    print(f"  speed-up in-process / LocalCluster: {wall_local / wall_dask:.2f}x", flush=True)
    a = sweep.ResultStore(scratch / "inproc").load()
    b = sweep.ResultStore(scratch / "dask").load()
    key = ["task_key", "metric", "replicate"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key]), "the two runs stored different rows"
    # Bit-identical when both use one torch thread; otherwise torch sums in another order (~1e-7).
    print(f"  same {len(a)} rows in both runs; max |difference| of values "
          f"{(a['value'] - b['value']).abs().max():.1e}", flush=True)


def bench_overhead(args: argparse.Namespace, scratch: Path) -> None:
    from distributed import Client, LocalCluster

    from padim_lib.datasets.folder import list_categories
    from padim_lib.engine.config import ExperimentConfig

    data_root = study.load_study(args.study)["data_root"]
    # Distinct configurations (eps differs) on one class: N distinct task keys, 2 feature jobs.
    configs = [ExperimentConfig(eps=0.01 + i * 1e-6, label=f"noop {i}") for i in range(args.noop_tasks)]
    category = list_categories(data_root)[0]
    tasks = study.make_tasks(data_root, [category], configs)
    kw = dict(task_fn=noop_task, feature_fn=noop_features, progress=False, bootstrap=0)
    wall_in = timed(sweep.run, tasks, scratch / "noop-inproc", **kw)
    t0 = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.wait_for_workers(args.workers)
        start = time.perf_counter() - t0
        # Warm-up: workers import the task modules (torch) once; not a per-task cost.
        client.run(lambda: __import__("padim_lib.engine.task"))
        sweep.run(tasks[:4], scratch / "noop-warm", scheduler=client, **kw)
        wall_dask = timed(sweep.run, tasks, scratch / "noop-dask", scheduler=client, **kw)
    n = len(tasks)
    print(f"scheduling overhead, {n} no-op tasks (+2 feature jobs), compute = 0:", flush=True)
    print(f"  in-process:               {wall_in:6.2f} s  -> {1000 * wall_in / n:6.1f} ms/task", flush=True)
    print(f"  LocalCluster({args.workers} workers):  {wall_dask:6.2f} s  -> {1000 * wall_dask / n:6.1f} ms/task "
          f"(cluster start {start:.1f} s, not included)", flush=True)
    print(f"  Dask / in-process overhead ratio: {wall_dask / wall_in:.1f}x", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, default=ROOT / "examples" / "study-embedded.yaml")
    p.add_argument("--classes", nargs="+", default=None, help="only these classes (smaller grid)")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 instead of the study's")
    p.add_argument("--max-train", type=int, default=None, help="cap on training images per class")
    p.add_argument("--bootstrap", type=int, default=None, help="bootstrap replicates instead of the study's")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads for the in-process run (default: torch's own, all cores)")
    p.add_argument("--noop-tasks", type=int, default=200)
    p.add_argument("--skip-study", action="store_true", help="only measure the per-task overhead")
    p.add_argument("--progress", action="store_true", help="show the sweep's progress bars")
    args = p.parse_args(argv)
    args.study = args.study.resolve()
    os.chdir(ROOT)  # the example studies' relative paths (data/synthetic) are relative to the repository
    print(f"machine: {os.cpu_count()} CPUs, {load()}; python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        if not args.skip_study:
            bench_study(args, Path(tmp))
        bench_overhead(args, Path(tmp))
    return 0


if __name__ == "__main__":  # Dask's worker processes are spawned: they must not rerun this
    raise SystemExit(main())
