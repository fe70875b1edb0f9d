"""Atomic file writes: a reader sees the old file or the whole new one, never a partial file.

Temporary files sit beside their target (os.replace is atomic only within one file system) under
a recognisable name, ``.<target name>.padim-<pid>@<host>.<random>.tmp``, so that a later write of
the same target removes the ones a killed writer left (its process is gone, or the file is an
hour old), and ``ResultStore.remove_stale_tmp`` (glob ``.*.tmp``) still finds them.
Written files get the permissions the umask allows (0666 & ~umask), like ``open(..., "w")``.

What a path names decides how it is written (`atomic_write`, `check_output`, `atomic_tree`):
a symbolic link (a chain, or a dangling one) is followed and its final target replaced, the link
left in place; an existing node that is not a regular file (character or block device, FIFO) is
written straight into, without a temporary file (``--json /dev/stdout`` streams, ``--out
/dev/full`` fails with "no space left on device"); a folder is an error, and so is a socket for
`check_output` (nothing can open one).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import socket
import stat
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


MAX_LINKS = 40  # as the kernel's limit: a longer chain is a loop


def output_target(path: str | os.PathLike) -> Path:
    """The path a write of `path` changes: `path` itself, or the final target of the chain of
    symbolic links it is (a dangling link gives the path it names). Folders above are kept as
    written (the kernel follows their links); a loop raises OSError(ELOOP) naming `path`."""
    target = Path(path)
    for _ in range(MAX_LINKS):
        if not target.is_symlink():
            return target
        link = Path(os.readlink(target))
        target = link if link.is_absolute() else target.parent / link
    raise OSError(errno.ELOOP, "too many levels of symbolic links", os.fspath(path))


def node_kind(path: str | os.PathLike) -> str | None:
    """What `path` names, links followed: "file", "folder", "character device", "block device",
    "pipe", "socket" (or "special file"); None when nothing is there (or a link dangles)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    kinds = ((stat.S_ISREG, "file"), (stat.S_ISDIR, "folder"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISFIFO, "pipe"), (stat.S_ISSOCK, "socket"))
    return next((name for test, name in kinds if test(mode)), "special file")


def is_stream(path: str | os.PathLike) -> bool:
    """True when `path` names an existing node that is written straight into (a device, a pipe)."""
    return node_kind(path) not in (None, "file", "folder")


def _flush_std_streams() -> None:
    """Flush our own buffered stdout/stderr before another handle writes the same device or pipe."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _write_straight(path: Path, write: Callable[[Path], None]) -> None:
    """`write(path)` into a device or pipe: no temporary file, no rename, nothing to fsync."""
    _flush_std_streams()
    try:
        write(path)
    except BaseException as exc:
        os_error = _os_error(exc)
        if os_error is not None:
            raise _named(os_error, path) from exc
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file next to `path`, fsync it, then rename it to `path`.

    A symbolic link is followed: its final target is replaced (the temporary file sits beside
    the target), the link stays. A device or a pipe is written straight into (`write(path)`).
    The temporary name is unique (concurrent writers of one path each write their own file, and
    the last rename wins); on any error, including KeyboardInterrupt, it is removed. Stale
    temporary files of `path` (killed writers) are removed first. An OSError (a folder that
    cannot be created or written, a full disk) is raised again with a message naming `path`,
    not the temporary file.
    """
    path = Path(path)
    try:
        kind = node_kind(path)
        if kind == "folder":
            raise IsADirectoryError(errno.EISDIR, "is a folder")
        if kind not in (None, "file"):
            _write_straight(path, write)
            return
        target = output_target(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_tmp(target)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=tmp_prefix(target), suffix=".tmp")
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
            print(f"{PAUSE_ENV}: {tmp} -> {target}", file=sys.stderr, flush=True)
            time.sleep(float(pause))
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        os_error = _os_error(exc)
        if os_error is not None:
            raise _named(os_error, path) from exc
        raise


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind `exc`: itself, or one in its chain when a library wrapped it (torch.save
    turns a failed write into a RuntimeError); None for an interrupt or any other error."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if not isinstance(exc, Exception):  # an interrupt, even one wrapped: not a write error
            return None
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _named(exc: OSError, path: Path) -> OSError:
    """The same kind of OSError, its message naming the requested `path` (not the temporary file
    or a link's target): "no space left on device: /dev/full", as `padim` prints it."""
    reason = _reason(exc)
    if exc.errno is None:
        return type(exc)(f"{reason}: {path}")
    return type(exc)(exc.errno, reason, os.fspath(path))


