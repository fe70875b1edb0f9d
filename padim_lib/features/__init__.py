"""Frozen backbones and their features: the backbone table (features.backbones, torch-free), the
extractor (features.extractor), ImageNet weights (features.weights) and the feature cache (features.cache).

Imports only `io`, `datasets` and `errors` of padim_lib.
"""
