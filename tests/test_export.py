"""`padim export --onnx`: the ONNX graph, run by onnxruntime, gives predict's maps and scores; a
method that cannot export says so in one line (exit 2) and writes nothing."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from padim_lib.cli import main
from padim_lib.datasets import Preprocess, make_synthetic, open_dataset
from padim_lib.engine.export import to_onnx
from padim_lib.errors import PadimError
from padim_lib.features.extractor import align_concat
from padim_lib.methods.padim.detector import PaDiM
from padim_lib.methods.padim.export import nearest_index
from padim_lib.methods.spade.detector import SPADE
from padim_lib.methods.vae.detector import VAE

CATEGORY = "chip"
PRE = Preprocess(resize=64, crop=64)
# float32 end to end: the graph and predict add the same terms in other orders (and the backbone's
# convolutions run in other kernels), so the maps agree to float32 rounding of their own scale.
RELATIVE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    make_synthetic(root, seed=0, n_train=6, n_test_good=2, n_test_defect=3, size=64, categories=[CATEGORY])
    return root


@pytest.fixture(scope="module")
def test_images(data_root):
    test = open_dataset(data_root, CATEGORY, "test", PRE)
    return torch.stack([test[i]["image"] for i in range(len(test))])  # (5, 3, 64, 64)


def run_onnx(data: bytes, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    maps, scores = session.run(["maps", "scores"], {"images": images.numpy()})
    return maps, scores


def differences(model, data: bytes, images: torch.Tensor, record_property, name: str) -> tuple[float, float]:
    """Max abs differences (maps, scores) between onnxruntime and predict, printed and recorded."""
    maps, scores = run_onnx(data, images)
    ref_maps, ref_scores = model.predict(images)
    assert maps.shape == ref_maps.shape == (len(images), 64, 64) and scores.shape == (len(images),)
    d_maps, d_scores = float(np.abs(maps - ref_maps).max()), float(np.abs(scores - ref_scores).max())
    scale = float(np.abs(ref_maps).max())
    print(f"{name}: max |onnx - predict| maps {d_maps:.3g}, scores {d_scores:.3g} (maps up to {scale:.3g})")
    record_property(f"{name}_max_abs_diff_maps", d_maps)
    record_property(f"{name}_max_abs_diff_scores", d_scores)
    assert d_maps <= RELATIVE_TOLERANCE * scale and d_scores <= RELATIVE_TOLERANCE * scale
    # the maps are not flat: the comparison sees the detector's structure, not a constant
    assert float(ref_maps.std()) > 1e-3 * scale
    return d_maps, d_scores


def test_cli_export_runs_in_onnxruntime_with_predicts_numbers(data_root, test_images, tmp_path, capsys,
                                                              record_property):
    """The user's path: a model file (shipped Lite0 weights, so the file's backbone is the one
    predict uses) exported by `padim export`, run on a batch of another size than the traced one."""
    model_file, out = tmp_path / "chip.pt", tmp_path / "onnx" / "chip.onnx"
    fitted = PaDiM(reduce="random:24", device="cpu", batch_size=8, progress=False)
    fitted.fit(open_dataset(data_root, CATEGORY, "train", PRE))
    fitted.meta = {"preprocess": {"resize": 64, "crop": 64, "normalize": True}, "category": CATEGORY}
    fitted.save(model_file)
    assert main(["export", str(model_file), "--onnx", str(out)]) == 0
    assert "(N, 3, 64, 64) float32" in capsys.readouterr().out
    data = out.read_bytes()
    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    assert props["method"] == "padim" and json.loads(props["preprocess"])["crop"] == 64
    differences(PaDiM.load(model_file, device="cpu"), data, test_images, record_property, "concat_random24")


def test_sum_mode_and_pca_export_match_predict(data_root, test_images, record_property):
    """Random backbone weights (asked for explicitly): one model per layer ("sum": three grids, three
    pairs of map operators) on PCA-projected embeddings."""
    torch.manual_seed(0)
    model = PaDiM(layer_mode="sum", reduce="pca:6", pretrained=False, device="cpu", batch_size=8, progress=False)
    model.fit(open_dataset(data_root, CATEGORY, "train", PRE))
    differences(model, to_onnx(model).data, test_images[:1], record_property, "sum_pca6")


def test_gathers_equal_the_alignment_for_any_grid_ratio():
    """The exported alignment (two constant gathers) equals align_concat's nearest-exact resize,
    also for grids that do not divide (16 from 5, 6 from 4)."""
    fine, coarse = torch.randn(2, 3, 16, 6), torch.randn(2, 4, 5, 4)
    gathered = coarse.index_select(2, nearest_index(5, 16)).index_select(3, nearest_index(4, 6))
    torch.testing.assert_close(torch.cat([fine, gathered], 1), align_concat([fine, coarse]), rtol=0, atol=0)


def test_spade_export_is_one_line_exit_2_and_writes_nothing(data_root, tmp_path, capsys):
    model_file, out = tmp_path / "spade.pt", tmp_path / "new" / "spade.onnx"
    spade = SPADE(backbone="efficientnet_lite0", k=2, n_gallery=2, device="cpu", progress=False)
    spade.fit(open_dataset(data_root, CATEGORY, "train", PRE))
    spade.save(model_file)
    capsys.readouterr()
    assert main(["export", str(model_file), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["padim export: error: method 'spade' cannot export to ONNX"]
    assert not out.parent.exists()


def test_vae_cannot_export():
    with pytest.raises(PadimError, match=r"^method 'vae' cannot export to ONNX$"):
        to_onnx(VAE())
