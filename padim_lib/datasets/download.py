"""Fetch, verify and unpack the MVTec AD archive (the engine behind `padim download mvtec`).

Steps, each safe to interrupt and rerun:

1. If ``dest`` already holds a complete tree whose per-class split sizes match the published
   ones, do nothing (no network).
2. If ``dest/mvtec_anomaly_detection.tar.xz`` exists (placed by hand, or left by an earlier run),
   use it; otherwise download into ``dest/mvtec_anomaly_detection.tar.xz.part``, resuming a
   partial file with ``Range: bytes=N-`` (206 -> append, 200 -> restart, 416 -> already whole).
3. Check the SHA-256 before anything is unpacked. A mismatching file is renamed to ``*.bad``
   (kept for inspection, never deleted) so that a rerun downloads afresh.
4. Unpack into a temporary folder inside ``dest``, refusing any member that would land outside
   it; check the split sizes there; only then move the class folders into ``dest``. A failed
   unpack or count check leaves no half tree behind.
5. Delete the archive (the unpacked tree is what the library reads; ``keep_archive`` keeps it).

Split-size problems are errors, never warnings: a tree with missing images would silently change
every metric.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tqdm import tqdm

from padim_lib.errors import PadimError

MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
MVTEC_ARCHIVE = "mvtec_anomaly_detection.tar.xz"
MVTEC_LICENSE = "CC BY-NC-SA 4.0"
# Address and checksum as used by anomalib (openvinotoolkit/anomalib,
# src/anomalib/data/datamodules/image/mvtecad.py, DOWNLOAD_INFO "mvtecad"; the same pair appears in
# its older src/anomalib/data/image/mvtec.py). The link is the one behind the MVTec AD page's
# "download the whole dataset" button; MVTec may rotate it, hence --url / the manual route.
MVTEC_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/"
    "download/420938113-1629952094/mvtec_anomaly_detection.tar.xz"
)
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"

_CHUNK = 1 << 20
_TMP_PREFIX = ".padim-extract-"
_USER_AGENT = "padim_lib-download/1 (+python urllib)"
# tarfile.FilterError only exists where extraction filters do (3.10.12+, 3.11.4+); () matches nothing.
_FILTER_ERROR: type[Exception] | tuple[()] = getattr(tarfile, "FilterError", ())


def download_mvtec(
    dest: str | os.PathLike,
    url: str = MVTEC_URL,
    sha256: str = MVTEC_SHA256,
    *,
    categories: Sequence[str] | None = None,
    expected_counts: Mapping[str, tuple[int, int, int]] | None = None,
    progress: bool = True,
    keep_archive: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Make ``dest`` hold the MVTec AD tree (``dest/<class>/{train,test,ground_truth}``); return ``dest``.

    categories: classes to check (default: all of ``expected_counts``, or all 15 MVTec classes).
    expected_counts: class -> (train good, test good, test defective); default the published
        sizes via ``padim_lib.datasets.mvtec.check_split_counts`` (tests pass tiny tables here).
    progress: progress bars and status lines on stderr.
    timeout: seconds a single network read may stall before the download counts as failed.
    Raises PadimError (link failure with instructions for a manual download, checksum mismatch,
    unsafe archive member, split sizes that differ from the expected ones).
    """
    dest = Path(dest)
    sha256 = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise PadimError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https", "ftp", "file") or not (parts.netloc or parts.path):
        raise PadimError(f"url={url!r}; expected an http(s):// (or ftp://, file://) address of the archive")
    if dest.exists() and not dest.is_dir():
        raise PadimError(f"dest {dest} exists and is not a directory")
    dest.mkdir(parents=True, exist_ok=True)

    def say(msg: str) -> None:
        if progress:
            print(msg, file=sys.stderr)

    problems = split_count_problems(dest, categories, expected_counts)
    if not problems:
        say(f"MVTec AD already complete at {dest}; nothing to do")
        return dest
    if _present_categories(dest, categories, expected_counts):
        say("existing tree is incomplete; re-creating it from the archive:\n  " + "\n  ".join(problems))

    archive = dest / MVTEC_ARCHIVE
    if archive.is_file():
        say(f"using the archive already at {archive}")
    else:
        part = archive.with_name(archive.name + ".part")
        _fetch(url, part, sha256=sha256, dest=dest, timeout=timeout, progress=progress)
        os.replace(part, archive)
    _verify(archive, sha256, progress=progress)
    _unpack(archive, dest, categories, expected_counts, progress=progress)
    if not keep_archive:
        archive.unlink()
    say(f"MVTec AD ready at {dest}")
    return dest


