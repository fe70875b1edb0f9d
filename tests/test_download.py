"""download_mvtec against a local HTTP server: fetch, resume, checksum, safe unpacking, split sizes, CLI."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import socket
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from padim_lib import cli
from padim_lib.datasets import download
from padim_lib.datasets.download import MVTEC_ARCHIVE, MVTEC_LICENSE, MVTEC_PAGE, download_mvtec, safe_extract
from padim_lib.errors import PadimError

# Two tiny classes in MVTec's layout: (train good, test good, test defective).
COUNTS = {"bottle": (3, 2, 2), "grid": (2, 1, 3)}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _write_tree(root: Path, counts: dict[str, tuple[int, int, int]]) -> None:
    """MVTec layout: <class>/train/good, test/good, test/crack + ground_truth/crack/<stem>_mask.png."""
    png = _png()
    for name, (n_train, n_good, n_defect) in counts.items():
        for folder, n in (("train/good", n_train), ("test/good", n_good), ("test/crack", n_defect)):
            (root / name / folder).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / name / folder / f"{i:03d}.png").write_bytes(png)
        (root / name / "ground_truth" / "crack").mkdir(parents=True)
        for i in range(n_defect):
            (root / name / "ground_truth" / "crack" / f"{i:03d}_mask.png").write_bytes(png)
    (root / "license.txt").write_text("CC BY-NC-SA 4.0\n")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def _make_archive(
    tmp_path: Path,
    counts: dict[str, tuple[int, int, int]] = COUNTS,
    extra: Callable[[tarfile.TarFile], None] | None = None,
    mode: str = "w:xz",
) -> tuple[Path, str]:
    """tmp_path/serve/mvtec_anomaly_detection.tar.xz with a flat layout like MVTec's; returns (path, sha256)."""
    src = tmp_path / "src"
    _write_tree(src, counts)
    serve = tmp_path / "serve"
    serve.mkdir(exist_ok=True)
    path = serve / MVTEC_ARCHIVE
    with tarfile.open(path, mode) as tar:
        for entry in sorted(src.iterdir()):
            tar.add(entry, arcname=entry.name)
        if extra is not None:
            extra(tar)  # after the good members, so a rejection has a half tree to clean up
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{MVTEC_ARCHIVE}"


def _assert_tree(dest: Path, counts: dict[str, tuple[int, int, int]] = COUNTS) -> None:
    png = _png()
    for name, (n_train, n_good, n_defect) in counts.items():
        assert len(list((dest / name / "train" / "good").iterdir())) == n_train
        assert len(list((dest / name / "test" / "good").iterdir())) == n_good
        assert len(list((dest / name / "test" / "crack").iterdir())) == n_defect
        assert (dest / name / "train" / "good" / "000.png").read_bytes() == png
    assert not list(dest.glob(".padim-extract-*")), "temporary extraction folder left behind"
    assert not (dest / (MVTEC_ARCHIVE + ".part")).exists()


