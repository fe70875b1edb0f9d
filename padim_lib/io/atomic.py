"""Atomic file writes: a reader sees the old file or the whole new one, never a partial file.

Temporary files sit beside their target (os.replace is atomic only within one file system) under
a recognisable name, ``.<target name>.padim-<pid>@<host>.<random>.tmp``, so that a later write of
the same target removes the ones a killed writer left (its process is gone, or the file is an
hour old), and ``ResultStore.remove_stale_tmp`` (glob ``.*.tmp``) still finds them.
Written files get the permissions the umask allows (0666 & ~umask), like ``open(..., "w")``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from padim_lib.errors import PadimError

TMP_MARK = ".padim-"
STALE_AFTER_S = 3600.0  # a write takes seconds: an hour-old temporary file belongs to no live writer
# Tests only: seconds to sleep after the temporary file is complete and before the rename, with a
# line on stderr, so a test can interrupt or kill the writer at that exact point.
PAUSE_ENV = "PADIM_TEST_PAUSE_BEFORE_RENAME"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def tmp_prefix(path: Path) -> str:
    """The start of every temporary file name of `path` written by this process."""
    return f".{path.name}{TMP_MARK}{os.getpid()}@{_host()}."


def current_umask() -> int:
    """The process's umask (files are created 0666 & ~umask, folders 0777 & ~umask)."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_tmp(path: str | os.PathLike, older_than: float = STALE_AFTER_S) -> int:
    """Delete the temporary files of `path` left by killed writers; returns how many.

    Stale: written on this host by a process that no longer exists, or older than `older_than`
    seconds (a writer on another host sharing the folder cannot be asked whether it lives).
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}{TMP_MARK}") + r"(\d+)@([A-Za-z0-9-]*)\.[^/]*\.tmp$")
    removed, now, host = 0, time.time(), _host()
    if not path.parent.is_dir():
        return 0
    for tmp in path.parent.glob(f".{glob_escape(path.name)}{TMP_MARK}*.tmp"):
        match = pattern.match(tmp.name)
        if match is None:
            continue
        pid, where = int(match.group(1)), match.group(2)
        with contextlib.suppress(FileNotFoundError):  # another writer may clean up at the same time
            dead = where == host and pid != os.getpid() and not _pid_alive(pid)
            if dead or now - tmp.stat().st_mtime >= older_than:
                tmp.unlink()
                removed += 1
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file next to `path`, fsync it, then rename it to `path`.

    The temporary name is unique (concurrent writers of one path each write their own file, and
    the last rename wins); on any error, including KeyboardInterrupt, it is removed. Stale
    temporary files of `path` (killed writers) are removed first. An OSError (a folder that
    cannot be created or written, a full disk) is raised again with a message naming `path`,
    not the temporary file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(21, "is a directory")
        remove_stale_tmp(path)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=tmp_prefix(path), suffix=".tmp")
    except OSError as exc:
        raise _named(exc, path) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; outputs follow the umask
        pause = os.environ.get(PAUSE_ENV)
        if pause:
            print(f"{PAUSE_ENV}: {tmp} -> {path}", file=sys.stderr, flush=True)
            time.sleep(float(pause))
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _named(exc, path) from exc
        raise


def _named(exc: OSError, path: Path) -> OSError:
    """The same kind of OSError, its message naming the requested `path` (not the temporary file)."""
    return type(exc)(f"cannot write {path}: {exc.strerror or exc}")


def check_output(path: str | os.PathLike, option: str) -> Path:
    """`path` checked as a file to write later (nothing is created): not empty, not a folder, under
    folders that exist or can be made, and writable. Errors name `option` (e.g. "--out")."""
    text = os.fspath(path)
    if not str(text).strip():
        raise PadimError(f"{option} is empty; expected a file path")
    path = Path(text)
    if path.is_dir():
        raise PadimError(f"{option} {text}: is a folder; expected a file path (e.g. {path / 'name'})")
    folder = path.parent
    while not folder.exists():
        if folder.is_symlink():  # a dangling link cannot be made into a folder
            raise PadimError(f"{option} {text}: {folder} is a broken link; expected a folder")
        folder = folder.parent
    if not folder.is_dir():
        raise PadimError(f"{option} {text}: {folder} is a file, not a folder; expected a path under a folder")
    if folder == path.parent:
        # The only sure test of "can I write here" (root passes os.access, /proc refuses files):
        # make and remove a temporary file.
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=tmp_prefix(path), suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise PadimError(f"{option} {text}: cannot write in {folder} ({exc.strerror or exc})") from exc
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise PadimError(f"{option} {text}: cannot create folders in {folder} (permission denied)")
    return path


def make_parents(path: Path, option: str) -> list[Path]:
    """Create the missing folders above `path`; returns the ones created (outermost first), so a
    command that fails afterwards can remove them again (`remove_empty`)."""
    missing = [p for p in reversed(path.parents) if not p.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PadimError(f"{option} {path}: cannot create {path.parent} ({exc.strerror or exc})") from exc
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders of `make_parents` that are still empty, innermost first."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save(obj) to `path` atomically (through an open file, as torch.save writes it)."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    atomic_write(path, write)
