"""The memory planner: one static arena holds every activation tensor and every kernel scratch buffer.

Nodes run in list order; node `i` runs at step `i`. A buffer is alive over an inclusive range of
steps, and two buffers alive at the same step must not share bytes. Placing buffers so that the
arena is as small as possible is the dynamic storage allocation problem (NP-hard), so the planner
tries several greedy orders and placements, searches exhaustively when the graph is small, and
keeps the smallest arena. TensorFlow Lite Micro's `GreedyMemoryPlanner` is reimplemented as the
baseline every plan is measured against; it is one of the candidates, so a plan is never worse.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING

from tinyml.errors import TinymlError
from tinyml.ir import Graph

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCRATCH_PREFIX = "scratch:"
EXACT_SEARCH_MAX_BUFFERS = 10
EXACT_SEARCH_BUDGET = 20_000  # search nodes visited before the best plan so far is kept
JITTER_ROUNDS = 150  # greedy placements in randomly perturbed size order, when no plan is yet minimal
JITTER = 0.3  # sizes are scaled by a factor in [1 - JITTER, 1 + JITTER] to perturb the order


@dataclass(frozen=True)
class Buffer:
    """A block of `size` bytes alive from step `first` to step `last`, both included."""

    name: str
    size: int
    first: int
    last: int

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class MemoryPlan:
    """Byte offsets of every buffer in the arena, with the figures that say how good they are."""

    offsets: dict[str, int]
    sizes: dict[str, int]
    lifetimes: dict[str, tuple[int, int]]
    arena_bytes: int
    lower_bound: int
    greedy_bytes: int
    strategy: str

    def buffers(self) -> list[Buffer]:
        return [Buffer(name, self.sizes[name], *self.lifetimes[name]) for name in self.offsets]

    def validate(self) -> None:
        """Raise if two buffers alive at the same step share a byte, or one runs past the arena."""
        for name, offset in self.offsets.items():
            if offset < 0 or offset + self.sizes[name] > self.arena_bytes:
                raise TinymlError(
                    f"Memory plan places buffer {name!r} at bytes [{offset}, {offset + self.sizes[name]}), "
                    f"outside the arena of {self.arena_bytes} bytes."
                )
        buffers = self.buffers()
        for i, a in enumerate(buffers):
            for b in buffers[i + 1 :]:
                if a.overlaps_in_time(b) and _overlaps_in_memory(
                    self.offsets[a.name], a.size, self.offsets[b.name], b.size
                ):
                    raise TinymlError(
                        f"Memory plan overlaps buffers {a.name!r} (steps {a.first}-{a.last}, bytes "
                        f"[{self.offsets[a.name]}, {self.offsets[a.name] + a.size})) and {b.name!r} "
                        f"(steps {b.first}-{b.last}, bytes [{self.offsets[b.name]}, "
                        f"{self.offsets[b.name] + b.size})): both are alive at the same step."
                    )

    def timeline(self) -> list[tuple[str, int, int, int, int]]:
        """Rectangles of the memory timeline: (name, first step, last step, offset, size), by offset."""
        return sorted(
            ((b.name, b.first, b.last, self.offsets[b.name], b.size) for b in self.buffers()),
            key=lambda r: (r[3], r[1]),
        )

    def report(self) -> str:
        """A plain-text table: arena against the lower bound and the TFLM baseline, then every buffer."""

        def above(n: int) -> str:
            return f"+{100.0 * (n - self.lower_bound) / self.lower_bound:.1f} %" if self.lower_bound else "-"

        lines = [
            f"{'arena':<22}{self.arena_bytes:>10,} B  {above(self.arena_bytes):>9} above lower bound",
            f"{'lower bound':<22}{self.lower_bound:>10,} B",
            f"{'TFLM greedy baseline':<22}{self.greedy_bytes:>10,} B  {above(self.greedy_bytes):>9}"
            " above lower bound",
            f"{'strategy':<22}{self.strategy}",
            "",
            f"{'buffer':<32}{'bytes':>10}{'offset':>10}  steps",
        ]
        for name, first, last, offset, size in self.timeline():
            lines.append(f"{name:<32}{size:>10,}{offset:>10,}  {first}-{last}")
        return "\n".join(lines)

    def figure(self, step_labels: Sequence[str] | None = None) -> Figure:
        """The memory timeline as a matplotlib figure (x: step, y: arena offset), one rectangle per
        buffer, with the arena, the lower bound and TFLM's greedy baseline marked.

        `step_labels` names the steps (the layers) on the x axis. The figure renders through Agg,
        so it needs no display.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
        from matplotlib.ticker import StrMethodFormatter

        rows = self.timeline()
        last_step = max((r[2] for r in rows), default=0)
        steps = max(last_step + 1, len(step_labels or ()))
        fig = Figure(figsize=(min(max(10.0, 0.45 * steps), 24.0), 4.8))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for i, (name, first, last, offset, size) in enumerate(rows):
            color = f"C{i % 10}"
            ax.add_patch(
                Rectangle(
                    (first - 0.45, offset),
                    last - first + 0.9,
                    size,
                    facecolor=color,
                    alpha=0.6,
                    edgecolor="black",
                    linewidth=0.5,
                )
            )
            if size >= 0.03 * max(self.arena_bytes, 1):
                label = f"{name}\n{size:,} B" if size >= 0.1 * self.arena_bytes else name
                ax.text(
                    (first + last) / 2, offset + size / 2, label, ha="center", va="center", fontsize=7, clip_on=True
                )
        ax.axhline(self.arena_bytes, color="black", linewidth=1.0, label=f"arena {self.arena_bytes:,} B")
        ax.axhline(
            self.lower_bound,
            color="green",
            linestyle="--",
            linewidth=1.0,
            label=f"lower bound {self.lower_bound:,} B",
        )
        ax.axhline(
            self.greedy_bytes,
            color="red",
            linestyle=":",
            linewidth=1.0,
            label=f"TFLM greedy {self.greedy_bytes:,} B",
        )
        ax.set_xlim(-0.5, steps - 0.5)
        ax.set_ylim(0, max(self.arena_bytes, self.greedy_bytes, 1) * 1.2)
        if step_labels:
            ax.set_xticks(range(len(step_labels)), [f"{i}: {_short(label)}" for i, label in enumerate(step_labels)])
            ax.tick_params(axis="x", labelrotation=35, labelsize=7)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
            ax.set_xlabel("step (layer)")
        else:
            ax.set_xlabel("step (node index)")
        ax.set_ylabel("arena offset (bytes)")
        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
        ax.legend(loc="upper right", fontsize=7)
        fig.tight_layout()
        return fig

    def plot(self, path: str | Path, step_labels: Sequence[str] | None = None) -> Path:
        """Draw the memory timeline (`figure`) to a PNG file."""
        path = Path(path)
        self.figure(step_labels).savefig(path, format="png", dpi=120)
        return path


