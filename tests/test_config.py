"""ExperimentConfig: validation, round trips, and a key that changes exactly when numbers can."""

from __future__ import annotations

import json

import pytest

import padim_lib
from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.features.backbones import BACKBONES
from padim_lib.io import digest

# Another value for every field that changes numbers.
CHANGES = {
    "backbone": "resnet18",
    "layers": ("_blocks.2",),
    "layer_mode": "sum",
    "reduce": "pca:50",
    "eps": 0.1,
    "sigma": 2.0,
    "resize": 300,
    "crop": None,
    "max_train": 10,
    "pretrained": False,
}


def test_key_is_deterministic_hex():
    a, b = ExperimentConfig(), ExperimentConfig()
    assert a.key() == b.key()
    assert len(a.key()) == 16 and int(a.key(), 16) >= 0


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_numeric_field_changes_the_key(field):
    base = ExperimentConfig()
    assert base.replace(**{field: CHANGES[field]}).key() != base.key()


def test_display_fields_do_not_change_the_key():
    base = ExperimentConfig()
    assert base.replace(label="PaDiM-R18", published_row="all (448)").key() == base.key()


def test_seed_matters_only_for_random_projection():
    pca = ExperimentConfig(reduce="pca:50")
    assert pca.replace(seed=3).key() == pca.key()
    assert not pca.uses_seed()
    rd = ExperimentConfig(reduce="random:50")
    assert rd.uses_seed() and rd.replace(seed=3).key() != rd.key()


def test_default_layers_resolve_to_the_same_key():
    explicit = ExperimentConfig(layers=BACKBONES["efficientnet_lite0"].default_layers)
    assert explicit.key() == ExperimentConfig().key()
    assert ExperimentConfig(eps=1).key() == ExperimentConfig(eps=1.0).key()


def test_key_includes_code_versions(monkeypatch):
    before = ExperimentConfig().key()
    monkeypatch.setattr(padim_lib, "__version__", "9.9.9")
    assert ExperimentConfig().key() != before
    monkeypatch.undo()
    monkeypatch.setattr(digest, "_package_version", lambda name: "0.0-test" if name == "torch" else "x")
    assert ExperimentConfig().key() != before


def test_weights_file_is_keyed_by_content(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights-1")
    b.write_bytes(b"weights-1")
    ka, kb = ExperimentConfig(weights=str(a)).key(), ExperimentConfig(weights=str(b)).key()
    assert ka == kb
    b.write_bytes(b"weights-2")
    assert ExperimentConfig(weights=str(b)).key() != ka


def test_round_trip_through_json():
    cfg = ExperimentConfig(backbone="resnet18", layers=("layer1", "layer3"), reduce="random:100", seed=4,
                           crop=None, label="Rd 100", published_row="Rd 100")
    d = json.loads(json.dumps(cfg.to_dict()))
    back = ExperimentConfig.from_dict(d)
    assert back == cfg and back.key() == cfg.key()
    assert isinstance(back.layers, tuple)


def test_from_dict_names_unknown_fields():
    with pytest.raises(PadimError, match=r"\['colour', 'sigmaa'\]"):
        ExperimentConfig.from_dict({"sigmaa": 4.0, "colour": "red"})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reduce": "random"}, "reduce"),
        ({"reduce": "svd:10"}, "reduce"),
        ({"layer_mode": "mean"}, "layer_mode"),
        ({"crop": 300}, "crop"),
        ({"resize": 0}, "resize"),
        ({"seed": -1}, "seed"),
        ({"eps": 0}, "eps"),
        ({"layers": "layer1"}, "layers"),
        ({"layer_mode": "sum", "reduce": "pca:30"}, "reduce"),  # 30 > the 24 channels of _blocks.2
        ({"method": "no-such-method"}, "method"),
        ({"pretrained": False, "weights": "w.pt"}, "weights"),
    ],
)
def test_bad_values_are_named(kwargs, match):
    with pytest.raises(PadimError, match=match):
        ExperimentConfig(**kwargs)


def test_none_spellings_of_reduce():
    assert ExperimentConfig(reduce="none").reduce is None
    assert ExperimentConfig(reduce="none").key() == ExperimentConfig().key()
