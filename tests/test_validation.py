"""`tinyml validate` counts samples whose int8 output has a tied maximum apart, with the accuracy bounds they imply."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tinyml
from tinyml.cli import main
from tinyml.validation import count_ties


def test_count_ties_by_hand() -> None:
    outputs = np.array(
        [
            [5, 5, 1],  # tie between 0 and 1, label 1: wrong for argmax, right when ties count as right
            [3, 3, 3],  # three-way tie, label 2
            [1, 9, 2],  # no tie, label 1: right
            [7, 7, 0],  # tie, label 2 not among the maxima: wrong every way
            [0, 1, 2],  # no tie, label 0: wrong
        ],
        dtype=np.int8,
    )
    labels = np.array([1, 2, 1, 2, 0])
    assert count_ties(outputs, labels) == {
        "first_maximum": 1 / 5,
        "ties_wrong": 1 / 5,
        "ties_right": 3 / 5,
        "tied": 3,
        "tied_with_label": 2,
    }


@pytest.fixture(scope="module")
def tied_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier whose classes 0 and 1 have the same weights: wherever they lead, the int8 softmax ties."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3), nn.Softmax(dim=1))
    with torch.no_grad():
        model[0].weight[1] = model[0].weight[0]
        model[0].bias[1] = model[0].bias[0]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    with torch.no_grad():
        leader = model(torch.from_numpy(x)).numpy().argmax(1)  # 0 where classes 0/1 lead (never 1), or 2
    labels = np.where(leader == 0, 1, 2)  # the tied samples belong to class 1, which argmax never picks
    out = tmp_path_factory.mktemp("ties") / "build"
    tinyml.compile(model, x[:100], out_dir=out, validation=(x, labels), progress=False)
    return out


def test_validate_reports_ties_separately(tied_build: Path) -> None:
    build_dir = tied_build
    result = tinyml.validate(build_dir)
    model = tinyml.load_model(build_dir)
    from tinyml.frontend import nchw_to_graph

    with np.load(build_dir / "validation.npz") as data:
        outputs, labels = model(model.quantize(nchw_to_graph(data["x"]))), data["y"]
    assert (outputs[:, 0] == outputs[:, 1]).all()  # identical weights give identical int8 outputs
    at_max = outputs == outputs.max(axis=1, keepdims=True)
    tied = at_max.sum(axis=1) > 1
    label_at_max = at_max[np.arange(len(labels)), labels]
    assert result["c_matches_reference"]
    assert result["tied_samples"] == int(tied.sum()) > 20
    assert result["tied_samples_with_label_among_maxima"] == int((tied & label_at_max).sum()) > 20
    # argmax gives every tie to class 0, which is no sample's label, so ties count as wrong there ...
    assert result["int8_accuracy"] == result["int8_accuracy_ties_wrong"] == pytest.approx((label_at_max & ~tied).mean())
    # ... and counting a tie as right when the label is among the maxima adds them back
    assert result["int8_accuracy_ties_right"] == pytest.approx(label_at_max.mean())
    assert result["int8_accuracy_ties_right"] > result["int8_accuracy_ties_wrong"] + 0.1


def test_validate_shows_ties_in_the_table_and_json(tied_build: Path) -> None:
    build_dir = tied_build
    runner = CliRunner()
    as_json = runner.invoke(main, ["validate", str(build_dir), "--json"])
    assert as_json.exit_code == 0, as_json.output
    result = json.loads(as_json.output)
    table = runner.invoke(main, ["validate", str(build_dir)])
    assert table.exit_code == 0, table.output
    assert f"tied int8 maxima                   {result['tied_samples']} of 200 samples" in table.output
    wrong, right = 100 * result["int8_accuracy_ties_wrong"], 100 * result["int8_accuracy_ties_right"]
    assert f"int8 accuracy, ties wrong / right  {wrong:.2f}% / {right:.2f}%" in table.output
