"""The end-to-end tests that start, kill and restart processes: the sweep on a LocalCluster and on a
local pool, `padim` interrupted and killed during a write, a VAE training killed and resumed.

They take seconds each (worker processes import torch), so they sit together here, marked `slow`;
`make test` runs them like every other test (`pytest -m "not slow"` leaves them out while editing).
The cheap fakes of the sweep come from test_sweep, the CLI helpers from test_cli_errors.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_cli_errors import EVAL, FIT, SMALL, padim, tree, wait_for_pause
from test_sweep import CONFIGS, HERE, ROOT, _cache, _canonical, _expected, _run, calls, make_fake_root
from test_vae import TINY, same_state, tiny

from padim_lib.engine import studyfile as study
from padim_lib.engine import sweep
from padim_lib.engine.results import ResultStore
from padim_lib.io.atomic import TMP_MARK
from padim_lib.methods.vae.checkpoint import CHECKPOINT_NAME

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    return make_fake_root(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def tasks(fake_root):
    return study.make_tasks(fake_root, "all", CONFIGS, seeds=[0, 1])  # 3 classes x (1 + 2 + 1) = 12


# ---------------------------------------------------------------------------------------------
# The sweep on a local pool and on Dask: a real scheduler and worker processes on 127.0.0.1
# ---------------------------------------------------------------------------------------------
def test_local_pool_gives_the_in_process_rows(tmp_path, tasks):
    _cache(tmp_path)
    local = _run(tasks, tmp_path, name="inproc")
    pooled = _run(tasks, tmp_path, name="pool", workers=2)
    pd.testing.assert_frame_equal(_canonical(pooled), _canonical(local))
    # each task ran once in each run; the pool's processes had one torch thread
    assert calls(tmp_path / "cache") == sorted(2 * [t.key() for t in tasks])


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as c:
        yield c


def test_local_cluster_gives_the_in_process_rows(tmp_path, tasks):
    _cache(tmp_path)
    local = _run(tasks, tmp_path, name="inproc")
    dask_rows = _run(tasks, tmp_path, name="dask", local_cluster=2)
    pd.testing.assert_frame_equal(_canonical(dask_rows), _canonical(local))
    pd.testing.assert_frame_equal(_canonical(dask_rows), _expected(tasks, 3), check_dtype=False)


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_killed_worker_loses_and_duplicates_nothing(tmp_path, tasks, cluster):
    from distributed import Client

    tasks = [t for t in tasks if t.category != "gamma"]  # 8 tasks of 1 s on 2 workers
    cache = _cache(tmp_path, sleep=1.0)
    store = ResultStore(tmp_path / "res")
    outcome: dict = {}

    def sweep_thread():
        try:
            outcome["rows"] = _run(tasks, tmp_path, scheduler=cluster.scheduler_address)
        except BaseException as exc:  # handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=sweep_thread)
    thread.start()
    running = cache / "running"
    _wait_for(lambda: len(store.keys()) >= 2 and any(running.iterdir()), 120, "a worker inside its third task")
    victim = next(running.iterdir())
    pid, victim_key = int(victim.name), victim.read_text()
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.1)
    assert victim.exists()  # killed inside the task (it removes the file when its sleep ends)
    assert not store.has(victim_key)
    thread.join(120)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    with Client(cluster.scheduler_address) as client:  # the nanny replaced the killed worker process
        _wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 60, "the replacement worker")
        assert pid not in client.run(os.getpid).values()
    rows = outcome["rows"]
    # Nothing lost, nothing twice: exactly the expected rows, one file per task.
    assert not rows.duplicated(["task_key", "metric", "replicate"]).any()
    pd.testing.assert_frame_equal(_canonical(rows), _expected(tasks, 3), check_dtype=False)
    assert store.keys() == sorted(t.key() for t in tasks)
    # Every task ran once, except the killed one, which the scheduler ran again elsewhere.
    assert calls(cache) == sorted([t.key() for t in tasks] + [victim_key])


def test_failing_task_on_dask_is_retried_then_reported(tmp_path, tasks, cluster):
    cache = _cache(tmp_path, fail=["beta"], feature_fail=["gamma"])
    with pytest.raises(sweep.SweepError) as info:
        _run(tasks, tmp_path, scheduler=cluster.scheduler_address)
    err = info.value
    beta = [t.key() for t in tasks if t.category == "beta"]
    fails = err.failures.set_index("task_key")
    assert all(fails.loc[k].error_type == "ZeroDivisionError" and fails.loc[k].message == "bad class beta" for k in beta)
    assert all(fails.loc[t.key()].message.startswith("feature extraction failed: features gamma")
               for t in tasks if t.category == "gamma")
    assert (err.failures.error_type == "RuntimeError").sum() == 2
    # retries=2: every beta task ran three times; alpha once; gamma never.
    assert calls(cache) == sorted(beta * 3 + [t.key() for t in tasks if t.category == "alpha"])
    assert sorted(err.rows["task_key"].unique()) == sorted(t.key() for t in tasks if t.category == "alpha")


_CHILD = """
import sys
sys.path[:0] = [{here!r}, {root!r}]
import test_sweep
from padim_lib.engine import studyfile as study
from padim_lib.engine import sweep
from padim_lib.engine import sweep
tasks = study.make_tasks({data!r}, "all", test_sweep.CONFIGS, seeds=[0, 1])
sweep.run(tasks, {res!r}, scheduler={address!r}, bootstrap=3, cache_dir={cache!r}, progress=False,
          task_fn=test_sweep.fake_task, feature_fn=test_sweep.fake_features)
