"""Every bad input through the real command line (`python -m padim_lib` in a subprocess): exit 2,
one line on stderr naming the option or file, no traceback, nothing new on disk; interrupts and
kills at a known point of a write (the PADIM_TEST_PAUSE_BEFORE_RENAME hook of padim_lib.io.atomic)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from padim_lib.errors import PadimError
from padim_lib.io.atomic import PAUSE_ENV

ROOT = Path(__file__).resolve().parents[1]
CATEGORY = "washer"
SMALL = ["--resize", "64", "--crop", "0", "--device", "cpu"]


def padim(args: list[str], cwd: Path, pause: float | None = None, env_extra: dict[str, str] | None = None,
          **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    """Run `python -m padim_lib ARGS` in `cwd` with this worktree's library (`env_extra` added to its
    environment); with `pause`, start it (stderr piped) and return the Popen so the caller can signal
    it at the pause."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", **(env_extra or {}))
    env.pop(PAUSE_ENV, None)
    cmd = [sys.executable, "-m", "padim_lib", *args]
    if pause is None:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, **kw)
    env[PAUSE_ENV] = str(pause)
    # SIGINT as a terminal sends it: not ignored, whatever the test runner's own disposition
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def wait_for_pause(proc: subprocess.Popen) -> str:
    """Read the writer's stderr up to the hook's line; returns it (it names the temporary file)."""
    for line in proc.stderr:
        if PAUSE_ENV in line:
            return line
    raise AssertionError(f"the writer exited (rc {proc.wait()}) before its pause")


def tree(folder: Path) -> set[str]:
    """Every path under `folder`, hidden ones included (links not followed)."""
    out: set[str] = set()
    for d, dirs, files in os.walk(folder):
        out.update(os.path.relpath(os.path.join(d, n), folder) for n in dirs + files)
    return out


