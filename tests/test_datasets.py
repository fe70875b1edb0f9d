"""Preprocessing, the MVTec-AD-like folder reader, its layout checks, and the MVTec AD helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from padim_lib.datasets import (
    CLASSES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OBJECTS,
    SPLIT_COUNTS,
    TEXTURES,
    AnomalyFolder,
    MVTecAD,
    Preprocess,
    category_kinds,
    check_split_counts,
    denormalize,
    list_categories,
    open_dataset,
)
from padim_lib.errors import PadimError


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _tree(
    root: Path,
    category: str = "widget",
    n_train: int = 3,
    test: dict[str, int] | None = None,
    masks: bool = True,
    size: int = 32,
) -> Path:
    """Write a small MVTec-like class folder with random images; defect masks are one square."""
    rng = np.random.default_rng(0)
    test = {"good": 2, "crack": 2} if test is None else test
    cat = root / category
    for i in range(n_train):
        _png(cat / "train" / "good" / f"{i:03d}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    for t, n in test.items():
        for i in range(n):
            _png(cat / "test" / t / f"{i:03d}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            if masks and t != "good":
                m = np.zeros((size, size), np.uint8)
                m[4:12, 4:12] = 255
                _png(cat / "ground_truth" / t / f"{i:03d}_mask.png", m)
    return root


# ---------------------------------------------------------------------------------------------
# Preprocess
# ---------------------------------------------------------------------------------------------
def test_preprocess_matches_plain_pil_reference():
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    x = Preprocess().image(img)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    ref = np.asarray(img.resize((256, 256), Image.BICUBIC).crop((16, 16, 240, 240)), np.float32) / 255
    ref = (ref - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), ref, atol=1e-5)


def test_preprocess_without_crop_or_normalisation():
    img = Image.fromarray(np.full((40, 60, 3), 200, np.uint8))
    pre = Preprocess(resize=64, crop=None, normalize=False)
    x = pre.image(img)
    assert pre.size == 64 and x.shape == (3, 64, 64)
    torch.testing.assert_close(x, torch.full((3, 64, 64), 200 / 255))
    assert pre.mask(None).shape == (64, 64)


def test_preprocess_key_and_validation():
    assert Preprocess().key() == "r256-c224-n1"
    assert Preprocess(resize=256, crop=None, normalize=False).key() == "r256-c0-n0"
    assert Preprocess().key() != Preprocess(crop=200).key()
    with pytest.raises(PadimError, match="crop"):
        Preprocess(resize=128, crop=224)
    with pytest.raises(PadimError, match="resize"):
        Preprocess(resize=0)
    with pytest.raises(PadimError, match="crop"):
        Preprocess(crop=2.5)
    pre = Preprocess(resize=np.int64(64), crop=np.int32(56))  # e.g. read from a result table
    assert type(pre.resize) is int and type(pre.crop) is int and pre == Preprocess(64, 56)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_non_rgb_images_become_rgb(mode):
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    if mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)  # full 16-bit range
    else:
        img = Image.fromarray(grey).convert(mode)
    x = Preprocess(resize=20, crop=None, normalize=False).image(img)
    assert x.shape == (3, 20, 20)
    if mode != "P":  # a palette may quantise; the others keep grey values exactly
        torch.testing.assert_close(x[0], torch.from_numpy(grey / 255).float(), atol=1 / 255, rtol=0)
        torch.testing.assert_close(x[0], x[2])


def test_mask_binarisation():
    pre = Preprocess(resize=8, crop=None)
    soft = np.array([[0, 10, 127, 128, 200, 255, 0, 0]] * 8, np.uint8)  # anti-aliased 0/255 mask
    np.testing.assert_array_equal(pre.mask(Image.fromarray(soft))[0].numpy(), [0, 0, 0, 1, 1, 1, 0, 0])
    zero_one = np.zeros((8, 8), np.uint8)
    zero_one[2:4, 2:4] = 1  # hand-made 0/1 masks are common
    m = pre.mask(Image.fromarray(zero_one))
    assert m.dtype == torch.uint8 and int(m.sum()) == 4
    m = pre.mask(Image.fromarray(np.full((8, 8, 3), 255, np.uint8)))  # RGB mask
    assert set(m.unique().tolist()) == {1}


def test_mask_stays_aligned_with_image(tmp_path):
    # a 512 px image with a bright square exactly where its mask is: after 512 -> 256 -> crop 224
    # the square must sit at rows/cols (128/2 - 16) .. (256/2 - 16) etc.
    img = np.zeros((512, 512, 3), np.uint8)
    img[128:256, 256:384] = 255
    mask = (img[..., 0] > 0).astype(np.uint8) * 255
    root = tmp_path / "data"
    _tree(root, test={"good": 1, "blob": 1}, size=512)
    _png(root / "widget" / "test" / "blob" / "000.png", img)
    _png(root / "widget" / "ground_truth" / "blob" / "000_mask.png", mask)
    ds = AnomalyFolder(root, "widget", "test")
    item = ds[1]
    assert item["label"] == 1 and item["defect_type"] == "blob"
    expected = torch.zeros((224, 224), dtype=torch.uint8)
    expected[48:112, 112:176] = 1
    torch.testing.assert_close(item["mask"], expected)
    bright = denormalize(item["image"]).mean(0) > 0.5
    # bicubic smears the edge by about one pixel; the interior and the exterior must agree
    inner = torch.zeros_like(bright)
    inner[50:110, 114:174] = True
    outer = torch.zeros_like(bright)
    outer[47:113, 111:177] = True
    assert bool(bright[inner].all()) and not bool(bright[~outer].any())


def test_denormalize_inverts_normalisation():
    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    raw = Preprocess(resize=16, crop=None, normalize=False).image(img)
    norm = Preprocess(resize=16, crop=None).image(img)
    torch.testing.assert_close(denormalize(norm), raw, atol=1e-6, rtol=0)
    torch.testing.assert_close(denormalize(norm[None])[0], raw, atol=1e-6, rtol=0)
    with pytest.raises(PadimError, match="3, H, W"):
        denormalize(torch.zeros(4, 16, 16))


# ---------------------------------------------------------------------------------------------
# AnomalyFolder: items, order, masks
# ---------------------------------------------------------------------------------------------
def test_items_in_deterministic_order(tmp_path):
    root = _tree(tmp_path, test={"scratch": 2, "good": 2, "bent": 1})
    # natural order of file names: 2 before 10
    for name in ("2.png", "10.png"):
        _png(root / "widget" / "test" / "bent" / name, np.zeros((32, 32, 3), np.uint8))
        m = np.zeros((32, 32), np.uint8)
        m[0, 0] = 255
        _png(root / "widget" / "ground_truth" / "bent" / name.replace(".png", "_mask.png"), m)
    (root / "widget" / "test" / "bent" / ".hidden.png").write_bytes(b"")  # ignored
    (root / "widget" / "test" / "bent" / "notes.txt").write_text("ignored")
    ds = AnomalyFolder(root, "widget", "test")
    names = [(t, Path(p).name) for t, p in zip(ds.defect_types, ds.paths, strict=True)]
    assert names == [
        ("good", "000.png"),
        ("good", "001.png"),
        ("bent", "000.png"),
        ("bent", "2.png"),
        ("bent", "10.png"),
        ("scratch", "000.png"),
        ("scratch", "001.png"),
    ]
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1, 1, 1, 1])
    assert ds.labels.dtype == np.int64
    assert ds.items == AnomalyFolder(root, "widget", "test").items
    assert all(it.mask_path is None for it in ds.items[:2])
    assert ds.items[3].mask_path.endswith("ground_truth/bent/2_mask.png")


def test_items_content_and_batching(tmp_path):
    root = _tree(tmp_path)
    pre = Preprocess(resize=32, crop=24)
    train = AnomalyFolder(root, "widget", "train", pre)
    assert len(train) == 3 and train.labels.sum() == 0
    test = AnomalyFolder(root, "widget", "test", pre)
    assert test.has_masks
    good, bad = test[0], test[2]
    assert good["image"].shape == (3, 24, 24) and good["mask"].sum() == 0 and good["label"] == 0
    assert bad["mask"].sum() > 0 and bad["label"] == 1 and bad["defect_type"] == "crack"
    batch = next(iter(torch.utils.data.DataLoader(test, batch_size=4)))
    assert batch["image"].shape == (4, 3, 24, 24) and batch["mask"].shape == (4, 24, 24)
    assert batch["label"].tolist() == [0, 0, 1, 1]


def test_without_ground_truth_is_image_level_only(tmp_path):
    root = _tree(tmp_path, masks=False)
    ds = AnomalyFolder(root, "widget", "test")
    assert not ds.has_masks
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert all(it.mask_path is None for it in ds.items)
    assert int(ds[3]["mask"].sum()) == 0
    with pytest.raises(FileNotFoundError, match="ground_truth"):
        AnomalyFolder(root, "widget", "test", masks="require")
    assert len(AnomalyFolder(root, "widget", "train", masks="require")) == 3  # train needs no masks


# ---------------------------------------------------------------------------------------------
# AnomalyFolder: layout errors name the path
# ---------------------------------------------------------------------------------------------
def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        AnomalyFolder(tmp_path / "nope", "widget")


def test_missing_category_lists_available(tmp_path):
    _tree(tmp_path, "alpha")
    _tree(tmp_path, "beta")
    with pytest.raises(FileNotFoundError, match="available: alpha, beta"):
        AnomalyFolder(tmp_path, "gamma")


def test_root_that_is_a_class_folder_gets_a_hint(tmp_path):
    _tree(tmp_path, "widget")
    with pytest.raises(FileNotFoundError, match="pass its parent"):
        AnomalyFolder(tmp_path / "widget", "widget")


def test_class_folder_without_train_good(tmp_path):
    (tmp_path / "widget" / "training" / "ok").mkdir(parents=True)
    with pytest.raises(PadimError, match=r"train/good is missing \(found: training\)"):
        AnomalyFolder(tmp_path, "widget")


def test_empty_train_split(tmp_path):
    _tree(tmp_path, n_train=0)
    (tmp_path / "widget" / "train" / "good").mkdir(parents=True, exist_ok=True)
    with pytest.raises(PadimError, match=str(tmp_path / "widget" / "train" / "good")):
        AnomalyFolder(tmp_path, "widget", "train")


def test_empty_test_type_and_missing_test(tmp_path):
    _tree(tmp_path)
    (tmp_path / "widget" / "test" / "dent").mkdir()
    with pytest.raises(PadimError, match=str(tmp_path / "widget" / "test" / "dent")):
        AnomalyFolder(tmp_path, "widget", "test")
    _tree(tmp_path / "b", test={})
    with pytest.raises(PadimError, match="no test/ folder"):
        AnomalyFolder(tmp_path / "b", "widget", "test")


def test_defective_image_without_mask(tmp_path):
    _tree(tmp_path)
    (tmp_path / "widget" / "ground_truth" / "crack" / "001_mask.png").unlink()
    image = tmp_path / "widget" / "test" / "crack" / "001.png"
    expected = tmp_path / "widget" / "ground_truth" / "crack" / "001_mask.png"
    with pytest.raises(FileNotFoundError) as err:
        AnomalyFolder(tmp_path, "widget", "test")
    assert str(image) in str(err.value) and str(expected) in str(err.value)


def test_mask_size_mismatch_names_both_files(tmp_path):
    _tree(tmp_path)
    mask = _png(tmp_path / "widget" / "ground_truth" / "crack" / "000_mask.png", np.zeros((16, 16), np.uint8))
    image = tmp_path / "widget" / "test" / "crack" / "000.png"
    ds = AnomalyFolder(tmp_path, "widget", "test")  # sizes are checked lazily
    for call in (lambda: ds[2], ds.verify):
        with pytest.raises(PadimError) as err:
            call()
        assert str(mask) in str(err.value) and str(image) in str(err.value)
    ds[3]  # the other items are fine


@pytest.mark.parametrize("content", [b"not an image at all", "truncated"])
def test_corrupt_image_names_the_file(tmp_path, content):
    _tree(tmp_path)
    bad = tmp_path / "widget" / "train" / "good" / "001.png"
    if content == "truncated":
        content = bad.read_bytes()[:200]
    bad.write_bytes(content)
    ds = AnomalyFolder(tmp_path, "widget", "train")
    ds[0]
    with pytest.raises(PadimError, match=str(bad)):
        ds[1]


def test_bad_arguments(tmp_path):
    _tree(tmp_path)
    with pytest.raises(PadimError, match="split"):
        AnomalyFolder(tmp_path, "widget", "val")
    with pytest.raises(PadimError, match="masks"):
        AnomalyFolder(tmp_path, "widget", "test", masks="maybe")
    with pytest.raises(PadimError, match="plain folder name"):
        AnomalyFolder(tmp_path, "../widget")


def test_other_image_extensions(tmp_path):
    _tree(tmp_path, n_train=1)
    rgb = np.zeros((32, 32, 3), np.uint8)
    for ext in (".jpg", ".JPEG", ".bmp", ".tif", ".tiff"):
        _png(tmp_path / "widget" / "train" / "good" / f"x{ext}", rgb)
    ds = AnomalyFolder(tmp_path, "widget", "train", Preprocess(resize=32, crop=None))
    assert len(ds) == 6
    assert all(ds[i]["image"].shape == (3, 32, 32) for i in range(len(ds)))


# ---------------------------------------------------------------------------------------------
# categories, kinds, open_dataset
# ---------------------------------------------------------------------------------------------
def test_list_categories_and_kinds(tmp_path):
    for c in ("zeta", "carpet", "bottle"):
        _tree(tmp_path, c, n_train=1, test={"good": 1})
    (tmp_path / "notes").mkdir()  # not a class: no train/good
    assert list_categories(tmp_path) == ["bottle", "carpet", "zeta"]
    assert category_kinds(tmp_path) == {"bottle": "object", "carpet": "texture", "zeta": "other"}
    (tmp_path / "dataset.json").write_text(json.dumps({"textures": ["zeta"], "objects": ["carpet"]}))
    assert category_kinds(tmp_path) == {"bottle": "other", "carpet": "object", "zeta": "texture"}
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(PadimError, match="dataset.json"):
        category_kinds(tmp_path)
    with pytest.raises(FileNotFoundError):
        list_categories(tmp_path / "missing")


def test_open_dataset_picks_the_reader(tmp_path):
    _tree(tmp_path, "bottle")
    _tree(tmp_path, "widget")
    assert type(open_dataset(tmp_path, "bottle", "test")) is MVTecAD
    assert type(open_dataset(tmp_path, "widget", "test")) is AnomalyFolder
    (tmp_path / "dataset.json").write_text("{}")  # a custom set that reuses an MVTec name
    assert type(open_dataset(tmp_path, "bottle", "test")) is AnomalyFolder


# ---------------------------------------------------------------------------------------------
# MVTec AD
# ---------------------------------------------------------------------------------------------
def test_mvtec_constants():
    assert len(CLASSES) == 15 and set(TEXTURES).isdisjoint(OBJECTS)
    assert set(SPLIT_COUNTS) == set(CLASSES)
    totals = np.array(list(SPLIT_COUNTS.values())).sum(0)
    assert totals.tolist() == [3629, 467, 1258]


def test_mvtec_class_and_masks_required(tmp_path):
    _tree(tmp_path, "bottle", masks=False)
    with pytest.raises(PadimError, match="valid classes: carpet, grid"):
        MVTecAD(tmp_path, "bottel")
    assert len(MVTecAD(tmp_path, "bottle", "train")) == 3
    with pytest.raises(FileNotFoundError, match="ground_truth"):
        MVTecAD(tmp_path, "bottle", "test")


def test_check_split_counts(tmp_path):
    n_train, n_good, n_bad = SPLIT_COUNTS["toothbrush"]
    cat = tmp_path / "toothbrush"
    for folder, n in (("train/good", n_train), ("test/good", n_good), ("test/defective", n_bad)):
        (cat / folder).mkdir(parents=True)
        for i in range(n):  # the check lists files only: empty files will do
            (cat / folder / f"{i:03d}.png").write_bytes(b"")
    (cat / "ground_truth" / "defective").mkdir(parents=True)
    for i in range(n_bad):
        (cat / "ground_truth" / "defective" / f"{i:03d}_mask.png").write_bytes(b"")
    assert check_split_counts(tmp_path, ["toothbrush"]) == []
    (cat / "train" / "good" / "000.png").unlink()
    (cat / "ground_truth" / "defective" / "005_mask.png").unlink()
    problems = check_split_counts(tmp_path, ["toothbrush", "grid"])
    assert problems[0] == f"toothbrush: {n_train - 1} train good images, expected {n_train}"
    assert "without a mask" in problems[1] and "005.png" in problems[1]
    assert problems[2].startswith("grid: class folder") and len(problems) == 3
    assert len(check_split_counts(tmp_path)) == 14 + 2  # 14 classes missing, toothbrush's 2 problems
    with pytest.raises(PadimError, match="valid classes"):
        check_split_counts(tmp_path, ["toothbrushes"])
