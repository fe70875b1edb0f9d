"""The paper: its published figures and claims as data (paper/data/), the catalogue of its models,
the declarative studies behind every chapter and their runs, the statistics that set reproduced rows
against published figures, and the claims' verdicts.

Reads rows through the engine; never imports report or cli.
"""
