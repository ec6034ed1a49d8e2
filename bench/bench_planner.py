"""Arena size of the memory planner against the lower bound and TFLM's greedy planner.

    python bench/bench_planner.py [--kernel-scratch] [--plot DIR]

Synthetic int8 graphs stand in for real models (only shapes matter to the planner): a
MobileNetV2-like chain with residual adds, a DS-CNN-like keyword-spotting chain and a random DAG.
`plan_row` takes any graph, so a real model's graph can be measured the same way.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from tinyml.ir import Graph, Node, Tensor
from tinyml.planner import MemoryPlan, plan


class GraphBuilder:
    """Appends int8 nodes to a graph, computing NHWC output shapes; weights are zero-filled constants."""

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self.tensors: dict[str, Tensor] = {}
        self.nodes: list[Node] = []
        self.input = self._tensor(input_shape)

    def _tensor(self, shape: tuple[int, ...], data: np.ndarray | None = None) -> str:
        name = f"t{len(self.tensors)}"
        self.tensors[name] = Tensor(name, shape, "int8", data=data)
        return name

    def _node(self, op: str, inputs: list[str], shape: tuple[int, ...], attrs: dict | None = None) -> str:
        out = self._tensor(shape)
        self.nodes.append(Node(f"{op}{len(self.nodes)}", op, inputs, [out], attrs or {}))
        return out

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    def conv(self, x: str, out_c: int, k: int | tuple[int, int] = 1, stride: int = 1) -> str:
        kh, kw = (k, k) if isinstance(k, int) else k
        _, h, w, c = self.shape(x)
        weight = self._tensor((out_c, kh, kw, c), np.zeros((out_c, kh, kw, c), np.int8))
        oh, ow = (h + 2 * (kh // 2) - kh) // stride + 1, (w + 2 * (kw // 2) - kw) // stride + 1
        attrs = {"stride": (stride, stride), "padding": (kh // 2, kw // 2)}
        return self._node("conv2d", [x, weight], (1, oh, ow, out_c), attrs)

    def dwconv(self, x: str, k: int = 3, stride: int = 1) -> str:
        _, h, w, c = self.shape(x)
        weight = self._tensor((1, k, k, c), np.zeros((1, k, k, c), np.int8))
        oh, ow = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
        attrs = {"stride": (stride, stride), "padding": (k // 2, k // 2), "depth_multiplier": 1}
        return self._node("dwconv2d", [x, weight], (1, oh, ow, c), attrs)

    def add(self, a: str, b: str) -> str:
        return self._node("add", [a, b], self.shape(a))

    def concat(self, xs: list[str]) -> str:
        _, h, w, _ = self.shape(xs[0])
        return self._node("concat", xs, (1, h, w, sum(self.shape(x)[-1] for x in xs)))

    def global_avgpool_fc(self, x: str, classes: int) -> str:
        _, h, w, c = self.shape(x)
        pooled = self._node("avgpool", [x], (1, 1, 1, c), {"kernel": (h, w), "stride": (h, w)})
        flat = self._node("flatten", [pooled], (1, c))
        weight = self._tensor((classes, c), np.zeros((classes, c), np.int8))
        logits = self._node("fc", [flat, weight], (1, classes))
        return self._node("softmax", [logits], (1, classes))

    def graph(self, output: str) -> Graph:
        return Graph(dict(self.tensors), list(self.nodes), [self.input], [output])


def mobilenet_v2_like(resolution: int = 96, width: float = 0.35) -> Graph:
    """Inverted residual blocks (expand 1x1, depthwise 3x3, project 1x1, add when shapes match)."""
    g = GraphBuilder((1, resolution, resolution, 3))

    def ch(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    x = g.conv(g.input, ch(32), 3, 2)
    for expand, c, repeats, stride in [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
    ]:
        for i in range(repeats):
            in_c = g.shape(x)[-1]
            y = g.conv(x, in_c * expand) if expand != 1 else x
            y = g.dwconv(y, 3, stride if i == 0 else 1)
            y = g.conv(y, ch(c))
            x = g.add(x, y) if g.shape(x) == g.shape(y) else y
    x = g.conv(x, 1280 if width > 1 else ch(1280))
    return g.graph(g.global_avgpool_fc(x, 2))


def ds_cnn_like(blocks: int = 4, channels: int = 64) -> Graph:
    """DS-CNN (keyword spotting): a 10x4 strided conv on 49x10 MFCCs, then depthwise-separable blocks."""
    g = GraphBuilder((1, 49, 10, 1))
    x = g.conv(g.input, channels, (10, 4), 2)
    for _ in range(blocks):
        x = g.conv(g.dwconv(x, 3), channels)
    return g.graph(g.global_avgpool_fc(x, 12))


def random_dag(nodes: int = 60, seed: int = 0) -> Graph:
    """Random branches and joins on 12x12 maps: convs of random width, joins concatenate recent tensors."""
    rng = random.Random(seed)
    g = GraphBuilder((1, 12, 12, 16))
    made = [g.input]
    for _ in range(nodes):
        if len(made) > 2 and rng.random() < 0.3:
            x = g.concat(rng.sample(made[-8:], 2))
        else:
            x = g.conv(rng.choice(made[-4:]), rng.choice([8, 16, 32, 64]), rng.choice([1, 3]))
        made.append(x)
    return g.graph(made[-1])


def conv_kernel_scratch(graph: Graph) -> dict[str, int]:
    """Scratch bytes the kernel library asks for, per conv node (compiles the library for the host)."""
    from tinyml.kernels import conv_scratch_bytes

    return {n.name: conv_scratch_bytes(graph, n) for n in graph.nodes if n.op in ("conv2d", "dwconv2d")}


def plan_row(name: str, graph: Graph, scratch: dict[str, int] | None = None) -> tuple[list[str], MemoryPlan]:
    """One table row for a graph: sizes against the lower bound, and the planner's time."""
    start = time.perf_counter()
    result = plan(graph, scratch)
    elapsed_ms = 1000 * (time.perf_counter() - start)
    result.validate()

    def vs_bound(n: int) -> str:
        return f"{n:,} (+{100 * (n - result.lower_bound) / result.lower_bound:.1f}%)"

    row = [
        name,
        str(len(graph.nodes)),
        str(len(result.offsets)),
        f"{result.lower_bound:,}",
        vs_bound(result.greedy_bytes),
        vs_bound(result.arena_bytes),
        f"{100 * (result.greedy_bytes - result.arena_bytes) / result.greedy_bytes:.1f}%",
        result.strategy,
        f"{elapsed_ms:.0f}",
    ]
    return row, result


