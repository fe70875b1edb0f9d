"""Evaluation metrics of the MVTec AD protocol: image AUROC, pixel AUROC and AU-PRO.

numpy/scipy/sklearn only (no torch, no other layer of padim_lib): maps arrive as numpy arrays. One engine computes every
pixel metric, exactly, with or without image weights: `pixel.PixelScores` (pair tables for
weightings in `pairs`); `pixel.pixel_auroc`, `pixel.pro_curve` and `pixel.pro_auc` are one-shot
shortcuts to it. `image.ImageScores` is its image-level counterpart for bootstrap replicates.

Conventions
-----------
* ``masks`` (N, H, W): binary ground truth (bool or numbers in {0, 1}); ``maps`` (N, H, W): anomaly
  scores, higher = more anomalous. A pixel is *predicted anomalous at threshold t* when
  ``score >= t`` (as in the official MVTec AD evaluation code).
* Ground-truth regions are the connected components of each image's mask with 8-connectivity
  (`CONNECTIVITY`, the 3x3 structuring element of ``scipy.ndimage.label``); regions never span
  two images.
* PRO curve: for every distinct score t (descending), FPR(t) = share of the defect-free pixels of
  all test images (mask 0, in good and defective images alike) with score >= t, and PRO(t) = mean
  over all regions of the share of the region's pixels with score >= t. A run of tied scores
  enters the curve at once (one point per distinct value). The curve starts at (0, 0) (threshold
  above the maximum) and ends at (1, 1) (the lowest threshold marks every pixel).
* AU-PRO: trapezoid rule on that curve up to ``fpr_limit`` (linear interpolation at the limit),
  divided by ``fpr_limit``. An uninformative map (all scores tied) gives 0.5 * fpr_limit, i.e.
  0.15 at the usual limit of 0.3, not 0.5.
* ``image_weights`` (N,): non-negative integer repeat counts (bootstrap resampling with
  replacement). Every result equals the result on the physically repeated arrays; the regions of
  a repeated image count once per repeat.
"""
