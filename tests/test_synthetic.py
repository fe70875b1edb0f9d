"""The synthetic data set: classes, layout, exact masks, determinism, idempotence, atomic writes,
the description tables, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from padim_lib.datasets import (
    AnomalyFolder,
    Preprocess,
    category_kinds,
    list_categories,
    make_synthetic,
    synthetic,
)
from padim_lib.datasets.synthetic import CLASS_NAMES, DEFECT_TYPES, render_sample, writer
from padim_lib.datasets.synthetic.describe import describe_synthetic, example_images, mask_areas
from padim_lib.errors import PadimError

SMALL = dict(n_train=3, n_test_good=2, n_test_defect=5, size=64)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("syn") / "set", seed=0, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_class_names_are_stable():
    assert synthetic.TEXTURE_CLASSES == ("brick", "gravel", "grass", "tissue")
    assert synthetic.OBJECT_CLASSES == ("washer", "tablet", "chip", "board")
    # MVTec AD's class names are avoided, so no synthetic class is ever matched to a published row
    from padim_lib.datasets.mvtec import CLASSES as MVTEC

    assert not set(CLASS_NAMES) & set(MVTEC)
    for cat in CLASS_NAMES:
        assert 4 <= len(DEFECT_TYPES[cat]) == len(set(DEFECT_TYPES[cat])), cat


def test_layout_and_manifest(small_set):
    assert list_categories(small_set) == sorted(CLASS_NAMES)
    kinds = category_kinds(small_set)
    assert sorted(c for c, k in kinds.items() if k == "texture") == sorted(synthetic.TEXTURE_CLASSES)
    assert sorted(c for c, k in kinds.items() if k == "object") == sorted(synthetic.OBJECT_CLASSES)
    meta = json.loads((small_set / "dataset.json").read_text())
    assert meta["seed"] == 0 and meta["generator_version"] == synthetic.GENERATOR_VERSION
    assert meta["textures"] == list(synthetic.TEXTURE_CLASSES) and meta["objects"] == list(synthetic.OBJECT_CLASSES)
    pre = Preprocess(resize=64, crop=None)
    for cat in CLASS_NAMES:
        train = AnomalyFolder(small_set, cat, "train", pre, masks="require")
        test = AnomalyFolder(small_set, cat, "test", pre, masks="require")
        assert len(train) == 3 and train.labels.sum() == 0
        assert test.has_masks and (test.labels == 0).sum() == 2 and (test.labels == 1).sum() == 5
        # 5 defects over 4 or 5 types: every type is present, spread as evenly as possible
        types = [t for t in test.defect_types if t != "good"]
        assert sorted(set(types)) == sorted(DEFECT_TYPES[cat])
        assert max(map(types.count, set(types))) - min(map(types.count, set(types))) <= 1
        assert not (small_set / cat / "ground_truth" / "good").exists()
        test.verify()  # every mask has its image's size


def test_masks_on_disk_match_the_defects(small_set):
    for cat in CLASS_NAMES:
        test = AnomalyFolder(small_set, cat, "test", Preprocess(resize=64, crop=None))
        for item in test.items:
            if item.label == 0:
                continue
            mask = np.asarray(Image.open(item.mask_path))
            assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
            # the on-disk mask is the renderer's exact mask
            idx = int(Path(item.path).stem)
            n = sum(t == item.defect_type for t in test.defect_types)
            s = render_sample(cat, 0, "test", idx, item.defect_type, (idx + 0.5) / n, size=64)
            np.testing.assert_array_equal(mask > 0, s.mask)
            np.testing.assert_array_equal(np.asarray(Image.open(item.path).convert("RGB")), s.image)


@pytest.mark.parametrize("category", CLASS_NAMES)
def test_mask_is_exactly_the_changed_pixels(category):
    for k, defect in enumerate(DEFECT_TYPES[category]):
        for severity in (0.0, 1.0):
            s = render_sample(category, 3, "test", k, defect, severity, size=128)
            changed = (s.image != s.clean).any(axis=-1)
            np.testing.assert_array_equal(s.mask, changed)
            assert s.mask.any(), (category, defect, severity)
            assert s.mask.dtype == bool
            # the defect reaches into the 224/256 centre crop's share of the image
            assert s.mask[8:120, 8:120].any(), (category, defect, severity)
    good = render_sample(category, 3, "test", 0, "good", size=128)
    np.testing.assert_array_equal(good.image, good.clean)
    assert not good.mask.any()


def _change(s) -> float:
    """How much the defect changes the image: the summed absolute change (0..255 per pixel)."""
    return float(np.abs(s.image.astype(int) - s.clean.astype(int)).max(axis=-1).sum())


@pytest.mark.parametrize("category", CLASS_NAMES)
def test_severity_makes_defects_more_visible_and_sizes_span_a_wide_range(category):
    areas = []
    for defect in DEFECT_TYPES[category]:
        faint = [render_sample(category, 0, "test", i, defect, 0.0, size=96) for i in range(3)]
        strong = [render_sample(category, 0, "test", i, defect, 1.0, size=96) for i in range(3)]
        areas += [s.mask.mean() for s in faint + strong]
        # same image index, same random draws: only the severity differs (it sets the contrast of
        # surface defects and the extent of missing, broken and misplaced parts)
        assert np.mean([_change(s) for s in strong]) > np.mean([_change(s) for s in faint]), defect
    # sizes from tiny (under 0.3 % of the image) to large (several times that)
    assert min(areas) < 0.003 and max(areas) > 5 * min(areas), category


def test_normal_images_vary():
    for cat in CLASS_NAMES:
        a, b = (render_sample(cat, 0, "train", i, size=64).image.astype(int) for i in (0, 1))
        assert np.abs(a - b).mean() > 1.0, cat  # nuisance variation: position, lighting, crop


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, small_set):
    again = make_synthetic(tmp_path / "again", seed=0, **SMALL)
    assert _files(again) == _files(small_set)
    other = _files(make_synthetic(tmp_path / "other", seed=1, **SMALL))
    first = _files(small_set)
    assert other.keys() == first.keys()
    pngs = [k for k in first if k.endswith(".png") and "ground_truth" not in k]
    assert all(other[k] != first[k] for k in pngs)


def test_subset_of_classes_gives_the_same_images(tmp_path, small_set):
    only = make_synthetic(tmp_path / "washer", seed=0, categories=["washer"], **SMALL)
    assert list_categories(only) == ["washer"]
    assert json.loads((only / "dataset.json").read_text())["textures"] == []
    sub = {k: v for k, v in _files(only).items() if k.startswith("washer/")}
    full = {k: v for k, v in _files(small_set).items() if k.startswith("washer/")}
    assert sub == full


def test_idempotent_and_regenerates_when_needed(tmp_path):
    out = tmp_path / "set"
    params = dict(seed=0, n_train=2, n_test_good=1, n_test_defect=4, size=48, categories=["brick"])
    make_synthetic(out, **params)
    probe = out / "brick" / "train" / "good" / "000.png"
    stamp = probe.stat().st_mtime_ns
    make_synthetic(out, **params)
    assert probe.stat().st_mtime_ns == stamp  # nothing rewritten
    (out / "brick" / "test" / "hole" / "000.png").unlink()  # incomplete -> made again
    make_synthetic(out, **params)
    assert (out / "brick" / "test" / "hole" / "000.png").is_file()
    make_synthetic(out, **{**params, "seed": 5})  # other parameters -> replaced
    assert json.loads((out / "dataset.json").read_text())["seed"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folders left


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = writer.render_sample

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "render_sample", flaky)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic(
            tmp_path / "set", n_train=5, n_test_good=1, n_test_defect=1, size=48, categories=["chip"]
        )
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_other_folders(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(PadimError, match="not a synthetic data set"):
        make_synthetic(out, **SMALL)
    assert (out / "thesis.tex").read_text() == "precious"


def test_bad_arguments(tmp_path):
    with pytest.raises(PadimError, match="valid classes: brick, gravel, grass, tissue, washer, tablet, chip, board"):
        make_synthetic(tmp_path / "x", categories=["bricks"])
    with pytest.raises(PadimError, match="n_train"):
        make_synthetic(tmp_path / "x", n_train=0)
    with pytest.raises(PadimError, match="size"):
        make_synthetic(tmp_path / "x", size=8)
    with pytest.raises(PadimError, match="defect type"):
        render_sample("washer", 0, "test", 0, "hole")
    assert not (tmp_path / "x").exists()


def test_cli_passes_its_options_through(tmp_path, monkeypatch, capsys):
    from padim_lib import cli

    seen = {}

    def fake(out, **kwargs):
        seen.update(out=out, **kwargs)
        return make_synthetic(out, **{**kwargs, "categories": ["gravel"], **SMALL})

    monkeypatch.setattr(synthetic, "make_synthetic", fake)
    assert cli.main(["synth", "--out", str(tmp_path / "s"), "--seed", "1"]) == 0
    assert seen == {
        "out": str(tmp_path / "s"),
        "seed": 1,
        "n_train": 60,
        "n_test_good": 10,
        "n_test_defect": 20,
        "size": 256,
        "categories": None,
    }
    assert "ready" in capsys.readouterr().out


def test_cli_generates_a_set_in_a_subprocess(tmp_path):
    out = tmp_path / "synthetic"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "padim_lib", "synth", "--out", str(out), "--seed", "1", "--n-train", "4"]
    cmd += ["--n-test-good", "2", "--n-test-defect", "4", "--size", "96", "--categories", "washer", "brick"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["seed"] == 1 and meta["n_train"] == 4 and meta["size"] == 96
    assert list_categories(out) == ["brick", "washer"]
    for cat in ("brick", "washer"):
        test = AnomalyFolder(out, cat, "test", masks="require")
        assert len(AnomalyFolder(out, cat, "train")) == 4
        assert (test.labels == 0).sum() == 2 and (test.labels == 1).sum() == 4
    with Image.open(out / "washer" / "test" / "good" / "000.png") as img:
        assert img.size == (96, 96) and img.mode == "RGB"


def test_describe_tables(small_set):
    table = describe_synthetic(small_set)
    assert sorted(table.index) == sorted(CLASS_NAMES)
    assert (table["train"] == 3).all() and (table["test good"] == 2).all() and (table["test defective"] == 5).all()
    for cat in CLASS_NAMES:
        assert table.loc[cat, "kind"] == ("texture" if cat in synthetic.TEXTURE_CLASSES else "object")
        assert table.loc[cat, "defect types"] == ", ".join(sorted(DEFECT_TYPES[cat]))
        assert 0 < table.loc[cat, "mask % min"] <= table.loc[cat, "mask % median"] <= table.loc[cat, "mask % max"]
    areas = mask_areas(small_set)
    assert len(areas) == 5 * len(CLASS_NAMES) and areas["area"].between(0, 1, inclusive="neither").all()
    one = areas.iloc[0]
    mask = np.asarray(Image.open(one["mask_path"])) > 0
    assert one["area"] == pytest.approx(mask.mean())
    examples = example_images(small_set, per_class=3)
    assert (examples.groupby("class").size() == 4).all()  # one good + three defective
    assert examples.loc[examples["defect_type"] == "good", "mask_path"].isna().all()
    defective = examples[examples["defect_type"] != "good"]
    assert defective.groupby("class")["defect_type"].nunique().eq(3).all()  # three different types


def test_examples_figure(small_set):
    import matplotlib

    matplotlib.use("Agg")
    from padim_lib.report import plots

    fig = plots.examples_figure(example_images(small_set, per_class=2))
    assert len([ax for ax in fig.axes if ax.images]) == 3 * len(CLASS_NAMES)
    ax = plots.mask_area_figure(mask_areas(small_set))
    assert ax.get_yscale() == "log"