"""


def test_restart_after_killed_client_computes_only_the_missing(tmp_path, fake_root, tasks, cluster):
    cache = _cache(tmp_path, sleep=0.3)
    store = ResultStore(tmp_path / "res")
    code = _CHILD.format(here=str(HERE), root=str(ROOT), data=str(fake_root), res=str(store.directory),
                         address=cluster.scheduler_address, cache=str(cache))
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        # a generous limit: the child imports the library and the fakes first (long on a busy machine)
        _wait_for(lambda: len(store.keys()) >= 3 or child.poll() is not None, 300, "three stored tasks")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # Tasks already running on the workers finish and store their rows (the workers own the writes);
    # wait until every started task has stored its rows and nothing new starts.
    def settled():
        before = (len(calls(cache)), len(store.keys()))
        time.sleep(0.8)
        return before == (len(calls(cache)), len(store.keys())) and before[0] == before[1]

    _wait_for(settled, 30, "the workers to go idle")
    done_before = set(store.keys())
    assert 3 <= len(done_before) < len(tasks)
    first_calls = calls(cache)

    rows = _run(tasks, tmp_path, scheduler=cluster.scheduler_address)
    new_calls = list(calls(cache))
    for k in first_calls:
        new_calls.remove(k)
    assert sorted(new_calls) == sorted(t.key() for t in tasks if t.key() not in done_before)
    pd.testing.assert_frame_equal(_canonical(rows), _expected(tasks, 3), check_dtype=False)


# ---------------------------------------------------------------------------------------------
# `padim` interrupted and killed at a known point of a write (PADIM_TEST_PAUSE_BEFORE_RENAME)
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ws(cli_workspace, tmp_path_factory) -> Path:
    """A copy of the session's fitted workspace (tests/conftest.py: syn/, model.pt)."""
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(cli_workspace, ws, dirs_exist_ok=True)
    return ws


def test_ctrl_c_during_the_save_is_one_line_exit_130_and_leaves_nothing(ws):
    before = tree(ws)
    proc = padim([*FIT, *SMALL, "--out", "k/m.pt"], ws, pause=60)
    line = wait_for_pause(proc)
    assert f".m.pt{TMP_MARK}{proc.pid}@" in line  # the temporary file exists now, under a recognisable name
    assert any(TMP_MARK in p for p in tree(ws) - before)
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == 130
    assert rest.strip().splitlines() == ["padim fit: interrupted; temporary files removed"]
    assert tree(ws) == before  # no model, no temporary file, not even the folder k/


def test_sigterm_is_handled_like_ctrl_c(ws):
    before = tree(ws)
    proc = padim([*EVAL, "--device", "cpu", "--json", "t.json"], ws, pause=60)
    wait_for_pause(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert "terminated" in proc.stderr.read()
    assert tree(ws) == before


def test_killed_save_maps_leaves_no_partial_file_and_the_next_run_cleans_up(ws):
    before = tree(ws)
    maps = ["--save-maps", "k4/maps.npz"]
    proc = padim([*EVAL, "--device", "cpu", *maps], ws, pause=60)
    wait_for_pause(proc)
    proc.kill()  # SIGKILL: no clean-up can run
    proc.wait(timeout=60)
    left = tree(ws) - before
    assert not (ws / "k4" / "maps.npz").exists()
    assert [p for p in left if TMP_MARK in p and p.startswith("k4/.maps.npz")]  # stranded, but recognisable
    done = padim([*EVAL, "--device", "cpu", *maps], ws)
    assert done.returncode == 0, done.stderr
    assert tree(ws) - before == {"k4", "k4/maps.npz"}  # the dead writer's file is gone
    with __import__("numpy").load(ws / "k4" / "maps.npz") as arrays:
        assert arrays["maps"].shape == (4, 64, 64)


# ---------------------------------------------------------------------------------------------
# A VAE training killed with SIGKILL resumes from its checkpoint
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(6, 3, 72, 72, generator=torch.Generator().manual_seed(1))  # test_vae's images


_KILLED_RUN = textwrap.dedent("""
    import sys, torch
    from padim_lib.methods.vae.detector import VAE
    torch.set_num_threads(int(sys.argv[2]))
    images = torch.randn(6, 3, 72, 72, generator=torch.Generator().manual_seed(1))
    VAE(**{TINY!r}, epochs=1000, checkpoint_dir=sys.argv[1]).fit(images)
""")


def test_resume_after_a_real_kill(images, tmp_path):
    """A training process killed (SIGKILL) after some epochs resumes to an uninterrupted run's weights."""
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN.replace("{TINY!r}", repr(TINY)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), str(torch.get_num_threads())], env=env)
    ckpt = tmp_path / CHECKPOINT_NAME
    try:
        deadline = time.monotonic() + 120
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ckpt.exists(), "the training process wrote no checkpoint"
        proc.send_signal(signal.SIGKILL)  # mid-epoch, possibly mid-write
    finally:
        proc.kill()
        proc.wait()
    done = torch.load(ckpt, weights_only=True)["epoch"]
    resumed = tiny(epochs=done + 1, checkpoint_dir=tmp_path).fit(images)
    assert same_state(resumed, tiny(epochs=done + 1).fit(images))
