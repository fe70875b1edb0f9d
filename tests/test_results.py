"""ResultStore: atomic, idempotent, crash-safe result rows and artifacts."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from padim_lib.engine.results import ResultStore
from padim_lib.errors import PadimError

ROOT = Path(__file__).resolve().parents[1]


def make_rows(key: str, n_replicates: int = 5, reduce: str | None = "random:10") -> pd.DataFrame:
    """Tidy rows whose values are a deterministic function of the key."""
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    metrics = ["image_auroc", "pixel_auroc", "pro"]
    reps = np.arange(-1, n_replicates)
    return pd.DataFrame(
        {
            "category": "washer",
            "config_key": key,
            "reduce": reduce,
            "seed": 0,
            "metric": np.repeat(metrics, len(reps)),
            "replicate": np.tile(reps, len(metrics)),
            "value": rng.random(len(metrics) * len(reps)),
        }
    )


def test_write_load_roundtrip_with_artifacts(tmp_path):
    store = ResultStore(tmp_path / "res")
    assert store.load().empty and store.keys() == [] and not store.has("a1")
    arts = {"scores": np.linspace(0, 1, 7), "paths": np.asarray(["x.png", "y.png"]), "maps": np.ones((2, 4, 4), np.float16)}
    store.write("a1", make_rows("a1"), arts)
    store.write("b2", make_rows("b2", reduce=None))  # all-null column in one file, str in the other
    assert store.has("a1") and store.has("b2") and store.keys() == ["a1", "b2"]

    rows = store.load()
    assert len(rows) == 2 * 18 and set(rows["task_key"]) == {"a1", "b2"}
    got = rows[rows.task_key == "a1"].drop(columns="task_key").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, make_rows("a1"), check_dtype=False)
    assert rows.loc[rows.task_key == "b2", "reduce"].isna().all()
    # Selected keys only; a key without rows is skipped.
    assert set(store.load(["b2", "zz"])["task_key"]) == {"b2"}

    back = store.artifacts("a1")
    assert set(back) == set(arts)
    for name, value in arts.items():
        np.testing.assert_array_equal(back[name], value)
        assert back[name].dtype == value.dtype
    with pytest.raises(FileNotFoundError, match="b2"):
        store.artifacts("b2")


def test_rewrite_same_key_replaces_not_duplicates(tmp_path):
    store = ResultStore(tmp_path)
    for _ in range(3):
        store.write("k", make_rows("k"))
    assert len(store.load()) == 18 and len(list(store.rows_dir.iterdir())) == 1


@pytest.mark.parametrize("key", ["", "../evil", ".hidden", "a/b", "x" * 201, 5])
def test_bad_keys_are_rejected(tmp_path, key):
    with pytest.raises(PadimError, match="task_key"):
        ResultStore(tmp_path).write(key, make_rows("k"))


def test_bad_inputs_name_the_problem(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(PadimError, match="DataFrame"):
        store.write("k", {"value": [1]})
    with pytest.raises(PadimError, match="'obj'.*object"):
        store.write("k", make_rows("k"), {"obj": np.array([{"a": 1}], dtype=object)})
    assert not store.has("k")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PadimError, match="not a directory"):
        ResultStore(tmp_path / "file")


def test_stray_tmp_and_foreign_files_are_ignored(tmp_path):
    store = ResultStore(tmp_path)
    store.write("good", make_rows("good"))
    # What a writer killed mid-write leaves: a hidden partial temporary file.
    (store.rows_dir / ".dead.parquet.abc123.tmp").write_bytes(b"PAR1 partial")
    (store.rows_dir / "notes.txt").write_text("not a row file")
    assert store.keys() == ["good"]
    assert set(store.load()["task_key"]) == {"good"}


def test_crash_between_artifacts_and_rows_leaves_task_incomplete(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    real_replace = os.replace

    def crash_on_rows(src, dst):
        if str(dst).endswith(".parquet"):
            raise KeyboardInterrupt("killed before the rows were moved into place")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_rows)
    with pytest.raises(KeyboardInterrupt):
        store.write("t", make_rows("t"), {"a": np.arange(3)})
    monkeypatch.setattr(os, "replace", real_replace)
    # Artifacts are there, but the task is not complete: no rows, no leftover temporary file.
    assert store.artifacts_path("t").is_file()
    assert not store.has("t") and store.load().empty
    assert list(store.rows_dir.iterdir()) == []
    store.write("t", make_rows("t"), {"a": np.arange(3)})  # the retry completes it
    assert store.has("t") and len(store.load()) == 18


_WRITER = """
import sys, numpy as np, pandas as pd
from padim_lib.engine.results import ResultStore
store = ResultStore(sys.argv[1])
rows = pd.DataFrame({"metric": "pro", "replicate": np.arange(400_000), "value": np.arange(400_000) / 7.0})
print("ready", flush=True)
i = 0
while True:  # keep rewriting until killed: the kill lands in the middle of some write
    store.write("big", rows, {"maps": np.arange(200_000, dtype=np.float32)})
    i += 1
"""


def test_writer_killed_mid_write_leaves_no_partial_rows(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    stranded = 0
    for delay in (0.05, 0.4, None):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        if delay is None:  # the last writer is killed after one complete write, however long that takes
            deadline = time.monotonic() + 120
            while not ResultStore(tmp_path).has("big") and time.monotonic() < deadline:
                time.sleep(0.02)
            delay = 0.05
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # the next writer of the same target removes a dead writer's file: count them per kill
        stranded += len(list(tmp_path.glob("*/.*.tmp")))
        store = ResultStore(tmp_path)
        rows = store.load()
        # Either no complete write yet, or exactly one complete copy: never a truncated table.
        if store.has("big"):
            assert len(rows) == 400_000 and rows["value"].iloc[-1] == pytest.approx(399_999 / 7.0)
            assert len(store.artifacts("big")["maps"]) == 200_000
        else:
            assert rows.empty
    leftovers = len(list(tmp_path.glob("*/.*.tmp")))
    assert stranded > 0  # the kills did land inside writes (the writer spends most time writing)
    assert store.remove_stale_tmp(older_than=0) == leftovers
    assert not list(tmp_path.glob("*/.*.tmp")) and store.has("big")


def _race_writer(directory: str, start: float, rounds: int) -> None:
    store = ResultStore(directory)
    while time.time() < start:
        time.sleep(0.001)
    for _ in range(rounds):
        store.write("shared", make_rows("shared", n_replicates=2000), {"a": np.arange(1000)})


def test_two_processes_racing_on_one_key_never_corrupt(tmp_path):
    ctx = mp.get_context("spawn")
    start = time.time() + 1.5  # both begin together, after the interpreter start-up
    procs = [ctx.Process(target=_race_writer, args=(str(tmp_path), start, 15)) for _ in range(2)]
    for p in procs:
        p.start()
    expected = make_rows("shared", n_replicates=2000)
    store = ResultStore(tmp_path)
    n_reads = 0
    while any(p.is_alive() for p in procs):
        rows = store.load()  # a reader racing the writers sees nothing or the full, exact table
        if not rows.empty:
            pd.testing.assert_frame_equal(rows.drop(columns="task_key"), expected, check_dtype=False)
            n_reads += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert n_reads > 0
    assert store.keys() == ["shared"] and len(store.load()) == len(expected)
    assert [p.name for p in store.rows_dir.iterdir()] == ["shared.parquet"]  # no temporary file left
    np.testing.assert_array_equal(store.artifacts("shared")["a"], np.arange(1000))