# --------------------------------------------------------------------------- split sizes


def split_counts(root: str | os.PathLike, category: str) -> tuple[int, int, int]:
    """(train good, test good, test defective) image counts of ``root/category``; missing folders count 0.

    Same counting rules as ``mvtec.check_split_counts`` (it uses the same folder helpers)."""
    from padim_lib.datasets.folder import GOOD, image_files, subdirs

    base = Path(root) / category

    def count(folder: Path) -> int:
        return len(image_files(folder)) if folder.is_dir() else 0

    test = base / "test"
    defect_types = [t for t in subdirs(test) if t != GOOD] if test.is_dir() else []
    return count(base / "train" / GOOD), count(test / GOOD), sum(count(test / t) for t in defect_types)


def split_count_problems(
    root: str | os.PathLike,
    categories: Sequence[str] | None = None,
    expected_counts: Mapping[str, tuple[int, int, int]] | None = None,
) -> list[str]:
    """Problems with the per-class split sizes (and masks) under ``root``; empty list = complete.

    Without ``expected_counts`` this is ``mvtec.check_split_counts`` (the published sizes); with it,
    the same checks against that table (tests use tiny archives)."""
    if expected_counts is None:
        from padim_lib.datasets.mvtec import check_split_counts

        return list(check_split_counts(root, categories))
    from padim_lib.datasets.folder import GOOD, find_mask, image_files, subdirs

    names = list(expected_counts) if categories is None else list(categories)
    unknown = [c for c in names if c not in expected_counts]
    if unknown:
        raise PadimError(
            f"categories {unknown} have no expected split sizes; known: {sorted(expected_counts)}"
        )
    problems = []
    for name in names:
        base = Path(root) / name
        if not base.is_dir():
            problems.append(f"{name}: class folder {base} is missing")
            continue
        wanted = tuple(expected_counts[name])
        if len(wanted) != 3:
            raise PadimError(
                f"expected_counts[{name!r}] must be (train good, test good, test defective), got {wanted}"
            )
        got = split_counts(root, name)
        for split, n, want in zip(("train good", "test good", "test defective"), got, wanted, strict=True):
            if n != want:
                problems.append(f"{name}: {n} {split} images, expected {want}")
        test = base / "test"
        defect_types = [t for t in subdirs(test) if t != GOOD] if test.is_dir() else []
        missing = [
            p
            for t in defect_types
            for p in image_files(test / t)
            if find_mask(base / "ground_truth" / t, p) is None
        ]
        if missing:
            problems.append(f"{name}: {len(missing)} defective test images without a mask, e.g. {missing[0]}")
    return problems


def _category_names(
    categories: Sequence[str] | None, expected_counts: Mapping[str, tuple[int, int, int]] | None
) -> list[str]:
    if categories is not None:
        return list(categories)
    if expected_counts is not None:
        return list(expected_counts)
    from padim_lib.datasets.mvtec import CLASSES

    return list(CLASSES)


def _present_categories(
    root: Path, categories: Sequence[str] | None, expected_counts: Mapping[str, tuple[int, int, int]] | None
) -> list[str]:
    return [c for c in _category_names(categories, expected_counts) if (root / c).is_dir()]


