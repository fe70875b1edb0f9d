"""A fitted detector written as an ONNX graph: images in, anomaly maps and image scores out.

`to_onnx(detector)` asks the detector for its export module (`Detector.export_module`; a method
that cannot export says so) and traces it with torch's TorchScript-based exporter, which needs only
the `onnx` package (the torch.export-based one also needs onnxscript, and took ~7x longer on a
small module here).
The graph's input "images" (N, 3, H, W) float32 is preprocessed as for fitting; its outputs are
"maps" (N, H, W) and "scores" (N,); N is free. The graph's metadata records the method, the input
size, the preprocessing (from the model's `meta`), the normalisation and the library's version.
The graph is built in memory (`OnnxGraph`); `OnnxGraph.write(path)` then writes it atomically.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from padim_lib.datasets.preprocess import IMAGENET_MEAN, IMAGENET_STD
from padim_lib.errors import PadimError
from padim_lib.io.atomic import atomic_write, open_output

OPSET = 17
# 14: the ops used here with their current semantics; 20: the TorchScript exporter's highest
MIN_OPSET, MAX_OPSET = 14, 20
PROTOBUF_LIMIT = 2**31  # one ONNX file holds at most 2 GiB (protobuf); larger needs external data


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise PadimError("ONNX export needs the onnx package: pip install 'padim-lib[export]'") from exc
    return onnx


@dataclass(frozen=True)
class OnnxGraph:
    """A serialised ONNX model of a detector: `data`, its input size (H, W) and its method."""

    data: bytes
    image_size: tuple[int, int]
    method: str

    def write(self, path: str | os.PathLike) -> None:
        """Write the model to `path` atomically (a device or a pipe is written into)."""

        def write(tmp: Path) -> None:
            with open_output(tmp) as fh:
                fh.write(self.data)

        atomic_write(path, write)


def to_onnx(detector: Any, *, opset: int = OPSET) -> OnnxGraph:
    """The ONNX model of a fitted detector; PadimError when its method cannot export."""
    from padim_lib import __version__

    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise PadimError(f"opset={opset!r}; expected an integer from {MIN_OPSET} to {MAX_OPSET}")
    module = detector.export_module()  # raises for a method that cannot export, before any work
    onnx = _onnx()
    size = sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))
    if size >= PROTOBUF_LIMIT:
        raise PadimError(f"the model's tensors take {size / 2**30:.1f} GiB, over ONNX's 2 GiB limit for one "
                         "file; reduce the embedding (reduce=random:D or pca:D) to export it")
    h, w = module.image_size
    example = torch.zeros(2, 3, h, w)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the legacy exporter's deprecation notice, and tracer notes on shapes that are constant here
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=opset,
            input_names=["images"], output_names=["maps", "scores"],
            dynamic_axes={"images": {0: "N"}, "maps": {0: "N"}, "scores": {0: "N"}},
        )
    model = onnx.load_from_string(buffer.getvalue())
    meta = getattr(detector, "meta", None) or {}
    method = getattr(detector, "method", "")
    onnx.helper.set_model_props(model, {
        "method": method,
        "input": json.dumps({"name": "images", "shape": ["N", 3, h, w], "dtype": "float32"}),
        "outputs": json.dumps({"maps": ["N", h, w], "scores": ["N"]}),
        # resize, crop, normalize as fitted (null for a model fitted in a session without that record)
        "preprocess": json.dumps(meta.get("preprocess")),
        "normalize": json.dumps({"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "scale": "RGB in [0, 1]"}),
        "category": str(meta.get("category", "")),
        "padim_lib": __version__,
    })
    model.producer_name = "padim_lib"
    return OnnxGraph(model.SerializeToString(), (h, w), method)
