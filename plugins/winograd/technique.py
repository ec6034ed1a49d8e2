"""The `winograd` technique: store the weights of the 3x3 stride-1 convolutions that run faster as Winograd.

It runs after `quantize-int8` and only marks tensors: a chosen layer's weight tensor gets the
encoding `winograd`, which the plugin's `tinyml_encode_weights` writes as the transformed int16
weights and its `tinyml_select_kernel` runs with `tml_conv2d_winograd_s8`. The outputs are the
direct kernel's bytes either way; what changes is instructions (fewer) and flash (32/9 of the
int8 weights), so the choice is per layer and per board: `when = "faster"` (the default) takes the
layers the cost model (`kernels.COSTS`) predicts faster on the recipe's board, `"always"` every
eligible one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tinyml.errors import RecipeError
from tinyml.ir import Graph
from tinyml.technique import Context, Technique
from tinyml_plugins.winograd.kernels import ENCODING, ineligible, predicted_speedup


class WinogradOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    when: Literal["faster", "always"] = Field(
        "faster",
        description="faster: the eligible layers the cost model predicts to run in fewer instructions than the "
        "direct kernel on the board; always: every eligible layer",
    )
    layers: list[str] | None = Field(
        None,
        description="the conv2d layers to consider, by name (default: every 3x3 stride-1 conv2d); a layer named "
        "here that cannot run Winograd is an error",
    )


class Winograd(Technique):
    """Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: fewer instructions, the same bytes, more flash."""

    name = "winograd"
    stage = "graph"
    Options = WinogradOptions

    def apply(self, graph: Graph, context: Context) -> Graph:
        if not graph.is_quantized:
            raise RecipeError(
                "Technique 'winograd' transforms int8 weights: list it after `quantize-int8` in the recipe's "
                "techniques."
            )
        convs = {node.name: node for node in graph.nodes if node.op == "conv2d"}
        named = self.options.layers
        if named is not None:
            unknown = [name for name in named if name not in convs]
            if unknown:
                raise RecipeError(
                    f"technique 'winograd' option `layers` names {', '.join(map(repr, unknown))}, which is no conv2d "
                    f"layer of the model; its conv2d layers are: {', '.join(convs) or 'none'}."
                )
            for name in named:
                why = ineligible(convs[name], graph)
                if why is not None:
                    raise RecipeError(
                        f"technique 'winograd' option `layers` names {name!r}, which cannot run Winograd F(2x2, 3x3): "
                        f"{why}. Only 3x3 stride-1 conv2d layers with raw int8 weights can; remove it from `layers`."
                    )
        graph = graph.copy()
        for name, node in convs.items():
            if named is None and ineligible(node, graph) is not None:
                continue
            if named is not None and name not in named:
                continue
            if self.options.when == "faster" and predicted_speedup(node, graph, context.board) <= 1:
                continue
            graph.tensors[node.inputs[1]].encoding = ENCODING
        return graph
