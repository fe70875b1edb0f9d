"""SPADE (Cohen & Hoshen, 2020) as the PaDiM paper reproduced it: the detector and its blocked k-NN (knn).
"""
