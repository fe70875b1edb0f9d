"""Outputs that are not plain files (issue 17): every output option against every kind of path.

The rule (padim_lib.io.atomic): a symbolic link is followed and its final target replaced, the link
left in place; a device or a pipe is written straight into; a folder, a socket or a loop is one
line and exit 2. Every node and link is made here, in the test's own temporary folder: a
character device with /dev/full's numbers (1, 7: writes fail with ENOSPC) and /dev/null's
(1, 3), a FIFO drained by a reader thread, a bound Unix socket. The machine's /dev is never used.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from padim_lib.cli import main
from padim_lib.errors import PadimError
from padim_lib.io.atomic import TMP_MARK, atomic_write, check_output

ROOT = Path(__file__).resolve().parents[1]
CATEGORY = "washer"
SMALL = ["--resize", "64", "--crop", "0", "--device", "cpu"]
FULL, NULL = 7, 3  # minor numbers of the memory devices "full" and "null" (major 1)


# ------------------------------------------------------------------------------ the workspace
@pytest.fixture(scope="module")
def ws(cli_workspace, tmp_path_factory) -> Path:
    """A tiny synthetic class, a model fitted once on it, the reference outputs of evaluate, a study."""
    ws = tmp_path_factory.mktemp("ws")
    # syn/ and model.pt (tests/conftest.py), fitted with the shipped Lite0 weights: a model of
    # --no-pretrained draws its backbone again at each load, so only a pretrained one scores the same
    # twice (the outputs are compared with references)
    shutil.copytree(cli_workspace, ws, dirs_exist_ok=True)
    assert CATEGORY == "washer" and (ws / "syn" / CATEGORY).is_dir()
    evaluate = ["evaluate", "--data", str(ws / "syn"), "--category", CATEGORY, "--model", str(ws / "model.pt")]
    assert main([*evaluate, "--device", "cpu", "--json", str(ws / "ref.json"), "--save-maps", str(ws / "ref.npz")]) == 0
    (ws / "study.yaml").write_text(
        f"data_root: {ws / 'syn'}\nresults: {ws / 'unused'}\nbootstrap: 0\ndevice: cpu\n"
        "configurations:\n  - {resize: 64, crop: 0, pretrained: false}\n"
    )
    return ws


# ------------------------------------------------------------------------------ the outputs
def _model_whole(ws: Path, data: bytes) -> None:
    from padim_lib.methods.registry import load_detector

    copy = Path(tempfile.mkdtemp(dir=ws)) / "received.pt"  # outside the case's folder, whose listing is checked
    copy.write_bytes(data)
    model = load_detector(copy, device="cpu")
    assert model.meta["category"] == CATEGORY and model.meta["n_train"] == 3


def _json_whole(ws: Path, data: bytes) -> None:
    ref = json.loads((ws / "ref.json").read_text())
    got = json.loads(data)  # one whole document; the same metrics (to the last bits: another thread count)
    assert got.keys() == ref.keys()
    for key in ref.keys() - {"timings"}:
        same = pytest.approx(ref[key], rel=1e-9) if isinstance(ref[key], float) else ref[key]
        assert got[key] == same, key


def _maps_whole(ws: Path, data: bytes) -> None:
    with np.load(io.BytesIO(data)) as got, np.load(ws / "ref.npz") as ref:
        assert sorted(got.files) == sorted(ref.files)
        for name in ref.files:
            np.testing.assert_array_equal(got[name], ref[name])


def _results_whole(ws: Path, folder: Path) -> None:
    from padim_lib.engine.results import ResultStore

    assert len(list((folder / "rows").glob("*.parquet"))) == 1
    assert len(ResultStore(folder).load()) > 0


def _synthetic_whole(ws: Path, folder: Path) -> None:
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["generator"].startswith("padim_lib.datasets.synthetic")
    assert len(list((folder / CATEGORY / "train" / "good").glob("*.png"))) == 1


def _stc_whole(ws: Path, folder: Path) -> None:
    assert json.loads((folder / "dataset.json").read_text())["scenes"] == 1
    assert len(list((folder / "training" / "videos").glob("*.avi"))) == 2


def _nonaligned_whole(ws: Path, folder: Path) -> None:
    assert json.loads((folder / "seed0" / "dataset.json").read_text())["seed"] == 0


@dataclass(frozen=True)
class Output:
    command: str
    argv: Callable[[Path, str], list[str]]  # (workspace, the option's value) -> arguments
    folder: bool  # a folder option (the data goes under it) rather than a file option
    whole: Callable[[Path, object], None]  # asserts the output is complete: bytes (file) or Path (folder)


OUTPUTS = {
    "fit --out": Output("fit", lambda ws, x: ["fit", "--data", str(ws / "syn"), "--category", CATEGORY, *SMALL,
                                              "--no-pretrained", "--out", x], False, _model_whole),
    "evaluate --json": Output("evaluate", lambda ws, x: [
        "evaluate", "--data", str(ws / "syn"), "--category", CATEGORY, "--model", str(ws / "model.pt"),
        "--device", "cpu", "--json", x], False, _json_whole),
    "evaluate --save-maps": Output("evaluate", lambda ws, x: [
        "evaluate", "--data", str(ws / "syn"), "--category", CATEGORY, "--model", str(ws / "model.pt"),
        "--device", "cpu", "--save-maps", x], False, _maps_whole),
    "sweep --results": Output("sweep", lambda ws, x: ["sweep", str(ws / "study.yaml"), "--results", x],
                              True, _results_whole),
    "synth --out": Output("synth", lambda ws, x: [
        "synth", "--out", x, "--size", "32", "--n-train", "1", "--n-test-good", "1", "--n-test-defect", "1",
        "--categories", CATEGORY], True, _synthetic_whole),
    "synth --kind stc --out": Output("synth", lambda ws, x: ["synth", "--kind", "stc", "--out", x, "--scenes", "1"],
                                     True, _stc_whole),
    "synth --kind nonaligned --out": Output("synth", lambda ws, x: [
        "synth", "--kind", "nonaligned", "--src", str(ws / "syn"), "--out", x, "--seeds", "0",
        "--categories", CATEGORY], True, _nonaligned_whole),
}


# ------------------------------------------------------------------------------ the kinds of path
class Drain(threading.Thread):
    """Reads a FIFO to its end (the bytes the command wrote into it)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.data = path, None

    def run(self) -> None:
        with open(self.path, "rb") as fh:
            self.data = fh.read()

    def finish(self) -> bytes:
        """The bytes read; a command that never opened the FIFO gets the reader released (b"")."""
        for _ in range(200):
            if not self.is_alive():
                break
            with contextlib.suppress(OSError):  # ENXIO until the reader has opened its end
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            time.sleep(0.05)
        self.join(10)
        assert not self.is_alive(), "the FIFO's reader never finished"
        return self.data


