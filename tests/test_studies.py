"""The detection, non-aligned and STC studies: STC roots as data sets, configurations, averaging over versions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from padim_lib.datasets import Preprocess, make_synthetic
from padim_lib.datasets.catalog import is_stc_root, list_classes, open_dataset
from padim_lib.datasets.stc import STCScene, scene_identity
from padim_lib.datasets.synthetic_stc import make_synthetic_stc
from padim_lib.engine import studyfile as study
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.features.cache import data_identity
from padim_lib.paper import detection, nonaligned
from padim_lib.paper import stc as stc_study
from padim_lib.paper.catalog import rd_at_paper_ratio
from padim_lib.paper.detection import B5_LITERAL_LAYERS, rd_label
from padim_lib.paper.nonaligned import ALIGNED
from padim_lib.paper.run import run, spread_over_versions
from padim_lib.paper.tables import PRESETS

TINY_STC = dict(scenes=2, train_clips=2, test_clips=1, train_frames=10, test_frames=12, height=48, width=64)
SMALL = Preprocess(resize=64, crop=None)


@pytest.fixture(scope="module")
def stc(tmp_path_factory):
    return make_synthetic_stc(tmp_path_factory.mktemp("stc") / "set", seed=0, **TINY_STC)


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("syn") / "set", seed=0, n_train=6, n_test_good=2,
                          n_test_defect=3, size=64, categories=["washer"])


# ----------------------------------------------------------------------------- STC roots
def test_stc_root_is_a_data_set_whose_classes_are_scenes(stc, mvtec):
    assert is_stc_root(stc) and not is_stc_root(mvtec)
    assert list_classes(stc) == ["01", "02"]
    assert list_classes(mvtec) == ["washer"]
    data = open_dataset(stc, "02", "test", SMALL)
    assert isinstance(data, STCScene) and data.scene == "02" and data.has_masks
    assert data[0]["image"].shape == (3, 64, 64) and data[0]["mask"].shape == (64, 64)


def test_stc_max_train_spreads_over_the_clips(stc):
    full = open_dataset(stc, "01", "train", SMALL)
    capped = open_dataset(stc, "01", "train", SMALL, max_train=4)
    assert len(full) == 20 and len(capped) == 4
    assert set(capped.clips) == {"01_001", "01_002"}  # the first 4 frames would all be clip 1's
    assert len(open_dataset(stc, "01", "test", SMALL, max_train=4)) == 12  # the cap is for training only


def test_data_identity_of_a_scene_is_its_scene_identity(stc):
    assert data_identity(stc, "01") == scene_identity(stc, "01")
    assert data_identity(stc, "01") != data_identity(stc, "02")
    with pytest.raises(FileNotFoundError, match="scene '07'"):
        data_identity(stc, "07")


def test_sweep_tasks_cover_the_scenes(stc):
    cfg = ExperimentConfig(preprocess=SMALL)
    assert [t.category for t in study.make_tasks(stc, "all", [cfg])] == ["01", "02"]
    with pytest.raises(PadimError, match="available"):
        study.make_tasks(stc, ["09"], [cfg])


def test_stc_study_runs_and_reuses_the_cache(stc, tmp_path):
    study = stc_study.stc(stc, ["01"], stc_backbone="efficientnet_lite0", stc_rd=20, stc_spade_backbone=None,
                          stc_max_train=8, stc_resize=64)
    kwargs = dict(results_dir=tmp_path, device="cpu", bootstrap=3, progress=False, workers=1)
    done = run(study, **kwargs)
    rows = done.results
    assert set(rows["metric"]) == {"image_auroc", "pixel_auroc", "pro"}
    assert set(rows["label"]) == {"PaDiM-Lite0-Rd20"} and set(rows["published_row"]) == {"PaDiM-R18-Rd100"}
    assert int(done.artifacts("PaDiM-Lite0-Rd20", "01")["n_train"]) == 8
    comparison = done.comparison()
    hit = comparison[(comparison["metric"] == "pixel_auroc") & (comparison["group"] == "all")]
    assert float(hit["published"].iloc[0]) == 91.2
    pub = done.published()
    assert pub.to_dict("records") == [{"group": "all", "label": "PaDiM-Lite0-Rd20", "metric": "pixel_auroc",
                                       "value": pytest.approx(0.912)}]
    assert done.stand_ins().loc["PaDiM-Lite0-Rd20", "set against (paper)"] == "PaDiM-R18-Rd100"
    fpr, tpr = done.curves("pixel_roc")["01"]["PaDiM-Lite0-Rd20"]
    assert fpr[0] == 0 and tpr[-1] == 1
    from matplotlib.figure import Figure

    from padim_lib.paper.stc import frame_counts
    from padim_lib.report.study_plots import scene_figure

    assert isinstance(scene_figure(done.summary(), done.labels(), pub, ("pixel_auroc", "image_auroc")), Figure)
    assert frame_counts(done) == {"train": 8, "test": 12}
    # the two ways to combine scenes (the paper states neither): on one scene they are the same number
    both = stc_study.averages(done).set_index("metric")
    assert list(both.index) == ["pixel_auroc", "image_auroc"] and (both["n_scenes"] == 1).all()
    assert both.loc["image_auroc", "pooled"] == pytest.approx(both.loc["image_auroc", "mean"], abs=1e-12)
    assert both.loc["pixel_auroc", "pooled"] == pytest.approx(both.loc["pixel_auroc", "mean"], abs=1e-3)
    again = run(study, **kwargs)
    pd.testing.assert_frame_equal(again.results, rows)
    with pytest.raises(PadimError, match="STC layout"):
        stc_study.stc(tmp_path)


# ----------------------------------------------------------------------------- configurations
def _detection(**kw):
    return [e.config for e in detection.detection_entries(**kw)]


def test_detection_configs_and_stand_ins():
    assert rd_at_paper_ratio("PaDiM-WR50-Rd550", "wide_resnet50_2") == 550
    assert rd_at_paper_ratio("PaDiM-WR50-Rd550", "efficientnet_lite0") == 54
    configs = _detection(rd_backbone="wide_resnet50_2", rd=550, effnet_backbones=["efficientnet_b5"],
                         effnet_literal_layers=B5_LITERAL_LAYERS, spade_backbone="wide_resnet50_2")
    assert [c.label for c in configs] == ["PaDiM-WR50-Rd550", "PaDiM-B5 (levels)", "PaDiM-B5 (literal)", "SPADE-WR50"]
    assert [c.published_row for c in configs] == ["PaDiM-WR50-Rd550", "PaDiM-EfficientNet-B5",
                                                  "PaDiM-EfficientNet-B5", "SPADE"]
    assert configs[1].resolved_layers() == ("features.2", "features.4", "features.5")
    assert configs[2].resolved_layers() == B5_LITERAL_LAYERS and configs[3].method == "spade"
    embedded = _detection(rd_backbone="efficientnet_lite0", rd=54,
                          effnet_backbones=["efficientnet_lite0", "efficientnet_lite2"], spade_backbone=None)
    assert [c.label for c in embedded] == ["PaDiM-Lite0-Rd54", "PaDiM-Lite0", "PaDiM-Lite2"]
    assert rd_label("resnet18", None) == "PaDiM-R18"
    with pytest.raises(PadimError, match="effnet_backbones"):
        _detection(rd_backbone="resnet18", rd=None, effnet_backbones=[])


def _methods(**kw):
    return [e.config for e in nonaligned.method_entries(**kw)]


def test_nonaligned_method_configs():
    configs = _methods(padim_backbone="efficientnet_lite0", rd=20, spade_backbone="efficientnet_lite0",
                       vae_params={"epochs": 1}, vae_pretrained=False)
    assert [c.label for c in configs] == ["PaDiM", "SPADE", "VAE (random-init R18)"]
    assert configs[2].method == "vae" and configs[2].params["epochs"] == 1 and not configs[2].pretrained
    assert [c.label for c in _methods(padim_backbone="resnet18", rd=None, spade_backbone=None,
                                      vae_params=None)] == ["PaDiM"]


# ----------------------------------------------------------------------------- versions
def _summary(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"label": k, "group": "all", "metric": "pixel_auroc", "value": v} for k, v in values.items()])


def test_spread_over_versions():
    out = spread_over_versions({"seed0": _summary({"a": 0.90, "b": 0.5}), "seed1": _summary({"a": 0.94}),
                                "seed2": _summary({"a": 0.92})})
    assert list(out["label"]) == ["a"]  # "b" is missing in two versions: no mean of unlike things
    row = out.iloc[0]
    assert row["mean"] == pytest.approx(0.92) and row["std"] == pytest.approx(0.02)
    assert row["sem"] == pytest.approx(0.02 / np.sqrt(3)) and (row["min"], row["max"]) == (0.90, 0.94)
    one = spread_over_versions({"seed0": _summary({"a": 0.9})}).iloc[0]
    assert one["n_versions"] == 1 and np.isnan(one["std"])
    with pytest.raises(PadimError):
        spread_over_versions({})


def test_nonaligned_run_end_to_end(mvtec, tmp_path):
    study = nonaligned.nonaligned(mvtec, "all", na_versions=2, na_versions_dir=tmp_path / "versions",
                                  na_backbone="efficientnet_lite0", na_rd=20, na_spade_backbone=None, na_vae_params=None,
                                  resize=72, crop=64)
    done = run(study, results_dir=tmp_path / "res", device="cpu", bootstrap=3, progress=False, workers=1)
    assert done.version_names() == ["seed0", "seed1"]
    # made at the chapter's sizes (resize 72, a random 64 crop), kept apart from the paper's 256 -> 224
    where = tmp_path / "versions" / "set-72to64"
    assert (where / "seed1" / "dataset.json").is_file() and not (tmp_path / "versions" / "set").exists()
    from PIL import Image

    assert {Image.open(p).size for p in (where / "seed0").rglob("*.png")} == {(64, 64)}
    # read at the crop size: the aligned and the non-aligned views are both 64 px, one pixel scale
    assert [v.preprocess for v in study.versions[1:]] == [Preprocess(resize=64, crop=None)] * 2
    assert Preprocess(resize=72, crop=64).size == study.versions[1].preprocess.size
    roots = {done.version_root(v) for v in done.version_names(main=True)}
    assert len(done.tasks) == 3 and set(done.results["data_root"]) == roots and str(mvtec) in roots
    drops = done.drops().set_index("label")
    aligned = done.summary(ALIGNED)
    a = aligned[(aligned["metric"] == "pixel_auroc") & (aligned["group"] == "all")]["value"].iloc[0]
    per = [s[(s["metric"] == "pixel_auroc") & (s["group"] == "all")]["value"].iloc[0]
           for s in (done.summary("seed0"), done.summary("seed1"))]
    assert drops.loc["PaDiM", "drop"] == pytest.approx(100 * (a - np.mean(per)))
    assert drops.loc["PaDiM", "drop_std"] == pytest.approx(100 * np.std(per, ddof=1))
    assert drops.loc["PaDiM", "published_drop"] == 5.3 and drops.loc["PaDiM", "n_versions"] == 2
    with pytest.raises(PadimError, match="version"):
        done.summary("seed7")
    from matplotlib.figure import Figure

    from padim_lib.report.study_plots import nonaligned_figure

    assert isinstance(nonaligned_figure(done), Figure)


def test_nonaligned_versions_need_a_random_crop_smaller_than_the_resize(mvtec, tmp_path):
    for crop in (None, 72, 80):
        with pytest.raises(PadimError, match=f"crop={crop}: the non-aligned versions need a random crop"):
            nonaligned.nonaligned(mvtec, "all", na_versions_dir=tmp_path, resize=72, crop=crop, write_versions=False)
    assert not any(tmp_path.iterdir())
    # the paper's transform keeps the versions where they always were
    paper = nonaligned.nonaligned(mvtec, "all", na_versions=1, na_versions_dir=tmp_path, write_versions=False)
    assert paper.versions[1].root == str(tmp_path / "set" / "seed0")
    assert paper.versions[1].preprocess == Preprocess(resize=224, crop=None)


# ----------------------------------------------------------------------------- example studies
@pytest.mark.parametrize("name", ["study-embedded", "study-paper", "study-stc-embedded", "study-stc-paper"])
def test_example_studies_expand(name, stc, mvtec):
    from pathlib import Path

    spec = study.load_study(Path(__file__).resolve().parents[1] / "examples" / f"{name}.yaml")
    is_stc = "stc" in name
    spec["data_root"] = str(stc if is_stc else mvtec)
    tasks = study.expand(spec, source=name, presets=PRESETS)
    labels = {t.config.label for t in tasks}
    if is_stc:
        assert sorted({t.category for t in tasks}) == ["01", "02"]
        assert all(t.config.preprocess.crop is None for t in tasks)
        assert {t.config.published_row for t in tasks} == {"PaDiM-R18-Rd100", "SPADE"}
    elif name == "study-embedded":
        assert {"PaDiM-Lite0-Rd54", "PaDiM-Lite2", "SPADE-Lite0"} <= labels
    else:
        assert {"PaDiM-B5 (levels)", "PaDiM-B5 (literal)", "SPADE (WR50)"} <= labels


# ----------------------------------------------------------------------------- helpers
def test_class_subset(mvtec, tmp_path):
    from padim_lib.paper.study import one_of_each as class_subset

    two = make_synthetic(tmp_path / "two", seed=0, n_train=2, n_test_good=1, n_test_defect=1, size=32,
                         categories=["washer", "brick"])
    assert class_subset(two, None) == ["brick", "washer"]  # the first texture, then the first object
    assert class_subset(two, "all") == ["brick", "washer"]
    assert class_subset(two, "washer") == ["washer"] and class_subset(mvtec, ["washer"]) == ["washer"]


def test_comparability_names_every_difference(mvtec, stc):
    study = detection.detection(mvtec, det_rd_backbone="efficientnet_lite0", det_rd=54,
                                det_effnet_backbones=["efficientnet_b5"], det_effnet_literal_layers=None)
    ok, reasons = study.comparability()
    assert not ok and any("generated set" in r for r in reasons)
    assert any("PaDiM-Lite0-Rd54 stands in for PaDiM-WR50-Rd550 on efficientnet_lite0" in r for r in reasons)
    assert not any("B5" in r or "SPADE" in r for r in reasons)  # those run the paper's networks
    small = stc_study.stc(stc, stc_backbone="resnet18", stc_rd=100, stc_resize=64, stc_max_train=5)
    ok, reasons = small.comparability()
    assert not ok and len(reasons) == 3, reasons  # generated set, 64 px, training frames capped
    full = stc_study.stc(stc, stc_backbone="resnet18", stc_rd=100, stc_spade_backbone=None)
    assert full.comparability()[1] == [f"the data at {stc} is a generated set, not ShanghaiTech Campus"]


def test_prepare_stc_checks_a_real_tree(stc, tmp_path):
    from padim_lib.report.runner import prepare_stc

    prepare_stc("paper", stc, tmp_path, log=print)  # a usable tree: nothing to say
    with pytest.raises(PadimError, match="stc_root.*not downloaded automatically"):
        prepare_stc("paper", tmp_path / "missing", tmp_path, log=print)
    with pytest.raises(PadimError, match="stc_root"):  # embedded, but not its own synthetic set
        prepare_stc("embedded", tmp_path / "missing", tmp_path, log=print)


def test_the_studies_do_not_key_results():
    """Editing a chapter's study module (configurations, summaries) keeps every cached result."""
    from padim_lib.io.digest import LIBRARY, _source_files

    keyed = {p.relative_to(LIBRARY).as_posix() for p in _source_files("results")}
    assert not {k for k in keyed if k.split("/")[0] in ("paper", "report", "cli")}
    assert {"methods/padim/detector.py", "engine/task.py", "features/extractor.py"} <= keyed