def plan(graph: Graph, scratch_bytes: Mapping[str, int] | None = None, alignment: int = 4) -> MemoryPlan:
    """Plan the arena for a graph's activations and its nodes' scratch buffers.

    `scratch_bytes` maps a node name to the scratch its kernel asks for (alive during that node's
    step only). Every size is rounded up to `alignment`, so every offset is a multiple of it.
    """
    return plan_buffers(graph_buffers(graph, scratch_bytes, alignment))


def graph_buffers(graph: Graph, scratch_bytes: Mapping[str, int] | None, alignment: int) -> list[Buffer]:
    """The buffers a graph needs, in the order TFLM would add them: activations, then scratch."""
    if not isinstance(alignment, Integral) or alignment < 1:
        raise TinymlError(f"Memory plan alignment must be a positive integer of bytes, got {alignment!r}.")
    step_of = {node.name: i for i, node in enumerate(graph.nodes)}
    end = max(len(graph.nodes) - 1, 0)
    first: dict[str, int] = {name: 0 for name in graph.inputs}
    last: dict[str, int] = {name: 0 for name in graph.inputs}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs + node.outputs:
            if name not in graph.tensors:
                raise TinymlError(
                    f"Node {node.name!r} ({node.op}{_where(node.source)}) refers to tensor {name!r}, "
                    "which the graph does not define; the memory plan cannot size it."
                )
        for name in node.outputs:
            first.setdefault(name, i)
            last[name] = max(last.get(name, i), i)
        for name in node.inputs:
            if graph.tensors[name].is_constant:
                continue
            if name not in first:
                raise TinymlError(
                    f"Node {node.name!r} ({node.op}{_where(node.source)}) reads tensor {name!r} before any "
                    "node produces it and it is not a graph input; nodes must be in execution order."
                )
            last[name] = max(last[name], i)
    for name in graph.outputs:
        if name not in first:
            raise TinymlError(f"Graph output {name!r} is neither a graph input nor produced by any node.")
        last[name] = end

    buffers = [
        Buffer(t.name, _round_up(t.nbytes, alignment), first[t.name], last[t.name])
        for t in graph.activations()
    ]
    for node_name, nbytes in (scratch_bytes or {}).items():
        if node_name not in step_of:
            raise TinymlError(
                f"Scratch size given for node {node_name!r}, which is not in the graph "
                f"(nodes: {', '.join(step_of) or 'none'})."
            )
        if not isinstance(nbytes, Integral) or nbytes < 0:
            raise TinymlError(
                f"Scratch size for node {node_name!r} must be a non-negative integer"
                f" of bytes, got {nbytes!r}."
            )
        if nbytes > 0:
            step = step_of[node_name]
            buffers.append(Buffer(SCRATCH_PREFIX + node_name, _round_up(int(nbytes), alignment), step, step))
    return buffers


