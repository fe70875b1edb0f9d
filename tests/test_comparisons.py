"""padim_lib.paper.baselines: the four models of the method comparison, their roles and published figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from padim_lib.errors import PadimError
from padim_lib.methods.base import Detector
from padim_lib.paper import baselines as comparisons
from padim_lib.paper import claims
from padim_lib.paper.catalog import rd_at_paper_ratio
from padim_lib.paper.run import StudyRun
from padim_lib.paper.study import per_kind

LITE0 = dict(small_backbone="efficientnet_lite0", large_backbone="efficientnet_lite0",
             spade_backbone="efficientnet_lite0", vae_pretrained=False)


def _configs(**kw):
    return list(comparisons.comparison_configs(**LITE0, **kw).values())


def test_rd_keeps_the_papers_ratio_and_is_the_papers_d_on_the_papers_backbones():
    assert rd_at_paper_ratio("PaDiM-R18-Rd100", "resnet18") == 100
    assert rd_at_paper_ratio("PaDiM-WR50-Rd550", "wide_resnet50_2") == 550
    # Lite0's default layers: 24 + 40 + 112 = 176 dimensions
    assert rd_at_paper_ratio("PaDiM-R18-Rd100", "efficientnet_lite0") == round(100 * 176 / 448)
    assert rd_at_paper_ratio("PaDiM-WR50-Rd550", "efficientnet_lite0") == round(550 * 176 / 1792)
    with pytest.raises(PadimError, match="model='VAE'"):
        rd_at_paper_ratio("VAE", "resnet18")


def test_configs_have_one_role_each_named_after_what_runs():
    by_role = comparisons.comparison_configs(**LITE0, vae=comparisons.vae_params(2, 16, 64, 8), spade={"k": 3})
    assert list(by_role) == list(comparisons.ROLES)
    configs = list(by_role.values())
    assert [c.label for c in configs] == ["VAE (random-init R18)", "SPADE (Lite0)", "PaDiM-Lite0-Rd39",
                                          "PaDiM-Lite0-Rd54"]
    assert [c.published_row for c in configs] == ["VAE", "SPADE (WR50)", "PaDiM-R18-Rd100", "PaDiM-WR50-Rd550"]
    vae = configs[0]
    assert vae.method == "vae" and vae.backbone == "resnet18" and not vae.pretrained
    assert vae.params["aug_resize"] == round(64 * 292 / 256) and vae.params["epochs"] == 2
    assert configs[1].params["k"] == 3 and configs[2].reduce == "random:39"
    paper = list(comparisons.comparison_configs().values())
    assert [c.label for c in paper][2:] == ["PaDiM-R18-Rd100", "PaDiM-WR50-Rd550"] and paper[0].label == "VAE"
    with pytest.raises(PadimError, match="both PaDiM models"):
        _configs(small_d=40, large_d=40)


def test_a_stand_in_vae_encoder_is_named_in_its_label_and_in_the_comparability(tmp_path):
    vae = comparisons.comparison_configs(vae_backbone="efficientnet_lite0", vae=comparisons.vae_params(4, 256, 96, 16))["vae"]
    assert (vae.backbone, vae.pretrained, vae.label) == ("efficientnet_lite0", True, "VAE (Lite0 stand-in)")
    assert vae.published_row == "VAE" and vae.params["aug_resize"] == 110 and vae.params["aug_crop"] == 106
    random = comparisons.comparison_configs(vae_backbone="efficientnet_lite0", vae_pretrained=False)["vae"]
    assert random.label == "VAE (random-init Lite0 stand-in)" and not random.pretrained
    assert comparisons.comparison_configs(vae_backbone="efficientnet_lite0", pretrained=False)["vae"].pretrained is False
    study = comparisons.baselines(tmp_path, ["carpet"], vae_backbone="efficientnet_lite0", vae_epochs=4,
                                  vae_images_per_epoch=256, vae_image_size=96, vae_batch_size=16)
    text = " | ".join(study.comparability()[1])
    assert "VAE (Lite0 stand-in) stands in for VAE on efficientnet_lite0, not the paper's resnet18" in text
    assert "epochs=4" in text and "batch_size=16" in text


def test_the_embedded_vae_trains_once_for_the_baselines_and_the_non_aligned_chapters(tmp_path):
    """Both chapters' embedded VAE on the aligned data is one task (equal key, classes and data), so the
    result cache trains it once; on each non-aligned version it is a task of its own."""
    from conftest_book import make_tiny_data

    from padim_lib.report import chapter_studies as studies

    where = {"data_root": str(make_tiny_data(tmp_path / "data"))}
    base = studies.chapter_study("baselines", studies.chapter_parameters("baselines", "embedded", where))
    params = {**studies.chapter_parameters("non_aligned", "embedded", where), "write_versions": False,
              "na_versions_dir": str(tmp_path / "versions")}
    moved = studies.chapter_study("non_aligned", params)
    def vae_tasks(study):  # (data root, class, key) of each VAE task; the versions need not be written
        roots = {v.name: v.root for v in study.versions}
        return {(roots[e.version], c, e.config.key()) for e in study.entries if e.config.method == "vae"
                for c in study.classes}

    base_vae, moved_vae = vae_tasks(base), vae_tasks(moved)
    assert len(base_vae) == 2 and base_vae <= moved_vae  # the aligned ones: one texture, one object
    assert len(moved_vae - base_vae) == 2 * params["na_versions"]
    vae = next(t.config for t in base.tasks() if t.config.method == "vae")
    assert (vae.backbone, vae.pretrained, vae.label) == ("efficientnet_lite0", True, "VAE (Lite0 stand-in)")


def test_comparability_names_every_stand_in(tmp_path):
    study = comparisons.baselines(tmp_path, ["carpet"], **LITE0, vae_epochs=2, vae_images_per_epoch=16,
                                  vae_image_size=64, vae_batch_size=8)
    ok, reasons = study.comparability()
    text = " | ".join(reasons)
    assert not ok
    for part in (f"the data at {tmp_path} is not a complete MVTec AD", "SPADE (Lite0) stands in for SPADE-WR50",
                 "random weights", "epochs=2", "PaDiM-Lite0-Rd54 stands in for PaDiM-WR50-Rd550"):
        assert part in text
    assert set(study.model_reasons()) == {c.label for c in study.configs()}


def _rows(values: dict[str, float], replicates: int = 10) -> pd.DataFrame:
    """Tidy rows for one texture (carpet) and one object (bottle): published_row -> value."""
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.005, size=(2, replicates))
    label = {c.published_row: c.label for c in _configs()}
    rows = []
    for row, v in values.items():
        for c, (category, kind) in enumerate([("carpet", "texture"), ("bottle", "object")]):
            for metric in ("pixel_auroc", "pro", "image_auroc"):
                for b in range(-1, replicates):
                    rows.append(dict(category=category, kind=kind, label=label[row], published_row=row, seed=0,
                                     metric=metric, value=v + (0 if b < 0 else noise[c, b]), replicate=b,
                                     config_key=row))
    return pd.DataFrame(rows)


def _run(rows):
    study = comparisons.baselines("unused", **LITE0)
    return StudyRun(study, [], rows.assign(data_root="unused"), "results", False, ["test"])


def test_run_addresses_rows_by_role_and_finds_every_published_figure():
    run = _run(_rows({"VAE": 0.7, "SPADE (WR50)": 0.9, "PaDiM-R18-Rd100": 0.93, "PaDiM-WR50-Rd550": 0.95}))
    assert run.roles() == list(comparisons.ROLES)
    assert run.label("padim_large") == "PaDiM-Lite0-Rd54"
    assert set(run.rows("vae")["label"]) == {"VAE (random-init R18)"}
    with pytest.raises(PadimError, match="role='sum'"):
        run.labels("sum")
    cmp = run.comparison().set_index(["label", "group", "metric"])
    assert cmp.loc[("SPADE (Lite0)", "all", "pixel_auroc"), "published"] == pytest.approx(96.5)  # Localization
    assert cmp.loc[("SPADE (Lite0)", "all", "image_auroc"), "published"] == pytest.approx(85.5)  # detection table
    assert cmp.loc[("PaDiM-Lite0-Rd54", "carpet", "pixel_auroc"), "published"] == pytest.approx(99.1)  # per class
    assert np.isnan(cmp.loc[("VAE (random-init R18)", "all", "image_auroc"), "published"])
    assert cmp.loc[("PaDiM-Lite0-Rd54", "all", "pro"), "difference"] == pytest.approx(95.0 - 92.1)
    pub = run.published()
    assert {"group", "label", "metric", "value"} <= set(pub.columns) and pub["value"].max() <= 1


def test_claims_of_the_comparison_hold_on_the_papers_figures_and_are_tested_on_rows():
    chosen = comparisons.baselines("unused", **LITE0).claims()
    assert {c["id"] for c in chosen} >= {"padim-wr50-beats-spade-pixel-auroc", "padim-r18-beats-vae-pro",
                                         "padim-wr50-beats-spade-image-auroc", "spade-beats-padim-wr50-pro-objects"}
    assert all("not a quote" in c["source"] for c in chosen)
    paper = claims.self_check(chosen)
    assert (paper["verdict"] == "holds").all()
    ranked = [c for c in chosen if claims.claim_origin(c) == "table"]  # PaDiM above SPADE and the VAE
    contrary = [c for c in chosen if claims.claim_origin(c) == "paraphrase"]  # SPADE's PRO on objects
    assert {c["id"] for c in contrary} == {"spade-beats-padim-wr50-pro-objects",
                                           "spade-beats-padim-wr50-pro-objects-by-1.8pp"}
    good = _run(_rows({"VAE": 0.7, "SPADE (WR50)": 0.9, "PaDiM-R18-Rd100": 0.93, "PaDiM-WR50-Rd550": 0.95}))
    rows = good.claim_rows()
    assert set(rows.loc[rows["published_row"] == "SPADE", "label"]) == {"SPADE (Lite0)"}
    verdicts = claims.evaluate_claims(rows, chosen).set_index("id")  # rows taken as the paper's models
    assert (verdicts.loc[[c["id"] for c in ranked], "verdict"] == "holds").all(), verdicts[["verdict", "note"]]
    assert (verdicts.loc[[c["id"] for c in contrary], "verdict"] == "does not hold").all()
    bad = _run(_rows({"VAE": 0.97, "SPADE (WR50)": 0.99, "PaDiM-R18-Rd100": 0.93, "PaDiM-WR50-Rd550": 0.95}))
    verdicts = claims.evaluate_claims(bad.claim_rows(), chosen).set_index("id")
    assert (verdicts.loc[[c["id"] for c in ranked], "verdict"] == "does not hold").all()
    assert verdicts.loc["spade-beats-padim-wr50-pro-objects", "verdict"] == "holds"
    # The run's own verdicts: its models are stand-ins on data that is not MVTec AD, so no claim is judged,
    # and each note names the stand-ins the claim involves.
    own = good.verdicts().set_index("id")
    assert set(own.index) == {c["id"] for c in chosen} and (own["verdict"] == "not comparable").all()
    note = own.loc["padim-wr50-beats-spade-pixel-auroc", "note"]
    assert "the data at unused does not exist" in note
    assert "PaDiM-Lite0-Rd54 stands in for PaDiM-WR50-Rd550" in note and "SPADE (Lite0) stands in for SPADE-WR50" in note
    assert "VAE" not in note  # a model the claim does not involve is not a reason
    assert "gives 'holds'" in note


def test_spade_comparability_includes_k_and_K():
    """SPADE's k (image neighbours) and K (pixel gallery) are the paper's 50 and 50 (catalog)."""
    from padim_lib.engine.config import ExperimentConfig
    from padim_lib.paper.catalog import model_differences, paper_model

    model = paper_model("Localization", "SPADE (WR50)")
    assert model is paper_model("STC", "SPADE") is paper_model("Image AUROC", "SPADE")
    assert dict(model.params) == {"k": 50, "n_gallery": 50}
    spade = ExperimentConfig(method="spade", backbone="wide_resnet50_2", label="SPADE")
    assert model_differences(spade, model) == []  # the detector's defaults are the paper's
    for params, said in [({"k": 10}, "k=10 (the paper: k=50)"), ({"n_gallery": 5}, "n_gallery=5 (the paper: n_gallery=50)"),
                         ({"k": 10, "n_gallery": 5}, "k=10, n_gallery=5 (the paper: k=50, n_gallery=50)")]:
        assert model_differences(spade.replace(params=params), model) == [f"SPADE runs {said}"]
    # through a study: the baselines chapter's SPADE on the paper's network, with a smaller gallery
    study = comparisons.baselines("unused", spade_gallery=5, spade_k=50)
    assert study.model_reasons()["SPADE (WR50)"] == ["SPADE (WR50) runs n_gallery=5 (the paper: n_gallery=50)"]
    run = StudyRun(study, [], pd.DataFrame(), "results", False, [])
    assert "SPADE (WR50) runs n_gallery=5" in " ".join(run.row_reasons()[("Image AUROC", "SPADE")])


def test_pick_classes_keeps_the_first_of_each_kind(tmp_path):
    from conftest_book import make_tiny_data

    data = make_tiny_data(tmp_path / "data")  # brick (texture), washer (object)
    assert per_kind(data, None, 1) == ["brick", "washer"]
    assert per_kind(data, ["washer"], 1) == ["washer"]
    assert per_kind(data, "all", None) is None
    with pytest.raises(PadimError, match="classes_per_kind=0"):
        per_kind(data, None, 0)


def test_detector_artifacts_hook_returns_the_loss_history_or_nothing():
    class Trained(Detector):
        def __init__(self):
            self.loss_history_ = {"epoch_loss": [3.0, 2.0], "step_loss": [4, 3, 2]}

    out = Trained().artifacts()
    assert set(out) == {"loss_epoch_loss", "loss_step_loss"}
    assert out["loss_epoch_loss"].dtype == np.float32 and out["loss_step_loss"].tolist() == [4, 3, 2]
    assert Detector().artifacts() == {}


@pytest.mark.parametrize("profile", ["embedded", "paper"])
def test_study_yaml_holds_the_chapters_configurations(profile, tmp_path):
    """The sweep's study computes the very tasks the chapter reads (equal configuration keys)."""
    from pathlib import Path

    import yaml

    from padim_lib.engine.config import ExperimentConfig
    from padim_lib.report import chapter_studies as studies

    study = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / f"study-{profile}.yaml").read_text())
    keys = set()
    for entry in study["configurations"]:
        if isinstance(entry, str) or "preset" in entry:
            continue
        fields = {**study["base"], **entry}
        fields.pop("seeds", None)
        keys.add(ExperimentConfig.from_dict(fields).key())
    from conftest_book import make_tiny_data

    # the chapter's own parameters under the profile; only the data is a tiny stand-in (the classes
    # are chosen from it): the keys do not depend on it
    where = {"data_root": str(make_tiny_data(tmp_path / "data"))}
    want = studies.chapter_study("baselines", studies.chapter_parameters("baselines", profile, where)).configs()
    missing = [c.label for c in want if c.key() not in keys]
    assert not missing, f"study-{profile}.yaml lacks {missing}"


