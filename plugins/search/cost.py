"""What a candidate costs on the board, from its real int8 graph, before any training.

The untrained model is quantized on random calibration data (sizes do not depend on the weights)
and compiled for the board: the planner's arena (the kernels' scratch included), the caller's
input and output buffers and the stack the firmware needs give the peak RAM, the way QEMU
measures it (arena + input/output + stack high-water); the code generator's constant bytes plus
the firmware's code give the flash. MACs are counted from the graph; instructions are estimated
from the per-kernel rates the board probe measured (`tinyml_plugins.search.probe`).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyml_plugins.search.space import Architecture, build_model

if TYPE_CHECKING:
    from tinyml.board.boards import Board
    from tinyml.compiler import Build
    from tinyml.ir import Graph, Node
    from tinyml_plugins.search.probe import BoardProbe

MAC_OPS = ("conv2d", "dwconv2d", "fc")
CALIBRATION_SAMPLES = 8


@dataclass(frozen=True)
class Cost:
    """A candidate's needs on the board, in bytes, MACs and estimated instructions per inference."""

    arena_bytes: int
    io_bytes: int
    stack_bytes: int
    weight_bytes: int
    code_bytes: int
    macs: int
    instructions: int | None

    @property
    def peak_ram(self) -> int:
        return self.arena_bytes + self.io_bytes + self.stack_bytes

    @property
    def flash(self) -> int:
        return self.weight_bytes + self.code_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_ram": self.peak_ram, "flash": self.flash}

    def describe(self) -> str:
        return (
            f"{self.peak_ram:,} bytes of RAM ({self.arena_bytes:,} arena + {self.io_bytes:,} input/output + "
            f"{self.stack_bytes:,} stack) and {self.flash:,} bytes of flash ({self.weight_bytes:,} weights + "
            f"{self.code_bytes:,} code)"
        )


def node_work(graph: Graph, node: Node) -> int:
    """MACs of a conv, depthwise conv or linear layer; elements read by any other layer (add, pool, ...)."""
    out = graph.tensors[node.outputs[0]]
    if node.op in MAC_OPS:
        weight = graph.tensors[node.inputs[1]]
        out_channels = weight.shape[0]
        if node.op == "dwconv2d":
            out_channels = out.shape[-1]
        return int(np.prod(out.shape)) * int(np.prod(weight.shape)) // out_channels
    return sum(int(np.prod(graph.tensors[name].shape)) for name in node.inputs if not graph.tensors[name].is_constant)


def graph_macs(graph: Graph) -> int:
    return sum(node_work(graph, node) for node in graph.nodes if node.op in MAC_OPS)


def compile_candidate(arch: Architecture, board: Board) -> Build:
    """The candidate's int8 build for `board`, quantized untrained on seeded random data."""
    import torch

    import tinyml

    torch.manual_seed(0)
    model = build_model(arch).eval()
    shape = (CALIBRATION_SAMPLES, arch.in_channels, arch.resolution, arch.resolution)
    calibration = np.random.default_rng(0).random(shape, dtype=np.float32)
    with warnings.catch_warnings():  # an untrained layer's degenerate range is expected and changes no size
        warnings.filterwarnings("ignore", message=".*degenerate range")
        return tinyml.compile(model, calibration, ["quantize-int8"], board=board, progress=False)


def build_cost(build: Build, probe: BoardProbe) -> Cost:
    """The cost of a compiled candidate, with the probe's stack, code size and instruction rates."""
    graph = build.graph
    io_bytes = sum(graph.tensors[name].nbytes for name in graph.inputs + graph.outputs)
    return Cost(
        arena_bytes=build.plan.arena_bytes,
        io_bytes=io_bytes,
        stack_bytes=probe.stack_bytes,
        weight_bytes=build.generated.weight_bytes,
        code_bytes=probe.code_bytes,
        macs=graph_macs(graph),
        instructions=probe.estimate_instructions(build),
    )


def candidate_cost(arch: Architecture, board: Board, probe: BoardProbe) -> Cost:
    return build_cost(compile_candidate(arch, board), probe)
