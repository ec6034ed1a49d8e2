"""The memory planner: valid plans, never above TFLM's greedy arena, exact on hand-worked graphs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyml.errors import TinymlError
from tinyml.ir import Graph, Node, Tensor
from tinyml.planner import (
    Buffer,
    MemoryPlan,
    greedy_tflm_offsets,
    lower_bound,
    plan,
    plan_buffers,
)


def act(name: str, *shape: int) -> Tensor:
    return Tensor(name, shape, "int8")


def const(name: str, *shape: int) -> Tensor:
    return Tensor(name, shape, "int8", data=np.zeros(shape, np.int8))


def graph(tensors: list[Tensor], nodes: list[Node], inputs: list[str], outputs: list[str]) -> Graph:
    return Graph({t.name: t for t in tensors}, nodes, inputs, outputs)


def brute_force_minimum(buffers: list[Buffer]) -> int:
    """Smallest arena by trying every buffer next at 0 or on top of any placed buffer it meets in time.

    Any plan can be pushed down until each buffer rests on 0 or on such a buffer, so this finds the
    minimum; it is exponential and meant for a handful of buffers only.
    """
    best = sum(b.size for b in buffers)

    def meets(a: Buffer, b: Buffer) -> bool:
        return a.first <= b.last and b.first <= a.last

    def search(placed: dict[int, int]) -> None:
        nonlocal best
        arena = max((o + buffers[i].size for i, o in placed.items()), default=0)
        if arena >= best:
            return
        if len(placed) == len(buffers):
            best = arena
            return
        for i, b in enumerate(buffers):
            if i in placed:
                continue
            others = [(placed[j], buffers[j].size) for j in placed if meets(b, buffers[j])]
            for offset in {0} | {o + size for o, size in others}:
                if all(offset + b.size <= o or o + size <= offset for o, size in others):
                    search({**placed, i: offset})

    search({})
    return best


def buffer_sets(max_buffers: int) -> st.SearchStrategy[list[Buffer]]:
    """Random buffers: size 1-64 bytes, alive from a step in 0-12 for 1-7 steps."""
    rows = st.lists(
        st.tuples(st.integers(1, 64), st.integers(0, 12), st.integers(0, 6)), max_size=max_buffers
    )
    return rows.map(
        lambda rs: [Buffer(f"b{i}", size, first, first + span) for i, (size, first, span) in enumerate(rs)]
    )


@settings(max_examples=300, deadline=None)
@given(buffer_sets(14))
def test_random_buffers_plan_is_valid_and_never_worse_than_tflm(buffers: list[Buffer]) -> None:
    result = plan_buffers(buffers)
    result.validate()
    assert set(result.offsets) == {b.name for b in buffers}
    assert result.lower_bound <= result.arena_bytes <= result.greedy_bytes
    assert plan_buffers(buffers).offsets == result.offsets  # the same buffers always get the same plan
    greedy = greedy_tflm_offsets(buffers)
    tflm_plan = MemoryPlan(
        offsets={b.name: o for b, o in zip(buffers, greedy, strict=True)},
        sizes=result.sizes,
        lifetimes=result.lifetimes,
        arena_bytes=result.greedy_bytes,
        lower_bound=result.lower_bound,
        greedy_bytes=result.greedy_bytes,
        strategy="TFLM",
    )
    tflm_plan.validate()


@settings(max_examples=200, deadline=None)
@given(buffer_sets(5))
def test_small_buffer_sets_reach_the_true_minimum(buffers: list[Buffer]) -> None:
    assert plan_buffers(buffers).arena_bytes == brute_force_minimum(buffers)


def test_validate_catches_overlap() -> None:
    bad = MemoryPlan(
        offsets={"a": 0, "b": 8},
        sizes={"a": 16, "b": 16},
        lifetimes={"a": (0, 2), "b": (2, 3)},
        arena_bytes=24,
        lower_bound=32,
        greedy_bytes=32,
        strategy="hand",
    )
    with pytest.raises(TinymlError, match="'a'.*'b'"):
        bad.validate()
    bad.lifetimes["b"] = (3, 4)  # no longer alive together: sharing bytes is fine
    bad.validate()


def test_tflm_baseline_places_largest_first_at_lowest_fit() -> None:
    # Largest first at the lowest offset that fits: c (30) at 0; b (20) overlaps c in time -> 30;
    # a (10) overlaps only b -> the gap [0, 30) under b fits it -> 0; arena 50.
    buffers = [Buffer("a", 10, 0, 1), Buffer("b", 20, 1, 2), Buffer("c", 30, 2, 3)]
    assert greedy_tflm_offsets(buffers) == [0, 30, 0]


def test_reaches_lower_bound_when_tflm_does() -> None:
    # TFLM (ties: the later buffer first): B(10, t2-3)@0, A(10, t0-1)@0, C(6, t1-2) meets both -> 10,
    # E(4, t3) meets B -> 10, D(4, t0) meets A -> 10; arena 16.
    # Lower bound: step 1 holds A + C = 16, so 16 is the minimum and no plan may exceed it.
    buffers = [
        Buffer("A", 10, 0, 1),
        Buffer("B", 10, 2, 3),
        Buffer("C", 6, 1, 2),
        Buffer("D", 4, 0, 0),
        Buffer("E", 4, 3, 3),
    ]
    result = plan_buffers(buffers)
    result.validate()
    assert result.arena_bytes == result.greedy_bytes == result.lower_bound == 16


def test_beats_tflm_where_size_order_fragments() -> None:
    buffers = [
        Buffer("big1", 8, 0, 0),
        Buffer("big2", 8, 2, 2),
        Buffer("mid", 6, 0, 1),
        Buffer("mid2", 6, 1, 2),
        Buffer("small", 2, 1, 1),
    ]
    # Lower bound: step 0 holds big1 + mid = 14; step 1 mid + mid2 + small = 14; step 2 mid2 + big2 = 14.
    # TFLM: big2@0, big1@0, mid2 meets big2 [0,8) -> 8, mid meets big1 [0,8) and mid2 [8,14) -> 14,
    # small meets mid and mid2 -> the gap [0,8) -> 0; arena 20.
    # Minimum: mid@0, big1@6, mid2@8, small@6, big2@0 -> 14, the lower bound.
    result = plan_buffers(buffers)
    result.validate()
    assert result.lower_bound == 14
    assert result.greedy_bytes == 20
    assert result.arena_bytes == 14


def chain_graph() -> Graph:
    # in(1,8,8,4)=256 -> conv -> a(1,8,8,8)=512 -> conv -> b(1,4,4,8)=128 -> fc -> out(1,10)=10
    tensors = [
        act("in", 1, 8, 8, 4),
        act("a", 1, 8, 8, 8),
        act("b", 1, 4, 4, 8),
        act("out", 1, 10),
        const("w0", 8, 3, 3, 4),
        const("w1", 8, 3, 3, 8),
        const("w2", 10, 128),
    ]
    nodes = [
        Node("conv0", "conv2d", ["in", "w0"], ["a"]),
        Node("conv1", "conv2d", ["a", "w1"], ["b"]),
        Node("fc", "fc", ["b", "w2"], ["out"]),
    ]
    return graph(tensors, nodes, ["in"], ["out"])


def test_chain_exact_arena() -> None:
    # Lifetimes: in 0-0, a 0-1, b 1-2, out 2-2 (output lives to the end = step 2).
    # Sizes rounded to 4: 256, 512, 128, 12. Step 0: in+a = 768; step 1: a+b = 640; step 2: b+out = 140.
    # in@0,a@256 (or the mirror) then b in [0,256) and out beside it: arena = 768 = lower bound.
    result = plan(chain_graph())
    result.validate()
    assert result.lifetimes == {"in": (0, 0), "a": (0, 1), "b": (1, 2), "out": (2, 2)}
    assert result.sizes == {"in": 256, "a": 512, "b": 128, "out": 12}
    assert result.lower_bound == 768
    assert result.arena_bytes == 768


def test_chain_with_scratch() -> None:
    # Scratch of 100 bytes (rounded to 100) for conv1 at step 1: a+b+scratch = 740 < 768,
    # so the arena stays 768; scratch of 300 for conv1: 512+128+300 = 940 > 768 -> 940.
    small = plan(chain_graph(), {"conv1": 100})
    small.validate()
    assert small.lifetimes["scratch:conv1"] == (1, 1)
    assert small.arena_bytes == 768
    big = plan(chain_graph(), {"conv1": 300, "fc": 0})
    big.validate()
    assert "scratch:fc" not in big.offsets
    assert big.lower_bound == big.arena_bytes == 940


def residual_graph() -> Graph:
    # x(1,8,8,8)=512 -> conv -> y 512 -> conv -> z 512 -> add(x, z) -> out 512
    tensors = [act(n, 1, 8, 8, 8) for n in ("x", "y", "z", "out")] + [const("w", 8, 1, 1, 8)]
    nodes = [
        Node("c1", "conv2d", ["x", "w"], ["y"]),
        Node("c2", "conv2d", ["y", "w"], ["z"]),
        Node("add", "add", ["x", "z"], ["out"]),
    ]
    return graph(tensors, nodes, ["x"], ["out"])


def test_residual_exact_arena() -> None:
    # x lives 0-2 (the add reads it at step 2), y 0-1, z 1-2, out 2-2.
    # Step 0: x+y = 1024; step 1: x+y+z = 1536; step 2: x+z+out = 1536. Lower bound 1536,
    # reached by x@0, y@512, z@1024, out@512 (y is dead at step 2).
    result = plan(residual_graph())
    result.validate()
    assert result.lifetimes["x"] == (0, 2)
    assert result.lower_bound == 1536
    assert result.arena_bytes == 1536


def concat_graph() -> Graph:
    # in(1,4,4,4)=64 -> b1 conv -> p(1,4,4,8)=128; in -> b2 conv -> q(1,4,4,4)=64;
    # concat(p, q) -> cat(1,4,4,12)=192 -> fc-ish flatten -> flat(1,192)=192
    tensors = [
        act("in", 1, 4, 4, 4),
        act("p", 1, 4, 4, 8),
        act("q", 1, 4, 4, 4),
        act("cat", 1, 4, 4, 12),
        act("flat", 1, 192),
        const("w", 8, 1, 1, 4),
    ]
    nodes = [
        Node("b1", "conv2d", ["in", "w"], ["p"]),
        Node("b2", "conv2d", ["in", "w"], ["q"]),
        Node("cat", "concat", ["p", "q"], ["cat"]),
        Node("flatten", "flatten", ["cat"], ["flat"]),
    ]
    return graph(tensors, nodes, ["in"], ["flat"])


def test_concat_exact_arena() -> None:
    # in 0-1, p 0-2, q 1-2, cat 2-3, flat 3-3.
    # Step 0: 64+128 = 192; step 1: 64+128+64 = 256; step 2: 128+64+192 = 384; step 3: 192+192 = 384.
    # Lower bound 384, reached by cat@0, p@192, q@320, flat@192 (p and q are dead at step 3) and
    # in@0 (cat is not alive before step 2).
    result = plan(concat_graph())
    result.validate()
    assert result.lower_bound == 384
    assert result.arena_bytes == 384


def test_alignment_rounds_every_size_and_offset() -> None:
    result = plan(chain_graph(), {"conv0": 5}, alignment=16)
    result.validate()
    assert result.sizes["out"] == 16 and result.sizes["scratch:conv0"] == 16
    assert all(offset % 16 == 0 for offset in result.offsets.values())


def test_report_and_plot(tmp_path) -> None:
    result = plan(residual_graph(), {"c2": 40})
    # Step 1 holds x + y + z + 40 bytes of scratch = 1576, and x@0, y@512, z@1024, scratch@1536 fits.
    text = result.report()
    assert "1,576 B" in text
    assert "lower bound" in text and "TFLM greedy" in text and "scratch:c2" in text
    png = result.plot(tmp_path / "timeline.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_reported_by_name() -> None:
    with pytest.raises(TinymlError, match="'nope'"):
        plan(chain_graph(), {"nope": 8})
    with pytest.raises(TinymlError, match="'conv1'.*-1"):
        plan(chain_graph(), {"conv1": -1})
    with pytest.raises(TinymlError, match="alignment"):
        plan(chain_graph(), alignment=0)
    g = chain_graph()
    g.nodes[1].inputs[0] = "missing"
    with pytest.raises(TinymlError, match="conv1.*'missing'"):
        plan(g)
    with pytest.raises(TinymlError, match="both named"):
        plan_buffers([Buffer("a", 1, 0, 0), Buffer("a", 1, 1, 1)])


def test_lower_bound_is_peak_of_live_bytes() -> None:
    assert lower_bound([Buffer("a", 3, 0, 2), Buffer("b", 5, 2, 4), Buffer("c", 7, 4, 4)]) == 12
    assert lower_bound([]) == 0
