"""Baseline detectors the paper compares PaDiM with (SPADE, the VAE)."""
