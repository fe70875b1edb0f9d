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

from padim_lib.datasets.preprocess import Preprocess
from padim_lib.errors import PadimError
from padim_lib.features.extractor import load_backbone
from padim_lib.methods.registry import build_detector, get_method
from padim_lib.methods.vae.augment import PaperAugment
from padim_lib.methods.vae.checkpoint import CHECKPOINT_NAME
from padim_lib.methods.vae.detector import VAE
from padim_lib.methods.vae.net import VAENet, error_map, vae_loss

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
    net = VAENet(load_backbone("resnet18", pretrained=False), latent_channels=8).eval()
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
    net = VAENet(load_backbone("resnet18", pretrained=False), latent_channels=8).train()
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
    assert est.training_preprocess(Preprocess()) == Preprocess(resize=292, crop=None)  # whole images for the augmentation
    with pytest.raises(PadimError, match="backbone='efficientnet_lite0'.*resnet18"):
        build_detector(_config(backbone="efficientnet_lite0"))
    with pytest.raises(PadimError, match="unknown parameter"):
        build_detector(_config(params={"k": 3}))


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
        seen.append({"paths": list(X.paths), "first": X[0]["image"].clone(), "pre": self.training_preprocess(
            Preprocess(resize=72, crop=64))})
        raise _Stop

    monkeypatch.setattr(VAE, "fit", record)
    params = {"epochs": 1, "images_per_epoch": 4, "image_size": 64, "batch_size": 2}
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
    # whole images at the augmentation's first size, not the 64-px centre crop the test images get
    assert tuple(cli["first"].shape[-2:]) == (book["pre"].resize,) * 2 != (64, 64)
