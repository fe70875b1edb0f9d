"""The paper profile's code path before anyone spends a GPU day on it (issue 20).

* `dry_run_book` (tests/conftest_book.py): every chapter under `padim book --profile paper` with
  `pretrained=False` (ResNet18, Wide-ResNet-50-2, EfficientNet-B5 on random weights), on a tiny tree
  with MVTec AD's class names and a tiny STC tree, after `--plan` planned it;
* the `pretrained` switch: every builder puts it into every configuration, nothing asks for weights
  when it is off, every chapter says so when it is off;
* the plan's laws against the files a run writes, and the stop before any work when the disk or the
  memory is too small.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from padim_lib.datasets import CLASSES, OBJECTS, TEXTURES, category_kinds, list_categories, make_synthetic
from padim_lib.engine.config import ExperimentConfig
from padim_lib.engine.results import ResultStore
from padim_lib.errors import PadimError
from padim_lib.paper import cost, experiments
from padim_lib.report import runner
from padim_lib.report.chapter_studies import chapter_parameters, chapter_study
from padim_lib.report.chapters import CHAPTER_EXPERIMENTS, toc_chapters
from padim_lib.report.display import DRY_RUN_TITLE
from padim_lib.report.runlog import STATISTICS_PAGE

pytest_plugins = ["conftest_book"]

REPO = Path(__file__).resolve().parents[1]
STEMS = [c.stem for c in toc_chapters(REPO)]


# ----------------------------------------------------------------------------- the generator's names


def test_the_generator_writes_mvtec_ad_class_names_with_their_kinds(tmp_path):
    root = make_synthetic(tmp_path / "named", n_train=1, n_test_good=1, n_test_defect=1, size=32, categories=CLASSES)
    assert list_categories(root) == sorted(CLASSES)
    kinds = category_kinds(root)
    assert {c for c, k in kinds.items() if k == "texture"} == set(TEXTURES)
    assert {c for c, k in kinds.items() if k == "object"} == set(OBJECTS)
    meta = json.loads((root / "dataset.json").read_text())
    assert set(meta["stand_ins"]) == set(CLASSES)
    # two names drawn by one synthetic class get their own images (their own random streams)
    same = [(a, b) for a in CLASSES for b in CLASSES if a < b and meta["stand_ins"][a] == meta["stand_ins"][b]]
    a, b = same[0]
    assert (root / a / "train/good/000.png").read_bytes() != (root / b / "train/good/000.png").read_bytes()
    # any name, given what draws it; a name nothing draws is refused, naming it
    other = make_synthetic(tmp_path / "any", n_train=1, n_test_good=1, n_test_defect=1, size=32,
                           categories=["part_a"], stand_ins={"part_a": "chip"})
    assert category_kinds(other) == {"part_a": "object"}
    with pytest.raises(PadimError, match="'part_b'"):
        make_synthetic(tmp_path / "bad", n_train=1, n_test_good=1, n_test_defect=1, size=32, categories=["part_b"])


def test_a_set_of_the_synthetic_classes_keeps_its_manifest(tmp_path):
    root = make_synthetic(tmp_path / "s", n_train=1, n_test_good=1, n_test_defect=1, size=32, categories=["brick"])
    assert "stand_ins" not in json.loads((root / "dataset.json").read_text())  # cache keys hash this file


# ----------------------------------------------------------------------------- the pretrained switch


@pytest.fixture(scope="module")
def dry_data(tmp_path_factory):
    from conftest_book import make_dry_run_data, make_tiny_stc

    base = tmp_path_factory.mktemp("dry_data")
    return make_dry_run_data(base / "mvtec_named"), make_tiny_stc(base / "stc"), base


@pytest.mark.parametrize("pretrained", [True, False])
def test_every_builder_puts_pretrained_into_every_configuration(dry_data, pretrained):
    data, stc, base = dry_data
    values = {**runner.PROFILES["paper"], "data_root": str(data), "stc_root": str(stc), "pretrained": pretrained,
              "na_versions_dir": str(base / "versions"), "write_versions": False, "na_vae_params": {}}
    for name in experiments.names():
        configs = experiments.build(name, values).configs()
        assert configs, name
        for c in configs:
            # the VAE's encoder is ImageNet's only when vae_pretrained (True in the paper profile) and pretrained
            assert c.pretrained is pretrained, (name, c.label)
    assert not (base / "versions").exists()  # a plan's study writes no data


def test_paper_profile_inputs_ask_for_no_download_with_random_weights(dry_data, tmp_path):
    import torch

    data, _, _ = dry_data
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "empty_hub"))
    try:
        values = {**runner.PROFILES["paper"], "data_root": str(data)}
        assert runner.paper_inputs_problems(tmp_path, {**values, "pretrained": False}) == []
        problems = " | ".join(runner.paper_inputs_problems(tmp_path, values))
        assert "padim download weights resnet18" in problems and "expected 280" in problems  # carpet's split size
        assert runner.resolve_profile("paper", tmp_path, {"data_root": str(data), "pretrained": False})[0] == "paper"
    finally:
        torch.hub.set_dir(old)


# ----------------------------------------------------------------------------- the cost laws


def test_meta_shapes_are_a_real_forward_passs(dry_data):
    import torch

    from padim_lib.features.extractor import FeatureExtractor

    for backbone, size in (("resnet18", 40), ("efficientnet_b5", 36)):
        real = FeatureExtractor(backbone, pretrained=False)(torch.zeros(1, 3, size, size))
        shapes = cost.backbone_shapes(backbone, tuple(real), size)
        assert shapes.maps == {k: tuple(v.shape[1:]) for k, v in real.items()}
        assert shapes.flops > 0


def test_feature_cache_law_is_the_bytes_of_a_feature_file(dry_data, tmp_path):
    from padim_lib.engine.task import Task
    from padim_lib.features.cache import ensure_features, load_features

    data, _, _ = dry_data
    task = Task(str(data), "carpet", ExperimentConfig(backbone="resnet18", resize=40, crop=32, pretrained=False))
    for spec in task.feature_specs():
        stored = load_features(ensure_features(spec, tmp_path, device="cpu", progress=False))
        n = len(stored["labels"])
        assert n == 3  # 3 training images; 1 good and 2 defective test images
        assert sum(t.numel() * t.element_size() for t in stored["features"].values()) == n * cost.spec_image_bytes(spec)


def test_padim_memory_law_counts_the_accumulator_and_the_fitted_model():
    from padim_lib.methods.padim.gaussian import FLOAT64_BUDGET_BYTES
    from padim_lib.paper.complexity import padim_bytes

    maps = {"layer1": (64, 56, 56), "layer2": (128, 28, 28), "layer3": (256, 14, 14)}
    small = ExperimentConfig(backbone="resnet18", reduce="random:100")
    work, fit, predict = cost.padim_cost(small, maps, n_train=10, n_test=5)
    p, d = 56 * 56, 100
    assert p * d * d * 8 <= FLOAT64_BUDGET_BYTES  # float64 accumulator beside the float32 factor
    assert work == padim_bytes(p, d) + p * d * d * 8
    assert fit == 10 * p * d * d * 2 + p * d**3 and predict == 5 * p * d * d
    large = ExperimentConfig(backbone="resnet18", reduce="random:440")
    assert cost.padim_cost(large, maps, 10, 5)[0] == padim_bytes(p, 440)  # float32, written in place


# ----------------------------------------------------------------------------- the stop before any work


TABLE1 = ("data_root", "results_dir", "resize", "crop", "bootstrap", "device", "pretrained")  # --only table1_layers


def _project(tmp_path, dry_data) -> tuple[Path, dict]:
    """A copy of the book and the dry run's parameters."""
    from conftest_book import copy_project, dry_run_parameters

    data, stc, _ = dry_data
    root = copy_project(tmp_path / "proj")
    return root, dry_run_parameters(Path(data), root / "results", Path(stc))


