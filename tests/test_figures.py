"""Figures readers can cite: every figure of the book is numbered and captioned with what it shows
and on which data; the captions' run-dependent parts come from padim_lib.report.display.data_caption.

The built-book checks read the HTML of the tiny book (`built_book`, tests/conftest_book.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from padim_lib.report import comparison_plots, plots, study_plots
from padim_lib.report import display as report
from padim_lib.report.chapters import toc_chapters

pytest_plugins = ["conftest_book"]

REPO = Path(__file__).resolve().parents[1]
STEMS = [c.stem for c in toc_chapters(REPO)]


def _drawing(module) -> list[str]:
    """A plotting module's drawing functions: those that return a figure or axes."""
    return sorted(name for name, fn in vars(module).items()
                  if callable(fn) and getattr(fn, "__module__", "") == module.__name__ and not name.startswith("_")
                  and re.search(r"\b(Figure|Axes)\b", str(getattr(fn, "__annotations__", {}).get("return", ""))))


DRAWING = _drawing(plots)
COMPARISON_DRAWING = _drawing(comparison_plots)  # the baselines' and complexity chapters' figures
STUDY_DRAWING = _drawing(study_plots)  # the detection, non-aligned and STC chapters' figures


def _figure_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code" and "figure" in c.metadata.get("mystnb", {})]


# ----------------------------------------------------------------------------- sources


def test_every_cell_that_draws_has_one_figure_and_a_named_caption():
    assert {"overlay_grid", "curve_grid", "per_class_figure", "score_figure"} <= set(DRAWING)
    assert {"side_by_side_grid", "scaling_figure", "loss_figure"} <= set(COMPARISON_DRAWING)
    assert {"nonaligned_figure", "scene_figure", "maps_figure"} <= set(STUDY_DRAWING)
    names: list[str] = []
    for stem in STEMS:
        nb = nbformat.read(REPO / "book" / f"{stem}.ipynb", as_version=4)
        for cell in (c for c in nb.cells if c.cell_type == "code"):
            calls = re.findall(r"\b(comparison_|study_)?plots\.(\w+)\(", cell.source)
            modules = {"": DRAWING, "comparison_": COMPARISON_DRAWING, "study_": STUDY_DRAWING}
            drawn = [name for module, name in calls if name in modules[module]]
            if not drawn:
                assert "figure" not in cell.metadata.get("mystnb", {}), f"{stem}: a caption on a cell that draws nothing"
                continue
            # one figure per caption: one drawing call, never in a loop
            assert len(drawn) == 1 and not re.search(r"^\s*(for|while)\b", cell.source, re.M), \
                f"{stem}: one figure per cell, got {drawn} in:\n{cell.source}"
            figure = cell.metadata.get("mystnb", {}).get("figure", {})
            assert re.fullmatch(r"fig-[a-z0-9-]+", figure.get("name", "")), f"{stem}: figure name {figure!r}"
            assert len(figure.get("caption", "")) > 40, f"{stem}: {figure.get('name')} has no real caption"
            names.append(figure["name"])
    assert len(names) == len(set(names)), f"figure names are book-wide labels; repeated: {names}"


def test_captions_name_their_data_and_cite_published_figures():
    for stem in STEMS:
        nb = nbformat.read(REPO / "book" / f"{stem}.ipynb", as_version=4)
        glued = set(re.findall(r"glue\(\s*[\"'](\w+)[\"']", "\n".join(c.source for c in nb.cells)))
        for cell in _figure_cells(nb):
            caption = cell.metadata["mystnb"]["figure"]["caption"]
            used = set(re.findall(r"\{glue:text\}`(\w+)`", caption))
            assert used, f"{stem}: {caption!r} pastes nothing from the run (which data?)"
            assert used <= glued, f"{stem}: caption pastes {sorted(used - glued)}, glued nowhere"
            if "paper" in caption or "published" in caption:
                assert "{cite}`defard2021padim`" in caption, f"{stem}: {caption!r} names the paper's figures uncited"


def test_chapters_that_show_published_numbers_cite_the_paper():
    for stem in STEMS:
        nb = nbformat.read(REPO / "book" / f"{stem}.ipynb", as_version=4)
        text = "\n".join(c.source for c in nb.cells)
        if re.search(r"comparison_table|published_diff|self_check|the paper's table", text):
            assert "{cite}`defard2021padim`" in text, stem
    assert "@inproceedings{defard2021padim," in (REPO / "book" / "references.bib").read_text()


def test_config_numbers_figures_and_the_repository_button_has_a_url():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["sphinx"]["config"]["numfig"] is True
    url = config.get("repository", {}).get("url") or ""
    button = bool(config["html"].get("use_repository_button"))
    # jupyter-book refuses the button without a url; a url without the button is a link nobody sees
    assert button == bool(url), f"repository.url {url!r} but use_repository_button {button}"
    assert not url or re.match(r"https://\S+/\S+$", url), url


