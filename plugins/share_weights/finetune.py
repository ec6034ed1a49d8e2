"""Centroid fine-tuning in torch: the graph with fake-quantized activations, only centroids trainable.

Kept apart from the technique so that loading the plugin does not import torch.
"""

from __future__ import annotations

import numpy as np
import torch

from tinyml.ir import Graph, Node
from tinyml.technique import Context
from tinyml_plugins.qat import FakeQuantGraph, fake_quant, train
from tinyml_plugins.share_weights import INT8_LIMIT, WEIGHTED_OPS, SharedLayer


def fine_tune_centroids(
    graph: Graph, layers: dict[str, SharedLayer], context: Context, epochs: int, lr: float, seed: int
) -> dict[str, SharedLayer]:
    """The layers with their centroids fine-tuned on `context.train_data` (see the module's docstring).

    An int8 graph runs dequantized with its own activation scales; a float graph with the activation
    ranges quantize-int8 will calibrate on `context.calibration`.
    """
    if graph.is_quantized:
        model = SharedWeightsGraph(*float_view(graph), layers)
    else:
        from tinyml_plugins.quantize_int8 import QuantizeInt8Options, calibrate, guard_ranges

        model = SharedWeightsGraph(graph, guard_ranges(graph, calibrate(graph, context, QuantizeInt8Options())), layers)
    train(model, context, epochs, lr, "fine-tuning shared weights", seed=seed)
    return model.tuned_layers()


def float_view(graph: Graph) -> tuple[Graph, dict[str, tuple[float, float]]]:
    """The float graph an int8 graph stands for (weights and biases dequantized), and the activation
    ranges whose int8 scales and zero points are the graph's own: what `FakeQuantGraph` takes."""
    g = graph.copy()
    for node in g.nodes:
        if node.op not in WEIGHTED_OPS:
            continue
        w, b = (g.tensors[n] for n in node.inputs[1:3])
        w.data = (w.data.astype(np.float64) * np.reshape(w.scale, _channel_shape(node, w.data.ndim))).astype(np.float32)
        b.data = (b.data.astype(np.float64) * np.asarray(b.scale)).astype(np.float32)
    ranges = {
        t.name: ((-128 - t.zero_point) * float(t.scale), (127 - t.zero_point) * float(t.scale))
        for t in graph.activations()
    }
    return g, ranges


class SharedWeightsGraph(FakeQuantGraph):
    """The float view of a graph in torch with fake-quantized activations, where only the shared layers' centroids
    train. Int8 layers' centroids are in int8 steps of their channels' scales (`scale`); float layers' are weights."""

    def __init__(self, graph: Graph, ranges: dict[str, tuple[float, float]], layers: dict[str, SharedLayer]) -> None:
        super().__init__(graph, ranges)
        for p in self.params.values():
            p.requires_grad_(False)
        self.layers = layers
        self.centroids = torch.nn.ParameterDict()
        self.fixed: dict[str, torch.Tensor] = {}
        self.index: dict[str, torch.Tensor] = {}
        self.scales: dict[str, torch.Tensor] = {}
        for node in graph.nodes:
            if node.name not in layers:
                continue
            layer, w = layers[node.name], graph.tensors[node.inputs[1]]
            skip = int(layer.zero_fixed)
            self.centroids[_param_key(node)] = torch.nn.Parameter(torch.tensor(layer.centroids[skip:]))
            self.fixed[node.name] = torch.zeros(skip, dtype=torch.float64)
            self.index[node.name] = torch.from_numpy(layer.index)
            if layer.integer:
                shape = _channel_shape(node, w.data.ndim)
                self.scales[node.name] = torch.tensor(np.reshape(w.scale, shape), dtype=torch.float64)

    def weight(self, node: Node) -> torch.Tensor:
        if node.name not in self.layers:
            return super().weight(node)
        c = self.centroids[_param_key(node)]
        if not self.layers[node.name].integer:  # quantize-int8 will give the layer one scale: max |centroid| -> 127
            codebook = torch.cat([self.fixed[node.name], c])
            scale = codebook.detach().abs().max().clamp_min(1e-12) / INT8_LIMIT
            codebook = fake_quant(codebook, scale, torch.zeros(()), -INT8_LIMIT, INT8_LIMIT)
            return codebook[self.index[node.name]].to(torch.float32)
        rounded = c + (torch.clamp(torch.round(c), -INT8_LIMIT, INT8_LIMIT) - c).detach()
        codebook = torch.cat([self.fixed[node.name], rounded])
        return (codebook[self.index[node.name]] * self.scales[node.name]).to(torch.float32)

    def tuned_layers(self) -> dict[str, SharedLayer]:
        result = {}
        for node in self.graph.nodes:
            if node.name in self.layers:
                layer = self.layers[node.name]
                tuned = self.centroids[_param_key(node)].detach().numpy()
                centroids = np.concatenate([np.zeros(int(layer.zero_fixed)), tuned])
                result[node.name] = SharedLayer(layer.index, centroids, layer.zero_fixed, layer.integer)
        return result


def _param_key(node: Node) -> str:
    return "c" + node.name.replace(".", "_")


def _channel_shape(node: Node, ndim: int) -> list[int]:
    """The shape that broadcasts per-channel scales over a weight (channels on axis 0, last for depthwise)."""
    shape = [1] * ndim
    shape[ndim - 1 if node.op == "dwconv2d" else 0] = -1
    return shape
