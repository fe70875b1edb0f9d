"""`padim book --plan`: what a run of the book would compute, store, hold in memory and take, before any work.

Per chapter, in the order `build_book` runs them: its tasks (configurations x classes x data
versions, as its study gives them, each counted once in the book: Table II's "all (448)" is Table
I's PaDiM), the feature files it adds to the cache, the peak memory of its largest task, and its
time on this machine and on a GPU. Tasks already stored in the result cache and feature files
already cached cost nothing and are counted apart. The laws per task are `paper.cost`'s.

Times, from costs measured at plan time (random weights: the time of a forward pass does not
depend on them):
* this machine: each backbone's forward pass on a few images at each input size the run uses
  (`cost.measure_backbone`), the decoding and preprocessing of the data's own images, the float32
  matrix-product rate and the pixel metrics' cost (`cost.measure_rates`); a chapter's time is its
  images through each backbone times the measured seconds per image, plus its tasks' FLOPs at the
  measured rate, plus their metrics; the VAE's training is 3 forward passes per augmented draw;
* a GPU: the same FLOPs (a backbone's counted by torch's flop counter) at GPU_FLOPS, an assumed
  sustained float32 rate (10 TFLOP/s: about half the 19.5 TFLOP/s peak NVIDIA gives for an A100),
  with decoding and metrics at this machine's measured rates (they stay on the CPU). An estimate,
  labelled so wherever it is printed.

`check` is what `build_book` runs before the first chapter: shapes and counts only (no
measurement), and a PadimError naming the figures when the run would not fit the free disk of its
folders (`shutil.disk_usage`) or a task would not fit the available memory.
"""

from __future__ import annotations

import ast
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from padim_lib.datasets.catalog import list_classes, open_dataset
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.results import ResultStore
from padim_lib.engine.task import Task
from padim_lib.errors import PadimError
from padim_lib.features.backbones import resolve_layers
from padim_lib.paper import cost, experiments
from padim_lib.paper.study import Study, default_category
from padim_lib.report.chapters import CHAPTER_EXPERIMENTS, Chapter
from padim_lib.report.nbparams import parameter_specs
from padim_lib.report.runlog import format_seconds

GPU_FLOPS = 10e12  # the assumed sustained float32 rate of a GPU (see the module docstring)
PATH_PARAMETERS = ("data_root", "stc_root", "results_dir", "na_versions_dir")


@dataclass
class ChapterPlan:
    """One chapter's share of the run (only what no earlier chapter or earlier run already did)."""

    stem: str
    tasks: int = 0  # the chapter's tasks
    shape: str = ""  # "5 configurations x 15 classes"
    new_tasks: int = 0  # not stored yet, not planned by an earlier chapter
    feature_files: int = 0  # new feature files
    feature_bytes: int = 0
    store_bytes: int = 0  # rows and arrays of its new tasks
    checkpoint_bytes: int = 0  # VAE checkpoints
    version_bytes: int = 0  # non-aligned versions to write (at most)
    peak_bytes: int = 0
    peak_task: str = ""
    cpu_s: float = 0.0
    gpu_s: float = 0.0
    note: str = ""