def plan_buffers(buffers: list[Buffer]) -> MemoryPlan:
    """Place buffers in one arena, keeping the smallest of: TFLM's greedy plan, greedy placements
    in other orders, an exhaustive search when there are few buffers, then greedy placements in
    size orders with seeded random jitter. It stops early once a plan reaches the lower bound."""
    _check_buffers(buffers)
    conflicts = _time_conflicts(buffers)
    bound = lower_bound(buffers)
    greedy = greedy_tflm_offsets(buffers, conflicts)
    best_offsets, best_arena = greedy, _arena(buffers, greedy)
    best_strategy = "TFLM greedy (size desc, first fit)"
    proven = best_arena == bound

    def try_order(order: list[int], order_name: str) -> None:
        nonlocal best_offsets, best_arena, best_strategy, proven
        for fit_name, fit in (("first fit", _first_fit), ("best fit", _best_fit)):
            offsets = _place(buffers, conflicts, order, fit)
            arena = _arena(buffers, offsets)
            if arena < best_arena:
                best_offsets, best_arena, best_strategy = offsets, arena, f"{fit_name}, {order_name}"
                proven = arena == bound
            if proven:
                return

    for order_name, key in ORDERINGS.items():
        if not proven:
            try_order(sorted(range(len(buffers)), key=lambda i, key=key: key(buffers[i])), order_name)
    if not proven and len(buffers) <= EXACT_SEARCH_MAX_BUFFERS:
        found, proven = _exact_search(buffers, conflicts, best_arena, bound)
        if found is not None:
            best_offsets, best_arena, best_strategy = found, _arena(buffers, found), "exhaustive search"
    rng = random.Random(0)  # fixed seed: the same graph always gets the same plan
    for _ in range(JITTER_ROUNDS if not proven else 0):
        jitter = [rng.uniform(1 - JITTER, 1 + JITTER) for _ in buffers]
        try_order(
            sorted(range(len(buffers)), key=lambda i: -buffers[i].size * jitter[i]), "jittered size desc"
        )
        if proven:
            break
    if proven:
        best_strategy += " (minimal)"
    return MemoryPlan(
        offsets={b.name: best_offsets[i] for i, b in enumerate(buffers)},
        sizes={b.name: b.size for b in buffers},
        lifetimes={b.name: (b.first, b.last) for b in buffers},
        arena_bytes=best_arena,
        lower_bound=bound,
        greedy_bytes=_arena(buffers, greedy),
        strategy=best_strategy,
    )


def lower_bound(buffers: Iterable[Buffer]) -> int:
    """No arena is smaller than the bytes alive at its busiest step."""
    alive: dict[int, int] = {}
    for b in buffers:
        for step in range(b.first, b.last + 1):
            alive[step] = alive.get(step, 0) + b.size
    return max(alive.values(), default=0)


def greedy_tflm_offsets(buffers: list[Buffer], conflicts: list[list[int]] | None = None) -> list[int]:
    """TensorFlow Lite Micro's GreedyMemoryPlanner: largest first, each at the lowest offset that fits.

    TFLM lists buffers back to front and then sorts stably by size, so among equal sizes the buffer
    added last is placed first; that tie rule is kept so the baseline matches TFLM's arena.
    """
    conflicts = _time_conflicts(buffers) if conflicts is None else conflicts
    order = sorted(reversed(range(len(buffers))), key=lambda i: -buffers[i].size)
    return _place(buffers, conflicts, order, _first_fit)


# Orders the greedy variants try; each key sorts ascending, ties keep the buffers' given order.
ORDERINGS: dict[str, Callable[[Buffer], tuple[int, ...]]] = {
    "size desc": lambda b: (-b.size, b.first - b.last),
    "lifetime desc": lambda b: (b.first - b.last, -b.size),
    "start order": lambda b: (b.first, -b.size),
    "size x lifetime desc": lambda b: (-b.size * (b.last - b.first + 1), -b.size),
}