def test_chapter_verdicts_test_every_claim_on_every_run_that_can():
    """The summary's verdicts: each claim on every chapter's run that has its configurations (the image
    AUROC comparison on the baselines' and on the detection chapter's), a claim no run can test once."""
    from padim_lib.paper import detection
    from padim_lib.paper.run import chapter_verdicts
    from padim_lib.report import display as report

    base = _run(_rows({"VAE": 0.7, "SPADE (WR50)": 0.9, "PaDiM-R18-Rd100": 0.93, "PaDiM-WR50-Rd550": 0.95}))
    det_study = detection.detection("unused", det_rd_backbone="efficientnet_lite0", det_rd=54,
                                    det_effnet_backbones=["efficientnet_lite0"], det_effnet_literal_layers=None,
                                    det_spade_backbone="efficientnet_lite0")
    labels = {c.published_row: c.label for c in det_study.configs()}
    det_rows = _rows({"SPADE (WR50)": 0.8, "PaDiM-WR50-Rd550": 0.9}).query("metric == 'image_auroc'")
    det_rows = det_rows.assign(published_row=det_rows["published_row"].replace({"SPADE (WR50)": "SPADE"}))
    det_rows = det_rows.assign(label=det_rows["published_row"].map(labels), data_root="unused")
    det = StudyRun(det_study, [], det_rows, "results", False, ["test"])
    out = chapter_verdicts({"baselines": base, "detection": det})
    every = claims.load_claims()
    assert set(out["id"]) == {c["id"] for c in every}
    image = out[out["id"] == "padim-wr50-beats-spade-image-auroc"].set_index("chapter")
    assert list(image.index) == ["baselines", "detection"]
    assert (image["verdict"] == "not comparable").all()  # stand-ins on data that is not MVTec AD
    assert "PaDiM-Lite0-Rd54 stands in for PaDiM-WR50-Rd550" in image.loc["detection", "note"]
    assert "SPADE-Lite0 stands in for SPADE-WR50" in image.loc["detection", "note"]
    untested = out[out["chapter"] == ""]
    assert set(untested["table"]) == {"Table I", "Table II"} and (untested["verdict"] == "not tested").all()
    assert len(out) == len(every) + 1
    html = report.claims_table(out).to_html()  # one row per (claim, chapter): the ids stay unique
    assert "chapter detection" in html and "PaDiM-Lite0-Rd54 - SPADE-Lite0" in html
    note = report.runs_note({"baselines": base, "detection": det})
    assert note.startswith(":::{warning}") and "- **detection**: test" in note
    base.comparable = det.comparable = True
    assert report.runs_note({"baselines": base, "detection": det}).startswith(":::{note}")
