"""The presentation layer: `padim book` (runner, chapters, notebook parameters, run log), tables and
text for the pages, figures, provenance and exercises.

Nothing here changes a number: a result's cache key ignores this folder.
"""