@dataclass
class Made:
    arg: str  # the option's value
    written: Path | None = None  # the regular file or folder that must hold the output (a link's target)
    drain: Drain | None = None
    keep: list[Callable[[], None]] = field(default_factory=list)  # asserts: a node or link is still what it was


def _node(path: Path, minor: int) -> None:
    """A character device (1, `minor`) made by the test; the test is skipped where that is not allowed."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    except PermissionError:
        pytest.skip("mknod of a character device is not permitted here")
    try:  # a file system mounted nodev refuses to open device nodes
        os.close(os.open(path, os.O_WRONLY))
    except PermissionError:
        pytest.skip("device nodes cannot be opened on this file system (nodev)")


def _keeps_device(path: Path, minor: int) -> Callable[[], None]:
    def check() -> None:
        st = os.lstat(path)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, minor), f"{path} is no longer the device"
    return check


def _keeps_link(path: Path) -> Callable[[], None]:
    target = os.readlink(path)
    return lambda: (os.path.islink(path) and os.readlink(path) == target) or pytest.fail(f"{path} is no longer the link")


def _keeps(path: Path, test: Callable[[int], bool], what: str) -> Callable[[], None]:
    return lambda: test(os.lstat(path).st_mode) or pytest.fail(f"{path} is no longer a {what}")


def make_kind(kind: str, folder_option: bool) -> Made:
    """Make a path of `kind` in the current folder (the test's own temporary folder)."""
    name = Path("out")
    if kind == "new":
        return Made(str(name), written=name)
    if kind == "file":
        name.write_bytes(b"old")
        keep = [] if not folder_option else [lambda: name.read_bytes() == b"old" or pytest.fail("file clobbered")]
        return Made(str(name), written=name, keep=keep)
    if kind == "folder":
        name.mkdir()
        return Made(str(name), written=name, keep=[_keeps(name, stat.S_ISDIR, "folder")])
    if kind == "link":  # results/latest.json -> run-42.json
        target = Path("run-42")
        target.mkdir() if folder_option else target.write_bytes(b"old")
        os.symlink(target.name, name)
        return Made(str(name), written=target, keep=[_keeps_link(name)])
    if kind == "chain":
        Path("run-42").mkdir() if folder_option else Path("run-42").write_bytes(b"old")
        os.symlink("run-42", "latest")
        os.symlink("latest", name)
        return Made(str(name), written=Path("run-42"), keep=[_keeps_link(name), _keeps_link(Path("latest"))])
    if kind == "dangling":
        os.symlink("run-43", name)
        return Made(str(name), written=Path("run-43"), keep=[_keeps_link(name)])
    if kind == "loop":
        os.symlink("loop-b", name)
        os.symlink(name.name, "loop-b")
        return Made(str(name), keep=[_keeps_link(name)])
    if kind in ("null", "full"):
        minor = NULL if kind == "null" else FULL
        _node(name, minor)
        return Made(str(name), keep=[_keeps_device(name, minor)])
    if kind == "link to full":
        _node(Path("full"), FULL)
        os.symlink("full", name)
        return Made(str(name), keep=[_keeps_link(name), _keeps_device(Path("full"), FULL)])
    if kind == "fifo":
        os.mkfifo(name)
        drain = Drain(name)
        drain.start()
        return Made(str(name), drain=drain, keep=[_keeps(name, stat.S_ISFIFO, "FIFO")])
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(name))  # a relative name: the full path may exceed a socket address's 108 bytes
        sock.close()  # the node stays; nothing can open it
        return Made(str(name), keep=[_keeps(name, stat.S_ISSOCK, "socket")])
    raise AssertionError(kind)


