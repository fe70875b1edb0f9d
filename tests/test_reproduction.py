"""The summary's reproducibility report (padim_lib.report.reproduction) and the book's launch buttons
(padim_lib.report.book_buttons), without building a book."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from padim_lib.paper.published import load_published
from padim_lib.report import book_buttons, reproduction

REPO = Path(__file__).resolve().parents[1]


def _run(table: str, reasons: list[str]) -> SimpleNamespace:
    return SimpleNamespace(table=table, comparable=not reasons, reasons=reasons)


def test_setup_differences_list_each_reason_once_with_the_parts_it_applies_to():
    generated = "the data at data/synthetic is a generated set, not MVTec AD"
    runs = [
        _run("Table I", [generated, "backbone efficientnet_lite0, not ResNet18"]),
        _run("Table II", [generated, "backbone efficientnet_lite0, not ResNet18"]),
        _run("Non-aligned", [generated, "2 versions, not 5"]),
        _run("STC", []),
    ]
    diffs = reproduction.setup_differences(runs)
    assert list(diffs["difference"]) == [generated, "backbone efficientnet_lite0, not ResNet18", "2 versions, not 5"]
    assert list(diffs["parts"]) == [["Table I", "Table II", "non-aligned MVTec AD"], ["Table I", "Table II"],
                                    ["non-aligned MVTec AD"]]
    assert reproduction.differences_markdown(runs).splitlines() == [
        f"- {generated} (Table I, Table II, non-aligned MVTec AD)",
        "- backbone efficientnet_lite0, not ResNet18 (Table I, Table II)",
        "- 2 versions, not 5 (non-aligned MVTec AD)",
    ]
    scope = reproduction.scope_sentence(runs)
    assert scope.startswith("The figures of this run do not come from the paper's set-up: 3 of its 4 parts "
                            "(Table I, Table II, non-aligned MVTec AD) differ from it in 3 ways")
    values = reproduction.report_values(runs, profile="embedded", device="cpu")
    assert (values["rr_n_parts"], values["rr_n_comparable"], values["rr_n_differences"]) == (4, 1, 3)
    assert values["rr_profile"] == "embedded" and values["rr_scope"] == scope


def test_a_run_on_the_papers_setup_says_so():
    runs = [_run("Table I", []), _run("Table II", [])]
    assert reproduction.setup_differences(runs).empty
    assert reproduction.differences_markdown(runs).startswith("None: every part")
    assert reproduction.scope_sentence(runs).startswith("Every part of this run used the paper's set-up")


def test_published_sources_count_the_papers_figures_by_source():
    published = load_published()
    counts = reproduction.published_sources()
    paper = published[~published["source"].str.contains("independent implementation|different method")]
    assert counts["excerpt"] + counts["transcribed"] == len(paper)
    assert counts["excerpt"] == int(paper["source"].str.startswith("paper excerpt").sum()) > 0
    assert "ShanghaiTech Campus" in counts["transcribed_parts"] and "Table I" not in counts["transcribed_parts"]


# ----------------------------------------------------------------------------- launch buttons


def _theme_options(url: str) -> dict:
    """html_theme_options as jupyter-book makes them from the repository's _config.yml (its
    config.yaml_to_sphinx: launch_buttons as they are, repository.url and .branch renamed), with `url`."""
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    return {"launch_buttons": config["launch_buttons"], "repository_url": url,
            "repository_branch": config["repository"]["branch"]}


class _Config(dict):
    """The theme reads app.config["html_theme_options"]; the extension app.config.html_theme_options."""

    __getattr__ = dict.__getitem__


def _launch_urls(url: str, page: str = "book/_executed/table1_layers") -> list[str]:
    """The launch links sphinx-book-theme gives chapter `page`, after the book's extension ran."""
    from sphinx_book_theme.header_buttons.launch import add_launch_buttons

    app = SimpleNamespace(config=_Config(html_theme_options=_theme_options(url)),
                          env=SimpleNamespace(doc2path=lambda name: f"/src/{name}.ipynb",
                                              metadata={page: {"kernelspec": {"name": "python3"}}}))
    book_buttons._switch(app)
    context = {"header_buttons": [], "pagename": page, "sourcename": f"{page}.ipynb", "page_source_suffix": ".ipynb"}
    if url:  # what the theme puts in the page context from repository_url (update_context_with_repository_info)
        provider_url, user, repo = url.rsplit("/", 2)
        context.update(github_url=provider_url, github_user=user, github_repo=repo)
    add_launch_buttons(app, page, "page.html", context, None)
    book_buttons._point_at_sources(app, page, "page.html", context, None)
    return [b["url"] for g in context["header_buttons"] if g["label"] == "launch-buttons" for b in g["buttons"]]


def test_launch_buttons_open_the_chapters_source_on_binder_and_colab_once_the_url_is_set():
    assert _launch_urls("https://github.com/example/padim") == [
        "https://mybinder.org/v2/gh/example/padim/main?urlpath=tree/book/table1_layers.ipynb",
        "https://colab.research.google.com/github/example/padim/blob/main/book/table1_layers.ipynb",
    ]
    assert _launch_urls("") == []  # no repository: no launch button (the theme would fail on one)


def test_launch_options_keep_the_interface_and_drop_providers_without_a_repository():
    options = {"launch_buttons": {"notebook_interface": "classic", "binderhub_url": "https://b", "colab_url": "https://c"}}
    assert book_buttons.launch_options(options) == {"notebook_interface": "classic"}
    assert book_buttons.launch_options({**options, "repository_url": "https://github.com/o/r"}) == options["launch_buttons"]
    assert book_buttons.source_url("x?urlpath=tree/book/_executed/stc.ipynb") == "x?urlpath=tree/book/stc.ipynb"


@pytest.mark.parametrize("key", ["binderhub_url", "colab_url"])
def test_config_configures_binder_and_colab(key):
    assert _theme_options("")["launch_buttons"][key].startswith("https://")
