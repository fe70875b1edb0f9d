"""The book's record of its executions: `--only` re-runs leave a visible trace on the intro page."""

from __future__ import annotations

from pathlib import Path

from padim_lib.report import runlog, runner
from padim_lib.report.chapters import Chapter


def test_record_and_table_mark_the_chapter_that_differs(tmp_path):
    data = tmp_path / "data"
    (data / "c").mkdir(parents=True)
    (data / "c" / "a.png").write_bytes(b"x")
    common = {"data_root": "data", "sigma": 4.0, "classes": None}
    runlog.record(tmp_path, "method", "embedded", common)
    runlog.record(tmp_path, "table1_layers", "embedded", common)
    runlog.record(tmp_path, "table2_dimensionality", "embedded", {**common, "sigma": 2.0})
    table = runlog.execution_table(tmp_path, order=["intro", "method", "table1_layers", "table2_dimensionality"])
    assert list(table["chapter"]) == ["method", "table1_layers", "table2_dimensionality"]
    assert list(table["differs from the other chapters"]) == ["", "", "sigma = 2.0"]
    assert table["data"].str.startswith("data (").all() and table["profile"].eq("embedded").all()
    # the data's fingerprint follows its files
    before = runlog.data_fingerprint(data)
    (data / "c" / "b.png").write_bytes(b"yy")
    assert runlog.data_fingerprint(data) != before
    assert runlog.data_fingerprint(tmp_path / "nowhere") == "missing"


def test_the_introduction_runs_last_and_with_every_only(tmp_path, monkeypatch):
    ran: list[str] = []
    import nbformat

    chapters = [Chapter(s, tmp_path / f"{s}.ipynb", tmp_path / "_executed" / f"{s}.ipynb")
                for s in ("intro", "method", "table1_layers")]
    for c in chapters:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {c.stem}")]), c.source)
    monkeypatch.setattr(runner, "toc_chapters", lambda root: chapters)
    monkeypatch.setattr(runner, "project_root", lambda root: tmp_path)
    monkeypatch.setattr(runner, "check_params", lambda values, selected: None)
    monkeypatch.setattr(runner, "notebook_parameters", lambda sel, values, explicit: {c.stem: {} for c in sel})
    monkeypatch.setattr(runner, "prepare_data", lambda *a, **k: None)
    monkeypatch.setattr(runner, "run_notebook", lambda chapter, params, **k: ran.append(chapter.stem))
    runner.build_book("embedded", html=False, log=lambda msg: None)
    assert ran == ["method", "table1_layers", "intro"]
    ran.clear()
    runner.build_book("embedded", only=["table1_layers"], html=False, log=lambda msg: None)
    assert ran == ["table1_layers", "intro"]
    assert set(runlog.load(tmp_path)) == {"intro", "method", "table1_layers"}
    assert Path(tmp_path / runlog.RUNS_FILE).is_file()


def test_the_embedded_profile_names_every_data_folder_it_prepares():
    """Every data root a chapter reads on the embedded profile is one the runner makes: a chapter
    whose root comes only from its notebook default would meet a missing folder on a fresh clone."""
    embedded = runner.PROFILES["embedded"]
    assert embedded["data_root"] == "data/synthetic"
    assert embedded["stc_root"] == runner.STC_ROOT_EMBEDDED
