"""Quantization-aware fine-tuning of a float graph: fake int8 in torch, straight-through gradients.

The graph (batch-norm already folded) runs as a torch module whose weights are trainable. On
the way forward every weight is rounded to int8 per output channel and every activation to int8
with its calibrated scale and zero point, using the same scale rules as the quantizer; on the way
back the rounding is skipped (straight-through estimator). The fine-tuned weights go back into
the graph, which the quantizer then converts for real.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tinyml.ir import Graph, Node
from tinyml.technique import Context

QAT_BATCH = 64


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Round to the int8 grid and back; gradients pass straight through."""
    q = torch.clamp(torch.round(x / scale) + zero_point, lo, hi)
    return x + ((q - zero_point) * scale - x).detach()


class FakeQuantGraph(nn.Module):
    """Runs a float IR graph in torch (NCHW inside) with int8 rounding of weights and activations."""

    def __init__(self, graph: Graph, ranges: dict[str, tuple[float, float]]) -> None:
        super().__init__()
        from tinyml_plugins.quantize_int8 import quantize

        self.graph = graph
        self.params = nn.ParameterDict()
        for node in graph.nodes:
            for role, name in zip(("weight", "bias"), node.inputs[1:], strict=False):
                self.params[_key(node, role)] = nn.Parameter(
                    torch.tensor(graph.tensors[name].data, dtype=torch.float32)
                )
        # The scales and zero points the real quantizer would choose, tensor by tensor.
        quantized = quantize(graph, ranges)
        self.act_quant = {t.name: (float(t.scale), t.zero_point) for t in quantized.activations()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.graph
        values = {g.inputs[0]: self._quant_act(g.inputs[0], x)}
        for node in g.nodes:
            args = [values[n] for n in node.inputs if not g.tensors[n].is_constant]
            out = _activate(OPS[node.op](self, node, *args), node.attrs.get("activation", "none"))
            values[node.outputs[0]] = self._quant_act(node.outputs[0], out)
        return values[g.outputs[0]]

    def _quant_act(self, name: str, x: torch.Tensor) -> torch.Tensor:
        scale, zp = self.act_quant[name]
        return fake_quant(x, torch.tensor(scale), torch.tensor(float(zp)), -128, 127)

    def weight(self, node: Node) -> torch.Tensor:
        """The node's weight rounded per output channel (axis 0, or the last axis for depthwise)."""
        w = self.params[_key(node, "weight")]
        axis = w.dim() - 1 if node.op == "dwconv2d" else 0
        from tinyml_plugins.quantize_int8 import weight_scales

        scales = torch.as_tensor(weight_scales(w.detach().numpy(), axis), dtype=torch.float32)
        shape = [1] * w.dim()
        shape[axis] = -1
        return fake_quant(w, scales.reshape(shape), torch.zeros(()), -127, 127)

    def bias(self, node: Node) -> torch.Tensor:
        return self.params[_key(node, "bias")]

    def write_back(self) -> Graph:
        """A copy of the graph with the fine-tuned float weights."""
        g = self.graph.copy()
        for node in g.nodes:
            for role, name in zip(("weight", "bias"), node.inputs[1:], strict=False):
                g.tensors[name].data = self.params[_key(node, role)].detach().numpy().astype(np.float32)
        return g


def _key(node: Node, role: str) -> str:
    return f"n{node.name.replace('.', '_')}_{role}"


def _activate(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.relu6(x)
    return x


def _conv(m: FakeQuantGraph, node: Node, x: torch.Tensor) -> torch.Tensor:
    w = m.weight(node)  # OHWI, or [1, KH, KW, C*M] for depthwise
    groups = 1
    if node.op == "dwconv2d":
        w = w[0].permute(2, 0, 1).unsqueeze(1)  # [C*M, 1, KH, KW]
        groups = x.shape[1]
    else:
        w = w.permute(0, 3, 1, 2)
    return F.conv2d(x, w, m.bias(node), stride=node.attrs["stride"], padding=node.attrs["padding"], groups=groups)


def _fc(m: FakeQuantGraph, node: Node, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x.flatten(1), m.weight(node), m.bias(node))


def _maxpool(m: FakeQuantGraph, node: Node, x: torch.Tensor) -> torch.Tensor:
    a = node.attrs
    return F.max_pool2d(x, a["kernel"], a["stride"], a["padding"])


def _avgpool(m: FakeQuantGraph, node: Node, x: torch.Tensor) -> torch.Tensor:
    a = node.attrs
    return F.avg_pool2d(x, a["kernel"], a["stride"], a["padding"], count_include_pad=False)


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "conv2d": _conv,
    "dwconv2d": _conv,
    "fc": _fc,
    "maxpool": _maxpool,
    "avgpool": _avgpool,
    "add": lambda m, node, a, b: a + b,
    "softmax": lambda m, node, x: torch.softmax(x, dim=1),
    "concat": lambda m, node, *xs: torch.cat(xs, dim=1),
    "flatten": lambda m, node, x: x.flatten(1),
}


def fine_tune(
    graph: Graph,
    ranges: dict[str, tuple[float, float]],
    context: Context,
    epochs: int,
    lr: float,
) -> Graph:
    """Fine-tune `graph`'s weights with fake quantization on `context.train_data`; a new float graph."""
    model = FakeQuantGraph(graph, ranges)
    train(model, context, epochs, lr, "quantization-aware fine-tuning")
    return model.write_back()


def train(model: FakeQuantGraph, context: Context, epochs: int, lr: float, description: str, seed: int = 0) -> None:
    """Adam on the parameters of `model` that require gradients, over `context.train_data` in shuffled batches.

    The loss is cross-entropy on the graph's output (its log when the graph ends in softmax). Techniques
    that fine-tune a graph in torch (QAT, weight sharing's centroids) subclass `FakeQuantGraph` and call
    this; `seed` fixes the batch order, so a run is repeatable.
    """
    x, y = context.train_data
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=lr)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    gen = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(xt) + QAT_BATCH - 1) // QAT_BATCH)
    softmax = _is_softmax(model.graph)
    with context.progress(description, total=steps) as advance:
        for _ in range(epochs):
            order = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), QAT_BATCH):
                idx = order[i : i + QAT_BATCH]
                opt.zero_grad()
                out = model(xt[idx]).flatten(1)
                loss = F.nll_loss(torch.log(out + 1e-9), yt[idx]) if softmax else F.cross_entropy(out, yt[idx])
                loss.backward()
                opt.step()
                advance(1)


def _is_softmax(graph: Graph) -> bool:
    return graph.nodes[-1].op == "softmax"
