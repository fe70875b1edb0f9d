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
from padim_lib.paper.detection import B5_LITERAL_LAYERS, detection_configs, scaled_rd
from padim_lib.paper.nonaligned import ALIGNED, method_configs, run_nonaligned
from padim_lib.paper.stc import run_stc, stc_configs
from padim_lib.paper.study import rd_label, spread_over_versions

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
    configs = stc_configs(backbone="efficientnet_lite0", rd=20, spade_backbone=None, max_train=8, preprocess=SMALL)
    run = run_stc(stc, ["01"], configs, results_dir=tmp_path, device="cpu", bootstrap=3, progress=False, workers=1)
    rows = run.results
    assert set(rows["metric"]) == {"image_auroc", "pixel_auroc", "pro"}
    assert set(rows["label"]) == {"PaDiM-Lite0-Rd20"} and set(rows["published_row"]) == {"PaDiM-R18-Rd100"}
    assert int(run.artifacts("PaDiM-Lite0-Rd20", "01")["n_train"]) == 8
    comparison = run.comparison()
    hit = comparison[(comparison["metric"] == "pixel_auroc") & (comparison["group"] == "all")]
    assert float(hit["published"].iloc[0]) == 91.2
    pub = run.published()
    assert pub.to_dict("records") == [{"group": "all", "label": "PaDiM-Lite0-Rd20", "metric": "pixel_auroc",
                                       "value": pytest.approx(0.912)}]
    assert run.stand_ins().loc["PaDiM-Lite0-Rd20", "set against (paper)"] == "PaDiM-R18-Rd100"
    fpr, tpr = run.curves("pixel_roc")["01"]["PaDiM-Lite0-Rd20"]
    assert fpr[0] == 0 and tpr[-1] == 1
    from matplotlib.figure import Figure

    from padim_lib.paper.stc import frame_counts
    from padim_lib.report.study_plots import scene_figure

    assert isinstance(scene_figure(run.summary(), run.labels(), pub, ("pixel_auroc", "image_auroc")), Figure)
    assert frame_counts(run) == {"train": 8, "test": 12}
    again = run_stc(stc, ["01"], configs, results_dir=tmp_path, device="cpu", bootstrap=3, progress=False, workers=1)
    pd.testing.assert_frame_equal(again.results, rows)
    with pytest.raises(PadimError, match="STC layout"):
        run_stc(tmp_path, None, configs, results_dir=tmp_path)


# ----------------------------------------------------------------------------- configurations
def test_detection_configs_and_stand_ins():
    assert scaled_rd("wide_resnet50_2") == 550 and scaled_rd("efficientnet_lite0") == 54
    configs = detection_configs(rd_backbone="wide_resnet50_2", rd=550, effnet_backbones=["efficientnet_b5"],
                                effnet_literal_layers=B5_LITERAL_LAYERS, spade_backbone="wide_resnet50_2")
    assert [c.label for c in configs] == ["PaDiM-WR50-Rd550", "PaDiM-B5 (levels)", "PaDiM-B5 (literal)", "SPADE-WR50"]
    assert [c.published_row for c in configs] == ["PaDiM-WR50-Rd550", "PaDiM-EfficientNet-B5",
                                                  "PaDiM-EfficientNet-B5", "SPADE"]
    assert configs[1].resolved_layers() == ("features.2", "features.4", "features.5")
    assert configs[2].resolved_layers() == B5_LITERAL_LAYERS and configs[3].method == "spade"
    embedded = detection_configs(rd_backbone="efficientnet_lite0", rd=54,
                                 effnet_backbones=["efficientnet_lite0", "efficientnet_lite2"], spade_backbone=None)
    assert [c.label for c in embedded] == ["PaDiM-Lite0-Rd54", "PaDiM-Lite0", "PaDiM-Lite2"]
    assert rd_label("resnet18", None) == "PaDiM-R18"
    with pytest.raises(PadimError, match="effnet_backbones"):
        detection_configs(rd_backbone="resnet18", rd=None, effnet_backbones=[])