def _yaml(params: dict, only: tuple[str, ...] | None = None) -> list[str]:
    return ["-y", json.dumps({k: v for k, v in params.items() if only is None or k in only})]


def test_a_run_that_would_not_fit_the_disk_stops_before_any_work(tmp_path, dry_data, monkeypatch, capsys):
    from padim_lib.cli import main

    root, params = _project(tmp_path, dry_data)
    monkeypatch.chdir(root)
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    assert main(["book", "--profile", "paper", "--only", "table1_layers", *_yaml(params, TABLE1)]) == 2
    err = capsys.readouterr().err
    assert "needs " in err and "of disk for the feature cache (" in err and "1.0 kB free at results" in err
    assert not (root / "results").exists() and not (root / "book" / "_executed").exists()  # nothing computed
    # --plan prints the plan, then the same stop
    assert main(["book", "--profile", "paper", "--plan", "--only", "table1_layers", *_yaml(params, TABLE1)]) == 2
    out, err = capsys.readouterr()
    assert "table1_layers: 10 tasks (5 configurations x 2 classes)" in out and "1.0 kB free at results" in err, err
    assert not (root / "results").exists()


def test_a_task_that_would_not_fit_the_memory_stops_before_any_work(tmp_path, dry_data, monkeypatch, capsys):
    from padim_lib.cli import main
    from padim_lib.report import plan

    root, params = _project(tmp_path, dry_data)
    monkeypatch.chdir(root)
    monkeypatch.setattr(plan, "available_memory", lambda: 1000)
    assert main(["book", "--profile", "paper", "--only", "table1_layers", *_yaml(params, TABLE1)]) == 2
    err = capsys.readouterr().err
    assert "of memory for its largest task (table1_layers: " in err and "1.0 kB available" in err
    assert not (root / "results").exists()


