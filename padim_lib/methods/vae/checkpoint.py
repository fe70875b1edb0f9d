"""Per-epoch training checkpoints of the VAE: written atomically, refused for another configuration.

One file, ``<checkpoint_dir>/vae_checkpoint.pt``, rewritten after every epoch (atomic rename: a
reader sees the previous epoch's file or the new one, never half a file; one file rather than one
per epoch because each holds the network and Adam's two moments, ~150 MB at the paper's size).
It holds what an uninterrupted run would carry into the next epoch - network weights and
BatchNorm statistics, Adam's state, the torch.Generator state that draws data order,
augmentations and latent noise - plus the loss history, the number of finished epochs, and the
training configuration with its key (a hash). `read_checkpoint` refuses a file whose key
differs and names the differing parameters; a truncated or foreign file is a clear error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from padim_lib.errors import PadimError
from padim_lib.io.atomic import atomic_torch_save
from padim_lib.io.digest import stable_hash

CHECKPOINT_NAME = "vae_checkpoint.pt"
CHECKPOINT_FORMAT = "padim_lib.vae.checkpoint"
CHECKPOINT_VERSION = 2  # 2: the augmented set is drawn once (version 1 drew fresh augmentations every epoch)


def checkpoint_path(checkpoint_dir: str | os.PathLike) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_NAME


def config_key(config: Mapping[str, Any]) -> str:
    """16 hex digits identifying a training configuration (JSON-able dict)."""
    return stable_hash(dict(config))


def write_checkpoint(
    path: Path,
    *,
    config: Mapping[str, Any],
    epoch: int,
    model: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any],
    generator_state: torch.Tensor,
    history: Mapping[str, list],
    encoder_weights: str,
) -> None:
    """Write the state after `epoch` finished epochs to `path` atomically (tensors moved to CPU)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "key": config_key(config),
        "config": json.dumps(dict(config), sort_keys=True),
        "epoch": int(epoch),
        "model": {k: v.detach().cpu() for k, v in model.items()},
        "optimizer": _to_cpu(optimizer),
        "generator": generator_state,
        "history": json.dumps(dict(history)),
        "encoder_weights": encoder_weights,
    }
    atomic_torch_save(payload, path)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def read_checkpoint(path: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint at `path` for training configuration `config`, with "config" and "history"
    decoded. Errors (PadimError, naming the file): unreadable or truncated, not a VAE checkpoint,
    another format version, or written for another configuration (the differing parameters listed)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a foreign pickle...: torch raises many types
        raise PadimError(
            f"{path}: truncated or unreadable VAE checkpoint ({type(exc).__name__}: {exc}); "
            "delete it to train from the start"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise PadimError(f"{path}: not a VAE training checkpoint (no '{CHECKPOINT_FORMAT}' format marker)")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise PadimError(
            f"{path}: VAE checkpoint format version {payload.get('format_version')!r}; this code reads "
            f"version {CHECKPOINT_VERSION}; delete it to train from the start"
        )
    try:
        saved = json.loads(payload["config"])
        payload["history"] = json.loads(payload["history"])
        for name in ("key", "epoch", "model", "optimizer", "generator", "encoder_weights"):
            payload[name]  # noqa: B018 - presence check
    except (KeyError, TypeError, ValueError) as exc:
        raise PadimError(f"{path}: corrupt VAE checkpoint ({type(exc).__name__}: {exc})") from exc
    if payload["key"] != config_key(config):
        names = sorted(set(saved) | set(config))
        diffs = [f"{n}: {config.get(n)!r} here, {saved.get(n)!r} in the file" for n in names if saved.get(n) != config.get(n)]
        raise PadimError(
            f"{path} is a checkpoint of another VAE configuration ({'; '.join(diffs) or 'key differs'}); "
            "use another checkpoint_dir, or delete the file to train from the start"
        )
    payload["config"] = saved
    return payload
