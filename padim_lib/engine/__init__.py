"""From configurations to stored rows: the one configuration and its cache key (engine.config), a
class x configuration -> result rows (engine.task), the result store (engine.results), the sweep and
its runners (engine.sweep, engine.jobs, engine.local_pool, engine.on_dask), the study file of
`padim sweep` (engine.studyfile), and `evaluate` for one fitted model (engine.evaluation).

Imports the layers below (methods, metrics, features, datasets, io), never paper/report/cli.
"""
