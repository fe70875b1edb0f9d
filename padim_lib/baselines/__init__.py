"""The paper's baselines as detectors of the registry (padim_lib.detectors): SPADE (`spade`) and the VAE.

Each baseline lives in its own module and is imported lazily by the registry, so importing this
package imports no torch.
"""