# (kind, exit code of a file option, exit code of a folder option)
KINDS = [
    ("new", 0, 0),
    ("file", 0, 2),  # a file option replaces it; a folder option refuses it
    ("folder", 2, 0),  # the reverse
    ("link", 0, 0),
    ("chain", 0, 0),
    ("dangling", 0, 2),  # a file option writes the link's target; a folder option refuses a broken link
    ("loop", 2, 2),
    ("null", 0, 2),  # a writable device is written into; a device is no folder
    ("full", 2, 2),
    ("link to full", 2, 2),
    ("fifo", 0, 2),
    ("socket", 2, 2),
]
ROWS = [
    pytest.param(option, kind, rc, id=f"{option}:{kind}")
    for option, out in OUTPUTS.items()
    for kind, file_rc, folder_rc in KINDS
    for rc in [folder_rc if out.folder else file_rc]
]


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize(("option", "kind", "rc"), ROWS)
def test_every_output_option_against_every_kind_of_path(ws, tmp_path, monkeypatch, capsys, option, kind, rc):
    out = OUTPUTS[option]
    monkeypatch.chdir(tmp_path)
    made = make_kind(kind, out.folder)
    before = _listing(tmp_path)
    code = main(out.argv(ws, made.arg))
    received = made.drain.finish() if made.drain else None
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == rc, err
    for keep in made.keep:  # the device, pipe, socket or link is still there, as it was
        keep()
    hidden = [n for n in _listing(tmp_path) if n.startswith(".") or TMP_MARK in n]
    assert not hidden, f"temporary files left: {hidden}"
    if rc == 2:
        assert len(errors) == 1 and errors[0].startswith(f"padim {out.command}: error: "), err
        assert made.arg in errors[0], err
        if "full" in kind and not out.folder:  # the check passed it; the write found the device full
            assert errors[0] == f"padim {out.command}: error: no space left on device: {made.arg}"
        assert received in (None, b"")
        assert _listing(tmp_path) == before  # nothing new on disk, not even a temporary file
        return
    assert not errors, err
    if made.drain is not None:
        out.whole(ws, received)  # the reader got the whole output
    elif made.written is not None:
        assert made.written.is_dir() if out.folder else stat.S_ISREG(os.lstat(made.written).st_mode)
        out.whole(ws, made.written if out.folder else made.written.read_bytes())


