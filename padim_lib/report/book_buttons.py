"""A Sphinx extension for the book's header buttons (listed in `_config.yml`, `sphinx.extra_extensions`).

sphinx-book-theme gives every page download buttons (the page's source: the executed notebook with
its outputs for a chapter, the Markdown file for a plain page; and print to PDF) and, on notebook
pages, launch buttons (Binder, Colab) built from `repository.url` and the page's path. Two things
of this book need help with the launch buttons:

- The project has no public address yet (`repository.url: ""`), and the theme fails on a launch
  button without one. So the launch providers configured under `launch_buttons` are switched off
  while the url is empty: setting it turns them on, as it does the repository button.
- Chapters are rendered from papermill's executed copies, `book/_executed/<stem>.ipynb`, which are
  not in the repository: a launch link must open the chapter's source, `book/<stem>.ipynb`.
"""

from __future__ import annotations

from typing import Any

from padim_lib.report.chapters import EXECUTED_DIR

# the `launch_buttons` keys that make sphinx-book-theme build a launch link (and so need a repository)
LAUNCH_PROVIDERS = ("binderhub_url", "jupyterhub_url", "colab_url", "deepnote_url", "jupyterlite_url", "thebe")


def launch_options(theme_options: dict[str, Any]) -> dict[str, Any]:
    """`theme_options["launch_buttons"]` with every provider dropped when `repository_url` is empty."""
    launch = dict(theme_options.get("launch_buttons") or {})
    if theme_options.get("repository_url"):
        return launch
    return {k: v for k, v in launch.items() if k not in LAUNCH_PROVIDERS}


def source_url(url: str) -> str:
    """A launch link to an executed copy, pointed at the chapter's source notebook instead."""
    return url.replace(f"{EXECUTED_DIR}/", "book/")


def _switch(app: Any) -> None:
    options = app.config.html_theme_options
    options["launch_buttons"] = launch_options(options)


def _point_at_sources(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    for group in context.get("header_buttons", []):
        if group.get("label") == "launch-buttons":
            for button in group.get("buttons", []):
                if "url" in button:
                    button["url"] = source_url(button["url"])


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _switch, priority=400)  # before the theme reads the options (500)
    app.connect("html-page-context", _point_at_sources, priority=600)  # after the theme adds the buttons (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
