"""`padim book`'s parameters: papermill's parsing, --list-params, type checks before any kernel, shown once."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from padim_lib.errors import PadimError
from padim_lib.report import nbparams, runner
from padim_lib.report.chapters import select_chapters, toc_chapters

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, value", [
    ("None", None), ("True", True), ("False", False), ("3", 3), ("-2", -2), ("0.5", 0.5), ("1e-3", 1e-3),
    ("[1, 2]", [1, 2]), ("[carpet, bottle]", ["carpet", "bottle"]), ('["carpet"]', ["carpet"]), ("{a: 1}", {"a": 1}),
    ("null", None), ("true", True), ("abc", "abc"), ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"), ("yes", "yes"),
])
def test_values_are_parsed_as_papermill_parses_them(text, value):
    parsed = nbparams.parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_both_forms_of_p_give_the_same_values():
    two = nbparams.parse_cli_params([["max_train", "None"], ["dims", "[50, 100]"], ["sigma", "4"], ["device", "cpu"]])
    one = nbparams.parse_cli_params([["max_train=None"], ["dims=[50, 100]"], ["sigma=4"], "device=cpu"])
    assert one == two == {"max_train": None, "dims": [50, 100], "sigma": 4, "device": "cpu"}
    assert nbparams.parse_cli_params([["scheduler", "tcp://h:1?a=b"], ["x=a=b"]]) == {"scheduler": "tcp://h:1?a=b",
                                                                                    "x": "a=b"}
    assert nbparams.parse_cli_params([["seeds", "3"], ["seeds", "5"]]) == {"seeds": 5}  # the last one wins


@pytest.mark.parametrize("item, message", [
    (["max_train"], "expected `-p name value` or `-p name=value`"),
    (["a", "b", "c"], "expected `-p name value`"),
    (["1x", "2"], "Python identifier"),
    (["dims", "[1, 2"], "not a valid YAML list"),
])
def test_bad_p_items_are_errors(item, message):
    with pytest.raises(PadimError, match=message):
        nbparams.parse_cli_params([item])


def test_yaml_file_then_yaml_then_p(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("seeds: 2\ndims: [8, 16]\nmax_train: null\nbootstrap: 5\n")
    got = nbparams.load_params([["bootstrap", "7"]], yaml_text="{seeds: 3, classes: [brick]}", yaml_file=f)
    assert got == {"seeds": 3, "dims": [8, 16], "max_train": None, "bootstrap": 7, "classes": ["brick"]}
    with pytest.raises(PadimError, match="expected a YAML mapping"):
        nbparams.load_params(yaml_text="[1, 2]")
    with pytest.raises(PadimError, match="no such file"):
        nbparams.load_params(yaml_file=tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------- types


def test_every_book_parameter_has_a_type_and_a_comment():
    for chapter in toc_chapters(REPO):
        for name, spec in nbparams.parameter_specs(chapter).items():
            assert spec.type != "Any", f"{chapter.stem}.{name}: a None default needs a `# type:` comment"
            assert spec.help, f"{chapter.stem}.{name}: no comment"
            # the declared type accepts the declared default
            assert spec.accepts(eval(spec.default)), f"{chapter.stem}.{name}: {spec.type} rejects {spec.default}"


def test_check_params_names_the_parameter_the_chapter_and_the_type():
    chapters = select_chapters(toc_chapters(REPO), ["table1_layers", "table2_dimensionality"])
    nbparams.check_params({"sigma": 4, "classes": "carpet", "max_train": None, "dims": [8, 16], "layers": None},
                          chapters)
    nbparams.check_params({"classes": ["carpet"], "max_train": 50, "eps": 1e-3}, chapters)
    cases = [
        ({"max_train": "abc"}, r"max_train='abc' \(str\): chapter table1_layers expects int\|None"),
        ({"dims": [8, "a"]}, r"dims=\[8, 'a'\] \(list\): chapter table2_dimensionality expects list\[int\]"),
        ({"seeds": 2.5}, r"seeds=2.5 \(float\): chapter table2_dimensionality expects int"),
        ({"bootstrap": True}, r"bootstrap=True \(bool\): chapter table1_layers expects int"),
        ({"classes": [1]}, r"expects list\[str\]\|str\|None"),
    ]
    for params, message in cases:
        with pytest.raises(PadimError, match=message):
            nbparams.check_params(params, chapters)


def test_bad_values_stop_padim_book_before_any_kernel_starts(tmp_path, monkeypatch, capsys):
    from conftest_book import copy_project

    from padim_lib.cli import main

    root = copy_project(tmp_path / "proj")
    monkeypatch.chdir(root)

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing may run before the parameters are checked")

    for name in ("prepare_data", "private_kernel", "run_notebook"):
        monkeypatch.setattr(runner, name, forbidden)
    assert main(["book", "--profile", "embedded", "-p", "max_train", "abc"]) == 2
    err = capsys.readouterr().err
    assert "max_train='abc'" in err and "chapter method expects int|None" in err
    assert main(["book", "--profile", "embedded", "--only", "table2_dimensionality", "-y", "dims: [8, x]"]) == 2
    assert "chapter table2_dimensionality expects list[int]" in capsys.readouterr().err
    assert not (root / "book" / "_executed").exists() and not (root / "data").exists()


# ----------------------------------------------------------------------------- listing


def test_list_params_prints_types_defaults_and_comments(capsys):
    from padim_lib.cli import main

    assert main(["book", "--list-params", "table2_dimensionality"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("table2_dimensionality (book/table2_dimensionality.ipynb):")
    lines = {line.split()[0]: line.split(None, 3) for line in out.splitlines()[1:] if line.strip()}
    assert lines["dims"][1:3] == ["list[int]", "[40,"] and "reduced sizes" in lines["dims"][3]
    assert lines["max_train"][1:3] == ["int|None", "None"] and "cap on training images" in lines["max_train"][3]
    assert "intro" not in out

    assert main(["book", "--list-params"]) == 0
    out = capsys.readouterr().out
    for chapter in toc_chapters(REPO):
        assert f"{chapter.stem} (book/{chapter.stem}.ipynb):" in out
    assert main(["book", "--list-params", "table3"]) == 2
    assert "unknown notebook(s) ['table3']" in capsys.readouterr().err


# ----------------------------------------------------------------------------- shown once


def _executed(params_source: str, injected_source: str, tags: list[str] | None = None):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# T"),
        nbformat.v4.new_code_cell(params_source, metadata={"tags": ["parameters", *(tags or [])]}),
        nbformat.v4.new_code_cell(injected_source, metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(a)"),
    ]
    return nb


def test_the_page_shows_the_parameters_of_the_run_once():
    defaults = 'a = 1  # first\nb = None  # type: int|None  second\nc = "x"\nd = [1, 2]  # fourth'
    injected = "# Parameters\na = 2\nc = 'x'\nd = [3]\ne = 5\n"
    nb = _executed(defaults, injected)
    assert nbparams.merge_parameters_cell(nb)
    params_cell, merged = nb.cells[1], nb.cells[2]
    assert "remove-cell" in params_cell.metadata["tags"]
    assert "remove-cell" not in merged.metadata["tags"]
    lines = merged.source.splitlines()
    assert lines[1:] == [
        "a = 2  # first (default 1)",
        "b = None  # type: int|None  second",
        'c = "x"',  # the same value: the default line as it was
        "d = [3]  # fourth (default [1, 2])",
        "e = 5  # set for this run",
    ]
    assert merged.metadata["papermill_injected_source"] == injected
    # the merged cell leaves the kernel as the two cells did
    ran, shown = {}, {}
    exec(defaults + "\n" + injected, ran)
    exec(merged.source, shown)
    assert {k: v for k, v in ran.items() if k != "__builtins__"} == {k: v for k, v in shown.items() if k != "__builtins__"}


def test_a_hidden_parameters_cell_stays_hidden_and_nothing_injected_changes_nothing():
    nb = _executed("a = 1", "# Parameters\na = 2\n", tags=["remove-cell"])
    nbparams.merge_parameters_cell(nb)
    assert "remove-cell" in nb.cells[2].metadata["tags"]
    plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a = 1", metadata={"tags": ["parameters"]})])
    assert not nbparams.merge_parameters_cell(plain)
    assert plain.cells[0].metadata["tags"] == ["parameters"]
