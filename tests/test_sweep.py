"""The sweep engine: grid expansion, study files, resumability, failures, and Dask (LocalCluster).

Most tests inject cheap deterministic task/feature functions (module-level, so Dask workers can
import them as `test_sweep.fake_task`); they record every call as a marker file, which is how the
tests count what was (re)computed. One integration test runs the real experiments.run_task. The
sweep on a local pool and on a LocalCluster (worker processes, kills, restarts) is tested in
test_end_to_end.py with these fakes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from padim_lib.engine import studyfile as study
from padim_lib.engine import sweep
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.jobs import task_label
from padim_lib.engine.results import ResultStore
from padim_lib.errors import PadimError
from padim_lib.paper.tables import PRESETS, table1_configs, table2_configs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLASSES = ("alpha", "beta", "gamma")


# ---------------------------------------------------------------------------------------------
# Fakes: deterministic, cheap, controlled through <cache_dir>/control.json
# ---------------------------------------------------------------------------------------------
def _control(cache_dir) -> dict:
    path = Path(cache_dir) / "control.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _mark(cache_dir, kind: str, key: str) -> None:
    folder = Path(cache_dir) / kind
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{key}.{uuid.uuid4().hex}").touch()


def calls(cache_dir, kind: str = "calls") -> list[str]:
    """Keys of every recorded call (one entry per call, so repeats show up)."""
    folder = Path(cache_dir) / kind
    return sorted(p.name.split(".")[0] for p in folder.iterdir()) if folder.is_dir() else []


def fake_features(spec, cache_dir, *, device="auto", progress=True) -> Path:
    if spec.category in _control(cache_dir).get("feature_fail", []):
        raise RuntimeError(f"backbone exploded on {spec.category}")
    _mark(cache_dir, "feature_calls", f"{spec.category}-{spec.split}")
    path = Path(cache_dir) / f"{spec.category}-{spec.split}.feat"
    path.write_text(spec.category)
    return path


def fake_rows(task, bootstrap: int) -> pd.DataFrame:
    key = task.key()
    rng = np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))
    reps = np.arange(-1, bootstrap)
    metrics = ["image_auroc", "pixel_auroc", "pro"]
    return pd.DataFrame(
        {
            "category": task.category,
            "config_key": task.config.key(),
            "label": task.config.label,
            "seed": task.config.seed,
            "metric": np.repeat(metrics, len(reps)),
            "replicate": np.tile(reps, len(metrics)),
            "value": rng.random(len(metrics) * len(reps)),
        }
    )


def fake_task(task, cache_dir, *, device, bootstrap, feature_paths):
    ctl = _control(cache_dir)
    # Dependencies ran first: both feature files exist and are this class's.
    assert len(feature_paths) == 2 and all(Path(p).read_text() == task.category for p in feature_paths)
    _mark(cache_dir, "calls", task.key())
    if "torch" in sys.modules:  # what the sweep set torch's thread count to for this task
        (Path(cache_dir) / "threads").mkdir(exist_ok=True)
        (Path(cache_dir) / "threads" / task.key()).write_text(str(sys.modules["torch"].get_num_threads()))
    running = Path(cache_dir) / "running" / f"{os.getpid()}"  # which process is inside a task now
    running.parent.mkdir(exist_ok=True)
    running.write_text(task.key())
    time.sleep(ctl.get("sleep", 0.0))
    running.unlink()
    if task.category in ctl.get("fail", []):
        raise ZeroDivisionError(f"bad class {task.category}")
    return fake_rows(task, bootstrap), {"scores": np.arange(3.0)}


def noop_task(task, cache_dir, *, device, bootstrap, feature_paths):
    return pd.DataFrame({"metric": ["pro"], "value": [0.5]}), None


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------
def make_fake_root(root: Path) -> Path:
    """A data tree in the MVTec layout with one tiny file per class (the fakes read no images)."""
    for cat in CLASSES:
        for sub in ("train/good", "test/good"):
            (root / cat / sub).mkdir(parents=True)
            (root / cat / sub / "000.png").write_bytes(cat.encode())
    return root


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    return make_fake_root(tmp_path_factory.mktemp("data"))


CONFIGS = (
    ExperimentConfig(backbone="resnet18", layers=("layer1",), label="Layer 1"),
    ExperimentConfig(backbone="resnet18", reduce="random:10", label="Rd 10"),
    ExperimentConfig(backbone="resnet18", reduce="pca:10", label="PCA 10"),
)


@pytest.fixture(scope="module")
def tasks(fake_root):
    return study.make_tasks(fake_root, "all", CONFIGS, seeds=[0, 1])  # 3 classes x (1 + 2 + 1) = 12


def _cache(tmp_path: Path, **control) -> Path:
    cache = tmp_path / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "control.json").write_text(json.dumps(control))
    return cache


def _expected(tasks, bootstrap: int) -> pd.DataFrame:
    frames = [fake_rows(t, bootstrap).assign(task_key=t.key()) for t in tasks]
    return _canonical(pd.concat(frames))


def _canonical(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.astype({"category": str, "config_key": str, "label": str, "metric": str, "task_key": str})
    return rows.sort_values(["task_key", "metric", "replicate"]).reset_index(drop=True)


def _run(tasks, tmp_path, name="res", **kwargs) -> pd.DataFrame:
    kwargs.setdefault("cache_dir", tmp_path / "cache")
    kwargs.setdefault("progress", False)
    kwargs.setdefault("bootstrap", 3)
    return sweep.run(tasks, tmp_path / name, task_fn=fake_task, feature_fn=fake_features, **kwargs)


# ---------------------------------------------------------------------------------------------
# Grid expansion and study files
# ---------------------------------------------------------------------------------------------
def test_make_tasks_expands_seeds_only_where_used(fake_root, tasks):
    assert len(tasks) == 12 and len({t.key() for t in tasks}) == 12
    per = {(t.category, t.config.label): sorted(u.config.seed for u in tasks
                                                 if (u.category, u.config.label) == (t.category, t.config.label))
           for t in tasks}
    assert per[("beta", "Rd 10")] == [0, 1] and per[("beta", "PCA 10")] == [0] and per[("beta", "Layer 1")] == [0]
    # A seed on a config that ignores it is normalised away; repeated configs collapse.
    again = study.make_tasks(fake_root, ["beta"], [CONFIGS[2].replace(seed=7), CONFIGS[2], CONFIGS[1]], seeds=[3])
    assert [(t.config.label, t.config.seed) for t in again] == [("PCA 10", 0), ("Rd 10", 3)]
    # seeds=None keeps each config's own seed.
    assert [t.config.seed for t in study.make_tasks(fake_root, ["beta"], [CONFIGS[1].replace(seed=5)])] == [5]
    with pytest.raises(PadimError, match=r"\['delta'\].*available"):
        study.make_tasks(fake_root, ["beta", "delta"], CONFIGS)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        study.make_tasks(fake_root / "nowhere", "all", CONFIGS)


def _write_study(tmp_path: Path, fake_root: Path, **overrides) -> Path:
    study = {
        "name": "test study",
        "data_root": str(fake_root),
        "results": str(tmp_path / "study-res"),
        "features": str(tmp_path / "cache"),
        "classes": ["alpha", "gamma"],
        "seeds": [0, 1, 2],
        "bootstrap": 3,
        "base": {"backbone": "resnet18"},
        "configurations": ["table1", {"reduce": "random:10", "label": "Rd 10", "seeds": [4]},
                           {"preset": "table2", "dims": [20]}],
    }
    study.update(overrides)
    path = tmp_path / "study.yaml"
    import yaml

    path.write_text(yaml.safe_dump(study))
    return path


def test_expand_study_presets_and_per_entry_seeds(tmp_path, fake_root):

    spec = study.load_study(_write_study(tmp_path, fake_root))
    got = study.expand(spec, presets=PRESETS)
    t1 = table1_configs(backbone="resnet18")
    t2 = table2_configs(backbone="resnet18", dims=(20,), seeds=[0, 1, 2])
    expected = study.make_tasks(fake_root, ["alpha", "gamma"], [*t1, CONFIGS[1].replace(seed=4), *t2], seeds=None)
    assert [t.key() for t in got] == [t.key() for t in expected]
    seeds = sorted({t.config.seed for t in got if t.config.label == "Rd 10"})
    assert seeds == [4]  # the entry's own seeds replace the study's
    assert {t.config.backbone for t in got} == {"resnet18"}


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ({"clases": "all"}, r"study\.yaml: clases: unknown key"),
        ({"seeds": "0-9"}, r"study\.yaml: seeds: expected a non-empty list of integers"),
        ({"classes": ["alpha", "nope"]}, r"study\.yaml: classes: .*\['nope'\]"),
        ({"configurations": []}, r"study\.yaml: configurations: expected a non-empty list"),
        ({"configurations": ["table3"]}, r"study\.yaml: configurations\[0\]: unknown preset 'table3'"),
        ({"configurations": ["table1", {"layer": ["layer1"]}]}, r"study\.yaml: configurations\[1\]: .*'layer'"),
        ({"configurations": [{"reduce": "random:0"}]}, r"study\.yaml: configurations\[0\]: .*reduce"),
        ({"bootstrap": -1}, r"study\.yaml: bootstrap: expected a non-negative integer"),
        ({"torch_threads": 0}, r"study\.yaml: torch_threads: expected a positive integer"),
    ],
)
def test_study_errors_name_the_file_and_key(tmp_path, fake_root, override, pattern):
    path = _write_study(tmp_path, fake_root, **override)
    with pytest.raises(PadimError, match=pattern):
        study.run_study(presets=PRESETS, path=path, task_fn=fake_task, feature_fn=fake_features, progress=False)


def test_study_file_problems(tmp_path, fake_root):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        study.run_study(presets=PRESETS, path=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(PadimError, match="bad.yaml: expected a mapping"):
        study.run_study(presets=PRESETS, path=bad)
    path = _write_study(tmp_path, fake_root, data_root=str(tmp_path / "gone"))
    with pytest.raises(PadimError, match=r"study\.yaml: data_root: .*gone"):
        study.run_study(presets=PRESETS, path=path)


def test_run_study_in_process_and_results_override(tmp_path, fake_root):
    path = _write_study(tmp_path, fake_root, configurations=[{"reduce": "random:10", "label": "Rd 10"}])
    _cache(tmp_path)
    rows = study.run_study(presets=PRESETS, path=path, task_fn=fake_task, feature_fn=fake_features, progress=False)
    tasks = study.expand(study.load_study(path), presets=PRESETS)
    assert len(tasks) == 2 * 3
    pd.testing.assert_frame_equal(_canonical(rows), _expected(tasks, 3), check_dtype=False)
    assert ResultStore(tmp_path / "study-res").keys() == sorted(t.key() for t in tasks)
    other = study.run_study(presets=PRESETS, path=path, results=tmp_path / "elsewhere", task_fn=fake_task, feature_fn=fake_features,
                            progress=False)
    assert len(other) == len(rows) and ResultStore(tmp_path / "elsewhere").keys() == sorted(t.key() for t in tasks)


# ---------------------------------------------------------------------------------------------
# In-process runs
# ---------------------------------------------------------------------------------------------
def test_in_process_run_is_resumable_and_shares_features(tmp_path, tasks):
    cache = _cache(tmp_path)
    rows = _run(tasks, tmp_path)
    pd.testing.assert_frame_equal(_canonical(rows), _expected(tasks, 3), check_dtype=False)
    assert calls(cache) == sorted(t.key() for t in tasks)  # each task exactly once
    # One feature job per (class, split), shared by the 4 configurations of each class.
    assert calls(cache, "feature_calls") == sorted(f"{c}-{s}" for c in CLASSES for s in ("test", "train"))
    assert ResultStore(tmp_path / "res").artifacts(tasks[0].key())["scores"].tolist() == [0.0, 1.0, 2.0]

    again = _run(tasks, tmp_path)  # everything stored: nothing runs, same rows come back
    assert len(calls(cache)) == len(tasks) and len(calls(cache, "feature_calls")) == 6
    pd.testing.assert_frame_equal(_canonical(again), _canonical(rows))

    lost = [tasks[3], tasks[7]]
    for t in lost:
        ResultStore(tmp_path / "res").rows_path(t.key()).unlink()
    _run(tasks, tmp_path)
    assert calls(cache) == sorted([t.key() for t in tasks] + [t.key() for t in lost])  # only the missing ones
    assert len(calls(cache, "feature_calls")) == 6 + 2 * len({t.category for t in lost})

    # Another bootstrap count is another result: every task is computed again (one feature job per
    # class and split again; the real ensure_features finds its file and returns it)
    n_features = len(calls(cache, "feature_calls"))
    five = _run(tasks, tmp_path, bootstrap=5)
    assert len(calls(cache)) == 2 * len(tasks) + len(lost)
    assert len(calls(cache, "feature_calls")) == n_features + 6
    assert set(five["replicate"]) == {-1, 0, 1, 2, 3, 4}
    assert {ResultStore(tmp_path / "res").replicates(t.key()) for t in tasks} == {5}


def test_failures_are_reported_and_the_rest_completes(tmp_path, tasks, capsys):
    cache = _cache(tmp_path, fail=["beta"], feature_fail=["gamma"])
    with pytest.raises(sweep.SweepError) as info:
        _run(tasks, tmp_path, progress=True)
    err = info.value
    by_class = {c: [t for t in tasks if t.category == c] for c in CLASSES}
    # alpha's rows are all stored and returned with the error.
    assert sorted(err.rows["task_key"].unique()) == sorted(t.key() for t in by_class["alpha"])
    fails = err.failures.set_index("task_key")
    for t in by_class["beta"]:
        f = fails.loc[t.key()]
        assert f.error_type == "ZeroDivisionError" and f.message == "bad class beta"
        assert f.label == task_label(t) and "ZeroDivisionError" in f.traceback
    for t in by_class["gamma"]:  # never run: their features failed; the cause is named
        assert fails.loc[t.key()].message.startswith("feature extraction failed: features gamma")
    feature_rows = err.failures[err.failures.task_key.str.startswith("features-")]
    assert len(feature_rows) == 2 and set(feature_rows.error_type) == {"RuntimeError"}
    assert "backbone exploded on gamma" in str(err) and "beta / Rd 10 / seed 1: ZeroDivisionError" in str(err)
    assert not any(k in calls(cache) for k in (t.key() for t in by_class["gamma"]))
    # Shown while running, not only at the end.
    shown = capsys.readouterr().err
    assert "FAILED beta / PCA 10: ZeroDivisionError: bad class beta" in shown and "failed=6" in shown


def test_torch_threads_are_set_per_task_and_restored(tmp_path, tasks):
    import torch

    cache = _cache(tmp_path)
    before = torch.get_num_threads()
    _run(tasks[:3], tmp_path, torch_threads=3)
    assert [p.read_text() for p in sorted((cache / "threads").iterdir())] == ["3", "3", "3"]
    assert torch.get_num_threads() == before  # library code leaves the process as it found it
    _run(tasks[3:5], tmp_path, name="res2")  # default in-process: torch's own setting
    assert {(cache / "threads" / t.key()).read_text() for t in tasks[3:5]} == {str(before)}


def test_run_argument_errors(tmp_path, tasks):
    with pytest.raises(PadimError, match="either scheduler or local_cluster"):
        _run(tasks, tmp_path, scheduler="tcp://127.0.0.1:1", local_cluster=2)
    with pytest.raises(PadimError, match="local_cluster must be a positive"):
        _run(tasks, tmp_path, local_cluster=0)
    with pytest.raises(PadimError, match="torch_threads must be a positive integer"):
        _run(tasks, tmp_path, torch_threads=0)
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(PadimError, match="cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'"):
        _run(tasks[:1], tmp_path, scheduler="tcp://127.0.0.1:9")


# ---------------------------------------------------------------------------------------------
# The real task function on a tiny synthetic set
# ---------------------------------------------------------------------------------------------
def test_real_run_task_in_process(tmp_path):
    from padim_lib.datasets.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "syn", seed=0, n_train=6, n_test_good=2, n_test_defect=3, size=64,
                          categories=["washer"])
    common = dict(backbone="resnet18", pretrained=False, resize=64, crop=None, max_train=6)
    configs = [ExperimentConfig(reduce="random:16", label="Rd 16", **common)]
    tasks = study.make_tasks(data, "all", configs, seeds=[0, 1])
    assert len(tasks) == 2
    rows = sweep.run(tasks, tmp_path / "res", device="cpu", bootstrap=4, progress=False)
    assert set(rows["task_key"]) == {t.key() for t in tasks}
    assert set(rows["metric"]) >= {"image_auroc", "pixel_auroc", "pro"}
    full = rows[rows.replicate == -1]
    assert full.groupby("task_key").size().min() >= 3 and full["value"].between(0, 1).all()
    assert sorted(rows.loc[rows.replicate >= 0, "replicate"].unique()) == [0, 1, 2, 3]
    # Both Rd seeds differ from each other (the seed reaches the model) but share the feature files.
    rd = full[full.label == "Rd 16"].pivot_table(index="metric", columns="seed", values="value")
    assert rd.loc["pixel_auroc", 0] != rd.loc["pixel_auroc", 1]
    feature_files = sorted((tmp_path / "res" / "features").glob("*.pt"))
    assert len(feature_files) == 2  # one train and one test pass shared by both tasks
    mtimes = {p: p.stat().st_mtime_ns for p in ResultStore(tmp_path / "res").rows_dir.iterdir()}
    again = sweep.run(tasks, tmp_path / "res", device="cpu", bootstrap=4, progress=False)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing recomputed
    pd.testing.assert_frame_equal(again, rows)


def test_auto_workers_follow_padim_workers_else_the_cores(monkeypatch):
    import os

    from padim_lib.engine.local_pool import WORKERS_ENV, default_workers

    monkeypatch.setenv(WORKERS_ENV, "3")
    assert default_workers() == 3
    monkeypatch.delenv(WORKERS_ENV)
    assert default_workers() == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(WORKERS_ENV, bad)
        with pytest.raises(PadimError, match=rf"\$PADIM_WORKERS='{bad}'; expected a positive number"):
            default_workers()