# --------------------------------------------------------------------------- download


def manual_instructions(dest: Path, sha256: str = MVTEC_SHA256) -> str:
    """What to download by hand and where to put it, for when the link does not work."""
    return (
        "Download the archive by hand instead:\n"
        f"  page:     {MVTEC_PAGE}\n"
        f"  file:     {MVTEC_ARCHIVE} (the whole data set, about 4.9 GB)\n"
        f"  SHA-256:  {sha256}\n"
        f"  licence:  {MVTEC_LICENSE} (non-commercial use only; see the page)\n"
        f"Put it at {dest / MVTEC_ARCHIVE} and rerun the same command: it then checks and unpacks "
        "that file without downloading."
    )


def _fetch(url: str, part: Path, *, sha256: str, dest: Path, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part``, resuming what is already there. Raises PadimError on failure."""
    for _attempt in range(2):  # a second pass only after a server sent a range we did not ask for
        start = part.stat().st_size if part.is_file() else 0
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        if start:
            request.add_header("Range", f"bytes={start}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and start:
                return  # nothing left to send: the .part is whole (or wrong; the checksum decides)
            raise _link_error(url, f"HTTP {exc.code} {exc.reason}", dest, sha256) from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _link_error(url, _reason(exc), dest, sha256) from exc

        with response:
            if response.status == 206:
                if _range_start(response.headers.get("Content-Range")) != start:
                    part.unlink()
                    continue
                mode = "ab"
            else:  # 200: the server ignored Range, so its body is the whole file
                mode, start = "wb", 0
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            received = start
            try:
                with (
                    open(part, mode) as fh,
                    tqdm(
                        total=total,
                        initial=start,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=MVTEC_ARCHIVE,
                        disable=not progress,
                        file=sys.stderr,
                    ) as bar,
                ):
                    while chunk := response.read(_CHUNK):
                        fh.write(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:
                raise _interrupted(url, part, received, total, _reason(exc), dest, sha256) from exc
            if total is not None and received < total:
                raise _interrupted(url, part, received, total, "connection closed early", dest, sha256)
            return
    raise _link_error(url, "the server twice answered a range that was not requested", dest, sha256)


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        return str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _link_error(url: str, reason: str, dest: Path, sha256: str) -> PadimError:
    return PadimError(f"could not download {url}: {reason}\n{manual_instructions(dest, sha256)}")


def _interrupted(
    url: str, part: Path, received: int, total: int | None, reason: str, dest: Path, sha256: str
) -> PadimError:
    of = f" of {total}" if total is not None else ""
    return PadimError(
        f"download of {url} stopped after {received}{of} bytes ({reason}); the partial file {part} is kept "
        f"and a rerun resumes it.\n{manual_instructions(dest, sha256)}"
    )


# --------------------------------------------------------------------------- checksum


def sha256_file(path: Path, *, progress: bool = False) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with (
        open(path, "rb") as fh,
        tqdm(
            total=path.stat().st_size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="SHA-256",
            disable=not progress,
            file=sys.stderr,
        ) as bar,
    ):
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            bar.update(len(chunk))
    return digest.hexdigest()


def _verify(archive: Path, sha256: str, *, progress: bool) -> None:
    """Raise PadimError on a mismatch, after renaming the file to ``*.bad`` so a rerun fetches it anew."""
    actual = sha256_file(archive, progress=progress)
    if actual == sha256:
        return
    bad = archive.with_name(archive.name + ".bad")
    os.replace(archive, bad)
    raise PadimError(
        f"SHA-256 mismatch for {archive}: expected {sha256}, got {actual} ({bad.stat().st_size} bytes). "
        f"The file was renamed to {bad} (delete it once inspected); rerunning downloads the archive again. "
        "If you placed it by hand, it is incomplete or a different file."
    )


# --------------------------------------------------------------------------- extraction


def safe_extract(
    archive: str | os.PathLike, root: str | os.PathLike, *, data_filter: bool | None = None
) -> None:
    """Extract ``archive`` into the existing folder ``root``, refusing members that would land outside it.

    Every member is checked just before it is written, against the files already on disk, so that
    a link extracted earlier cannot be used to escape (absolute names, ``..``, links pointing out,
    device files are refused). On top of that, Python's ``filter="data"`` is used when available
    (3.10.12+, 3.11.4+); ``data_filter=False`` forces the manual check alone (tests).
    Raises PadimError naming the member; what was written so far stays in ``root``.
    """
    root_real = os.path.realpath(root)
    use_filter = hasattr(tarfile, "data_filter") if data_filter is None else data_filter
    kwargs = {"filter": "data"} if use_filter else {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(root_real, members=_checked_members(tar, root_real, archive), **kwargs)
    except PadimError:
        raise
    except _FILTER_ERROR as exc:
        info = getattr(exc, "tarinfo", None)
        name = info.name if info is not None else "?"
        raise PadimError(f"refusing to extract {archive}: member {name!r} is unsafe ({exc})") from exc
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PadimError(f"could not unpack {archive}: {type(exc).__name__}: {exc}") from exc


def _checked_members(tar: tarfile.TarFile, root: str, archive: object) -> Iterator[tarfile.TarInfo]:
    for member in tar:  # lazily: each check sees what the previous members put on disk
        reason = _unsafe_reason(member, root)
        if reason:
            raise PadimError(f"refusing to extract {archive}: member {member.name!r} {reason}")
        yield member


def _unsafe_reason(member: tarfile.TarInfo, root: str) -> str | None:
    name = member.name
    if os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(target, root):
        return f"would be written outside {root} (to {target})"
    if member.issym():
        if os.path.isabs(member.linkname):
            return f"is a link to the absolute path {member.linkname!r}"
        pointee = os.path.realpath(os.path.join(os.path.dirname(target), member.linkname))
        if not _inside(pointee, root):
            return f"is a link pointing outside {root} (to {pointee})"
    elif member.islnk():
        pointee = os.path.realpath(os.path.join(root, member.linkname))
        if os.path.isabs(member.linkname) or not _inside(pointee, root):
            return f"is a hard link to {member.linkname!r}, outside {root}"
    elif not (member.isfile() or member.isdir()):
        return "is a device, FIFO or other special file"
    return None


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _unpack(
    archive: Path,
    dest: Path,
    categories: Sequence[str] | None,
    expected_counts: Mapping[str, tuple[int, int, int]] | None,
    *,
    progress: bool,
) -> None:
    """Extract into a temp folder in ``dest``, check the split sizes there, then move the entries into ``dest``.

    Entries of ``dest`` with the same name as an archive entry (an older, incomplete class folder)
    are replaced: the verified archive is the reference copy.
    """
    for stale in dest.glob(_TMP_PREFIX + "*"):  # left by a run that was killed while unpacking
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=dest))
    try:
        if progress:
            print(f"unpacking {archive} ...", file=sys.stderr)
        safe_extract(archive, tmp)
        top = _data_root(tmp, _category_names(categories, expected_counts))
        # the temporary folder is gone when the user reads this: name the archive's tree instead
        problems = [p.replace(str(top), f"<{archive.name}>") for p in
                    split_count_problems(top, categories, expected_counts)]
        if problems:
            raise PadimError(
                f"{archive} (checksum ok) does not hold the expected split sizes; nothing was moved "
                f"into {dest}:\n  " + "\n  ".join(problems)
            )
        for entry in sorted(top.iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _data_root(tmp: Path, names: Sequence[str]) -> Path:
    """The folder holding the class folders: ``tmp`` itself (MVTec's archive is flat) or its single child."""
    if any((tmp / n).is_dir() for n in names):
        return tmp
    children = list(tmp.iterdir())
    if len(children) == 1 and children[0].is_dir():
        return children[0]
    return tmp
