"""The torch frontend and the float evaluator: the float graph must compute what the PyTorch model computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from tinyml.errors import TinymlError, UnsupportedOpError
from tinyml.float_eval import run_float
from tinyml.frontend import from_torch, graph_to_nchw, nchw_to_graph
from tinyml.ir import OPS, Graph


def randomize_batch_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters, so folding is really tested."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen))
                module.running_var.copy_(torch.rand(n, generator=gen) * 2 + 0.2)
                if module.affine:
                    module.weight.copy_(torch.randn(n, generator=gen))
                    module.bias.copy_(torch.randn(n, generator=gen))


def convert_and_compare(model: nn.Module, input_shape: tuple[int, ...], batch: int = 3) -> Graph:
    """Convert with a batch-1 example, run the graph on a batch, and compare with PyTorch."""
    torch.manual_seed(0)
    randomize_batch_norms(model)
    model.eval()
    x = torch.randn(batch, *input_shape)
    graph = from_torch(model, x[:1])
    assert all(node.op in OPS for node in graph.nodes)
    values = run_float(graph, nchw_to_graph(x.numpy()))
    with torch.no_grad():
        expected = model(x).numpy()
    got = graph_to_nchw(values[graph.outputs[0]])
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    return graph


def ops_of(graph: Graph) -> list[str]:
    return [node.op for node in graph.nodes]


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return self.relu(out)


class DownsamplingBlock(nn.Module):
    """ResNet-8 style: functional ReLUs, a strided 1x1 shortcut, a global average pool by F.avg_pool2d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.shortcut = nn.Conv2d(3, 6, 1, stride=2)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.conv2(y) + self.shortcut(x))
        y = F.avg_pool2d(y, y.shape[2:])
        return self.fc(torch.flatten(y, 1))


class TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU6())
        self.head = nn.Conv2d(11, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.left(x), self.right(x)], dim=1))


class GlobalMean(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(-2, -1)))


def test_plain_cnn_with_batch_norm_and_relu() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    graph = convert_and_compare(model, (1, 8, 8))
    assert ops_of(graph) == ["conv2d", "conv2d", "maxpool", "flatten", "fc"]
    assert [n.attrs.get("activation") for n in graph.nodes[:2]] == ["relu", "relu"]
    assert [n.name for n in graph.nodes] == ["0", "3", "6", "7", "8"]
    assert graph.nodes[0].source == "0"
    assert graph.tensors["input"].shape == (1, 8, 8, 1)
    assert graph.tensors["0.weight"].shape == (4, 3, 3, 1)


def test_fused_modules_are_recorded_on_the_node_they_fold_into() -> None:
    graph = convert_and_compare(Residual(4), (4, 6, 6))
    conv1, conv2, add = graph.nodes
    assert conv1.attrs["fused"] == [
        {"module": "bn1", "type": "torch.nn.BatchNorm2d"},
        {"module": "relu", "type": "torch.nn.ReLU"},
    ]
    assert conv2.attrs["fused"] == [{"module": "bn2", "type": "torch.nn.BatchNorm2d"}]
    assert add.attrs["fused"] == [{"module": "relu", "type": "torch.nn.ReLU"}]  # one ReLU module, used twice
    block = convert_and_compare(DownsamplingBlock(), (3, 8, 8))
    assert block.nodes[0].attrs["fused"] == [
        {"module": "bn1", "type": "torch.nn.BatchNorm2d"},
        {"module": "", "type": "aten.relu"},  # F.relu in the top-level forward
    ]
    assert "fused" not in block.nodes[-1].attrs


def test_flatten_keeps_pytorch_channel_major_order() -> None:
    """A spatially varying map flattened into a linear layer: a wrong order would scramble the weights."""
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten(), nn.Linear(3 * 4 * 5, 4))
    convert_and_compare(model, (2, 4, 5))


def test_depthwise_separable_block_with_relu6_and_multiplier_two() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        nn.Conv2d(8, 6, 1, bias=False),
        nn.BatchNorm2d(6),
        nn.ReLU6(inplace=True),
    )
    graph = convert_and_compare(model, (4, 9, 9))
    dw = graph.nodes[0]
    assert (dw.op, dw.attrs["depth_multiplier"], dw.attrs["activation"]) == ("dwconv2d", 2, "relu6")
    assert graph.tensors[dw.inputs[1]].shape == (1, 3, 3, 8)
    assert graph.nodes[1].attrs["activation"] == "relu6"


