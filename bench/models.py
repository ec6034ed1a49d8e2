"""The MLPerf Tiny reference architectures on Cortex-M4 and M7: instructions, estimated cycles, flash, RAM.

    .venv/bin/python bench/models.py [--json] [--models kws vww ic anomaly mbv2] [--boards cortex-m4 cortex-m7]

Each model is built in PyTorch with random weights (`torch.manual_seed`), its batch norms given
non-trivial running statistics, calibrated on random data with `quantize-int8`, compiled for the
board (its kernels and scratch), built at -O3 with one test input and run once in QEMU. The
board's output is checked byte for byte against the numpy reference. Instructions per inference
are exact (the QEMU instruction-count plugin); cycles are the plugin's estimate for the board's
core from its documented timing table, labelled "estimated". Flash is the ELF's flash sections
without the compiled-in test input. Peak RAM is what a device needs: the arena, an int8 input and
output buffer, and the stack's high-water mark (`elf_ram_bytes` in the JSON is the test
firmware's .data + .bss, which also holds the harness's profiling buffers; it reads its input
from flash). Beside ours: MLPerf Tiny v1.3's best Cortex-M4 result (NUCLEO-L4R5ZI at 120 MHz,
X-CUBE-AI 10.2) as cycles, and the ratios ours / that, of exact instructions and of estimated
cycles (the reference is measured cycles). A model the board's fit check refuses is reported as
such, not built. Progress goes to stderr, so `--json` prints only the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import tinyml
from tinyml.errors import TinymlError

BOARDS = ("cortex-m4", "cortex-m7")
OPTIMIZATION = "-O3"
CALIBRATION_SAMPLES = 32


def conv_bn_relu(
    cin: int,
    cout: int,
    kernel: int | tuple[int, int],
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    relu: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """Conv (no bias) + BN + activation: the block every architecture here is made of."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout), relu()
    )


def dw_separable(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 + BN + ReLU, then pointwise 1x1 + BN + ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, stride, 1, groups=cin), conv_bn_relu(cin, cout, 1))


def ds_cnn() -> nn.Module:
    """DS-CNN keyword spotting (MLPerf Tiny KWS): 1x49x10 MFCC input, 12 classes."""
    return nn.Sequential(
        conv_bn_relu(1, 64, (10, 4), (2, 2), (5, 1)),
        *(dw_separable(64, 64) for _ in range(4)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 12),
    )


def mobilenet_v1(alpha: float = 0.25, classes: int = 2) -> nn.Module:
    """MobileNetV1 (MLPerf Tiny VWW: alpha 0.25, 3x96x96, 2 classes): 13 depthwise-separable blocks."""
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
    width = int(32 * alpha)
    layers: list[nn.Module] = [conv_bn_relu(3, width, 3, 2, 1)]
    for channels, stride in plan:
        layers.append(dw_separable(width, int(channels * alpha), stride))
        width = int(channels * alpha)
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))


class ResidualBlock(nn.Module):
    """Two 3x3 conv + BN, a 1x1 projection shortcut when the shape changes, add, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(cin, cout, 3, stride, 1),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


def resnet8() -> nn.Module:
    """ResNet-8 (MLPerf Tiny image classification): 3x32x32, stages 16/32/64, 10 classes."""
    return nn.Sequential(
        conv_bn_relu(3, 16, 3, 1, 1),
        ResidualBlock(16, 16, 1),
        ResidualBlock(16, 32, 2),
        ResidualBlock(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def fc_autoencoder() -> nn.Module:
    """FC autoencoder (MLPerf Tiny anomaly detection): 640 -> 128x4 -> 8 -> 128x4 -> 640, BN + ReLU."""
    widths = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
    layers: list[nn.Module] = []
    for cin, cout in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(128, 640))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand + BN + ReLU6, depthwise 3x3 + BN + ReLU6, 1x1 project + BN, add."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [conv_bn_relu(cin, hidden, 1, relu=nn.ReLU6)] if expand != 1 else []
        layers += [
            conv_bn_relu(hidden, hidden, 3, stride, 1, groups=hidden, relu=nn.ReLU6),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding for MobileNetV2 widths."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def mobilenet_v2(alpha: float = 0.30, classes: int = 2) -> nn.Module:
    """MobileNetV2 (alpha 0.30, 3x80x80, 2 classes)."""
    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    width = make_divisible(32 * alpha)
    layers: list[nn.Module] = [conv_bn_relu(3, width, 3, 2, 1, relu=nn.ReLU6)]
    for expand, channels, repeats, stride in settings:
        cout = make_divisible(channels * alpha)
        for i in range(repeats):
            layers.append(InvertedResidual(width, cout, stride if i == 0 else 1, expand))
            width = cout
    last = 1280  # torchvision keeps the last layer at 1280 for alpha <= 1
    layers.append(conv_bn_relu(width, last, 1, relu=nn.ReLU6))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(last, classes))


# name: (task, builder, input shape (C, H, W) or (F,), MLPerf Tiny v1.3 best Cortex-M4 cycles or None)
MODELS: dict[str, tuple[str, Callable[[], nn.Module], tuple[int, ...], int | None]] = {
    "kws": ("keyword spotting (DS-CNN)", ds_cnn, (1, 49, 10), 5_210_000),
    "vww": ("visual wake words (MobileNetV1-0.25)", mobilenet_v1, (3, 96, 96), 10_730_000),
    "ic": ("image classification (ResNet-8)", resnet8, (3, 32, 32), 19_880_000),
    "anomaly": ("anomaly detection (FC autoencoder)", fc_autoencoder, (640,), 575_000),
    "mbv2": ("MobileNetV2-0.30 80x80", lambda: mobilenet_v2(0.30), (3, 80, 80), None),
}


def log(message: str) -> None:
    print(f"[models] {message}", file=sys.stderr, flush=True)


def random_model(name: str, seed: int = 0) -> nn.Module:
    """The architecture with seeded random weights and batch-norm statistics (as if trained), in eval mode."""
    torch.manual_seed(seed)
    model = MODELS[name][1]()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


def calibration(name: str, samples: int = CALIBRATION_SAMPLES, seed: int = 0) -> np.ndarray:
    """Random float32 inputs shaped like the model's (N, C, H, W) or (N, F)."""
    shape = MODELS[name][2]
    return np.random.default_rng(seed).standard_normal((samples, *shape)).astype(np.float32)


