"""End to end on the host: PyTorch model -> int8 graph -> generated C -> cffi, against the numpy oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import tinyml.compiler as compiler
from tinyml.errors import CalibrationError, TinymlError
from tinyml.frontend import nchw_to_graph
from tinyml.host import load_model
from tinyml.reference import run_int8


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5), nn.Softmax(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        return self.head(torch.relu(y + self.branch(y)))


class Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU6())
        self.b = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, groups=2), nn.Conv2d(2, 6, 1), nn.ReLU())
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(10 * 3 * 3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.cat([self.a(x), self.b(x)], dim=1)), 1))


def depthwise_separable() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1, groups=4),  # depth multiplier 2
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 8, 1),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(8 * 3 * 3, 4),
    )


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))


MODELS = {
    "residual": (Residual, (3, 9, 9)),
    "branches": (Branches, (2, 7, 6)),
    "depthwise": (depthwise_separable, (1, 11, 10)),
    "mlp": (mlp, (20,)),
}


def _randomize_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_generated_c_equals_reference(name: str, tmp_path) -> None:
    factory, shape = MODELS[name]
    torch.manual_seed(1)
    model = factory().eval()
    _randomize_bn(model, 2)
    rng = np.random.default_rng(3)
    calib = rng.normal(size=(64, *shape)).astype(np.float32)
    build = compiler.compile(model, calib, out_dir=tmp_path / name, progress=False)

    host = load_model(tmp_path / name)
    x = rng.normal(size=(40, *shape)).astype(np.float32) * 1.5  # some values outside the calibrated range
    xq = host.quantize(nchw_to_graph(x))
    c_out = host(xq)
    ref = run_int8(build.graph, xq)[build.graph.outputs[0]].reshape(len(x), -1)
    np.testing.assert_array_equal(c_out, ref)

    # The int8 model tracks the float one: outputs within a few output steps on in-range data.
    with torch.no_grad():
        expected = model(torch.from_numpy(calib[:20])).numpy().reshape(20, -1)
    got = host.dequantize(host(host.quantize(nchw_to_graph(calib[:20]))))
    assert np.max(np.abs(got - expected)) < 12 * host.output_scale + 0.05 * np.abs(expected).max()


def test_generated_c_is_deterministic(tmp_path) -> None:
    factory, shape = MODELS["branches"]
    torch.manual_seed(0)
    model = factory().eval()
    calib = np.random.default_rng(0).normal(size=(16, *shape)).astype(np.float32)
    a = compiler.compile(model, calib, progress=False).generated.files
    b = compiler.compile(model, calib, progress=False).generated.files
    assert a == b


def test_planner_never_worse_than_tflm_greedy() -> None:
    for factory, shape in MODELS.values():
        torch.manual_seed(0)
        calib = np.random.default_rng(0).normal(size=(8, *shape)).astype(np.float32)
        plan = compiler.compile(factory().eval(), calib, progress=False).plan
        plan.validate()
        assert plan.lower_bound <= plan.arena_bytes <= plan.greedy_bytes


def test_missing_calibration_data_is_named() -> None:
    with pytest.raises(CalibrationError, match="calibration data"):
        compiler.compile(mlp(), None, progress=False)
    with pytest.raises(CalibrationError, match=r"\(N, C, H, W\)"):
        compiler.compile(mlp(), np.zeros((0, 20), np.float32), progress=False)


def test_calibration_of_the_wrong_shape_is_named() -> None:
    factory, shape = MODELS["depthwise"]
    with pytest.raises(TinymlError, match=r"could not trace Sequential with an input of shape \(1, 1, 5, 5\)"):
        compiler.compile(factory().eval(), np.zeros((4, 1, 5, 5), np.float32), progress=False)


def test_failed_compile_leaves_no_build_directory(tmp_path) -> None:
    class Sigmoid(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(x)

    out = tmp_path / "broken"
    with pytest.raises(TinymlError, match="sigmoid"):
        compiler.compile(nn.Sequential(nn.Linear(4, 4), Sigmoid()), np.ones((4, 4), np.float32), out_dir=out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_digits_example_accuracy_through_c(digits_build) -> None:
    from tinyml.validation import validate

    result = validate(digits_build.out_dir)
    assert result["samples"] >= 400
    assert result["c_matches_reference"], result
    assert result["float_accuracy"] >= 0.95, result
    assert result["float_accuracy"] - result["int8_accuracy"] <= 0.01, result
