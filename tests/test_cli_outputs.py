"""Outputs whole and where asked: atomic writes with recognisable temporary files that a later
write of the same target cleans up, permissions from the umask, errors naming the requested path;
the CLI's last-resort handler, --debug, --version and interrupts that arrive chained."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

import padim_lib
from padim_lib import cli
from padim_lib.errors import PadimError
from padim_lib.io.atomic import TMP_MARK, atomic_write, check_output, remove_stale_tmp


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o027
    os.umask(old)


def _host() -> str:
    return "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:40]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporary_files_of_the_target_are_removed(tmp_path):
    target = tmp_path / "m.pt"
    dead = tmp_path / f".m.pt{TMP_MARK}{_dead_pid()}@{_host()}.abc.tmp"
    live = tmp_path / f".m.pt{TMP_MARK}{os.getppid()}@{_host()}.def.tmp"  # a live writer: kept
    old = tmp_path / f".m.pt{TMP_MARK}{os.getppid()}@otherhost.ghi.tmp"  # another host's, an hour old
    other = tmp_path / f".n.pt{TMP_MARK}{_dead_pid()}@{_host()}.jkl.tmp"  # another target's: not ours
    for p in (dead, live, old, other):
        p.write_bytes(b"partial")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    atomic_write(target, lambda tmp: tmp.write_text("whole"))
    assert target.read_text() == "whole"
    assert not dead.exists() and not old.exists() and live.exists() and other.exists()
    assert remove_stale_tmp(tmp_path / "n.pt") == 1 and not other.exists()


def test_outputs_follow_the_umask(tmp_path, umask_027):
    atomic_write(tmp_path / "a.json", lambda tmp: tmp.write_text("{}"))
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640


def test_synthetic_set_follows_the_umask(tmp_path, umask_027, capsys):
    out = tmp_path / "syn"
    args = ["synth", "--out", str(out), "--size", "32", "--n-train", "1", "--n-test-good", "1",
            "--n-test-defect", "1", "--categories", "washer"]
    assert cli.main(args) == 0
    assert out.stat().st_mode & 0o777 == 0o750


def test_write_errors_name_the_requested_path_and_leave_nothing(tmp_path):
    def fail(tmp):
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match=r"no space left on device: '.*/out\.json'") as err:
        atomic_write(tmp_path / "out.json", fail)
    assert err.value.errno == 28 and err.value.filename == str(tmp_path / "out.json")  # as `padim` prints it
    assert not list(tmp_path.iterdir())
    with pytest.raises(OSError, match=r"'/proc/padim-test/x\.json'"):
        atomic_write("/proc/padim-test/x.json", lambda tmp: tmp.write_text("{}"))
    with pytest.raises(PadimError, match=r"--json /proc/x\.json: cannot write in /proc"):
        check_output("/proc/x.json", "--json")
    assert check_output(tmp_path / "new" / "deeper" / "x.json", "--json") == tmp_path / "new" / "deeper" / "x.json"
    assert not list(tmp_path.iterdir())  # checking creates nothing


def test_unexpected_errors_are_one_line_with_a_debug_hint(monkeypatch, capsys):
    def boom(args):
        raise RuntimeError("boom\nsecond line of details")

    monkeypatch.setattr(cli, "cmd_synth", boom)
    assert cli.main(["synth"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["padim synth: unexpected error: RuntimeError: boom (rerun with --debug for the traceback)"]
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["--debug", "synth"])
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["synth", "--debug"])


def test_an_interrupt_chained_into_another_error_is_an_interrupt(monkeypatch, capsys):
    def interrupted_save(args):  # what torch.save does with Ctrl-C: an enforce-fail RuntimeError
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None

    monkeypatch.setattr(cli, "cmd_synth", interrupted_save)
    assert cli.main(["synth"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["padim synth: interrupted; temporary files removed"]


def test_version_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"padim {padim_lib.__version__}"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["fit", "--data", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--category" in err[0] and "--help" in err[0]


def test_every_option_has_help_with_its_default(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        if name == "book":  # its options belong to the book's own parameter handling
            continue
        for action in p._actions:
            assert action.help, f"padim {name} {action.option_strings or action.dest}: no help"