@pytest.fixture(scope="module")
def ws(cli_workspace, tmp_path_factory) -> Path:
    """A workspace: a 4-image synthetic class, a fitted model, a folder, a file, odd files, studies."""
    ws = tmp_path_factory.mktemp("ws")
    shutil.copytree(cli_workspace, ws, dirs_exist_ok=True)  # syn/ (class washer) and model.pt
    (ws / "adir").mkdir()
    (ws / "afile").write_text("not a folder")
    (ws / "empty.pt").write_bytes(b"")
    (ws / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip" * 8)
    torch.save({"format": "someone.else", "tensors": {}}, ws / "foreign.pt")
    study = "data_root: syn\nresults: res\nconfigurations:\n  - {resize: 64, crop: 0%s}\n"
    (ws / "study.yaml").write_text(study % "")
    (ws / "badbackbone.yaml").write_text(study % ", backbone: nope")
    (ws / "negseed.yaml").write_text("seeds: [-1]\n" + study % ", reduce: 'random:8'")
    (ws / "cudastudy.yaml").write_text("device: cuda:7\n" + study % "")
    return ws


FIT = ["fit", "--data", "syn", "--category", CATEGORY]
EVAL = ["evaluate", "--data", "syn", "--category", CATEGORY, "--model", "model.pt"]
CUDA = torch.cuda.device_count()

# (id, arguments, text the one-line error must contain)
BAD_INPUTS = [
    ("fit-device-cuda", [*FIT, "--resize", "64", "--crop", "0", "--device", "cuda" if not CUDA else "cuda:99",
                         "--out", "m.pt"], "--device="),
    ("fit-device-cuda9", [*FIT, "--resize", "64", "--crop", "0", "--device", "cuda:9", "--out", "m.pt"], "cuda:9"),
    ("fit-device-foo", [*FIT, "--resize", "64", "--crop", "0", "--device", "foo", "--out", "m.pt"], "--device='foo'"),
    ("fit-out-existing-dir", [*FIT, *SMALL, "--out", "adir"], "--out adir: is a folder"),
    ("fit-out-under-a-file", [*FIT, *SMALL, "--out", "afile/m.pt"], "--out afile/m.pt: afile is a file"),
    ("fit-out-empty", [*FIT, *SMALL, "--out", ""], "--out is empty"),
    ("fit-out-proc", [*FIT, *SMALL, "--out", "/proc/m.pt"], "--out /proc/m.pt"),
    ("fit-resize-8", [*FIT, "--resize", "8", "--crop", "0", "--device", "cpu", "--out", "m.pt"], "expected resize"),
    ("fit-crop-too-big", [*FIT, "--resize", "64", "--crop", "96", "--device", "cpu", "--out", "m.pt"], "crop"),
    ("fit-eps-0", [*FIT, *SMALL, "--eps", "0", "--out", "m.pt"], "--eps=0.0"),
    ("fit-seed-negative", [*FIT, *SMALL, "--seed", "-1", "--out", "m.pt"], "--seed=-1"),
    ("fit-reduce-too-big", [*FIT, *SMALL, "--reduce", "random:9999", "--out", "m.pt"], "reduce='random:9999'"),
    ("fit-unknown-method", [*FIT, *SMALL, "--method", "nope", "--out", "m.pt"], "method='nope' is unknown"),
    ("fit-unknown-param", [*FIT, *SMALL, "--param", "k=3", "--out", "m.pt"], "['k']"),
    ("fit-param-bad-yaml", [*FIT, *SMALL, "--param", "k=[1, 2", "--out", "m.pt"], "--param k="),
    ("fit-param-no-equals", [*FIT, *SMALL, "--param", "k", "--out", "m.pt"], "--param 'k'"),
    ("fit-unknown-class", ["fit", "--data", "syn", "--category", "nope", *SMALL, "--out", "m.pt"], "nope"),
    ("fit-empty-weights", [*FIT, *SMALL, "--weights", "empty.pt", "--out", "new/m.pt"], "empty.pt is empty"),
    ("fit-junk-weights", [*FIT, *SMALL, "--weights", "junk.pt", "--out", "new/m.pt"], "junk.pt"),
    ("fit-missing-weights", [*FIT, *SMALL, "--weights", "gone.pt", "--out", "m.pt"], "--weights gone.pt: no such file"),
    ("fit-unknown-option", [*FIT, *SMALL, "--bogus", "--out", "m.pt"], "--bogus"),
    ("eval-json-existing-dir", [*EVAL, "--device", "cpu", "--json", "adir"], "--json adir: is a folder"),
    ("eval-json-under-a-file", [*EVAL, "--device", "cpu", "--json", "afile/x.json"], "--json afile/x.json"),
    ("eval-maps-empty", [*EVAL, "--device", "cpu", "--save-maps", ""], "--save-maps is empty"),
    ("eval-maps-proc-json-kept-back", [*EVAL, "--device", "cpu", "--json", "j.json", "--save-maps", "/proc/m.npz"],
     "--save-maps /proc/m.npz"),
    ("eval-device-foo", [*EVAL, "--device", "foo"], "--device='foo'"),
    ("eval-device-cuda9", [*EVAL, "--device", "cuda:9"], "cuda:9"),
    ("eval-model-dir", [*EVAL[:-1], "adir", "--device", "cpu"], "model file adir is a folder"),
    ("eval-model-missing", [*EVAL[:-1], "gone.pt", "--device", "cpu"], "gone.pt does not exist"),
    ("eval-model-empty", [*EVAL[:-1], "empty.pt", "--device", "cpu"], "empty.pt is empty"),
    ("eval-model-junk", [*EVAL[:-1], "junk.pt", "--device", "cpu"], "junk.pt is not readable"),
    ("eval-model-foreign", [*EVAL[:-1], "foreign.pt", "--device", "cpu"], "format marker 'someone.else'"),
    ("eval-fpr-outside", [*EVAL, "--device", "cpu", "--holdout", "0.2", "--fpr", "1.5", "--json", "j.json"],
     "--fpr 1.5; expected a false-positive rate in (0, 1)"),
    ("eval-fpr-without-holdout", [*EVAL, "--device", "cpu", "--fpr", "0.1"], "--fpr 0.1: needs --holdout"),
    ("eval-holdout-1", [*EVAL, "--device", "cpu", "--holdout", "1"], "--holdout 1.0; expected the fraction"),
    ("eval-holdout-leaves-too-few", [*EVAL, "--device", "cpu", "--holdout", "0.5", "--json", "j.json"],
     "--holdout 0.5 leaves 1 of the 3 training images to fit on; expected at least 2"),
    ("export-opset-99", ["export", "model.pt", "--onnx", "o/m.onnx", "--opset", "99"], "--opset 99"),
    ("export-onnx-a-folder", ["export", "model.pt", "--onnx", "adir"], "--onnx adir: is a folder"),
    ("export-model-missing", ["export", "gone.pt", "--onnx", "o/m.onnx"], "gone.pt does not exist"),
    ("sweep-scheduler-notanaddress", ["sweep", "study.yaml", "--scheduler", "notanaddress"], "--scheduler"),
    ("sweep-local-cluster-0", ["sweep", "study.yaml", "--local-cluster", "0"], "--local-cluster 0"),
    ("sweep-results-a-file", ["sweep", "study.yaml", "--results", "afile"], "--results afile: is a file"),
    ("sweep-bad-backbone", ["sweep", "badbackbone.yaml"], "configurations[0]: backbone='nope'"),
    ("sweep-negative-seed", ["sweep", "negseed.yaml"], "negseed.yaml: seeds:"),
    ("sweep-study-device", ["sweep", "cudastudy.yaml"], "cuda:7"),
    ("download-url-notaurl", ["download", "mvtec", "--url", "notaurl", "--dest", "dl"], "--url 'notaurl'"),
    ("book-param-bad-yaml", ["book", "-p", "classes=[a, b"], "[a, b"),
    ("book-jobs-0", ["book", "--jobs", "0"], "jobs=0"),
    ("synth-size-huge", ["synth", "--size", "100000000", "--out", "s"], "--size 100000000"),
    ("synth-size-tiny", ["synth", "--size", "8", "--out", "s"], "--size 8"),
    ("synth-out-a-file", ["synth", "--size", "32", "--out", "afile"], "--out afile"),
]


# Each row runs `python -m padim_lib ARGS` in a process of its own, forked from one driver that
# imported torch once (the import costs seconds per process on a busy CPU; a fork, milliseconds).
# The driver records, per row: exit code, stderr, and the workspace listing before and after.
DRIVER = r"""
import json, os, runpy, sys, tempfile
import torch, torchvision, padim_lib.cli, padim_lib.datasets, padim_lib.methods.padim.detector  # noqa: F401 (warm imports)

def tree(folder):
    out = set()
    for d, dirs, files in os.walk(folder):
        out.update(os.path.relpath(os.path.join(d, n), folder) for n in dirs + files)
    return sorted(out)

rows, cwd = json.load(sys.stdin), sys.argv[1]
results = []
for args in rows:
    before = tree(cwd)
    err = tempfile.TemporaryFile("w+")
    pid = os.fork()
    if pid == 0:
        os.chdir(cwd)
        os.dup2(err.fileno(), 2)
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        sys.argv = ["padim", *args]
        code = 1
        try:
            runpy.run_module("padim_lib", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    err.seek(0)
    results.append({"rc": os.waitstatus_to_exitcode(status), "stderr": err.read(), "before": before,
                    "after": tree(cwd)})
json.dump(results, sys.stdout)
"""


@pytest.fixture(scope="module")
def bad_input_runs(ws) -> dict[str, dict]:
    import json

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", DRIVER, str(ws)], input=json.dumps([r[1] for r in BAD_INPUTS]),
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return dict(zip([r[0] for r in BAD_INPUTS], json.loads(done.stdout), strict=True))


@pytest.mark.parametrize(("row", "named"), [(r[0], r[2]) for r in BAD_INPUTS], ids=[r[0] for r in BAD_INPUTS])
def test_bad_input_is_one_line_naming_it_and_leaves_nothing(bad_input_runs, row, named):
    run = bad_input_runs[row]
    lines = run["stderr"].strip().splitlines()
    assert run["rc"] == 2, run["stderr"]
    assert len(lines) == 1, run["stderr"]
    assert named in lines[0] and "error" in lines[0], lines[0]
    assert "Traceback" not in run["stderr"] and "weights_only" not in run["stderr"]
    assert run["after"] == run["before"]  # no output, folder, or temporary file appeared


def test_the_table_runs_like_python_m_padim_lib(ws):
    """The forked rows behave as a fresh `python -m padim_lib` does (one row, for real)."""
    before = tree(ws)
    done = padim(["evaluate", "--model", "adir", "--data", "syn", "--category", CATEGORY, "--device", "cpu"], ws)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "padim evaluate: error: model file adir is a folder; expected a file written by `padim fit --out`"]
    assert tree(ws) == before


