"""The fit check: will a compiled model fit a board's flash and RAM, before anything is built.

A misfit says by how many bytes, which layer dominates, and which installed technique would help (a
technique says what it makes smaller in its `reduces`); when none is installed, what kind of change would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tinyml.board.boards import Board
from tinyml.errors import FitError

if TYPE_CHECKING:
    from tinyml.planner import MemoryPlan


# Flash taken besides the weights (runtime, harness, kernels, libc helpers), used before a build:
# the bundled example's stm32 build has about 6.5 KB of it (`tinyml size build/stm32`).
CODE_BYTES_ESTIMATE = 8 * 1024


@dataclass
class FitEstimate:
    """Flash and RAM a model is expected to need on a board, before anything is compiled."""

    board: str
    flash_bytes: int
    ram_bytes: int
    flash_limit: int
    ram_limit: int
    parts: dict[str, int] = field(default_factory=dict)


def live_bytes_by_layer(plan: MemoryPlan, layer_names: Sequence[str]) -> dict[str, int]:
    """Arena bytes alive while each layer runs (buffers whose lifetime covers its step)."""
    live = {}
    for step, name in enumerate(layer_names):
        live[name] = sum(
            plan.sizes[buffer] for buffer, (first, last) in plan.lifetimes.items() if first <= step <= last
        )
    return live


def check_fit(
    board: Board,
    arena_bytes: int,
    layer_weight_bytes: Mapping[str, int],
    *,
    live_arena_bytes: Mapping[str, int] | None = None,
    code_bytes: int = CODE_BYTES_ESTIMATE,
) -> FitEstimate:
    """Raise FitError if weights + code exceed flash or arena + stack exceed RAM; else the estimate.

    `layer_weight_bytes` maps each layer to its constant bytes (they stay in flash);
    `live_arena_bytes` (optional) maps each layer to the arena bytes alive while it runs, to name
    the layer that sets the RAM peak.
    """
    weights = sum(layer_weight_bytes.values())
    estimate = FitEstimate(
        board=board.name,
        flash_bytes=weights + code_bytes,
        ram_bytes=arena_bytes + board.stack_reserve,
        flash_limit=board.flash_bytes,
        ram_limit=board.ram_bytes,
        parts={"weights": weights, "code": code_bytes, "arena": arena_bytes, "stack": board.stack_reserve},
    )
    problems = []
    if estimate.flash_bytes > board.flash_bytes:
        layer, size = max(layer_weight_bytes.items(), key=lambda item: item[1], default=("-", 0))
        problems.append(
            f"flash: needs about {estimate.flash_bytes} bytes ({weights} of weights + {code_bytes} of code), "
            f"{estimate.flash_bytes - board.flash_bytes} bytes more than the {board.flash_bytes} it has; "
            f"layer {layer!r} holds the most weights ({size} bytes); {_advice('flash')}"
        )
    if estimate.ram_bytes > board.ram_bytes:
        culprit = ""
        if live_arena_bytes:
            layer, size = max(live_arena_bytes.items(), key=lambda item: item[1])
            culprit = f"layer {layer!r} sets the peak ({size} bytes of activations alive); "
        problems.append(
            f"RAM: needs about {estimate.ram_bytes} bytes ({arena_bytes} of activations + {board.stack_reserve} of "
            f"stack), {estimate.ram_bytes - board.ram_bytes} bytes more than the {board.ram_bytes} it has; "
            f"{culprit}{_advice('ram')}"
        )
    if problems:
        raise FitError(f"The model does not fit board {board.name!r}: " + "; ".join(problems) + ".")
    return estimate


_WHAT_HELPS = {
    "flash": (
        "make weights smaller",
        "fewer parameters in that layer would help, as would a technique plugin that makes weights smaller "
        "(pruning, fewer bits per weight or compressed weight storage)",
    ),
    "ram": (
        "make activations smaller",
        "fewer channels or a lower input resolution there would help, as would a technique plugin that shrinks "
        "activations (e.g. a search for an architecture under a RAM limit)",
    ),
}


def _advice(memory: str) -> str:
    """What would help with `memory` ("flash" or "ram"): the installed techniques that say they reduce it, or,
    when none is installed, the kind of change or technique that would."""
    from tinyml import plugins

    helpers = sorted(name for name, cls in plugins.techniques().items() if memory in getattr(cls, "reduces", ()))
    purpose, otherwise = _WHAT_HELPS[memory]
    if helpers:
        listed = ", ".join(f"'{name}'" for name in helpers)
        return f"installed techniques that {purpose}: {listed} (add them to the recipe's [[techniques]])"
    return f"no installed technique is marked to {purpose} (`tinyml plugins` lists what is installed): {otherwise}"


def check_build_fits(build: Any, board: Board) -> FitEstimate:
    """`check_fit` with the figures of a `tinyml.compiler.Build`."""
    layer_names = [node.name for node in build.graph.nodes]
    # The caller's input and output buffers live in RAM beside the arena.
    io_bytes = sum(build.graph.tensors[name].nbytes for name in build.graph.inputs + build.graph.outputs)
    return check_fit(
        board,
        build.plan.arena_bytes + io_bytes,
        build.layer_weight_bytes(),
        live_arena_bytes=live_bytes_by_layer(build.plan, layer_names),
    )

