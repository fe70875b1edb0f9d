"""padim_lib.paper.complexity: the memory formula against real fitted tensors, the timing helper's structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from padim_lib.engine.config import ExperimentConfig
from padim_lib.errors import PadimError
from padim_lib.paper import complexity


def test_time_call_warms_up_then_times_each_repeat():
    calls = []
    t = complexity.time_call(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7 and len(t.values) == 5
    assert t.min <= t.median <= t.max and t.min == min(t.values) and t.max == max(t.values)
    synced = []
    complexity.time_call(lambda: None, warmup=0, repeats=3, sync=lambda: synced.append(1))
    assert len(synced) == 6  # before and after every timed call
    with pytest.raises(PadimError, match="repeats=0"):
        complexity.time_call(lambda: None, repeats=0)
    with pytest.raises(PadimError, match="warmup=-1"):
        complexity.time_call(lambda: None, warmup=-1)


def test_state_bytes_counts_fitted_tensors_once_and_skips_the_backbone():
    class Est:
        pass

    est = Est()
    shared = torch.zeros(10, dtype=torch.float32)
    est.mean_ = shared
    est.again_ = [shared, np.zeros(3, np.float64)]  # the same tensor twice counts once
    est.net_ = nn.Linear(4, 2)  # 8 weights + 2 biases
    est._extractor_ = nn.Linear(100, 100)  # the frozen backbone: not the model's state
    est.k = torch.zeros(1000)  # a parameter, not fitted state
    assert complexity.state_bytes(est) == 40 + 24 + 40


def test_padim_memory_formula_equals_the_fitted_models_tensors():
    config = ExperimentConfig(method="padim", backbone="efficientnet_lite0", reduce="random:8", pretrained=False)
    from padim_lib.methods.registry import build_detector

    det = build_detector(config, device="cpu").set_params(progress=False).fit(complexity.random_images(3, 64))
    positions, d = det.gaussian_shape()
    assert positions == 16 * 16 and d == 8  # Lite0's first default layer has stride 4
    assert complexity.state_bytes(det) == complexity.padim_bytes(positions, 8)
    terms = det.memory_terms()  # what the paper counts: the CNN, and the Gaussians
    assert terms["statistics"] == complexity.padim_bytes(positions, 8)
    assert terms["network"] == sum(t.numel() * 4 for t in det._extractor().parameters()) + sum(
        t.numel() * t.element_size() for t in det._extractor().buffers())
    assert complexity.padim_bytes(3136, 550) == pytest.approx(3.8e9, rel=0.01)  # the paper's 3.8 GB for WR50-Rd550


def test_measure_and_scaling_report_medians_spreads_and_the_expected_memory():
    config = ExperimentConfig(method="padim", backbone="efficientnet_lite0", reduce="random:4", pretrained=False)
    frame = complexity.scaling(config, "d", [4, 8], n_train=3, n_test=2, image_size=64, warmup=0, repeats=2)
    assert list(frame["d"]) == [4, 8]
    for q in ("fit_s", "predict_s"):
        assert (frame[f"{q}_min"] <= frame[q]).all() and (frame[q] <= frame[f"{q}_max"]).all()
    assert np.allclose(frame["memory_mb"], frame["expected_mb"])
    with pytest.raises(PadimError, match="factor='size'"):
        complexity.scaling(config, "size", [1], n_train=2, n_test=1, image_size=64)
    info = complexity.hardware("cpu")
    assert "CPU" in info and "torch threads" in info


def test_scaling_figure_draws_the_law_through_the_largest_time_and_in_bytes_for_memory():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from padim_lib.report import comparison_plots

    frame = pd.DataFrame({"d": [10, 20, 40], "n_train": [5, 5, 5], "fit_s": [1.0, 1.2, 2.0], "predict_s": [0.1, 0.1, 0.2],
                          "memory_mb": [1.0, 3.5, 13.0], "expected_mb": [1.1, 4.2, 16.4]})
    fig = comparison_plots.scaling_figure(frame, "d")
    fit_ax, _, mem_ax = fig.axes
    law = [line for line in fit_ax.get_lines() if line.get_linestyle() == "--"][0]
    assert law.get_ydata()[-1] == pytest.approx(2.0)  # anchored at the largest measurement
    mem_law = [line for line in mem_ax.get_lines() if line.get_linestyle() == "--"][0]
    assert list(mem_law.get_ydata()) == [1.1, 4.2, 16.4]  # absolute bytes, not rescaled
    matplotlib.pyplot.close(fig)


def test_memory_law_against_every_published_padim_memory_figure():
    """The paper's PaDiM memory figures (0.17, 3.8, 5.2 and STC's 0.21 GB) against the law for its models:
    56 x 56 (MVTec AD, 224 crop) or 64 x 64 (STC, 256 frames) positions x (d^2 + d) x 4 B, plus the CNN's
    parameter bytes (ResNet18 / WR50 built with random weights). A reading matches a figure when it rounds
    to it: within half a unit of the figure's last printed digit (0.005 GB for 0.17, 0.05 GB for 3.8)."""
    law = complexity.memory_law().set_index(["model", "data set"])
    r18, wr50 = ("PaDiM-R18-Rd100", "MVTec AD"), ("PaDiM-WR50-Rd550", "MVTec AD")
    r18_stc, wr50_stc = ("PaDiM-R18-Rd100", "STC"), ("PaDiM-WR50-Rd550", "STC")
    assert set(law.index) == {r18, wr50, r18_stc, wr50_stc}
    assert law.loc[wr50, "positions"] == "56 x 56" and law.loc[wr50_stc, "positions"] == "64 x 64"
    assert law["tolerance_gb"].to_dict() == {r18: 0.005, wr50: 0.05, wr50_stc: 0.05, r18_stc: 0.005}
    # the terms, from their definitions: 11,689,512 parameters of ResNet18 and 68,883,240 of WR50 (float32),
    # plus their batch-norm buffers
    assert law.loc[wr50, "statistics (GB)"] == pytest.approx(3136 * (550**2 + 550) * 4 / 1e9)
    assert complexity.network_bytes("resnet18", whole=True) == 11_689_512 * 4 + 9_600 * 4 + 20 * 8
    whole_cnn = law["statistics + whole CNN (GB)"] - law["statistics (GB)"]
    assert whole_cnn[r18] == pytest.approx(0.0468, abs=1e-4) and whole_cnn[wr50] == pytest.approx(0.2758, abs=1e-4)
    # which reading rounds to which figure: the whole CNN plus the Gaussians gives 0.17, 5.2 and 0.21 GB;
    # WR50's 3.8 GB on MVTec AD is the Gaussians alone (with the CNN: 4.08 GB); the CNN cut after the last
    # layer PaDiM reads matches none
    assert law["matches statistics + whole CNN"].to_dict() == {r18: True, wr50: False, wr50_stc: True, r18_stc: True}
    assert law["matches statistics"].to_dict() == {r18: False, wr50: True, wr50_stc: False, r18_stc: False}
    assert not law["matches statistics + CNN as run"].any()
    assert law.loc[wr50, "statistics + whole CNN (GB)"] == pytest.approx(4.077, abs=1e-3)