@dataclass
class BookPlan:
    """Every chapter's plan, the disk each folder needs and has, and the memory a task needs and has."""

    profile: str
    chapters: list[ChapterPlan]
    disk: list[tuple[str, dict[str, int], int]]  # (folder, {what: bytes}, free bytes)
    memory_available: int
    workers: int
    measured: list[str] = field(default_factory=list)  # what the times are made of

    def peak(self) -> ChapterPlan | None:
        return max(self.chapters, key=lambda c: c.peak_bytes, default=None)

    def problems(self) -> list[str]:
        """Each folder whose free disk, and the memory, a run would exceed: one line each."""
        out = []
        for folder, needs, free in self.disk:
            total = sum(needs.values())
            if total > free:
                parts = [f"{k} ({gb(v)})" for k, v in needs.items() if v]
                what = parts[0].rsplit(" (", 1)[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
                out.append(f"needs {gb(total)} of disk for {what}, {gb(free)} free at {folder}")
        top = self.peak()
        if top is not None and top.peak_bytes > self.memory_available:
            out.append(f"needs {gb(top.peak_bytes)} of memory for its largest task ({top.stem}: {top.peak_task}), "
                       f"{gb(self.memory_available)} available")
        return out

    def text(self) -> str:
        """The plan as printed by `padim book --plan`."""
        lines = [f"plan of `padim book --profile {self.profile}` (estimates; nothing has been run)"]
        lines += [f"  {m}" for m in self.measured]
        for c in self.chapters:
            if not c.tasks and not c.cpu_s:
                lines.append(f"{c.stem}: no tasks{f' ({c.note})' if c.note else ''}")
                continue
            done = c.tasks - c.new_tasks
            lines.append(
                f"{c.stem}: {c.tasks} tasks ({c.shape}{f'; {done} stored or planned earlier' if done else ''}); "
                f"feature cache +{gb(c.feature_bytes)} ({c.feature_files} files); "
                f"peak memory {gb(c.peak_bytes)} per task ({c.peak_task or '-'}); "
                f"time ~{format_seconds(c.cpu_s)} on this machine, ~{format_seconds(c.gpu_s)} on a GPU (estimate)"
                + (f"; {c.note}" if c.note else ""))
        total = lambda name: sum(getattr(c, name) for c in self.chapters)  # noqa: E731
        lines.append(f"total: {total('tasks')} tasks, {total('new_tasks')} to compute; feature cache "
                     f"+{gb(total('feature_bytes'))}; time ~{format_seconds(total('cpu_s'))} on this machine, "
                     f"~{format_seconds(total('gpu_s'))} on a GPU (estimate)")
        for folder, needs, free in self.disk:
            parts = ", ".join(f"{k} {gb(v)}" for k, v in needs.items())
            lines.append(f"disk at {folder}: needs {gb(sum(needs.values()))} ({parts}), {gb(free)} free")
        top = self.peak()
        if top is not None:
            lines.append(f"memory: the largest task needs {gb(top.peak_bytes)} ({top.stem}: {top.peak_task}), "
                         f"{gb(self.memory_available)} available; {self.workers} run at once without a Dask "
                         f"scheduler (up to {gb(self.workers * top.peak_bytes)})")
        return "\n".join(lines)


def gb(n: float) -> str:
    """Bytes for people: GB from 50 MB, MB from 100 kB, else kB."""
    return f"{n / 1e9:.1f} GB" if n >= 0.05e9 else f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def available_memory() -> int:
    """Bytes of memory available to a new process (MemAvailable), or the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def free_disk(path: Path) -> tuple[Path, int, int]:
    """(the nearest existing folder of `path`, its file system's id, free bytes there)."""
    here = path.resolve()
    while not here.exists():
        here = here.parent
    return here, here.stat().st_dev, shutil.disk_usage(here).free


# ----------------------------------------------------------------------------- the chapters' work


def chapter_values(chapter: Chapter, values: Mapping[str, Any], root: Path) -> dict[str, Any]:
    """A chapter's parameters for this run: its notebook's defaults, then `values`; paths from `root`."""
    params = {name: ast.literal_eval(p.default) for name, p in parameter_specs(chapter).items()}
    params.update(values)
    for name in PATH_PARAMETERS:
        if isinstance(params.get(name), str) and not Path(params[name]).is_absolute():
            params[name] = str(root / params[name])
    return params


def study_tasks(study: Study) -> list[Task]:
    """The study's tasks without listing data that is not written yet (a plan writes no version)."""
    out: dict[tuple[str, str, str], Task] = {}
    for v in study.versions:
        classes = list(study.classes) if study.classes else list_classes(v.root)
        for cfg in study.configs(v.name):
            for c in classes:
                out.setdefault((v.root, c, cfg.key()), Task(v.root, c, cfg))
    return list(out.values())


def extra_tasks(stem: str, p: Mapping[str, Any]) -> list[Task]:
    """The tasks a chapter runs besides its study: the exercises of the method chapter and of Table II
    (as book/method.ipynb and book/table2_dimensionality.ipynb define them), on one class."""
    if stem not in ("method", "table2_dimensionality"):
        return []
    pre = Preprocess(resize=p["resize"], crop=p["crop"])
    base = ExperimentConfig(backbone=p["backbone"], layers=p.get("layers"), preprocess=pre, sigma=p["sigma"],
                            eps=p["eps"], max_train=p["max_train"], pretrained=p.get("pretrained", True))
    if stem == "method":
        category = p.get("category") or default_category(p["data_root"])
        deepest = resolve_layers(p["backbone"], None)[-1]
        changes = [{"sigma": 0.0}, {"eps": 1e-6}, {"layers": (deepest,)}, {"reduce": "random:10"}]
    else:
        category = default_category(p["data_root"])
        changes = [{"reduce": "random:10", "seed": s} for s in range(3)] + [{"reduce": "pca:10"}]
    return [Task(p["data_root"], category, c) for c in (base, *(base.replace(**x) for x in changes))]


class _Counter:
    """Images per (root, class, split), counted once; a version not written yet has its source's counts."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str], int] = {}

    def __call__(self, root: str, category: str, split: str, max_train: int | None, source: str) -> int:
        where = root if Path(root).is_dir() else source
        key = (where, category, split)
        if key not in self._cache:
            self._cache[key] = len(open_dataset(where, category, split, max_train=max_train if split == "train" else None))
        n = self._cache[key]
        return min(n, max_train) if split == "train" and max_train is not None else n


@dataclass
class _Rates:
    """Measured costs (None when the plan only checks resources)."""

    machine: cost.Rates | None = None
    decode: dict[str, float] = field(default_factory=dict)  # root and preprocessing -> s per image
    backbones: dict[str, float] = field(default_factory=dict)  # "backbone at S px" -> s per image


def plan_chapters(chapters: Sequence[Chapter], per_notebook: Mapping[str, Mapping[str, Any]], root: Path, *,
                  measure: bool = True, gpu_flops: float = GPU_FLOPS) -> tuple[list[ChapterPlan], dict, _Rates]:
    """Every chapter's plan; and the bytes to write per folder ({folder: {what: bytes}})."""
    counter, rates = _Counter(), _Rates(cost.measure_rates() if measure else None)
    seen_tasks: set[str] = set()
    seen_specs: set[Any] = set()
    writes: dict[str, dict[str, int]] = {}
    plans = []
    for chapter in chapters:
        p = chapter_values(chapter, per_notebook.get(chapter.stem, {}), root)
        plan = ChapterPlan(chapter.stem)
        plans.append(plan)
        if chapter.stem == "complexity":
            plan.note = "no sweep: timed fits and predictions"
            if measure:
                plan.cpu_s, plan.gpu_s = _complexity_seconds(p, rates, gpu_flops)
            continue
        study = None
        if chapter.stem in CHAPTER_EXPERIMENTS:
            study = experiments.build(CHAPTER_EXPERIMENTS[chapter.stem], {**p, "write_versions": False})
        extra = extra_tasks(chapter.stem, p)
        tasks = (study_tasks(study) if study else []) + extra
        if not tasks:
            plan.note = "reads the other chapters' results" if chapter.stem in ("summary", "intro") else "no model"
            continue
        source = study.data_root if study else p["data_root"]
        plan.tasks = len(tasks)
        plan.shape = _shape(study, len(extra))
        results = Path(p["results_dir"])
        store, cache = ResultStore(results), results / "features"
        folder = writes.setdefault(str(results), {})
        for t in tasks:
            key = _task_key(t)
            if key in seen_tasks or ("|" not in key and store.has(key, p.get("bootstrap"))):
                continue
            seen_tasks.add(key)
            plan.new_tasks += 1
            n_train = counter(t.data_root, t.category, "train", t.config.max_train, source)
            n_test = counter(t.data_root, t.category, "test", None, source)
            c = cost.task_cost(t, n_train, n_test)
            plan.store_bytes += c.store_bytes
            plan.checkpoint_bytes += c.checkpoint_bytes
            if c.peak_bytes > plan.peak_bytes:
                plan.peak_bytes, plan.peak_task = c.peak_bytes, f"{t.config.label or t.config.method} on {t.category}"
            for spec in t.feature_specs():
                if spec in seen_specs:
                    continue
                seen_specs.add(spec)
                n = counter(spec.data_root, spec.category, spec.split, spec.max_train, source)
                if Path(spec.data_root).is_dir() and (cache / spec.filename()).is_file():
                    continue
                plan.feature_files += 1
                plan.feature_bytes += n * cost.spec_image_bytes(spec)
                if measure:
                    shapes = cost.spec_shapes(spec)
                    t_image = cost.measure_backbone(spec.backbone, tuple(spec.layers), spec.preprocess.size)
                    rates.backbones.setdefault(f"{spec.backbone} at {spec.preprocess.size} px", t_image)
                    decode = _decode_s(rates, spec.data_root if Path(spec.data_root).is_dir() else source,
                                       spec.category, spec.preprocess)
                    plan.cpu_s += n * (t_image + decode)
                    plan.gpu_s += n * (shapes.flops / gpu_flops + decode)
            if measure:
                cpu, gpu = _task_seconds(t, c, n_train, n_test, p.get("bootstrap", 0), rates, gpu_flops, source)
                plan.cpu_s += cpu
                plan.gpu_s += gpu
        if study is not None and len(study.versions) > 1:
            plan.version_bytes = _versions_bytes(study, counter)
            writes.setdefault(str(Path(p["na_versions_dir"])), {})["non-aligned versions"] = plan.version_bytes
        for what, name in (("the feature cache", "feature_bytes"), ("results", "store_bytes"),
                           ("VAE checkpoints", "checkpoint_bytes")):
            folder[what] = folder.get(what, 0) + getattr(plan, name)
    return plans, writes, rates


def _shape(study: Study | None, n_extra: int) -> str:
    """ "5 configurations x 15 classes" (x data versions), and the exercises' tasks on one class."""
    parts = []
    if study is not None:
        n_configs = len({c.key() for c in study.configs(study.versions[0].name)})
        n_classes = len(study.classes) if study.classes else len(list_classes(study.data_root))
        parts.append(f"{n_configs} configurations x {n_classes} classes"
                     + (f" x {len(study.versions)} data versions" if len(study.versions) > 1 else ""))
    if n_extra:
        parts.append(f"{n_extra} exercise tasks on one class")
    return " + ".join(parts)


def _task_key(task: Task) -> str:
    """The task's result key; for data not written yet (never stored), its root, class and configuration."""
    try:
        return task.key()
    except FileNotFoundError:  # data not written yet (a non-aligned version): its files cannot be listed
        return f"{task.data_root}|{task.category}|{task.config.key()}"


def _decode_s(rates: _Rates, root: str, category: str, preprocess: Preprocess) -> float:
    """Seconds to read and preprocess one image of `root` (two test images of `category`, timed; once
    per root and preprocessing)."""
    import time

    key = f"{root}|{preprocess}"
    if key not in rates.decode:
        data = open_dataset(root, category, "test", preprocess)
        t0 = time.perf_counter()
        for i in range(min(2, len(data))):
            data[i]
        rates.decode[key] = (time.perf_counter() - t0) / max(1, min(2, len(data)))
    return rates.decode[key]


def _task_seconds(task: Task, c: cost.TaskCost, n_train: int, n_test: int, bootstrap: int, rates: _Rates,
                  gpu_flops: float, source: str) -> tuple[float, float]:
    """(seconds on this machine, on a GPU) of one task beyond its backbone passes."""
    machine = rates.machine
    assert machine is not None
    size = task.config.preprocess.size
    metrics = n_test * size * size * machine.pixel_s + int(bootstrap or 0) * machine.replicate_s
    if c.train_draws:  # the VAE: its own network, forward and backward per draw
        det = task.detector("cpu")
        t_forward = cost.measure_vae(int(det.image_size), int(det.latent_channels), str(det.backbone))
        root = task.data_root if Path(task.data_root).is_dir() else source
        decode = _decode_s(rates, root, task.category, task.config.preprocess) * (n_train + n_test)
        return (3 * c.train_draws + n_test) * t_forward + decode + metrics, \
            (c.fit_flops + c.predict_flops) / gpu_flops + decode + metrics
    flops = c.fit_flops + c.predict_flops
    return flops / machine.flops + metrics, flops / gpu_flops + metrics


def _complexity_seconds(p: Mapping[str, Any], rates: _Rates, gpu_flops: float) -> tuple[float, float]:
    """(this machine, a GPU) for book/complexity.ipynb's timed calls: each model of the comparison (the
    chapter's `comparison_configs`) and each point of the scaling runs fitted on `n_train` and scored on
    `n_test` random images, (warmup + repeats) times."""
    from padim_lib.paper.baselines import comparison_configs, vae_params

    n_train, n_test, size = int(p["n_train"]), int(p["n_test"]), int(p["image_size"])
    calls = int(p["warmup"]) + int(p["repeats"])
    models = comparison_configs(small_backbone=p["small_backbone"], large_backbone=p["large_backbone"],
                                spade_backbone=p["spade_backbone"], small_d=p.get("small_d"), large_d=p.get("large_d"),
                                vae_pretrained=False, pretrained=False,
                                spade={"k": min(50, n_train), "n_gallery": min(int(p["spade_gallery"]), n_train)},
                                vae=vae_params(1, n_train, int(p["vae_image_size"]), min(32, n_train)))
    runs = [(c, n_train, size) for c in models.values()]
    base = ExperimentConfig(backbone=p["small_backbone"], reduce=f"random:{p['scale_d']}", pretrained=False)
    runs += [(base.replace(reduce=f"random:{d}"), n_train, size) for d in p["scale_dims"]]
    runs += [(base, int(n), size) for n in p["scale_n_train"]]
    runs += [(base, n_train, int(s)) for s in p["scale_sizes"]]
    cpu = gpu = 0.0
    for config, n, s in runs:
        task = Task(p["data_root"], "timing", config.replace(preprocess=Preprocess(resize=s, crop=None)))
        c = cost.task_cost(task, n, n_test)
        flops = c.fit_flops + c.predict_flops
        if c.train_draws:
            det = task.detector("cpu")
            cpu += calls * (3 * c.train_draws + n_test) * cost.measure_vae(int(det.image_size), int(det.latent_channels), str(det.backbone))
        else:
            spec = task.feature_specs()[0]
            t_image = cost.measure_backbone(spec.backbone, tuple(spec.layers), s)
            cpu += calls * ((n + n_test) * t_image + flops / rates.machine.flops)
            flops += (n + n_test) * cost.spec_shapes(spec).flops
        gpu += calls * flops / gpu_flops
    return cpu, gpu


def _versions_bytes(study: Study, counter: _Counter) -> int:
    """At most the bytes of the non-aligned versions not written yet: every image of the chosen
    classes, a PNG of the size the version is read at (its crop), at most its raw RGB size."""
    total = 0
    for v in study.versions[1:]:
        if Path(v.root).is_dir():
            continue
        side = v.preprocess.size if v.preprocess is not None else 224
        for c in study.classes or ():
            n = sum(counter(v.root, c, split, None, study.data_root) for split in ("train", "test"))
            total += n * side * side * 3
    return total


# ----------------------------------------------------------------------------- the book


def book_plan(profile: str, chapters: Sequence[Chapter], per_notebook: Mapping[str, Mapping[str, Any]], root: Path,
              *, measure: bool = True, gpu_flops: float = GPU_FLOPS) -> BookPlan:
    """The plan of running `chapters` (in that order) with `per_notebook` parameters under `root`."""
    from padim_lib.engine.local_pool import default_workers

    plans, writes, rates = plan_chapters(chapters, per_notebook, root, measure=measure, gpu_flops=gpu_flops)
    disk: list[tuple[str, dict[str, int], int]] = []
    by_device: dict[int, int] = {}
    for folder, needs in writes.items():
        if not any(needs.values()):
            continue
        where, device, free = free_disk(Path(folder))
        if device in by_device:  # another folder of this file system: one free figure, the needs added up
            index = by_device[device]
            name, old, _ = disk[index]
            disk[index] = (name, {k: old.get(k, 0) + needs.get(k, 0) for k in {**old, **needs}}, free)
        else:
            by_device[device] = len(disk)
            disk.append((_show(folder, root), dict(needs), free))
    measured = []
    if measure and rates.machine is not None:
        measured.append(f"measured here: float32 matrix products {rates.machine.flops / 1e9:.0f} GFLOP/s; backbones "
                        + ", ".join(f"{k} {t:.3f} s/image" for k, t in rates.backbones.items()))
        measured.append(f"a GPU is assumed to sustain {gpu_flops / 1e12:g} TFLOP/s on the networks and the fits "
                        "(about half an NVIDIA A100's 19.5 TFLOP/s float32 peak); decoding and metrics stay on "
                        "the CPU at this machine's rates")
    return BookPlan(profile, plans, disk, available_memory(), default_workers(), measured)


def _show(folder: str, root: Path) -> str:
    try:
        return str(Path(folder).resolve().relative_to(root.resolve()))
    except ValueError:
        return folder


def check(profile: str, chapters: Sequence[Chapter], per_notebook: Mapping[str, Mapping[str, Any]], root: Path) -> None:
    """Raise PadimError naming the figures when the run would not fit the free disk or the memory."""
    problems = book_plan(profile, chapters, per_notebook, root, measure=False).problems()
    if problems:
        raise PadimError("; ".join(problems) + " (nothing was run; `padim book --plan` shows the whole plan)")
