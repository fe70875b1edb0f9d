"""A synthetic data set in the MVTec AD layout, with exact pixel masks, made to be about as hard
and as varied as MVTec AD, so that the embedded study can tell configurations apart.

Eight classes, half textures and half objects (`CLASSES` in `render.py`):

* textures "brick", "gravel", "grass", "tissue": random crops of photographs bundled with
  scikit-image (`skimage.data.brick`, `gravel`, `grass`: CC0; `immunohistochemistry`: no known
  copyright restrictions), with flips (and quarter turns for the isotropic gravel), exposure,
  colour-cast and lighting variation (`textures.py`);
* objects "washer", "tablet", "chip", "board": drawn with anti-aliased signed distance functions
  (`objects.py`, `electronics.py`): a steel washer, a coated tablet with a score line and an
  imprint, an 8-pin IC on a circuit board, a small board with SMD parts. Aligned, as MVTec's
  objects are: shifts of a few pixels, rotations of a few degrees, light direction and gain,
  colour variation of the parts.

Defects (`defects.py` and each class's own): thin scratches and cracks, colour stains from faint to
strong, holes, contamination (particles, fibres), missing, broken and misplaced parts, faulty
imprints. Each class has four or five types with MVTec-like folder names (`DEFECT_TYPES`). Test
image i of n of a type gets severity (i + 0.5) / n, which sets its contrast from faint to obvious;
its size is drawn log-uniformly over the class's range, from a few pixels to about a tenth of the
image, like MVTec's masks.

Masks are exact: a defect is rendered on the noise-free scene, the same sensor noise is added to the
clean and the defective render, changes smaller than `MIN_CHANGE` are dropped, and a pixel is in
the mask if and only if the defect changed its 8-bit value. Every image has its own random stream
derived from (seed, class, split, defect type, index): the same seed gives byte-identical PNGs,
whatever other classes or counts are generated.

Difficulty target, fixed before calibrating and independent of the paper's claims: PaDiM's joint
model on the embedded backbone (EfficientNet-Lite0 with its shipped ImageNet weights, default
layers, concatenated, no reduction, 256 -> 224 preprocessing) reaches a pixel AUROC per class
between about 88 % and 99 %, spread over that range like PaDiM's per-class results on MVTec AD,
with no class a trivial 99.5 %+. Only the per-class difficulty knobs (`Knobs`: defect contrast,
defect extent, nuisance variation) are calibrated toward it, by
`benchmarks/bench_synthetic_difficulty.py`, which fits only that one model; no other configuration
or claim of the paper is looked at.
"""

from padim_lib.datasets.synthetic.render import (
    CLASS_NAMES,
    CLASSES,
    DEFECT_TYPES,
    GENERATOR_VERSION,
    MIN_CHANGE,
    NOISE_SIGMA,
    OBJECT_CLASSES,
    TEXTURE_CLASSES,
    Sample,
    render_sample,
)
from padim_lib.datasets.synthetic.writer import make_synthetic

__all__ = [
    "CLASSES",
    "CLASS_NAMES",
    "DEFECT_TYPES",
    "GENERATOR_VERSION",
    "MIN_CHANGE",
    "NOISE_SIGMA",
    "OBJECT_CLASSES",
    "TEXTURE_CLASSES",
    "Sample",
    "make_synthetic",
    "render_sample",
]