def _fetch(dest: Path, url: str, sha: str, **kw) -> Path:
    return download_mvtec(dest, url=url, sha256=sha, expected_counts=COUNTS, progress=False, **kw)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Plain file server: ignores Range and always answers 200 with the whole file."""

    def log_message(self, format, *args):
        pass


def _cut_handler(data: bytes, keep: int) -> type:
    """Announces len(data) bytes, sends the first `keep`, then drops the connection."""

    class Cut(_QuietHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:keep])
            self.wfile.flush()
            self.close_connection = True

    return Cut


# --------------------------------------------------------------------------- happy paths


def test_download_verifies_unpacks_and_removes_archive(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    dest = tmp_path / "data" / "mvtec"
    out = _fetch(dest, f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}", sha)
    assert out == dest
    _assert_tree(dest)
    assert (dest / "license.txt").is_file()
    assert not (dest / MVTEC_ARCHIVE).exists()
    assert download.split_count_problems(dest, expected_counts=COUNTS) == []


def test_keep_archive_and_category_subset(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    dest = tmp_path / "mvtec"
    _fetch(
        dest, f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}", sha, categories=["grid"], keep_archive=True
    )
    _assert_tree(dest)
    assert (dest / MVTEC_ARCHIVE).read_bytes() == archive.read_bytes()
    with pytest.raises(PadimError, match="no expected split sizes"):
        _fetch(dest, _closed_port_url(), sha, categories=["carpet"])


def test_complete_tree_is_left_alone_without_network(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    dest = tmp_path / "mvtec"
    _fetch(dest, f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}", sha)
    probe = dest / "bottle" / "train" / "good" / "000.png"
    before = probe.stat().st_mtime_ns
    assert _fetch(dest, _closed_port_url(), sha) == dest  # a download attempt would raise
    assert probe.stat().st_mtime_ns == before
    assert sorted(p.name for p in dest.iterdir()) == ["bottle", "grid", "license.txt"]


def test_manually_placed_archive_is_used_without_downloading(tmp_path):
    archive, sha = _make_archive(tmp_path)
    dest = tmp_path / "mvtec"
    dest.mkdir()
    (dest / MVTEC_ARCHIVE).write_bytes(archive.read_bytes())
    _fetch(dest, _closed_port_url(), sha)
    _assert_tree(dest)


def test_incomplete_tree_is_replaced_from_the_archive(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    dest = tmp_path / "mvtec"
    (dest / "bottle" / "train" / "good").mkdir(parents=True)
    (dest / "bottle" / "train" / "good" / "stray.png").write_bytes(b"not from the archive")
    _fetch(dest, f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}", sha)
    _assert_tree(dest)
    assert not (dest / "bottle" / "train" / "good" / "stray.png").exists()


# --------------------------------------------------------------------------- resuming


def test_resume_fetches_only_the_rest(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    data = archive.read_bytes()
    half = len(data) // 2
    # The server's copy has a garbage first half: only a download that resumes at `half`
    # (206) and keeps the local first half can end with the right checksum.
    served = tmp_path / "served"
    served.mkdir()
    (served / MVTEC_ARCHIVE).write_bytes(b"\0" * half + data[half:])
    dest = tmp_path / "mvtec"
    dest.mkdir()
    (dest / (MVTEC_ARCHIVE + ".part")).write_bytes(data[:half])
    _fetch(dest, f"{http_server(served)}/{MVTEC_ARCHIVE}", sha)
    _assert_tree(dest)


def test_server_without_range_support_restarts_from_zero(tmp_path, handler_server):
    archive, sha = _make_archive(tmp_path)
    dest = tmp_path / "mvtec"
    dest.mkdir()
    (dest / (MVTEC_ARCHIVE + ".part")).write_bytes(b"garbage that must not be kept")
    base = handler_server(functools.partial(_QuietHandler, directory=str(archive.parent)))
    _fetch(dest, f"{base}/{MVTEC_ARCHIVE}", sha)
    _assert_tree(dest)


def test_whole_part_file_gets_416_and_is_verified(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    dest = tmp_path / "mvtec"
    dest.mkdir()
    (dest / (MVTEC_ARCHIVE + ".part")).write_bytes(archive.read_bytes())
    _fetch(dest, f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}", sha)
    _assert_tree(dest)


def test_dropped_connection_keeps_part_and_rerun_resumes(tmp_path, handler_server, http_server):
    archive, sha = _make_archive(tmp_path)
    data = archive.read_bytes()
    keep = len(data) // 3
    dest = tmp_path / "mvtec"
    with pytest.raises(PadimError, match=rf"stopped after {keep} of {len(data)} bytes") as err:
        _fetch(dest, f"{handler_server(_cut_handler(data, keep))}/{MVTEC_ARCHIVE}", sha)
    assert "rerun resumes" in str(err.value)
    assert (dest / (MVTEC_ARCHIVE + ".part")).read_bytes() == data[:keep]
    _fetch(dest, f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}", sha)
    _assert_tree(dest)


# --------------------------------------------------------------------------- checksum


def test_bad_checksum_is_reported_and_rerun_downloads_again(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    url = f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}"
    dest = tmp_path / "mvtec"
    wrong = "0" * 64
    with pytest.raises(PadimError) as err:
        _fetch(dest, url, wrong)
    msg = str(err.value)
    assert f"expected {wrong}" in msg and f"got {sha}" in msg and str(dest / MVTEC_ARCHIVE) in msg
    assert sorted(p.name for p in dest.iterdir()) == [MVTEC_ARCHIVE + ".bad"]  # nothing unpacked
    _fetch(dest, url, sha.upper())  # hex case does not matter
    _assert_tree(dest)


def test_truncated_archive_fails_checksum(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    data = archive.read_bytes()
    served = tmp_path / "served"
    served.mkdir()
    (served / MVTEC_ARCHIVE).write_bytes(data[: len(data) // 2])
    dest = tmp_path / "mvtec"
    with pytest.raises(PadimError, match="SHA-256 mismatch"):
        _fetch(dest, f"{http_server(served)}/{MVTEC_ARCHIVE}", sha)
    assert (dest / (MVTEC_ARCHIVE + ".bad")).stat().st_size == len(data) // 2
    assert not (dest / "bottle").exists()
    (served / MVTEC_ARCHIVE).write_bytes(data)  # the mirror is fixed: a rerun starts afresh
    _fetch(dest, f"{http_server(served)}/{MVTEC_ARCHIVE}", sha)
    _assert_tree(dest)


def test_sha256_argument_is_validated(tmp_path):
    with pytest.raises(PadimError, match="64 hexadecimal digits"):
        download_mvtec(tmp_path, url=_closed_port_url(), sha256="abc", expected_counts=COUNTS, progress=False)


# --------------------------------------------------------------------------- link failure


def _assert_manual_instructions(msg: str, dest: Path, sha: str) -> None:
    for needle in (MVTEC_PAGE, MVTEC_ARCHIVE, sha, MVTEC_LICENSE, str(dest / MVTEC_ARCHIVE), "rerun"):
        assert needle in msg, needle


def test_closed_port_gives_manual_instructions(tmp_path):
    dest = tmp_path / "mvtec"
    sha = "ab" * 32
    with pytest.raises(PadimError, match="could not download") as err:
        _fetch(dest, _closed_port_url(), sha)
    _assert_manual_instructions(str(err.value), dest, sha)
    assert list(dest.iterdir()) == []


def test_http_404_gives_manual_instructions(tmp_path, http_server):
    empty = tmp_path / "empty"
    empty.mkdir()
    dest = tmp_path / "mvtec"
    sha = "cd" * 32
    with pytest.raises(PadimError, match="HTTP 404") as err:
        _fetch(dest, f"{http_server(empty)}/{MVTEC_ARCHIVE}", sha)
    _assert_manual_instructions(str(err.value), dest, sha)


# --------------------------------------------------------------------------- unsafe archives

UNSAFE = {
    "dotdot": (lambda t: _add_bytes(t, "../evil.txt"), "../evil.txt"),
    "absolute": (lambda t: _add_bytes(t, "/tmp/padim-test-evil.txt"), "/tmp/padim-test-evil.txt"),
    "symlink-out": (lambda t: _add_link(t, "bottle/evil_link", "../../../evil.txt"), "bottle/evil_link"),
    "symlink-abs": (lambda t: _add_link(t, "bottle/evil_link", "/etc/passwd"), "bottle/evil_link"),
    "hardlink-out": (lambda t: _add_link(t, "evil_hard", "../evil.txt", tarfile.LNKTYPE), "evil_hard"),
    # The link itself stays inside; writing through it would not. Caught only by checking against disk.
    "through-link": (
        lambda t: (_add_link(t, "here", "."), _add_bytes(t, "here/../evil.txt")),
        "here/../evil.txt",
    ),
    "fifo": (lambda t: _add_link(t, "evil_fifo", "", tarfile.FIFOTYPE), "evil_fifo"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_member_is_rejected_and_nothing_is_left(tmp_path, http_server, case):
    add, member = UNSAFE[case]
    archive, sha = _make_archive(tmp_path, extra=add)
    dest = tmp_path / "mvtec"
    with pytest.raises(PadimError, match="refusing to extract") as err:
        _fetch(dest, f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}", sha)
    assert repr(member) in str(err.value)
    assert sorted(p.name for p in dest.iterdir()) == [MVTEC_ARCHIVE]  # no half tree, no temp folder
    assert not list(tmp_path.rglob("evil*"))
    assert not Path("/tmp/padim-test-evil.txt").exists()


@pytest.mark.parametrize("data_filter", [False, True])
@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink-out", "hardlink-out", "through-link"])
def test_safe_extract_manual_check_alone_and_with_filter(tmp_path, case, data_filter):
    if data_filter and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python has no tarfile extraction filters")
    add, member = UNSAFE[case]
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        _add_bytes(tar, "ok/file.txt", b"fine")
        add(tar)
    root = tmp_path / "out" / "root"
    root.mkdir(parents=True)
    with pytest.raises(PadimError, match="refusing to extract") as err:
        safe_extract(archive, root, data_filter=data_filter)
    assert repr(member) in str(err.value)
    assert (root / "ok" / "file.txt").read_bytes() == b"fine"
    assert not list(tmp_path.rglob("evil*"))


def test_safe_extract_keeps_links_that_stay_inside(tmp_path):
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tar:
        _add_bytes(tar, "d/file.txt", b"payload")
        _add_link(tar, "d/sym", "file.txt")
        _add_link(tar, "hard", "d/file.txt", tarfile.LNKTYPE)
    root = tmp_path / "root"
    root.mkdir()
    safe_extract(archive, root, data_filter=False)
    assert (root / "d" / "sym").is_symlink() and (root / "d" / "sym").read_bytes() == b"payload"
    assert (root / "hard").read_bytes() == b"payload"


# --------------------------------------------------------------------------- split sizes


def test_split_size_mismatch_names_class_and_split(tmp_path, http_server):
    archive, sha = _make_archive(tmp_path)
    dest = tmp_path / "mvtec"
    expected = {"bottle": (3, 2, 2), "grid": (2, 1, 4)}
    with pytest.raises(PadimError, match="grid: 3 test defective images, expected 4"):
        download_mvtec(
            dest,
            url=f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}",
            sha256=sha,
            expected_counts=expected,
            progress=False,
        )
    # Checked before anything is moved: only the (verified) archive remains, for a rerun.
    assert sorted(p.name for p in dest.iterdir()) == [MVTEC_ARCHIVE]


def test_missing_masks_are_a_problem(tmp_path):
    _write_tree(tmp_path, COUNTS)
    (tmp_path / "grid" / "ground_truth" / "crack" / "001_mask.png").unlink()
    problems = download.split_count_problems(tmp_path, expected_counts=COUNTS)
    assert len(problems) == 1 and problems[0].startswith("grid: 1 defective test images without a mask")


def test_default_table_matches_a_full_size_tree_offline(tmp_path):
    """With the published sizes (mvtec.SPLIT_COUNTS), a complete tree of placeholder files needs no download."""
    from padim_lib.datasets.mvtec import SPLIT_COUNTS

    for name, (n_train, n_good, n_defect) in SPLIT_COUNTS.items():
        for folder, n in (("train/good", n_train), ("test/good", n_good), ("test/crack", n_defect)):
            os.makedirs(tmp_path / name / folder)
            for i in range(n):
                (tmp_path / name / folder / f"{i:03d}.png").touch()
        os.makedirs(tmp_path / name / "ground_truth" / "crack")
        for i in range(n_defect):
            (tmp_path / name / "ground_truth" / "crack" / f"{i:03d}_mask.png").touch()
    assert download_mvtec(tmp_path, url=_closed_port_url(), progress=False) == tmp_path
    (tmp_path / "wood" / "train" / "good" / "000.png").unlink()
    with pytest.raises(PadimError, match="could not download"):
        download_mvtec(tmp_path, url=_closed_port_url(), progress=False)


# --------------------------------------------------------------------------- CLI


def test_cli_download_exit_codes(tmp_path, http_server, monkeypatch, capsys):
    archive, sha = _make_archive(tmp_path)
    # The CLI passes only dest/url/sha256; give it the tiny split table of this archive.
    monkeypatch.setattr(download, "download_mvtec", functools.partial(download_mvtec, expected_counts=COUNTS))
    dest = tmp_path / "mvtec"
    url = f"{http_server(archive.parent)}/{MVTEC_ARCHIVE}"
    assert cli.main(["download", "mvtec", "--dest", str(dest), "--url", url, "--sha256", sha]) == 0
    _assert_tree(dest)
    assert "MVTec AD ready" in capsys.readouterr().err

    other = tmp_path / "other"
    assert (
        cli.main(["download", "mvtec", "--dest", str(other), "--url", _closed_port_url(), "--sha256", sha])
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("padim download: error: could not download")
    _assert_manual_instructions(err, other, sha)
