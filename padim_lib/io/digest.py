"""Content digests: what a cache key hashes besides a configuration's fields.

`stable_hash` hashes canonical JSON; `file_digest` a local file's bytes (cached by size and mtime);
`code_digest` the library's own source, so an edited module recomputes exactly the results it could
change: scope "results" covers every layer that computes rows (everything but the layers that read
them, `READING_LAYERS`: paper/, report/, cli/); scope "features" covers what feature files depend on
(`FEATURE_LAYERS`: datasets/ and features/).
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

# Bump when the meaning of a key's inputs changes without a version bump
# (e.g. the feature cache's storage dtype or the bootstrap scheme).
KEY_SCHEMA = 1
LIBRARY = Path(__file__).resolve().parents[1]
# The layers above the engine read stored rows and never change one: editing them keeps every cached result.
READING_LAYERS = ("paper", "report", "cli")
# What feature files depend on: the data sets' reading and preprocessing, and the backbones.
FEATURE_LAYERS = ("datasets", "features")

@functools.cache  # metadata look-ups cost ms; sweeps plan thousands of keys
def _package_version(name: str) -> str:
    """Installed version of a distribution without importing it (torch import costs seconds)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"



def _source_files(scope: str) -> list[Path]:
    out = []
    for path in sorted(LIBRARY.rglob("*.py")):
        top = path.relative_to(LIBRARY).parts[0]
        if scope == "features" and top not in FEATURE_LAYERS:
            continue
        if top in READING_LAYERS:
            continue
        out.append(path)
    return out


@functools.lru_cache(maxsize=8)
def _digest_of(listing: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for path, _, _ in listing:
        h.update(Path(path).relative_to(LIBRARY).as_posix().encode() + b"\0")
        h.update(Path(path).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_digest(scope: str = "results") -> str:
    """sha256 (16 hex digits) of the library source files that compute numbers.

    scope "results": every module outside the READING_LAYERS; "features": the FEATURE_LAYERS.
    Keys hash this rather than the version number, so a student who edits the PaDiM detector (an
    editable install included) gets new results, while editing a notebook, a plot, a study or the
    CLI keeps the cache. Re-read when a file's size or modification time changes.
    """
    listing = tuple((str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in _source_files(scope))
    return _digest_of(listing)


def code_versions(scope: str = "results") -> dict[str, str]:
    """What changes numbers besides a key's fields: this library's source (see `code_digest`), torch,
    torchvision, and the key schema."""
    from padim_lib import __version__

    return {
        "padim_lib": __version__,
        "code": code_digest(scope),
        "torch": _package_version("torch"),
        "torchvision": _package_version("torchvision"),
        "key_schema": str(KEY_SCHEMA),
    }


def stable_hash(payload: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of `payload` (sorted keys), first `length` hex digits."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]



def file_digest(path: str) -> str:
    """sha256 of a local weights file (moving it keeps the key, changing it does not).

    A string that is no file (e.g. a torchvision weights name) is hashed as given; the
    backbone loader reports it if it is wrong.
    """
    p = Path(path)
    if not p.is_file():
        return str(path)
    st = p.stat()
    return _digest_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _digest_cached(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the cache key so a rewritten file is hashed again
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()