@click.command()
@click.option(
    "--kernel-scratch", is_flag=True, help="Add the conv kernels' scratch buffers (builds the C library)."
)
@click.option(
    "--plot", "plot_dir", type=click.Path(file_okay=False, path_type=Path), help="Write timeline PNGs here."
)
def main(kernel_scratch: bool, plot_dir: Path | None) -> None:
    graphs = {
        "mobilenet-v2-like 96x96 x0.35": mobilenet_v2_like(),
        "ds-cnn-like (s)": ds_cnn_like(),
        "random DAG (60 nodes, seed 0)": random_dag(60, 0),
        "random DAG (200 nodes, seed 2)": random_dag(200, 2),
        "random DAG (200 nodes, seed 4)": random_dag(200, 4),
    }
    table = Table(title="memory planner: arena bytes" + (" (with kernel scratch)" if kernel_scratch else ""))
    for column in (
        "graph",
        "nodes",
        "buffers",
        "lower bound",
        "TFLM greedy",
        "ours",
        "saved",
        "strategy",
        "ms",
    ):
        table.add_column(column, justify="left" if column in ("graph", "strategy") else "right", no_wrap=True)
    for name, graph in graphs.items():
        row, result = plan_row(name, graph, conv_kernel_scratch(graph) if kernel_scratch else None)
        table.add_row(*row)
        if plot_dir:
            plot_dir.mkdir(parents=True, exist_ok=True)
            result.plot(plot_dir / f"{name.split()[0]}-{len(graph.nodes)}.png")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
