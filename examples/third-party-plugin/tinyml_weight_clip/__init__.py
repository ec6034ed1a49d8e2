"""clip-weights: clip each float weight tensor to mean +/- k standard deviations before quantization.

int8 weights are scaled per output channel by the largest magnitude, so one outlying weight
stretches the scale and leaves the other weights few levels. Clipping outliers first trades a
small error on a few weights for finer steps on all the rest.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tinyml.errors import TinymlError
from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph
from tinyml.technique import Context, Technique

WEIGHTED_OPS = ("conv2d", "dwconv2d", "fc")


class ClipWeightsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    std_devs: float = Field(3.0, gt=0, description="how many standard deviations from the mean are kept")


class ClipWeights(Technique):
    """Clip the weights of conv, depthwise conv and fully connected layers to mean +/- k std."""

    name = "clip-weights"
    stage = "graph"
    Options = ClipWeightsOptions

    def apply(self, graph: Graph, context: Context) -> Graph:
        if graph.is_quantized:
            raise TinymlError(
                "clip-weights works on float weights, but the graph is already quantized: "
                "list clip-weights before quantize-int8 in the recipe's [[techniques]]."
            )
        clipped = graph.copy()
        for node in clipped.nodes:
            if node.op in WEIGHTED_OPS:
                weight = clipped.tensors[node.inputs[1]]
                weight.data = clip_to_std(weight.data, self.options.std_devs)
        return clipped


def clip_to_std(values: np.ndarray, std_devs: float) -> np.ndarray:
    """`values` limited to [mean - k*std, mean + k*std] of the whole tensor."""
    mean, std = float(values.mean()), float(values.std())
    return np.clip(values, mean - std_devs * std, mean + std_devs * std).astype(values.dtype)


@hookimpl
def tinyml_techniques() -> list[type[Technique]]:
    return [ClipWeights]
