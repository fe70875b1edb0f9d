"""Write a whole folder tree atomically: build it in a temporary folder beside the target, then
rename it into place, so a reader sees the old tree or the complete new one, never half of one.
A symbolic link given as the folder stays a link: its target folder is the one replaced."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from padim_lib.errors import PadimError
from padim_lib.io.atomic import current_umask, folder_target


def read_manifest(out: Path, name: str = "dataset.json") -> dict | None:
    """The JSON manifest in `out`, or None when absent or unreadable."""
    try:
        meta = json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def check_replaceable(out: Path, generator_prefix: str, name: str = "dataset.json") -> None:
    """Refuse to replace `out` unless it is empty or was written by `generator_prefix` (a file, a
    device or a pipe at `out` is refused as not a folder)."""
    folder_target(out)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    meta = read_manifest(out, name)
    if meta is None or not str(meta.get("generator", "")).startswith(generator_prefix):
        raise PadimError(
            f"{out} exists and was not written by {generator_prefix} (no {name} from it); "
            "choose another output folder or remove it"
        )


@contextmanager
def atomic_tree(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `out`; on normal exit it replaces `out` (an older
    tree there is deleted afterwards), on any error it is removed and `out` is left untouched.

    The folder gets the permissions a plain mkdir would (mkdtemp makes it 0700), so the tree
    respects the umask like every file written into it. A link is followed (its final target is
    replaced, beside which the temporary folder sits); a file, device or pipe is refused.
    """
    out = folder_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "tree")
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:  # put the previous tree back rather than leave nothing at `out`
                os.replace(old / "tree", out)
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
