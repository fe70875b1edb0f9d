"""padim_lib: a reference reproduction of PaDiM (Defard et al., ICPR 2020).

Layers, lowest first: datasets -> features -> padim (gaussian, postprocess) -> metrics/evaluate
-> experiments -> results -> sweep -> book/cli. A lower layer never imports a higher one.
"""

__version__ = "0.2.0"

from padim_lib.errors import PadimError  # noqa: E402

__all__ = ["PadimError", "__version__"]