def test_residual_block_fuses_relu_into_add() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), Residual(4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    graph = convert_and_compare(model, (3, 6, 6))
    assert ops_of(graph) == ["conv2d", "conv2d", "conv2d", "add", "avgpool", "flatten", "fc"]
    add = graph.nodes[3]
    assert add.attrs["activation"] == "relu"
    assert add.inputs == ["1.conv2", "0"]
    assert add.name == "1.add"


def test_functional_residual_with_strided_shortcut() -> None:
    graph = convert_and_compare(DownsamplingBlock(), (3, 8, 8))
    assert ops_of(graph) == ["conv2d", "conv2d", "conv2d", "add", "avgpool", "flatten", "fc"]
    assert [n.attrs.get("activation") for n in graph.nodes[:4]] == ["relu", "none", "none", "relu"]


def test_concatenation_of_two_branches() -> None:
    graph = convert_and_compare(TwoBranches(), (4, 5, 5))
    assert "concat" in ops_of(graph)
    assert graph.tensors["concat"].shape == (1, 5, 5, 11)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(3, 4, 5, stride=2, padding=2),
        nn.Conv2d(3, 4, (3, 1), stride=(1, 2), padding=(1, 0)),
        nn.Conv2d(3, 4, 3, padding="same"),
        nn.Conv2d(3, 4, 3, padding="valid", bias=False),
        nn.Conv2d(3, 6, 3, stride=3, groups=3, bias=False),
    ],
    ids=["k5s2p2", "k3x1", "same", "valid-no-bias", "depthwise-s3"],
)
def test_strided_and_padded_convolutions(conv: nn.Conv2d) -> None:
    graph = convert_and_compare(conv, (3, 7, 8))
    bias = graph.tensors[graph.nodes[0].inputs[2]]
    if conv.bias is None:
        assert np.all(bias.data == 0)


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.MaxPool2d((2, 3)),
        nn.AvgPool2d(2),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        nn.AdaptiveAvgPool2d(1),
        nn.AdaptiveAvgPool2d((3, 2)),
    ],
    ids=["max-k3s2p1", "max-2x3", "avg-2", "avg-padded", "adaptive-1", "adaptive-3x2"],
)
def test_pools(pool: nn.Module) -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 1), pool)
    graph = convert_and_compare(model, (2, 6, 6))
    assert graph.nodes[-1].op in ("maxpool", "avgpool")


def test_relu_after_max_pool_is_fused() -> None:
    graph = convert_and_compare(nn.Sequential(nn.Conv2d(2, 3, 1), nn.MaxPool2d(2), nn.ReLU()), (2, 4, 4))
    assert graph.nodes[-1].attrs["activation"] == "relu"


def test_mean_over_height_and_width_without_keepdim() -> None:
    graph = convert_and_compare(GlobalMean(), (3, 5, 5))
    assert ops_of(graph) == ["conv2d", "avgpool", "flatten", "fc"]


def test_vector_model_with_softmax_head_and_batch_norm_1d() -> None:
    model = nn.Sequential(
        nn.Linear(10, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(16, 5, bias=False),
        nn.Softmax(dim=-1),
    )
    graph = convert_and_compare(model, (10,))
    assert ops_of(graph) == ["fc", "fc", "softmax"]
    assert graph.tensors["input"].shape == (1, 10)


def test_batch_norm_is_folded_into_conv_weights_and_bias() -> None:
    conv, bn = nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, eps=1e-3)
    model = nn.Sequential(conv, bn)
    graph = convert_and_compare(model, (2, 3, 3))
    assert ops_of(graph) == ["conv2d"]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
    weight = conv.weight.detach().numpy().transpose(0, 2, 3, 1) * scale[:, None, None, None]
    bias = (conv.bias.detach().numpy() - bn.running_mean.numpy()) * scale + bn.bias.detach().numpy()
    np.testing.assert_allclose(graph.tensors["0.weight"].data, weight, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(graph.tensors["0.bias"].data, bias, rtol=1e-5, atol=1e-6)


def test_idempotent_relu_on_a_shared_value_is_dropped() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 1)
            self.act = nn.ReLU6()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.act(self.conv(x))
            return y + torch.relu(y)

    graph = convert_and_compare(Shared(), (2, 3, 3))
    assert ops_of(graph) == ["conv2d", "add"]


