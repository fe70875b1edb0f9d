"""The detectors: one interface (methods.base), the registry of methods and their parameters
(methods.registry), the shared parameter checks (methods.params), image/feature streams and map
post-processing, and one sub-package per method (padim, spade, vae).

A detector knows nothing of the result table, the sweep or the book: it imports only `features`,
`datasets`, `io` and `errors`.
"""
