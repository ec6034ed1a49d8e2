"""The hooks a tinyml plugin may implement. Each docstring is the plugin author's manual.

A plugin is a module (or any object) with functions named like the hooks below, each decorated
with ``hookimpl`` (``from tinyml.hookspecs import hookimpl``). It is found through an entry point
in the group ``tinyml``::

    [project.entry-points.tinyml]
    weight-clip = "tinyml_weight_clip"

Implement only the hooks you need; argument names must match the spec, but a plugin may accept
fewer arguments than the spec lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    import click

    from tinyml.board.boards import Board
    from tinyml.ir import Graph, Node, OpDefinition, Tensor
    from tinyml.kernels import Kernel
    from tinyml.technique import Technique
    from tinyml.weights import EncodedTensor

PROJECT_NAME = "tinyml"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def tinyml_techniques() -> list[type[Technique]]:
    """Return the technique classes this plugin provides.

    Each is a subclass of `tinyml.technique.Technique` with a unique `name` (the name a recipe's
    ``[[techniques]]`` entry uses), a `stage` (``"train"`` works on the `torch.nn.Module`,
    ``"graph"`` on the `tinyml.ir.Graph`) and an `Options` pydantic model whose fields are the
    technique's options with their defaults. Two plugins offering the same name is an error.
    """


@hookspec
def tinyml_boards() -> list[Board]:
    """Return the boards (`tinyml.board.boards.Board`) this plugin adds, so ``--board NAME`` can pick them.

    A board names its core, FPU and DSP features, flash and RAM sizes, clock, linker memory map
    and the QEMU machine that emulates it. Names and aliases must be unique across plugins.
    """


@hookspec
def tinyml_kernel_sources() -> list[Path]:
    """Return directories of C kernel sources compiled into every build (host and board).

    Each directory holds ``include/*.h`` and ``src/*.c``. The C must be C99, allocate nothing and
    keep floats out of integer paths; name functions ``tml_<op>_<type>`` as the core library does.
    A plugin keeps its C in its own package (``Path(__file__).parent / "c"``, shipped as package
    data). Declarations a header puts between ``/* cdef-begin */`` and ``/* cdef-end */`` are
    callable from Python through `tinyml.host.build_kernels()`, to test a kernel on its own.
    """


@hookspec
def tinyml_ops() -> list[OpDefinition]:
    """Return the IR ops this plugin adds (`tinyml.ir.OpDefinition`), beyond the core's `tinyml.ir.OPS`.

    Each names the torch operator the frontend maps to it (usually a ``torch.library`` custom op the
    plugin defines, so a trained model exports with it) and gives its float evaluation, its int8
    quantization and its integer reference; `tinyml_select_kernel` then gives it a C kernel. Names
    must be unique across plugins and differ from the core's ops.
    """


@hookspec(firstresult=True)
def tinyml_select_kernel(node: Node, graph: Graph, board: Board | None) -> Kernel | None:
    """Choose the C implementation of one quantized `node` of `graph` for `board`.

    Return a `tinyml.kernels.Kernel` (the C call, its scratch size and the headers it needs) to
    claim the node, or None to leave it to another plugin; `board` is None for a host-only build.
    The first non-None answer wins; the core's direct kernels answer last (``trylast``), so a
    plugin only claims what it does better, e.g. a Winograd kernel for a 3x3 stride-1 convolution.
    """


@hookspec(firstresult=True)
def tinyml_encode_weights(tensor: Tensor, board: Board | None) -> EncodedTensor | None:
    """Choose how the constant `tensor` is stored in flash for `board`.

    Return a `tinyml.weights.EncodedTensor` (the C definitions, the symbol kernels receive, the flash bytes) or
    None to leave it to another plugin; `board` is None for a host-only build. The first non-None
    answer wins; raw int8 arrays are the core's answer of last resort (``trylast``).
    """


# Commands


@hookspec
def tinyml_register_commands(cli: click.Group) -> None:
    """Add commands to the ``tinyml`` command line, as datasette's ``register_commands`` does.

    `cli` is the top-level click group; call ``cli.command()`` or ``cli.add_command(cmd)`` on it. A
    command that raises `tinyml.errors.TinymlError` gets the same one-paragraph error, exit code 1
    and ``--debug`` traceback as the built-in commands. Command names must not collide with the
    built-in ones (``compile``, ``build``, ``run``, ...); a collision is reported by plugin name.
    """
