"""The one file layout every fitted detector (and the VAE's training checkpoint) is saved in.

A file is a torch-saved dict {"format": NAME, "format_version": N, "metadata": JSON text,
"tensors": {name: Tensor}}, written atomically and read back with `torch.load(weights_only=True)`
(no pickled code runs on load). `read` checks the marker and the version and turns every way a
file can be unusable into one `PadimError` that names the file and says what to do.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import padim_lib
from padim_lib.errors import PadimError, load_reason
from padim_lib.io.atomic import atomic_torch_save


def versions() -> dict[str, str]:
    """The library and framework versions a file was written with (kept in its metadata)."""
    import torchvision

    return {"padim_lib": padim_lib.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def write(path: str | os.PathLike, format: str, version: int, metadata: Mapping[str, Any],
          tensors: Mapping[str, torch.Tensor]) -> None:
    """Save `metadata` (JSON-able) and `tensors` (moved to the CPU) under the `format` marker, atomically."""
    try:
        text = json.dumps(dict(metadata), sort_keys=True)
    except TypeError as exc:
        raise PadimError(f"model metadata (meta, parameters) must hold JSON-serialisable values only: {exc}") from exc
    payload = {
        "format": format,
        "format_version": version,
        "metadata": text,
        "tensors": {name: t.detach().cpu().contiguous() for name, t in tensors.items()},
    }
    atomic_torch_save(payload, path)


def read(path: str | os.PathLike, format: str, version: int, what: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a file written by `write` with this `format` and `version`.

    `what` names the kind of file in messages ("PaDiM model", "VAE training checkpoint").
    """
    path = Path(path)
    if path.is_dir():
        raise PadimError(f"{path}: is a folder; expected a {what} file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file (zip, pickle, EOF...)
        raise PadimError(f"{path}: not a readable {what} file ({load_reason(exc)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != format:
        raise PadimError(f"{path}: not a {what} file (no '{format}' format marker)")
    if payload.get("format_version") != version:
        raise PadimError(
            f"{path}: {what} file format version {payload.get('format_version')!r}; this padim_lib "
            f"{padim_lib.__version__} reads version {version}; fit it again"
        )
    try:
        metadata = json.loads(payload["metadata"])
        tensors = dict(payload["tensors"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PadimError(f"{path}: corrupt {what} file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(metadata, dict) or not all(isinstance(t, torch.Tensor) for t in tensors.values()):
        raise PadimError(f"{path}: corrupt {what} file (metadata or tensors of the wrong type)")
    return metadata, tensors
