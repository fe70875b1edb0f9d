"""Writing the synthetic set to disk in the MVTec AD layout, atomically and idempotently.

<out>/<class>/train/good/NNN.png, <out>/<class>/test/<type>/NNN.png and
<out>/<class>/ground_truth/<type>/NNN_mask.png (0/255), plus <out>/dataset.json (class kinds,
parameters, generator version) that `padim_lib.datasets.category_kinds` reads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from padim_lib.datasets.synthetic.render import (
    CLASS_NAMES,
    DEFECT_TYPES,
    GENERATOR_VERSION,
    OBJECT_CLASSES,
    TEXTURE_CLASSES,
    render_sample,
    renderer_of,
)
from padim_lib.datasets.synthetic.textures import PHOTOS
from padim_lib.errors import PadimError
from padim_lib.io.atomic import current_umask, folder_target


def _defect_counts(renderer: str, n_test_defect: int) -> dict[str, int]:
    """Spread the defective test images over the (drawing) class's defect types, as evenly as possible."""
    types = DEFECT_TYPES[renderer]
    q, r = divmod(n_test_defect, len(types))
    return {t: q + (k < r) for k, t in enumerate(types) if q + (k < r) > 0}


def _name(i: int, n: int) -> str:
    return f"{i:0{max(3, len(str(n - 1)))}d}"


def _plan(params: dict) -> list[tuple[str, str, str, int, float, str, str | None]]:
    """Every file to write: (class folder, split, defect type, index, severity, image path, mask path)."""
    jobs = []
    for cat in params["categories"]:
        groups = [("train", "good", params["n_train"]), ("test", "good", params["n_test_good"])]
        groups += [("test", t, n) for t, n in _defect_counts(_drawn_by(params, cat), params["n_test_defect"]).items()]
        for split, kind, n in groups:
            for i in range(n):
                stem = _name(i, n)
                image = f"{cat}/{split}/{kind}/{stem}.png"
                if kind == "good":
                    jobs.append((cat, split, kind, i, 0.0, image, None))
                else:
                    # evenly spread severities: every defect type has subtle and obvious cases
                    mask = f"{cat}/ground_truth/{kind}/{stem}_mask.png"
                    jobs.append((cat, split, kind, i, (i + 0.5) / n, image, mask))
    return jobs


def _drawn_by(params: dict, name: str) -> str:
    return params["stand_ins"].get(name, name)


def _manifest(params: dict) -> dict:
    cats = params["categories"]
    kind = {c: _drawn_by(params, c) for c in cats}
    manifest = {
        "name": "padim-synthetic",
        "generator": f"padim_lib.datasets.synthetic v{GENERATOR_VERSION}",
        "generator_version": GENERATOR_VERSION,
        "seed": params["seed"],
        "n_train": params["n_train"],
        "n_test_good": params["n_test_good"],
        "n_test_defect": params["n_test_defect"],
        "size": params["size"],
        "textures": [c for c in cats if kind[c] in TEXTURE_CLASSES],
        "objects": [c for c in cats if kind[c] in OBJECT_CLASSES],
        "defect_types": {c: list(_defect_counts(kind[c], params["n_test_defect"])) for c in cats},
        "photos": {c: f"skimage.data.{PHOTOS[kind[c]]}" for c in cats if kind[c] in TEXTURE_CLASSES},
    }
    if params["stand_ins"]:  # only then: a set of the synthetic classes keeps its manifest (and cache keys)
        manifest["stand_ins"] = dict(params["stand_ins"])
    return manifest


def _is_complete(out: Path, manifest: dict, jobs: list) -> bool:
    try:
        existing = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    if existing != manifest:
        return False
    return all((out / p).is_file() and (m is None or (out / m).is_file()) for *_, p, m in jobs)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # fast zlib level: noisy images barely compress better at higher levels
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _check_int(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise PadimError(f"make_synthetic: {name} must be an integer >= {minimum}, got {value!r}")


def make_synthetic(
    out: str | os.PathLike,
    seed: int = 0,
    n_train: int = 60,
    n_test_good: int = 10,
    n_test_defect: int = 20,
    size: int = 256,
    categories: Iterable[str] | None = None,
    stand_ins: Mapping[str, str] | None = None,
) -> Path:
    """Write the synthetic data set to `out` in the MVTec AD layout and return `out`.

    `categories`: class folders to write (None: the synthetic classes). A name that is not a
    synthetic class is drawn by one: `stand_ins[name]`, or for MVTec AD's names by
    `render.MVTEC_STAND_INS` (same kind), so `categories=datasets.CLASSES` writes a tree with MVTec
    AD's 15 class names (dataset.json's "stand_ins" says which class drew which).

    Also writes <out>/dataset.json (class kinds, parameters, generator version). Skips the work
    when `out` already holds a complete set made with the same parameters. The set is generated
    in a temporary folder beside `out` and renamed into place, so an interrupted run never
    leaves a half-written set at `out`. A link given as `out` stays a link: its target gets the set.
    """
    _check_int("seed", seed, 0)
    _check_int("n_train", n_train, 1)
    _check_int("n_test_good", n_test_good, 1)
    _check_int("n_test_defect", n_test_defect, 1)
    _check_int("size", size, 32)
    if isinstance(categories, str):
        raise PadimError(f"make_synthetic: categories={categories!r}; expected a list of class names")
    cats = list(CLASS_NAMES if categories is None else dict.fromkeys(categories))
    drawn = {c: renderer_of(c, dict(stand_ins or {})) for c in cats}
    unused = sorted(set(stand_ins or {}) - set(cats))
    if unused:
        raise PadimError(f"make_synthetic: stand_ins names {unused}, which are not among the categories {cats}")
    if not cats:
        raise PadimError("make_synthetic: categories is empty; expected some of " + ", ".join(CLASS_NAMES))
    params = dict(
        seed=int(seed),
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_defect=n_test_defect,
        size=size,
        categories=cats,
        stand_ins={c: r for c, r in drawn.items() if c != r},
    )
    requested = Path(out)
    out = folder_target(requested)
    manifest, jobs = _manifest(params), _plan(params)
    if _is_complete(out, manifest, jobs):
        return requested
    if out.exists() and not _is_ours(out):
        raise PadimError(
            f"{requested} exists and is not a synthetic data set (no dataset.json from this generator); "
            "choose another --out or remove it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes it 0700; the set follows the umask
        for cat, split, dtype, i, sev, path, mask_path in jobs:
            sample = render_sample(drawn[cat], params["seed"], split, i, dtype, sev, size, name=cat)
            _write_png(tmp / path, sample.image)
            if mask_path is not None:
                _write_png(tmp / mask_path, sample.mask.astype(np.uint8) * 255)
        (tmp / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if _is_complete(out, manifest, jobs):  # another process finished the same set meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not _is_complete(out, manifest, jobs):  # lost a race to a writer with other parameters
        raise PadimError(f"{requested} was changed by another process while generating; run again")
    return requested


def _is_ours(out: Path) -> bool:
    """True for a folder this generator wrote (or an empty one): safe to replace."""
    if out.is_dir() and not any(out.iterdir()):
        return True
    try:
        meta = json.loads((out / "dataset.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and str(meta.get("generator", "")).startswith(
        "padim_lib.datasets.synthetic"
    )


def _replace_dir(new: Path, out: Path) -> None:
    """Move `new` to `out`, replacing an older set there; the old one is deleted afterwards."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "set")
    try:
        os.replace(new, out)
    except OSError:
        # another process put a set at `out` in the meantime: keep theirs (checked by the caller)
        shutil.rmtree(new, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
