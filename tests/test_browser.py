"""The built book in a real browser: headless Chromium loads every page of _toc.yml.

The book is built once per session with tiny parameters (`built_book`, tests/conftest_book.py).
Skipped, saying why, when Debian's `chromium` is not installed (`make browser` installs it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from padim_lib.report import runlog
from padim_lib.report.chapters import toc_chapters, toc_files

pytest_plugins = ["conftest_book"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (`make browser` installs "
                                                "Debian's chromium; it needs root)"),
]

# What a page must not show: a cell's error output or traceback, stderr, a Sphinx/docutils error box,
# or Chromium's own error page.
FORBIDDEN = {
    "a traceback": re.compile(r"Traceback \(most recent call last\)"),
    "an error output": re.compile(r'class="[^"]*\b(traceback|ipythontb|output error)\b'),
    "stderr output": re.compile(r'class="[^"]*\boutput stderr\b'),
    "a docutils system message": re.compile(r'class="[^"]*\bsystem-message\b'),
    "a browser error page": re.compile(r"ERR_FILE_NOT_FOUND|ERR_ACCESS_DENIED|This page isn.t working"),
}


def chromium(args: list[str], profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def toc_pages(root: Path) -> list[str]:
    """Every file of _toc.yml (root first), as paths relative to the HTML folder, without suffix."""
    return [str(Path(f).with_suffix("")) for f in toc_files(root)]


@pytest.fixture(scope="module")
def doms(built_book, tmp_path_factory) -> dict[str, str]:
    """Each toc page's DOM after Chromium loaded it (scripts run), keyed by its toc entry."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    html = built_book.root / "_build" / "html"
    out = {}
    for page in toc_pages(built_book.root):
        path = html / f"{page}.html"
        assert path.is_file(), f"{page}: {path} was not built"
        proc = chromium(["--dump-dom", path.as_uri()], profile)
        assert proc.returncode == 0, f"{page}: chromium exited {proc.returncode}: {proc.stderr[-2000:]}"
        out[page] = proc.stdout
    return out


def test_every_toc_page_loads(doms, built_book):
    # every page _toc.yml lists, every chapter among them (the count comes from the toc, not from here)
    assert len(doms) == len(toc_files(built_book.root))
    assert {f"book/_executed/{c.stem}" for c in toc_chapters(built_book.root)} <= set(doms)
    for page, dom in doms.items():
        assert "<main" in dom and re.search(r"<h1[ >]", dom), f"{page}: no page content in the DOM"
        assert re.search(r"<title>[^<]+</title>", dom), f"{page}: no title"


def test_no_page_shows_an_error_or_a_traceback(doms):
    for page, dom in doms.items():
        for what, pattern in FORBIDDEN.items():
            hit = pattern.search(dom)
            assert hit is None, f"{page} shows {what}: ...{dom[max(0, hit.start() - 200):hit.end() + 200]}..."


def test_table1_page_holds_its_table_and_figures(doms, built_book):
    dom = doms["book/_executed/table1_layers"]
    tables = re.findall(r"<table\b.*?</table>", dom, flags=re.S)
    assert any("Layer 1" in t and "paper" in t and "PRO" in t for t in tables), "no reproduced-vs-published table"
    images = re.findall(r'<img\b[^>]*\bsrc="([^"]+\.png)"', dom)
    assert images, "no figure on the Table I page"
    page_dir = built_book.page("table1_layers").parent
    for src in images:  # every figure is a file of the built site (nothing points elsewhere)
        assert (page_dir / src).resolve().is_file(), src


def test_execution_statistics_page_shows_every_chapter(doms, built_book):
    dom = doms[f"book/_executed/{runlog.STATISTICS_PAGE}"]
    table = re.search(r"<table\b.*?</table>", dom, flags=re.S)
    assert table is not None, "no statistics table"
    cells = re.findall(r"<td\b[^>]*>([^<]*)</td>", table.group(0))
    for chapter in toc_chapters(built_book.root):
        if chapter.stem != runlog.STATISTICS_PAGE:
            assert chapter.stem in cells, f"{chapter.stem} is not in the execution statistics"


def test_citations_link_to_bibliography_entries(doms):
    entries = set(re.findall(r'<div\b[^>]*\bclass="citation"[^>]*\bid="([^"]+)"', doms["book/references"]))
    assert entries, "the bibliography page lists no entry"
    for page, dom in doms.items():
        if page.startswith("book/_executed/"):
            targets = set(re.findall(r'href="[^"]*references\.html#([^"]+)"', dom))
            assert targets and targets <= entries, f"{page}: citations {sorted(targets)}, entries {sorted(entries)}"


def test_summary_shows_the_reproducibility_report(doms):
    dom = doms["book/_executed/summary"]
    report = dom[dom.index('id="reproducibility-report"'):]
    for heading in ("Scope of reproducibility", "What was easy", "What was difficult",
                    "What differs from the paper"):
        assert heading in report, heading
    assert "{glue" not in report and "generated set, not MVTec AD" in report


def test_every_page_offers_its_download_menu(doms):
    for page, dom in doms.items():
        assert "btn-download-source-button" in dom and "btn-download-pdf-button" in dom, page


def test_screenshot_of_the_table1_page(built_book, tmp_path):
    from PIL import Image, ImageStat

    shot = tmp_path / "table1_layers.png"
    proc = chromium(["--hide-scrollbars", "--window-size=1280,4000", f"--screenshot={shot}",
                     built_book.page("table1_layers").as_uri()], tmp_path / "profile")
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as img:
        assert img.size == (1280, 4000)
        spread = ImageStat.Stat(img.convert("L")).stddev[0]
    assert spread > 10, "the screenshot is (nearly) blank"
    print(f"\nscreenshot of the Table I page: {shot}")
