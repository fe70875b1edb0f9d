"""The paper's tables: roles of the configurations and a run's rows addressed by role."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from padim_lib.datasets import Preprocess
from padim_lib.errors import PadimError
from padim_lib.paper import tables
from padim_lib.paper.run import StudyRun


def _run(table: str, **kwargs) -> StudyRun:
    """A run of the table's study with one result row per configuration (no computation)."""
    build = {"Table I": tables.table1, "Table II": tables.table2}[table]
    study = build("unused", backbone="efficientnet_lite0", **kwargs)
    results = pd.DataFrame([
        {"data_root": "unused", "category": "brick", "label": c.label, "seed": c.seed, "metric": "pro", "value": 0.5,
         "replicate": -1} for c in study.configs()
    ])
    return StudyRun(study, [], results, Path("unused"), False, ["test"])


def test_table1_rows_by_role():
    run = _run("Table I")
    assert run.roles() == ["single", "sum", "joint"]
    assert run.labels("single") == ["Layer 1", "Layer 2", "Layer 3"]
    assert run.label("sum") == "Layer 1+2+3" and run.label("joint") == "PaDiM-Lite0"
    assert run.published_row(run.label("joint")) == "PaDiM-R18"
    assert set(run.rows("joint")["label"]) == {"PaDiM-Lite0"} and len(run.rows()) == 5
    with pytest.raises(PadimError, match=r"role 'single' has 3 rows"):
        run.label("single")
    with pytest.raises(PadimError, match=r"role='rd'; expected one of \['single', 'sum', 'joint'\]"):
        run.labels("rd")


def test_roles_follow_what_runs_not_the_labels():
    # two layers: the sum model is "Layer 1+2", and nothing is compared with the paper's rows
    run = _run("Table I", layers=["_blocks.2", "_blocks.4"])
    assert run.labels("single") == ["Layer 1", "Layer 2"] and run.label("sum") == "Layer 1+2"
    assert run.label("joint") == "PaDiM-Lite0" and run.published_row("Layer 1+2") == ""
    one = _run("Table I", layers=["_blocks.10"])
    assert one.roles() == ["single"]


def test_table2_rows_by_role_and_dimension():
    run = _run("Table II", dims=[8, 16], seeds=3)
    assert run.roles() == ["rd", "pca", "all"]
    assert run.labels("rd") == ["Rd 8", "Rd 16"] and run.labels("pca") == ["PCA 8", "PCA 16"]
    assert run.label("rd", dim=8) == "Rd 8" and run.label("pca", dim=16) == "PCA 16"
    assert run.label("all") == "all (176)" and run.seeds("rd") == [0, 1, 2] and run.seeds("pca") == [0]
    assert run.published_row("Rd 8") == "Rd 100" and run.published_row("PCA 16") == "PCA 200"
    assert len(run.rows("rd")) == 6 and len(run.rows("rd", dim=16)) == 3
    with pytest.raises(PadimError, match=r"pass dim="):
        run.label("rd")
    with pytest.raises(PadimError, match=r"at dim=32 has 0 rows"):
        run.label("pca", dim=32)
    with pytest.raises(PadimError, match="no configuration labelled 'Rd 100'"):
        run.published_row("Rd 100")


def test_table_configs_take_a_preprocess():
    pre = Preprocess(resize=72, crop=64)
    for make in (tables.table1_configs, tables.table2_configs):
        configs = make("efficientnet_lite0", preprocess=pre, **({"dims": [8], "seeds": 1} if make is tables.table2_configs else {}))
        assert all(c.preprocess == pre for c in configs)
    with pytest.raises(PadimError, match="Table III"):
        tables.config_role("Table III", configs[0])


def test_comparability_names_each_difference_from_the_paper(tmp_path):
    ok, reasons = tables.table1(tmp_path, backbone="resnet18", crop=None).comparability()
    text = " | ".join(reasons)
    assert not ok and "images resized to 256, no crop (the paper: 256, crop 224)" in text
    assert f"the data at {tmp_path} is not a complete MVTec AD" in text
    assert "stands in" not in text  # ResNet18 is the paper's network: only the set-up differs
    _, reasons = tables.table2(tmp_path, backbone="efficientnet_lite0", dims=[8, 16], seeds=1).comparability()
    text = " | ".join(reasons)
    assert "Rd 8 stands in for PaDiM-R18-Rd100 on efficientnet_lite0" in text and "resized" not in text
