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


def test_the_reporting_pages_run_last_with_every_only_and_the_log_keeps_time_and_hardware(tmp_path, monkeypatch):
    ran: list[str] = []
    import nbformat

    chapters = [Chapter(s, tmp_path / f"{s}.ipynb", tmp_path / "_executed" / f"{s}.ipynb")
                for s in ("intro", "method", "table1_layers", runlog.STATISTICS_PAGE)]
    for c in chapters:
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {c.stem}")]), c.source)
    monkeypatch.setattr(runner, "toc_chapters", lambda root: chapters)
    monkeypatch.setattr(runner, "project_root", lambda root: tmp_path)
    monkeypatch.setattr(runner, "check_params", lambda values, selected: None)
    monkeypatch.setattr(runner, "notebook_parameters", lambda sel, values, explicit: {
        c.stem: {"device": "cpu"} if c.stem == "method" else {} for c in sel})
    monkeypatch.setattr(runner, "prepare_data", lambda *a, **k: None)
    monkeypatch.setattr("padim_lib.report.plan.check", lambda *a, **k: None)  # these chapters have no study
    monkeypatch.setattr(runner, "run_notebook", lambda chapter, params, **k: ran.append(chapter.stem))
    probed: list[str] = []  # the hardware probe (it imports torch for "auto"): once per device value
    monkeypatch.setattr(runner, "machine_description", lambda device: probed.append(device) or f"machine for {device}")
    runner.build_book("embedded", html=False, log=lambda msg: None)
    assert ran == ["method", "table1_layers", "intro", "execution"]
    assert sorted(probed) == ["auto", "cpu"]
    ran.clear()
    runner.build_book("embedded", only=["table1_layers"], html=False, log=lambda msg: None)
    assert ran == ["table1_layers", "intro", "execution"]
    runs = runlog.load(tmp_path)
    assert set(runs) == {"intro", "method", "table1_layers", "execution"}
    assert Path(tmp_path / runlog.RUNS_FILE).is_file()
    assert runs["method"]["hardware"] == "machine for cpu" and runs["intro"]["hardware"] == "machine for auto"
    assert all(run["seconds"] >= 0 for run in runs.values())


def test_statistics_table_and_summary_give_run_time_profile_hardware_and_date(tmp_path):
    runlog.record(tmp_path, "data", "embedded", {}, seconds=12.34, hardware="cpu A")
    runlog.record(tmp_path, "method", "paper", {}, seconds=3725.0, hardware="cpu A")
    runlog.record(tmp_path, "summary", "embedded", {})  # a run logged before run times were
    order = ["data", "method", "table1_layers", "summary"]
    stats = runlog.statistics_table(tmp_path, order=order)
    assert list(stats["chapter"]) == ["data", "method", "summary"]
    assert list(stats["run time"]) == ["12 s", "1 h 02 min", "not recorded"]
    assert list(stats["hardware"]) == ["cpu A", "cpu A", "not recorded"]
    assert stats["seconds"].iloc[:2].tolist() == [12.3, 3725.0] and stats["seconds"].isna().iloc[2]
    assert stats["executed"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC").all()
    text = runlog.statistics_summary(stats, order, "embedded")
    assert text.startswith("3 of the 4 chapters have run. Their runs took 1 h 02 min in all (1 without a recorded")
    assert ", on cpu A." in text and "1 ran on another profile than embedded: method (paper)." in text
    assert text.endswith("Not run yet: table1_layers.")
    done = runlog.statistics_summary(stats, ["data"], "embedded")
    assert done.startswith("All 1 chapters have run. Their runs took 12 s in all") and "Every one ran" in done
    assert runlog.format_seconds(59.6) == "1 min 00 s" and runlog.format_seconds(None) == "not recorded"


def test_machine_description_names_cpu_cores_and_memory():
    import os

    from padim_lib.report import provenance

    text = provenance.machine_description("cpu")  # "cpu": no GPU probe, no torch import
    assert f", {os.cpu_count()} cores" in text and text.endswith(" GiB RAM") and "GPU" not in text


def test_the_embedded_profile_names_every_data_folder_it_prepares():
    """Every data root a chapter reads on the embedded profile is one the runner makes: a chapter
    whose root comes only from its notebook default would meet a missing folder on a fresh clone."""
    embedded = runner.PROFILES["embedded"]
    assert embedded["data_root"] == "data/synthetic"
    assert embedded["stc_root"] == runner.STC_ROOT_EMBEDDED
