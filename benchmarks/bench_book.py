"""The embedded book's Tables I and II from an empty cache: one task after another (as before) against
the defaults (a local pool of single-threaded processes, one per core, and channels-last backbones).

Not a test: a measurement, run by hand on an otherwise idle machine. Both sides compute the same
tasks on the same data (the embedded profile's synthetic set, classes, dims, seeds and bootstrap
count) into their own empty result folder, in this one run, alternating A B A B ...; the rows must
come out equal (checked). Printed: each side's wall time (median of the repeats) and the ratio
B / A, the issue's target being <= 0.65.

    python benchmarks/bench_book.py [--classes brick chip] [--seeds 10] [--repeats 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as the book's embedded profile runs (torch_threads 1)

import pandas as pd  # noqa: E402

from padim_lib.datasets import make_synthetic  # noqa: E402
from padim_lib.features import cache as featcache  # noqa: E402
from padim_lib.paper import tables  # noqa: E402
from padim_lib.paper.run import run  # noqa: E402
from padim_lib.report.runner import PROFILES  # noqa: E402


def tables_once(data: Path, results: Path, classes, seeds: int, workers, channels_last: bool) -> tuple[float, pd.DataFrame]:
    featcache.CHANNELS_LAST = channels_last  # the extractor's layout (a runtime choice, not in any key)
    p = PROFILES["embedded"]
    common = dict(results_dir=results, device="cpu", bootstrap=p["bootstrap"], torch_threads=1, progress=False,
                  workers=workers)
    t0 = time.perf_counter()
    t1 = run(tables.table1(data, classes, backbone=p["backbone"]), **common)
    t2 = run(tables.table2(data, classes, backbone=p["backbone"], dims=p["dims"], seeds=seeds), **common)
    seconds = time.perf_counter() - t0
    rows = pd.concat([t1.results, t2.results]).drop(columns=["task_key"], errors="ignore")
    return seconds, rows.sort_values(["category", "label", "seed", "metric", "replicate"]).reset_index(drop=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", nargs="+", default=None, help="default: every class of the synthetic set")
    ap.add_argument("--seeds", type=int, default=PROFILES["embedded"]["seeds"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-book-"))
    data = make_synthetic(work / "synthetic", seed=0)
    times: dict[str, list[float]] = {"A": [], "B": []}
    rows = {}
    for r in range(args.repeats):
        for side, workers, cl in (("A", 1, False), ("B", "auto", True)):
            seconds, rows[side] = tables_once(data, work / f"results-{side}-{r}", args.classes, args.seeds, workers, cl)
            times[side].append(seconds)
            print(f"repeat {r}: {side} {seconds:7.1f} s", flush=True)
    diff = (rows["A"]["value"] - rows["B"]["value"]).abs().max()
    a, b = statistics.median(times["A"]), statistics.median(times["B"])
    print(f"Tables I + II, embedded profile, {os.cpu_count()} cores, {len(rows['A'])} rows, load {os.getloadavg()[0]:.1f}")
    print(f"  A  one task after another, 1 thread, no channels-last : {a:7.1f} s (median of {args.repeats})")
    print(f"  B  local pool (one process per core), channels-last   : {b:7.1f} s")
    print(f"  B / A = {b / a:.2f}   (target <= 0.65)   rows equal: max |difference| {diff:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