def test_nonaligned_method_configs():
    configs = method_configs(padim_backbone="efficientnet_lite0", rd=20, spade_backbone="efficientnet_lite0",
                             vae_params={"epochs": 1}, vae_pretrained=False)
    assert [c.label for c in configs] == ["PaDiM", "SPADE", "VAE"]
    assert configs[2].method == "vae" and configs[2].params["epochs"] == 1 and not configs[2].pretrained
    assert [c.label for c in method_configs(padim_backbone="resnet18", rd=None, spade_backbone=None,
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
    configs = method_configs(padim_backbone="efficientnet_lite0", rd=20, spade_backbone=None, vae_params=None)
    run = run_nonaligned(mvtec, None, configs, n_versions=2, out_dir=tmp_path / "versions",
                         aligned_preprocess=Preprocess(resize=72, crop=64), results_dir=tmp_path / "res",
                         device="cpu", bootstrap=3, progress=False, workers=1)
    assert run.version_names() == ["seed0", "seed1"]
    assert (tmp_path / "versions" / "set" / "seed1" / "dataset.json").is_file()
    assert len(run.study.tasks) == 3 and set(run.study.results["data_root"]) == {str(mvtec), *run.version_roots}
    drops = run.drops().set_index("label")
    aligned = run.summary(ALIGNED)
    a = aligned[(aligned["metric"] == "pixel_auroc") & (aligned["group"] == "all")]["value"].iloc[0]
    per = [s[(s["metric"] == "pixel_auroc") & (s["group"] == "all")]["value"].iloc[0]
           for s in (run.summary("seed0"), run.summary("seed1"))]
    assert drops.loc["PaDiM", "drop"] == pytest.approx(100 * (a - np.mean(per)))
    assert drops.loc["PaDiM", "drop_std"] == pytest.approx(100 * np.std(per, ddof=1))
    assert drops.loc["PaDiM", "published_drop"] == 5.3 and drops.loc["PaDiM", "n_versions"] == 2
    with pytest.raises(PadimError, match="version"):
        run.summary("seed7")
    from matplotlib.figure import Figure

    from padim_lib.report.study_plots import nonaligned_figure

    assert isinstance(nonaligned_figure(run), Figure)


# ----------------------------------------------------------------------------- example studies
@pytest.mark.parametrize("name", ["study-embedded", "study-paper", "study-stc-embedded", "study-stc-paper"])
def test_example_studies_expand(name, stc, mvtec):
    from pathlib import Path

    spec = study.load_study(Path(__file__).resolve().parents[1] / "examples" / f"{name}.yaml")
    is_stc = "stc" in name
    spec["data_root"] = str(stc if is_stc else mvtec)
    tasks = study.expand(spec, source=name)
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
    from padim_lib.paper.study import class_subset

    two = make_synthetic(tmp_path / "two", seed=0, n_train=2, n_test_good=1, n_test_defect=1, size=32,
                         categories=["washer", "brick"])
    assert class_subset(two, None) == ["brick", "washer"]  # the first texture, then the first object
    assert class_subset(two, "all") == ["brick", "washer"]
    assert class_subset(two, "washer") == ["washer"] and class_subset(mvtec, ["washer"]) == ["washer"]


def test_comparability_names_every_difference(mvtec, stc):
    from padim_lib.paper import detection
    from padim_lib.paper import stc as stc_study
    from padim_lib.paper.study import comparability

    configs = detection_configs(rd_backbone="efficientnet_lite0", rd=54, effnet_backbones=["efficientnet_b5"],
                                spade_backbone="wide_resnet50_2")
    ok, reasons = comparability(mvtec, None, configs, detection.PAPER_BACKBONES, preprocess=Preprocess())
    assert not ok and any("generated set" in r for r in reasons)
    assert any("PaDiM-Lite0-Rd54 runs efficientnet_lite0, not the paper's wide_resnet50_2" in r for r in reasons)
    assert not any("B5" in r or "SPADE" in r for r in reasons)  # those run the paper's networks
    configs = stc_configs(backbone="resnet18", rd=100, spade_backbone="wide_resnet50_2")
    ok, reasons = stc_study.comparability(stc, None, configs, preprocess=SMALL, max_train=5)
    assert not ok and len(reasons) == 3  # generated set, 64 px, training frames capped
    assert stc_study.comparability(stc, None, configs[:1], preprocess=Preprocess(256, None))[1] == [
        f"the data at {stc} is a generated set, not ShanghaiTech Campus"]


def test_prepare_stc_checks_a_real_tree(stc, tmp_path):
    from padim_lib.report.runner import prepare_stc

    prepare_stc("paper", stc, tmp_path, log=print)  # a usable tree: nothing to say
    with pytest.raises(PadimError, match="stc_root.*not downloaded automatically"):
        prepare_stc("paper", tmp_path / "missing", tmp_path, log=print)
    with pytest.raises(PadimError, match="stc_root"):  # embedded, but not its own synthetic set
        prepare_stc("embedded", tmp_path / "missing", tmp_path, log=print)


def test_the_studies_do_not_key_results():
    """Editing a chapter's study module (configurations, summaries) keeps every cached result."""
    from padim_lib.io.digest import _source_files

    keyed = {p.name for p in _source_files("results")}
    assert not keyed & {"studies.py", "detection.py", "nonaligned_study.py", "stc_study.py", "study_plots.py"}
    assert {"padim.py", "experiments.py"} <= keyed