def test_forward_flops_count_every_convolution_of_the_layers_used():
    """FlopCounterMode's count against a brute-force one: hooks on every convolution and linear layer of a
    real forward pass, out.numel() x in_channels / groups x kernel area multiply-adds each."""
    from padim_lib.features.extractor import FeatureExtractor

    out = complexity.forward_flops("resnet18", None, 64)
    assert out["positions"] == 16 * 16 and out["d"] == 64 + 128 + 256
    ext = FeatureExtractor("resnet18", None, pretrained=False)
    macs = []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs.append(output.numel() * module.in_channels // module.groups * k)
        elif isinstance(module, torch.nn.Linear):
            macs.append(output.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in ext.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    ext(torch.zeros(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert out["macs"] == sum(macs) and out["flops"] == 2 * sum(macs)
    assert not any(isinstance(m, torch.nn.Linear) for m in ext.modules())  # layer4 and fc are not run
    # SPADE's pixel search: 2 x positions^2 x K x d; on Lite0 at 224 with K = 50, 173 GFLOP (86.5 G multiply-adds)
    lite = complexity.forward_flops("efficientnet_lite0", None, 224)
    assert (lite["positions"], lite["d"]) == (56 * 56, 176)
    assert complexity.spade_search_flops(lite["positions"], 50, lite["d"]) == 2 * 3136**2 * 50 * 176 == 173_087_129_600