@settings(max_examples=20, deadline=None)
@given(
    in_ch=st.integers(1, 4),
    out_per_in=st.integers(1, 3),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    pad=st.integers(0, 2),
    size=st.integers(5, 9),
    depthwise=st.booleans(),
)
def test_random_convolutions_match_torch(
    in_ch: int, out_per_in: int, kernel: int, stride: int, pad: int, size: int, depthwise: bool
) -> None:
    groups = in_ch if depthwise else 1
    conv = nn.Conv2d(in_ch, in_ch * out_per_in, kernel, stride=stride, padding=min(pad, kernel // 2), groups=groups)
    graph = convert_and_compare(nn.Sequential(conv, nn.ReLU()), (in_ch, size, size + 1), batch=2)
    assert graph.nodes[0].op == ("dwconv2d" if depthwise and in_ch > 1 else "conv2d")


def unsupported_message(model: nn.Module, shape: tuple[int, ...]) -> str:
    with pytest.raises(UnsupportedOpError) as info:
        from_torch(model, torch.randn(1, *shape))
    return str(info.value)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x.reshape(1, 2, 4))[0].reshape(1, 6)


class ReluOnSharedValue(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y + torch.relu(y)


@pytest.mark.filterwarnings("ignore:The tensor attributes self.lstm")
@pytest.mark.parametrize(
    ("model", "shape", "expected"),
    [
        (nn.Sequential(nn.Linear(4, 4), Head()), (4,), ["aten.sigmoid", "torch.nn.Sigmoid", "`1.act`"]),
        (Recurrent(), (8,), ["aten.lstm", "torch.nn.LSTM", "`lstm`"]),
        (nn.Sequential(nn.Conv2d(2, 2, 3, dilation=2)), (2, 8, 8), ["aten.conv2d", "`0`", "Dilation"]),
        (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), (4, 8, 8), ["aten.conv2d", "`0`", "groups=2"]),
        (nn.Sequential(nn.Conv2d(2, 2, 1), nn.AvgPool2d(3, padding=1)), (2, 6, 6), ["count_include_pad"]),
        (nn.Sequential(nn.Conv2d(2, 2, 1), nn.MaxPool2d(2, ceil_mode=True)), (2, 5, 5), ["ceil_mode"]),
        (nn.Sequential(nn.Conv2d(2, 3, 1), nn.Softmax(dim=1)), (2, 4, 4), ["aten.softmax", "last dim"]),
        (nn.Sequential(nn.Conv2d(2, 2, 1), nn.AvgPool2d(2), nn.ReLU()), (2, 4, 4), ["aten.relu", "avgpool"]),
        (ReluOnSharedValue(), (2, 3, 3), ["aten.relu", "also used elsewhere"]),
        (nn.Sequential(nn.BatchNorm2d(2)), (2, 3, 3), ["aten.batch_norm", "model input"]),
        (nn.Sequential(nn.Conv2d(2, 2, 1), nn.AdaptiveAvgPool2d(3)), (2, 4, 4), ["must divide"]),
    ],
    ids=[
        "sigmoid",
        "lstm",
        "dilation",
        "groups",
        "avg-count-pad",
        "ceil",
        "softmax-channels",
        "relu-after-avgpool",
        "relu-shared",
        "bn-on-input",
        "adaptive-uneven",
    ],
)
def test_unsupported_models_are_reported_with_op_and_module(
    model: nn.Module, shape: tuple[int, ...], expected: list[str]
) -> None:
    message = unsupported_message(model, shape)
    for fragment in expected:
        assert fragment in message
    assert "Supported:" in message


@pytest.mark.parametrize(
    ("example", "fragment"),
    [
        (torch.randn(2, 3, 4, 4), "batch size 1"),
        (torch.ones(1, 3, 4, 4, dtype=torch.int64), "floating-point"),
        (torch.randn(1, 3, 4), "shape (1, C, H, W)"),
    ],
)
def test_bad_example_inputs_are_rejected(example: torch.Tensor, fragment: str) -> None:
    with pytest.raises(TinymlError, match=r"example input") as info:
        from_torch(nn.Conv2d(3, 3, 1), example)
    assert fragment in str(info.value)


def test_run_float_rejects_a_batch_in_the_wrong_layout() -> None:
    graph = from_torch(nn.Conv2d(3, 4, 1), torch.randn(1, 3, 5, 6))
    with pytest.raises(TinymlError, match="nchw_to_graph"):
        run_float(graph, np.zeros((2, 3, 5, 6), dtype=np.float32))


def test_run_float_returns_every_activation_with_the_batch_axis() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    graph = from_torch(model.eval(), torch.randn(1, 1, 8, 8))
    values = run_float(graph, np.random.default_rng(0).normal(size=(7, 8, 8, 1)))
    assert set(values) == {t.name for t in graph.activations()}
    for tensor in graph.activations():
        assert values[tensor.name].shape == (7, *tensor.shape[1:])
    assert values["0"].min() >= 0


def test_layout_helpers_round_trip() -> None:
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    assert nchw_to_graph(x).shape == (2, 4, 5, 3)
    assert nchw_to_graph(x)[1, 2, 3, 0] == x[1, 0, 2, 3]
    np.testing.assert_array_equal(graph_to_nchw(nchw_to_graph(x)), x)
    vector = np.ones((4, 7))
    assert nchw_to_graph(vector) is vector
    with pytest.raises(TinymlError):
        nchw_to_graph(np.ones((2, 3, 4)))


def test_every_unsupported_module_is_listed_at_once() -> None:
    message = unsupported_message(
        nn.Sequential(nn.Conv2d(2, 2, 1), nn.Sigmoid(), nn.Conv2d(2, 2, 1), nn.Tanh()), (2, 3, 3)
    )
    assert "aten.sigmoid (torch.nn.Sigmoid) at `1`" in message
    assert "aten.tanh (torch.nn.Tanh) at `3`" in message


def test_graph_does_not_share_memory_with_the_model() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    graph = from_torch(model, torch.randn(1, 3))
    before = graph.tensors["1.weight"].data.copy()
    with torch.no_grad():
        model[1].weight.add_(1.0)
    np.testing.assert_array_equal(graph.tensors["1.weight"].data, before)
