"""The paper's VAE baseline: the detector, its network (net), the paper's augmentation (augment) and
the resumable training checkpoint (checkpoint).
"""