# A placement rule gets the free gaps (offset, length) below the top of the overlapping buffers,
# the top itself, and the size to place; it returns the offset.
Fit = Callable[[list[tuple[int, int]], int, int], int]


def _first_fit(gaps: list[tuple[int, int]], top: int, size: int) -> int:
    return next((offset for offset, length in gaps if length >= size), top)


def _best_fit(gaps: list[tuple[int, int]], top: int, size: int) -> int:
    fitting = [(length, offset) for offset, length in gaps if length >= size]
    return min(fitting)[1] if fitting else top


def _place(buffers: list[Buffer], conflicts: list[list[int]], order: list[int], fit: Fit) -> list[int]:
    """Place buffers one by one in `order`, each among the already placed ones alive at the same time."""
    offsets = [-1] * len(buffers)
    for i in order:
        placed = sorted((offsets[j], offsets[j] + buffers[j].size) for j in conflicts[i] if offsets[j] >= 0)
        gaps, top = [], 0
        for start, end in placed:
            if start > top:
                gaps.append((top, start - top))
            top = max(top, end)
        offsets[i] = fit(gaps, top, buffers[i].size)
    return offsets


def _exact_search(
    buffers: list[Buffer], conflicts: list[list[int]], upper: int, bound: int
) -> tuple[list[int] | None, bool]:
    """Search every placement that could beat `upper`; returns (better offsets or None, search complete).

    Any plan can be pushed down until each buffer sits at 0 or on top of a buffer it overlaps in
    time; placing buffers by ascending offset then only ever needs those candidate offsets.
    """
    n = len(buffers)
    sizes = [b.size for b in buffers]
    offsets = [-1] * n
    best: list[int] | None = None
    best_arena = upper
    visits = 0

    def fits(i: int, offset: int) -> bool:
        return all(
            offsets[j] < 0 or not _overlaps_in_memory(offset, sizes[i], offsets[j], sizes[j])
            for j in conflicts[i]
        )

    def search(placed: int, floor: int, floor_index: int, arena: int) -> None:
        nonlocal best, best_arena, visits
        visits += 1
        if placed == n:
            best, best_arena = list(offsets), arena
            return
        for i in range(n):
            if offsets[i] >= 0:
                continue
            candidates = {0} | {offsets[j] + sizes[j] for j in conflicts[i] if offsets[j] >= 0}
            for offset in sorted(candidates):
                if visits > EXACT_SEARCH_BUDGET or best_arena == bound:
                    return
                # Ascending offsets, and index order among equal offsets, so each plan is met once.
                if offset < floor or (offset == floor and i < floor_index):
                    continue
                if max(arena, offset + sizes[i]) >= best_arena or not fits(i, offset):
                    continue
                offsets[i] = offset
                search(placed + 1, offset, i, max(arena, offset + sizes[i]))
                offsets[i] = -1

    search(0, 0, -1, 0)
    return best, visits <= EXACT_SEARCH_BUDGET or best_arena == bound


def _check_buffers(buffers: list[Buffer]) -> None:
    seen: set[str] = set()
    for b in buffers:
        if b.name in seen:
            raise TinymlError(f"Two buffers to plan are both named {b.name!r}; each needs its own name.")
        seen.add(b.name)
        if b.size < 0 or b.first < 0 or b.last < b.first:
            raise TinymlError(
                f"Buffer {b.name!r} has size {b.size} and steps {b.first}-{b.last}; sizes must be >= 0 "
                "and a lifetime must start at a step >= 0 and end no earlier than it starts."
            )


def _time_conflicts(buffers: list[Buffer]) -> list[list[int]]:
    return [
        [j for j, other in enumerate(buffers) if j != i and b.overlaps_in_time(other)]
        for i, b in enumerate(buffers)
    ]


def _overlaps_in_memory(offset_a: int, size_a: int, offset_b: int, size_b: int) -> bool:
    return offset_a < offset_b + size_b and offset_b < offset_a + size_a


def _arena(buffers: list[Buffer], offsets: list[int]) -> int:
    return max((o + b.size for o, b in zip(offsets, buffers, strict=True)), default=0)


def _round_up(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _where(source: str) -> str:
    return f" from `{source}`" if source else ""


def _short(label: str, limit: int = 32) -> str:
    """A layer name short enough for an axis tick: the end of a long module path says the most."""
    return label if len(label) <= limit else "…" + label[-(limit - 1) :]
