"""PaDiM (Defard et al., 2020): the estimator (detector), its pure torch model (model), the streamed
Gaussians (gaussian) and the position-major embedding blocks (embedding).
"""