def check_output(path: str | os.PathLike, option: str) -> Path:
    """`path` checked as a file to write later, by `atomic_write`'s rule (nothing is created): not
    empty, not a folder; a device or pipe writable; otherwise its file (a link's final target)
    under folders that exist or can be made, and writable. Errors name `option` (e.g. "--out")."""
    text = os.fspath(path)
    if not str(text).strip():
        raise PadimError(f"{option} is empty; expected a file path")
    path = Path(text)
    try:
        kind, target = node_kind(path), output_target(path)
    except OSError as exc:
        raise PadimError(f"{option} {text}: {_reason(exc)}; expected a file path") from exc
    if kind == "folder":
        raise PadimError(f"{option} {text}: is a folder; expected a file path (e.g. {path / 'name'})")
    if kind not in (None, "file"):
        _check_stream(path, kind, f"{option} {text}")
        return path
    folder = target.parent
    while not folder.exists():
        if folder.is_symlink():  # a dangling link cannot be made into a folder
            raise PadimError(f"{option} {text}: {folder} is a broken link; expected a folder")
        folder = folder.parent
    if not folder.is_dir():
        raise PadimError(f"{option} {text}: {folder} is a file, not a folder; expected a path under a folder")
    if folder == target.parent:
        # The only sure test of "can I write here" (root passes os.access, /proc refuses files):
        # make and remove a temporary file, where atomic_write will make its own.
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=tmp_prefix(target), suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise PadimError(f"{option} {text}: cannot write in {folder} ({exc.strerror or exc})") from exc
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise PadimError(f"{option} {text}: cannot create folders in {folder} (permission denied)")
    return path


def _check_stream(path: Path, kind: str, named: str) -> None:
    """A device or pipe to write straight into: refused when it cannot be opened for writing (a
    socket never can) or its permissions forbid it. `named` starts the message ("--out x")."""
    if kind in ("socket", "special file"):
        raise PadimError(f"{named}: is a {kind}; expected a file, a device or a pipe to write into")
    if not os.access(path, os.W_OK):
        raise PadimError(f"{named}: cannot write into this {kind} (permission denied)")


def _reason(exc: OSError) -> str:
    reason = str(exc.strerror or exc)
    return reason[:1].lower() + reason[1:]


def make_parents(path: Path, option: str) -> list[Path]:
    """Create the missing folders above `path` (above a link's final target); returns the ones
    created (outermost first), so a command that fails afterwards can remove them again
    (`remove_empty`)."""
    try:
        target = output_target(path)
    except OSError as exc:
        raise PadimError(f"{option} {path}: {_reason(exc)}; expected a file path") from exc
    missing = [p for p in reversed(target.parents) if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PadimError(f"{option} {path}: cannot create {target.parent} ({exc.strerror or exc})") from exc
    return missing


def folder_target(path: str | os.PathLike) -> Path:
    """The folder a tree written to `path` replaces (`treeio.atomic_tree`, the synthetic sets):
    a link's final target, so the link stays; PadimError when `path` names something other than
    a folder (a file, a device, a pipe)."""
    kind, target = node_kind(path), output_target(path)
    if kind not in (None, "folder"):
        raise PadimError(f"{os.fspath(path)}: is a {kind}; expected a folder")
    return target


def remove_empty(folders: list[Path]) -> None:
    """Remove the folders of `make_parents` that are still empty, innermost first."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


class _NoSeek(io.RawIOBase):
    """A raw file that writes through and can neither seek nor tell (see `open_output`)."""

    def __init__(self, raw: io.RawIOBase) -> None:
        super().__init__()
        self._raw = raw

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        raise io.UnsupportedOperation("a device or pipe: no position to tell")

    def write(self, data) -> int:
        return self._raw.write(data)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def open_output(path: str | os.PathLike) -> io.BufferedWriter:
    """`open(path, "wb")` for the `write` callbacks of `atomic_write`; into a device or a pipe, a
    file that neither seeks nor tells, so zip writers (np.savez) and Arrow stream their data
    instead of seeking back: /dev/null accepts a seek and keeps no position."""
    if not is_stream(path):
        return open(path, "wb")
    return io.BufferedWriter(_NoSeek(open(path, "wb", buffering=0)))


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save(obj) to `path` atomically (through an open file, as torch.save writes it; into a
    device or pipe it streams, as torch's zip writer never seeks)."""
    import torch

    def write(tmp: Path) -> None:
        with open_output(tmp) as fh:
            torch.save(obj, fh)

    atomic_write(path, write)
