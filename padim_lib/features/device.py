"""Devices: a user's device name checked before any work (`check_device`) and turned into a torch device
(`resolve_device`: "auto" is CUDA when available, else the CPU)."""

from __future__ import annotations

import re
from typing import Any

from padim_lib.errors import PadimError

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")


def check_device(device: Any, where: str = "") -> str:
    """`device` checked before any work: a name torch knows, and a CUDA device that exists here.

    torch is imported only for CUDA names (their availability is the question)."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise PadimError(f"{where}device={device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if device.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise PadimError(f"{where}device={device!r}: no CUDA GPU is available here; expected 'cpu' or 'auto'")
        index = int(device.partition(":")[2] or 0)
        if index >= n:
            raise PadimError(f"{where}device={device!r}: this machine has {n} CUDA device(s); expected cuda:0..cuda:{n - 1}")
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise PadimError(f"{where}device='mps': the MPS backend is not available here; expected 'cpu' or 'auto'")
    return device


def resolve_device(device: Any) -> Any:
    """The torch.device of `device` (a name or a torch.device): "auto" is CUDA when available, else the CPU."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise PadimError(f"device={device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