def measure(name: str, board_name: str, scratch: Path) -> dict[str, Any]:
    """Compile, build and run one model on one board; its row."""
    from tinyml.board.boards import resolve_board
    from tinyml.board.fit import check_build_fits
    from tinyml.board.project import build_firmware, default_test_inputs, model_sizes
    from tinyml.board.qemu import run_firmware
    from tinyml.board.size import size_report

    task, _, _, reference = MODELS[name]
    board = resolve_board(board_name)
    row: dict[str, Any] = {"model": name, "task": task, "board": board.name, "reference_cycles": reference}
    started = time.monotonic()
    model_dir = scratch / f"{name}-{board.name}"
    build = tinyml.compile(
        random_model(name), calibration(name), ["quantize-int8"], board=board, out_dir=model_dir, progress=False
    )
    try:
        check_build_fits(build, board)
    except TinymlError as err:
        row.update(error=str(err), outputs_match_reference=None)
        log(f"{name} / {board.name}: {err}")
        return row
    inputs = default_test_inputs(model_dir, 1)
    out = build_firmware(model_dir, board, scratch / f"{name}-{board.name}-fw", inputs, optimization=OPTIMIZATION)
    run = run_firmware(out.out_dir, timeout=600)
    sizes = size_report(out.out_dir)
    summary = run.summary()
    cycles = summary.get("estimated_cycles", {}).get(board.core)
    instructions = int(run.instructions[0])
    io = model_sizes(model_dir)
    row.update(
        instructions=instructions,
        instruction_source=run.instruction_source,
        estimated_cycles=None if cycles is None else int(round(cycles[0])),
        ratio=None if reference is None else instructions / reference,
        cycles_ratio=None if reference is None or cycles is None else cycles[0] / reference,
        flash_bytes=sizes.flash_bytes - inputs.size,  # tml_test_inputs is int8 [N][input size] in flash
        peak_ram_bytes=sizes.arena_bytes + io["input_size"] + io["output_size"] + run.stack_bytes,
        arena_bytes=sizes.arena_bytes,
        elf_ram_bytes=sizes.ram_bytes,
        stack_bytes=run.stack_bytes,
        outputs_match_reference=run.outputs_match_reference,
    )
    log(f"{name} / {board.name}: {instructions:,} instructions ({time.monotonic() - started:.0f} s)")
    return row


def table(rows: list[dict[str, Any]]) -> Table:
    out = Table(title=f"MLPerf Tiny architectures, random weights, int8, {OPTIMIZATION} (cycles estimated)")
    for column in (
        "model",
        "board",
        "instructions",
        "est. cycles",
        "MLPerf M4 cycles",
        "ours / MLPerf",
        "est. / MLPerf",
        "flash",
        "peak RAM",
        "stack",
        "exact",
    ):
        out.add_column(column, justify="left" if column in ("model", "board") else "right")

    def number(value: Any) -> str:
        return "-" if value is None else f"{value:,}"

    for row in rows:
        if "error" in row:
            out.add_row(
                row["task"], row["board"], "does not fit", "", number(row["reference_cycles"]), "", "", "", "", "", ""
            )
            continue
        out.add_row(
            row["task"],
            row["board"],
            number(row["instructions"]),
            number(row["estimated_cycles"]),
            number(row["reference_cycles"]),
            "-" if row["ratio"] is None else f"{row['ratio']:.2f}x",
            "-" if row["cycles_ratio"] is None else f"{row['cycles_ratio']:.2f}x",
            number(row["flash_bytes"]),
            number(row["peak_ram_bytes"]),
            number(row["stack_bytes"]),
            {True: "yes", False: "NO", None: "-"}[row["outputs_match_reference"]],
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--boards", nargs="+", default=list(BOARDS))
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinyml-models-") as tmp:
        for name in args.models:
            for board in args.boards:
                rows.append(measure(name, board, Path(tmp)))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        Console(width=200).print(table(rows))
    return 0 if all(row["outputs_match_reference"] is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