# ------------------------------------------------------------------------------ standard output
def test_json_dash_is_the_metrics_alone_on_standard_output(ws, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(OUTPUTS["evaluate --json"].argv(ws, "-")) == 0
    _json_whole(ws, capsys.readouterr().out.encode())  # one JSON document: printed once
    assert not list(tmp_path.iterdir())  # no file named "-"
    assert main(OUTPUTS["evaluate --save-maps"].argv(ws, "-")) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "padim evaluate: error: --save-maps -: standard output is for --json - only; expected a file path (.npz)"]


def test_json_dash_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    assert "'-' for standard output" in " ".join(capsys.readouterr().out.split())


def test_json_into_the_processs_own_standard_output_streams_it_once(ws, tmp_path):
    """`--json /dev/stdout`, without /dev: /proc/self/fd/1 names the same pipe. The JSON goes
    through the pipe once (written straight in, not printed a second time); nothing is replaced."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "padim_lib", *OUTPUTS["evaluate --json"].argv(ws, "/proc/self/fd/1")],
                          cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    _json_whole(ws, done.stdout)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ the writer itself
def test_the_temporary_file_sits_beside_the_links_final_target(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    os.symlink(tmp_path / "b" / "run.json", tmp_path / "a" / "latest.json")
    seen = []

    def write(tmp: Path) -> None:
        seen.append(tmp.parent)
        tmp.write_text("{}")

    atomic_write(tmp_path / "a" / "latest.json", write)
    assert seen == [tmp_path / "b"]  # one file system for os.replace: the target's
    assert (tmp_path / "a" / "latest.json").is_symlink() and (tmp_path / "b" / "run.json").read_text() == "{}"
    assert _listing(tmp_path / "a") == {"latest.json"} and _listing(tmp_path / "b") == {"run.json"}


def test_write_errors_into_a_device_name_the_requested_path(tmp_path):
    _node(tmp_path / "full", FULL)
    with pytest.raises(OSError, match="no space left on device") as err:
        atomic_write(tmp_path / "full", lambda path: path.write_bytes(b"x" * 100_000))
    assert err.value.filename == str(tmp_path / "full")
    assert _listing(tmp_path) == {"full"}


def _as_nobody(call: Callable[[], object]) -> str:
    """`call()` in a forked child running as uid/gid 65534 (root writes anywhere): its error, or "ok"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            call()
            message = "ok"
        except BaseException as exc:  # noqa: BLE001 (reported to the parent)
            message = f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        message = fh.read().decode()
    os.waitpid(pid, 0)
    return message


def _direct(call: Callable[[], object]) -> str:
    try:
        call()
    except PadimError as exc:
        return f"PadimError: {exc}"
    return "ok"


@pytest.mark.parametrize("kind", ["fifo", "null"])
def test_an_unwritable_pipe_or_device_is_refused_by_the_check(kind):
    """Checked before any work, as the checks of every command are; a writable one passes."""
    # Not under pytest's tmp_path: its folders are closed to other users, which the check must reach.
    with tempfile.TemporaryDirectory(prefix="padim-issue17-") as folder:
        os.chmod(folder, 0o755)
        node, locked = Path(folder) / "open", Path(folder) / "locked"
        for path in (node, locked):
            if kind == "fifo":
                os.mkfifo(path)
            else:
                _node(path, NULL)
        os.chmod(node, 0o666)
        os.chmod(locked, 0o444)
        run = _as_nobody if os.geteuid() == 0 else _direct
        what = "pipe" if kind == "fifo" else "character device"
        assert run(lambda: check_output(node, "--json")) == "ok"
        assert run(lambda: check_output(locked, "--json")) == (
            f"PadimError: --json {locked}: cannot write into this {what} (permission denied)")
        with pytest.raises(PadimError, match="is a socket"):
            sock = socket.socket(socket.AF_UNIX)
            sock.bind(str(Path(folder) / "s"))
            sock.close()
            check_output(Path(folder) / "s", "--json")