# ----------------------------------------------------------------------------- library helpers


def test_data_caption_names_split_classes_data_set_and_backbone(tmp_path):
    from conftest_book import make_tiny_data

    data = make_tiny_data(tmp_path / "data")
    assert report.data_caption(data, None, "efficientnet_lite0") == (
        "the test images of 2 classes (brick, washer) of the synthetic MVTec-like set; backbone efficientnet_lite0")
    assert report.data_caption(data, "washer", "resnet18", split="training").startswith(
        "the training images of class washer of the synthetic MVTec-like set")
    many = [f"c{i}" for i in range(6)]
    assert "of 6 classes of" in report.data_caption(data, many, "resnet18")  # counted, not named
    # a folder without a manifest whose split counts are not MVTec AD's is not called MVTec AD
    (tmp_path / "mine" / "bottle" / "train" / "good").mkdir(parents=True)
    assert report.dataset_name(tmp_path / "mine") == "the image folder mine"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "dataset.json").write_text('{"generator": "someone.else v1"}')
    assert report.dataset_name(tmp_path / "odd") == "the generated set odd"


def test_overlay_grid_draws_every_class_in_one_figure_with_aligned_columns():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def examples(n: int) -> dict:
        masks = np.zeros((n, 8, 8))
        masks[:, 2:5, 2:5] = 1
        return {"images": np.zeros((n, 8, 8, 3)), "maps": np.arange(n * 64.0).reshape(n, 8, 8), "masks": masks,
                "titles": [f"t{i}" for i in range(n)]}

    fig = plots.overlay_grid({"brick": examples(2), "washer": examples(4)}, title="PaDiM")
    subfigs = fig.subfigs
    assert [s.get_suptitle() for s in subfigs] == ["brick", "washer"]
    # every class gets the widest class's columns (padding hidden): images keep one size
    image_axes = [[a for a in s.axes if a.get_subplotspec() is not None] for s in subfigs]
    assert [len(a) for a in image_axes] == [8, 8]
    assert [sum(a.get_visible() for a in axes) for axes in image_axes] == [4, 8]
    plt.close(fig)
    with pytest.raises(ValueError, match="no classes"):
        plots.overlay_grid({})


def test_side_by_side_grid_draws_every_class_in_one_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def block(k: int) -> dict:
        return {"images": np.zeros((k, 8, 8, 3)), "masks": np.zeros((k, 8, 8)), "titles": ["good"] * k,
                "maps": {"PaDiM": np.random.default_rng(0).random((k, 8, 8)), "VAE": np.ones((k, 8, 8))}}

    fig = comparison_plots.side_by_side_grid({"brick": block(2), "washer": block(3)})
    assert [s.get_suptitle() for s in fig.subfigs] == ["brick", "washer"]
    # a row per image, a column for the image and one per method
    assert [len(s.axes) for s in fig.subfigs] == [2 * 3, 3 * 3]
    plt.close(fig)
    with pytest.raises(ValueError, match="no classes"):
        comparison_plots.side_by_side_grid({})


# ----------------------------------------------------------------------------- the built book


@pytest.mark.slow
def test_every_figure_in_the_html_is_numbered_and_captioned(built_book):
    from bs4 import BeautifulSoup  # ships with the book's theme (pydata-sphinx-theme requires it)

    total = 0
    for stem in STEMS:
        soup = BeautifulSoup(built_book.page(stem).read_text(encoding="utf-8"), "html.parser")
        article = soup.find("article")
        assert article is not None, stem
        nb = nbformat.read(built_book.executed(stem), as_version=4)
        expected = {c.metadata["mystnb"]["figure"]["name"] for c in _figure_cells(nb)}
        found = set()
        for img in article.find_all("img"):
            figure = img.find_parent("figure")
            assert figure is not None, f"{stem}: image {img.get('src')} outside a figure"
            caption = figure.find("figcaption")
            number = caption.find(class_="caption-number") if caption else None
            assert number is not None and re.fullmatch(r"Fig\. [\d.]+", number.get_text(strip=True)), \
                f"{stem}: figure {figure.get('id')} has no number"
            text = caption.find(class_="caption-text").get_text(" ", strip=True)
            assert len(text) > 40 and "{glue" not in text, f"{stem}: caption {text!r}"
            # the run's data are pasted in: the tiny book runs on the synthetic set
            assert caption.find(class_="pasted-text") is not None, f"{stem}: {text!r}"
            found.add(figure.get("id"))
        assert found == expected, f"{stem}: figures {sorted(found)}, captioned cells {sorted(expected)}"
        total += len(found)
    # every captioned cell of the sources became a numbered figure: none was dropped by the run
    sources = sum(len(_figure_cells(nbformat.read(REPO / "book" / f"{stem}.ipynb", as_version=4))) for stem in STEMS)
    assert total == sources > 0