# ----------------------------------------------------------------------------- the dry run itself


@pytest.mark.slow
def test_every_chapter_runs_the_paper_profile_on_random_weights_and_says_so(dry_run_book):
    for stem in STEMS:
        nb = nbformat.read(dry_run_book.executed(stem), as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        errors = [o for c in code for o in c.outputs if o.output_type == "error"]
        assert not errors and all(c.execution_count is not None for c in code), (stem, errors[:1])
        if stem == STATISTICS_PAGE:
            continue  # the execution statistics run no network: they list how the chapters ran
        shown = [o.get("data", {}).get("text/markdown", "") for c in code for o in c.outputs]
        assert any(DRY_RUN_TITLE in s for s in shown), f"{stem}: no random-weights warning"
    from padim_lib.report import runlog

    records = runlog.load(dry_run_book.root)
    assert {records[s]["profile"] for s in STEMS} == {"paper"}
    # every chapter declares it (the statistics page runs no network)
    assert all(records[s]["parameters"]["pretrained"] is False for s in STEMS if s != STATISTICS_PAGE)


@pytest.mark.slow
def test_the_dry_run_ran_the_papers_networks_and_methods_on_random_weights(dry_run_book):
    from conftest_book import DRY_RUN_CLASSES

    rows = ResultStore(dry_run_book.root / "results").load()
    assert {"resnet18", "wide_resnet50_2", "efficientnet_b5"} <= set(rows["backbone"])
    assert set(rows["method"]) == {"padim", "spade", "vae"}
    assert set(DRY_RUN_CLASSES) <= set(rows["category"])
    stored = set(ResultStore(dry_run_book.root / "results").keys())
    for stem in CHAPTER_EXPERIMENTS:  # each chapter's study, rebuilt from the parameters it recorded
        study = chapter_study(stem, chapter_parameters(stem, "paper", root=dry_run_book.root))
        assert all(not c.pretrained for c in study.configs()), stem
        assert {t.key() for t in study.tasks()} <= stored, stem


@pytest.mark.slow
def test_the_plan_counted_the_tasks_and_feature_files_the_run_made(dry_run_book):
    plan = dry_run_book.plan
    text = plan.text()
    for stem in STEMS:
        assert f"\n{stem}: " in text
    assert "on a GPU (estimate)" in text and "measured here:" in text
    features = dry_run_book.root / "results" / "features"
    assert sum(c.new_tasks for c in plan.chapters) == len(ResultStore(dry_run_book.root / "results").keys())
    assert sum(c.feature_files for c in plan.chapters) == len(list(features.glob("*.pt")))
    written = sum(p.stat().st_size for p in features.glob("*.pt"))
    planned = sum(c.feature_bytes for c in plan.chapters)
    assert planned <= written  # the maps; each file adds its labels, paths and torch.save's framing