def test_a_wrong_layout_download_names_the_archive_not_a_deleted_temporary_folder(tmp_path, http_server):
    from test_download import MVTEC_ARCHIVE, _make_archive

    from padim_lib.datasets import download

    archive, sha = _make_archive(tmp_path)
    url = f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}"
    with pytest.raises(PadimError) as err:
        download.download_mvtec(tmp_path / "mvtec", url=url, sha256=sha, progress=False,
                                expected_counts={"bottle": (3, 2, 2), "zipper": (2, 1, 4)})
    message = str(err.value)  # the archive has no zipper/: say so of the archive, not of a temporary folder
    assert f"zipper: class folder <{MVTEC_ARCHIVE}>/zipper is missing" in message
    assert ".padim-extract" not in message


def test_an_unreachable_scheduler_is_one_line_naming_its_address(ws, tmp_path):
    # nothing listens on port 9; a 1 s connect limit (Dask's own setting) keeps the test short
    done = padim(["sweep", "study.yaml", "--scheduler", "tcp://127.0.0.1:9", "--results", str(tmp_path / "r")], ws,
                 env_extra={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"})
    assert done.returncode == 2, done.stderr
    # after the sweep's plan (its progress lines), one line naming the address, no traceback
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert errors == [done.stderr.strip().splitlines()[-1]], done.stderr
    assert errors[0].startswith("padim sweep: error: cannot connect to the Dask scheduler at 'tcp://127.0.0.1:9'")
    assert "Traceback" not in done.stderr


def test_the_scheduler_connect_limit_is_dasks_capped_at_ten_seconds(monkeypatch):
    """distributed's default connect timeout is 30 s: the sweep waits at most SCHEDULER_TIMEOUT_S."""
    import dask
    import distributed

    from padim_lib.engine import on_dask

    seen = []

    def refuse(address, timeout):
        seen.append(timeout)
        raise OSError("refused")

    monkeypatch.setattr(distributed, "Client", refuse)
    for configured in ("30s", "2s"):
        with dask.config.set({"distributed.comm.timeouts.connect": configured}):
            with pytest.raises(PadimError, match="cannot connect to the Dask scheduler at 'tcp://h:1': refused"):
                with on_dask._dask_client("tcp://h:1", None):
                    pass
    assert seen == [10, 2] and on_dask.SCHEDULER_TIMEOUT_S == 10
