"""What every candidate shares on a board, measured once in QEMU: stack, code size, instructions per MAC.

A probe model holding each kind of layer the search space uses (3x3 stem, 3x3 and 5x5 depthwise,
1x1 pointwise, residual add, average pool, linear) is compiled, built for the board and run in
QEMU. Its stack high-water is the stack a candidate's firmware needs (the kernels keep their
buffers in the arena, so the stack does not grow with the layer sizes); its flash less its
constants and test inputs is the code; each layer's counted instructions over its MACs (or the
elements it reads) are the rates `estimate_instructions` applies to a candidate. The result is
cached per board and kernel sources, so a search measures it once.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tinyml.board.fit import CODE_BYTES_ESTIMATE
from tinyml_plugins.search.space import Architecture, StageChoice

if TYPE_CHECKING:
    from tinyml.board.boards import Board
    from tinyml.compiler import Build
    from tinyml.ir import Node

PROBE_ARCHITECTURE = Architecture(
    resolution=8,
    width=1.0,
    stem_channels=8,
    stages=((8, 1), (16, 2)),
    choices=(
        StageChoice(depth=1, block="ds", kernel=3, expansion=1),
        StageChoice(depth=2, block="ir", kernel=5, expansion=3),
    ),
)


@dataclass
class BoardProbe:
    """Stack and code bytes a firmware needs on `board`, and instructions per unit of work by kernel.

    `measured` is False when the figures were given (``stack`` option) rather than measured; then
    there are no rates and instructions are not estimated.
    """

    board: str
    stack_bytes: int
    code_bytes: int
    rates: dict[str, float] = field(default_factory=dict)
    measured: bool = False

    def estimate_instructions(self, build: Build) -> int | None:
        """Instructions per inference: each layer's work times its kernel's measured rate."""
        from tinyml_plugins.search.cost import node_work

        if not self.rates:
            return None
        total = 0.0
        for node in build.graph.nodes:
            key = kernel_key(build, node)
            rate = self.rates.get(key)
            if rate is None:  # a kernel shape the probe has not run: the mean rate of the same function
                same = [r for k, r in self.rates.items() if k.split(":")[0] == key.split(":")[0]]
                rate = sum(same) / len(same) if same else sum(self.rates.values()) / len(self.rates)
            total += rate * node_work(build.graph, node)
        return int(round(total))


def kernel_key(build: Build, node: Node) -> str:
    """The kernel function and, for a convolution, its filter's height x width (1x1 and 3x3 differ in speed)."""
    function = build.generated.kernels[node.name].function
    if node.op in ("conv2d", "dwconv2d"):
        weight = build.graph.tensors[node.inputs[1]]
        return f"{function}:{weight.shape[1]}x{weight.shape[2]}"
    return function


def given_probe(board: Board, stack_bytes: int) -> BoardProbe:
    """Figures without a QEMU run: the given stack and the fit check's code estimate."""
    return BoardProbe(board=board.name, stack_bytes=stack_bytes, code_bytes=CODE_BYTES_ESTIMATE)


def _cache_file(board: Board) -> Path:
    from tinyml import __version__
    from tinyml.board.project import kernel_source_dirs
    from tinyml.host import cache_dir

    digest = hashlib.sha256(f"{__version__}{board}{PROBE_ARCHITECTURE}".encode())
    digest.update(Path(__file__).read_bytes())
    for folder in kernel_source_dirs():
        for path in sorted(folder.rglob("*.[ch]")):
            digest.update(path.read_bytes())
    return cache_dir().parent / "search" / f"probe-{board.name}-{digest.hexdigest()[:16]}.json"


def measure_probe(board: Board) -> BoardProbe:
    """The probe's figures for `board`: from the cache, else built and run in QEMU (about a minute)."""
    cache = _cache_file(board)
    if cache.is_file():
        try:
            return BoardProbe(**json.loads(cache.read_text()))
        except (ValueError, TypeError):
            pass  # a damaged cache file is measured again
    probe = _run_probe(board)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(probe), indent=1))
    partial.replace(cache)
    return probe


def _run_probe(board: Board) -> BoardProbe:
    import numpy as np

    from tinyml.board.project import build_firmware
    from tinyml.board.qemu import run_firmware
    from tinyml.board.size import size_report
    from tinyml.compiler import write_build
    from tinyml_plugins.search.cost import compile_candidate, node_work

    build = compile_candidate(PROBE_ARCHITECTURE, board)
    with tempfile.TemporaryDirectory(prefix="tinyml-search-probe-") as scratch:
        model_dir = Path(scratch) / "model"
        write_build(build, model_dir, None, None)
        size = int(np.prod(build.graph.tensors[build.graph.inputs[0]].shape))
        inputs = np.random.default_rng(0).integers(-128, 128, size=(2, size), dtype=np.int8)
        out = build_firmware(model_dir, board, Path(scratch) / "firmware", inputs).out_dir
        run = run_firmware(out, timeout=300)
        flash = size_report(out).flash_bytes
    per_layer = run.layer_instructions.mean(axis=0)
    rates: dict[str, list[float]] = {}
    for node, count in zip(build.graph.nodes, per_layer, strict=True):
        rates.setdefault(kernel_key(build, node), []).append(float(count) / max(node_work(build.graph, node), 1))
    return BoardProbe(
        board=board.name,
        stack_bytes=int(run.stack_bytes),
        code_bytes=int(flash - build.generated.weight_bytes - inputs.size),
        rates={key: sum(values) / len(values) for key, values in rates.items()},
        measured=True,
    )
