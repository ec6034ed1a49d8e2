"""The DSP kernel paths (Cortex-M4, M7, M33: convolution with its 1x1 and general variants, depthwise, fully
connected, average and max pooling, add, softmax) and
the portable path (Cortex-M3) on the boards, byte for byte against the numpy reference.

The host has no DSP extension, so these paths only run in QEMU. To keep that cheap, one firmware per board
runs every case: the cases (random shapes, offsets, clamps, biases and requantization, drawn from a seeded
generator) are compiled in as constant arrays by a hand-written model whose "layers" are the cases, built once
per module through the ordinary firmware build. Each case's scratch is the size the code generator computes for
the board (`tinyml.kernels`), followed by guard bytes that the firmware checks after the call, so a kernel that
writes past its scratch fails the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tinyml import host
from tinyml.board.boards import resolve_board
from tinyml.kernels import (
    CONV_SUMS,
    add_s8_scratch_bytes,
    conv2d_s8_scratch_bytes,
    dwconv2d_s8_scratch_bytes,
    folded_bias,
)
from tinyml.numbers import quantize_multiplier
from tinyml.reference.conv import conv2d_s8, conv_output_size, dwconv2d_s8, fc_s8
from tinyml.reference.elementwise import ADD_PARAM_FIELDS, add_s8, softmax_exp_table, softmax_s8
from tinyml.reference.pool import avgpool_s8, maxpool_s8
from tinyml.weights import c_values

BOARDS = ("cortex-m4", "cortex-m7", "cortex-m33", "cortex-m3")
GUARD_BYTES = 16
GUARD = 0xA5
SCRATCH_OVERRUN = 99  # the status a case reports when its kernel wrote past its scratch
CASES = 90
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


POOLS = {"avgpool": avgpool_s8, "maxpool": maxpool_s8}


@dataclass
class Case:
    """One kernel call: its data, arguments and the reference's output."""

    op: str  # conv2d, dwconv2d, fc, avgpool, maxpool, add or softmax
    x: np.ndarray
    w: np.ndarray | None  # add: the second input; softmax: the exp table
    bias: np.ndarray | None
    kw: dict
    fold: bool = False  # fc: pass the code generator's folded bias
    no_scratch: bool = False  # conv2d: pass NULL scratch (a DSP target then runs the portable loop)

    @property
    def expected(self) -> np.ndarray:
        if self.op == "fc":
            return fc_s8(self.x, self.w, self.bias, **self.kw)
        if self.op in POOLS:
            return POOLS[self.op](self.x, **self.kw)
        if self.op == "add":
            return add_s8(self.x, self.w, **self.kw)
        if self.op == "softmax":
            return softmax_s8(self.x, self.w)
        if self.op == "dwconv2d":
            return dwconv2d_s8(self.x, self.w, self.bias, **self.kw)
        return conv2d_s8(self.x, self.w, self.bias, **self.kw)

    def out_shape(self) -> tuple[int, ...]:
        if self.op == "fc":
            return (self.w.shape[0],)
        if self.op in ("add", "softmax"):
            return self.x.shape
        if self.op in POOLS:
            (kh, kw), (sh, sw), (ph, pw) = self.kw["kernel"], self.kw["stride"], self.kw["padding"]
            h, w = conv_output_size(self.x.shape[0], kh, sh, ph), conv_output_size(self.x.shape[1], kw, sw, pw)
            return (h, w, self.x.shape[2])
        kh, kw = self.w.shape[:2] if self.op == "dwconv2d" else self.w.shape[1:3]
        out_c = self.w.shape[2] if self.op == "dwconv2d" else self.w.shape[0]
        (sh, sw), (ph, pw) = self.kw["stride"], self.kw["padding"]
        h, w = conv_output_size(self.x.shape[0], kh, sh, ph), conv_output_size(self.x.shape[1], kw, sw, pw)
        return (h, w, out_c)

    def scratch(self, board) -> int:
        if self.op == "add":
            return add_s8_scratch_bytes(self.x.size)
        if self.op not in ("conv2d", "dwconv2d") or self.no_scratch:
            return 0
        if self.op == "dwconv2d":
            return dwconv2d_s8_scratch_bytes(
                self.x.shape, (*self.w.shape[:2], self.x.shape[2]), self.out_shape(), board
            )
        return conv2d_s8_scratch_bytes(self.x.shape, (*self.w.shape[1:3], self.x.shape[2]), self.out_shape(), board)


def _int8(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    if rng.integers(4) == 0:  # only the saturating values
        return rng.choice(np.array([-128, 127], np.int8), size=shape)
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def _requant(rng: np.random.Generator, out_c: int, taps: int) -> dict:
    """Offsets, a clamp and per-channel (multiplier, shift): mostly scaled so that few outputs saturate."""
    typical = 40 / (5500 * np.sqrt(taps))
    pairs = []
    for _ in range(out_c):
        pick = rng.integers(8)
        if pick == 0:
            pairs.append([(INT32_MAX, -31), (INT32_MAX, 30), (1 << 30, 30), (0, 0), (1, 0)][rng.integers(5)])
        else:
            pairs.append(quantize_multiplier(typical * 10.0 ** rng.uniform(-1, 1)))
    clamp = sorted(rng.integers(-128, 128, size=2).tolist()) if rng.integers(3) == 0 else [-128, 127]
    zero_points = [-128, 127, 0, int(rng.integers(-128, 128))]
    return dict(
        input_offset=-zero_points[rng.integers(4)],
        output_offset=zero_points[rng.integers(4)],
        multiplier=np.array([p[0] for p in pairs], np.int32),
        shift=np.array([p[1] for p in pairs], np.int32),
        act_min=int(clamp[0]),
        act_max=int(clamp[1]),
    )


def _bias(rng: np.random.Generator, n: int) -> np.ndarray | None:
    pick = rng.integers(4)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice(np.array([INT32_MIN, INT32_MAX, 0, -5, 7], np.int64), size=n).astype(np.int32)
    return rng.integers(-5000, 5000, size=n).astype(np.int32)


DW_VARIANTS = ("3x3 stride 1", "3x3 stride 2", "general", "multiplier")
# (multiplier, shift) pairs with the SMLAL form of the DSP depthwise output step (shift <= -2, or a zero
# multiplier), at its edges
SMLAL_EXTREMES = [(INT32_MAX, -31), (INT32_MAX, -2), (1 << 30, -2), (1 << 30, -31), (1, -2), (0, 0), (0, 30)]


def _depthwise_case(rng: np.random.Generator, variant: str, in_c: int, smlal: bool) -> Case:
    """A depthwise case for one DSP variant: odd sizes, padding; its requantization either all in the SMLAL
    form (typical values and that form's extremes) or mixed with pairs outside it (then the general output
    step runs)."""
    h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    mult = 1
    padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
    if variant.startswith("3x3"):
        s = 1 if variant == "3x3 stride 1" else 2
        kernel, stride = (3, 3), (s, s)
        padding = (max(padding[0], (4 - h) // 2), max(padding[1], (4 - w) // 2))  # the window fits
    else:
        kernel = (int(rng.integers(1, min(3, h + 2 * padding[0]) + 1)),
                  int(rng.integers(1, min(3, w + 2 * padding[1]) + 1)))  # fmt: skip
        stride = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
        if variant == "multiplier":
            mult = int(rng.choice([2, 3, 4]))
        elif kernel == (3, 3) and stride[0] == stride[1] < 3:
            stride = (stride[0], 3)
    out_c = in_c * mult
    x, wt = _int8(rng, (h, w, in_c)), _int8(rng, (*kernel, out_c))
    quant = _requant(rng, out_c, kernel[0] * kernel[1])
    if not smlal:  # one channel at least outside the SMLAL form (shift -1: a real multiplier in [1/4, 1/2))
        quant["multiplier"][0], quant["shift"][0] = quantize_multiplier(0.3)
    if smlal:  # every channel in the SMLAL form
        typical = 40 / (5500 * kernel[0] * kernel[1])
        pairs = [SMLAL_EXTREMES[rng.integers(len(SMLAL_EXTREMES))] if rng.integers(6) == 0
                 else quantize_multiplier(typical * 10.0 ** rng.uniform(-1, 1)) for _ in range(out_c)]  # fmt: skip
        if out_c > 1 and rng.integers(2) == 0:  # a channel whose real multiplier is 0 beside live ones
            pairs[-1] = (0, 30)
        quant["multiplier"] = np.array([q[0] for q in pairs], np.int32)
        quant["shift"] = np.array([q[1] for q in pairs], np.int32)
    kw = dict(stride=stride, padding=padding, depth_multiplier=mult, **quant)
    return Case("dwconv2d", x, wt, _bias(rng, out_c), kw)


def smlal_form(case: Case) -> bool:
    """Every channel's requantization has the SMLAL form and the clamp lies inside int8."""
    pairs = zip(case.kw["multiplier"].tolist(), case.kw["shift"].tolist(), strict=True)
    return all(m == 0 or (m > 0 and s <= -2) for m, s in pairs)


def random_cases(seed: int, count: int) -> list[Case]:
    """Convolutions of every geometry (1x1 included, input channels with and without a multiple of four,
    odd channel and pixel counts, padding, strides) and fully connected layers with and without a folded bias."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(count):
        if k % 9 == 8:  # add (inputs of 1 .. 40 elements, words and tails) and softmax (rows of 1 .. 40)
            shape = (int(rng.integers(1, 5)), int(rng.integers(1, 11)))
            if k % 27 == 26:  # an add large enough for the tabled variant
                shape = (int(rng.integers(32, 40)), 32)
            if k % 18 == 17:
                table = softmax_exp_table(float(10.0 ** rng.uniform(-3, 0)))
                cases.append(Case("softmax", _int8(rng, shape), table, None, {}))
                continue
            quant = [quantize_multiplier(float(10.0 ** rng.uniform(-3, 0))) for _ in range(3)]
            if rng.integers(4) == 0:
                quant[int(rng.integers(3))] = [(INT32_MAX, -31), (INT32_MAX, 30), (1, 0)][rng.integers(3)]
            clamp = sorted(rng.integers(-128, 128, size=2).tolist()) if rng.integers(3) == 0 else [-128, 127]
            zero_points = [-128, 127, 0, int(rng.integers(-128, 128))]
            kw = dict(
                in1_offset=-zero_points[rng.integers(4)], in1_multiplier=quant[0][0], in1_shift=quant[0][1],
                in2_offset=-zero_points[rng.integers(4)], in2_multiplier=quant[1][0], in2_shift=quant[1][1],
                left_shift=int(rng.choice([0, 20, 31])), output_offset=zero_points[rng.integers(4)],
                out_multiplier=quant[2][0], out_shift=quant[2][1], act_min=int(clamp[0]), act_max=int(clamp[1]),
            )  # fmt: skip
            cases.append(Case("add", _int8(rng, shape), _int8(rng, shape), None, kw))
            continue
        if k % 7 == 6:  # pooling, windows of 1 .. 300 cells (the DSP average pool sums up to 255)
            h, w, c = int(rng.integers(1, 19)), int(rng.integers(1, 19)), int(rng.choice([1, 4, 5, 8, 12]))
            kernel = (int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1)))
            if k % 21 == 20:  # global, over 256 .. 324 cells
                h, w = int(rng.integers(16, 19)), int(rng.integers(16, 19))
                kernel = (h, w)
            padding = (int(rng.integers(0, kernel[0])), int(rng.integers(0, kernel[1])))
            stride = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
            clamp = sorted(rng.integers(-128, 128, size=2).tolist()) if rng.integers(3) == 0 else [-128, 127]
            kw = dict(kernel=kernel, stride=stride, padding=padding, act_min=int(clamp[0]), act_max=int(clamp[1]))
            cases.append(Case("maxpool" if k % 14 == 13 else "avgpool", _int8(rng, (h, w, c)), None, None, kw))
            continue
        if k % 5 == 4:  # depthwise, taking the DSP variants in turn: 3x3 stride 1, 3x3 stride 2, general, multiplier
            variant, turn = DW_VARIANTS[k // 5 % len(DW_VARIANTS)], k // (5 * len(DW_VARIANTS))
            cases.append(_depthwise_case(rng, variant, in_c=(5, 8, 12, 1)[turn % 4], smlal=turn % 2 == 0))
            continue
        if k % 5 == 3:
            n, out_c = int(rng.integers(1, 41)), int(rng.integers(1, 10))
            cases.append(
                Case("fc", _int8(rng, (n,)), _int8(rng, (out_c, n)), _bias(rng, out_c), _requant(rng, out_c, n),
                     fold=bool(rng.integers(2)))
            )  # fmt: skip
            continue
        h, w = int(rng.integers(1, 9)), int(rng.integers(1, 9))
        in_c, out_c = int(rng.integers(1, 10)), int(rng.integers(1, 6))
        if k % 4 == 2:  # pointwise
            kernel, stride, padding = (1, 1), (1, 1), (0, 0)
            if k % 20 == 10:  # more pixels than one chunk of sums, an odd number left, a partial group
                h, w, in_c = 7, 3, int(rng.integers(5, 8))
        else:
            padding = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
            kernel = (int(rng.integers(1, min(5, h + 2 * padding[0]) + 1)),
                      int(rng.integers(1, min(5, w + 2 * padding[1]) + 1)))  # fmt: skip
            stride = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        x, wt = _int8(rng, (h, w, in_c)), _int8(rng, (out_c, *kernel, in_c))
        kw = dict(stride=stride, padding=padding, **_requant(rng, out_c, kernel[0] * kernel[1] * in_c))
        cases.append(Case("conv2d", x, wt, _bias(rng, out_c), kw, no_scratch=k % 10 == 1))
    for k, variant in enumerate(DW_VARIANTS * 2):  # each depthwise variant with both output steps, odd channels
        cases.append(_depthwise_case(rng, variant, in_c=(9, 4)[k // len(DW_VARIANTS)], smlal=k < len(DW_VARIANTS)))
    return cases


# ---------------------------------------------------------------- a model whose layers are the cases


def _array(c_type: str, name: str, values: np.ndarray) -> str:
    values = np.asarray(values).reshape(-1)
    suffix = "u" if c_type.startswith("u") else ""
    body = c_values(values, suffix) if values.size else "0"
    return f"static const {c_type} {name}[{max(values.size, 1)}] = {{{body}}};"


def _case_c(i: int, case: Case, out_offset: int) -> tuple[list[str], str]:
    """The constants of case i, and the statements that run it into out[out_offset...]."""
    p = f"case{i}"
    kw = case.kw
    if case.op == "add":
        fields = ", ".join(str(int(kw[k])) for k in ADD_PARAM_FIELDS)
        lines = [
            _array("int8_t", f"{p}_x", case.x),
            _array("int8_t", f"{p}_x2", case.w),
            f"static const tml_add_params {p}_params = {{{fields}}};",
        ]
        return lines, f"tml_add_s8(&{p}_params, {p}_x, {p}_x2, out + {out_offset}, {case.x.size}, {{scratch}})"
    if case.op == "softmax":
        lines = [_array("int8_t", f"{p}_x", case.x), _array("uint32_t", f"{p}_table", case.w)]
        rows, row = case.x.shape
        return lines, f"tml_softmax_s8({p}_table, {p}_x, {rows}, {row}, out + {out_offset})"
    if case.op in POOLS:
        (kh, kw_), (sh, sw), (ph, pw) = kw["kernel"], kw["stride"], kw["padding"]
        oh, ow, oc = case.out_shape()
        lines = [
            _array("int8_t", f"{p}_x", case.x),
            f"static const tml_pool_params {p}_params = {{{kh}, {kw_}, {sh}, {sw}, {ph}, {pw}, "
            f"{kw['act_min']}, {kw['act_max']}}};",
            f"static const tml_shape {p}_in = {{{case.x.shape[0]}, {case.x.shape[1]}, {case.x.shape[2]}}};",
            f"static const tml_shape {p}_out = {{{oh}, {ow}, {oc}}};",
        ]
        return lines, f"tml_{case.op}_s8(&{p}_params, &{p}_in, {p}_x, &{p}_out, out + {out_offset})"
    lines = [
        _array("int8_t", f"{p}_x", case.x),
        _array("int8_t", f"{p}_w", case.w),
        _array("int32_t", f"{p}_mult", kw["multiplier"]),
        _array("int32_t", f"{p}_shift", kw["shift"]),
        f"static const tml_quant_channels {p}_quant = {{{p}_mult, {p}_shift}};",
    ]
    bias = "NULL"
    if case.bias is not None:
        lines.append(_array("int32_t", f"{p}_bias", case.bias))
        bias = f"{p}_bias"
    out = f"out + {out_offset}"
    common = (f".input_offset = {kw['input_offset']}, .output_offset = {kw['output_offset']}, "
              f".act_min = {kw['act_min']}, .act_max = {kw['act_max']}")  # fmt: skip
    if case.op == "fc":
        fold = "NULL"
        if case.fold:
            lines.append(_array("int32_t", f"{p}_fold", folded_bias(case.w, case.bias, kw["input_offset"])))
            fold = f"{p}_fold"
        lines.append(f"static const tml_fc_params {p}_params = {{{common}, .folded_bias = {fold}}};")
        call = (f"tml_fc_s8(&{p}_params, &{p}_quant, {case.x.size}, {p}_x, {p}_w, {bias}, {case.w.shape[0]}, "
                f"{out})")  # fmt: skip
        return lines, call
    (sh, sw), (ph, pw) = kw["stride"], kw["padding"]
    oh, ow, oc = case.out_shape()
    kh, kw_ = case.w.shape[:2] if case.op == "dwconv2d" else case.w.shape[1:3]
    lines += [
        f"static const tml_conv_params {p}_params = {{.stride_h = {sh}, .stride_w = {sw}, .pad_h = {ph}, "
        f".pad_w = {pw}, .depth_multiplier = {kw.get('depth_multiplier', 1)}, {common}}};",
        f"static const tml_shape {p}_in = {{{case.x.shape[0]}, {case.x.shape[1]}, {case.x.shape[2]}}};",
        f"static const tml_shape {p}_filter = {{{kh}, {kw_}, {case.x.shape[2]}}};",
        f"static const tml_shape {p}_out = {{{oh}, {ow}, {oc}}};",
    ]
    call = (f"tml_{case.op}_s8(&{p}_params, &{p}_quant, &{p}_in, {p}_x, &{p}_filter, {p}_w, {bias}, &{p}_out, "
            f"{out}, {{scratch}})")  # fmt: skip
    return lines, call


def write_case_model(cases: list[Case], board, folder: Path) -> list[tuple[int, int]]:
    """model.h, model.c and model_data.c running `cases` as layers; returns each case's output range."""
    folder.mkdir(parents=True)
    ranges, offset = [], 0
    scratch = [case.scratch(board) for case in cases]
    statics, body = [], []
    for i, case in enumerate(cases):
        lines, call = _case_c(i, case, offset)
        statics += lines
        size = int(np.prod(case.out_shape()))
        ranges.append((offset, offset + size))
        offset += size
        pointer = "scratch" if scratch[i] else "NULL"
        body += [
            f"    guard({scratch[i]});",
            f"    TML_LAYER_BEGIN({i});",
            f"    status = {call.replace('{scratch}', pointer)};",
            f"    TML_LAYER_END({i});",
            f"    if (status == 0 && !guard_intact({scratch[i]})) status = {SCRATCH_OVERRUN};",
            f"    if (status != 0) {{ tml_model_failed_layer = {i}; return status; }}",
        ]
    names = ", ".join(f'"case{i} {case.op}"' for i, case in enumerate(cases))
    (folder / "model.h").write_text(
        "#ifndef TML_MODEL_H\n#define TML_MODEL_H\n#include <stdint.h>\n"
        f"#define TML_MODEL_INPUT_SIZE 1\n#define TML_MODEL_OUTPUT_SIZE {offset}\n"
        f"#define TML_MODEL_ARENA_BYTES {max(scratch) + GUARD_BYTES}\n#define TML_MODEL_LAYER_COUNT {len(cases)}\n"
        "extern const char *const tml_model_layer_names[TML_MODEL_LAYER_COUNT];\n"
        "extern int tml_model_failed_layer;\n"
        "int tml_model_invoke(const int8_t *in, int8_t *out);\n#endif\n"
    )
    (folder / "model.c").write_text(
        "\n".join(
            [
                "/* Kernel cases of tests/test_dsp.py: each layer is one call with compiled-in data. */",
                "#include <stddef.h>",
                "#include <stdint.h>",
                '#include "model.h"',
                '#include "tml_nn.h"',
                '#include "tml_profile.h"',
                "static uint32_t arena[(TML_MODEL_ARENA_BYTES + 3) / 4];",
                "#define scratch ((void *)arena)",
                "static void guard(int32_t at) {",
                f"    for (int32_t i = 0; i < {GUARD_BYTES}; i++) ((uint8_t *)arena)[at + i] = {GUARD};",
                "}",
                "static int guard_intact(int32_t at) {",
                f"    for (int32_t i = 0; i < {GUARD_BYTES}; i++) if (((uint8_t *)arena)[at + i] != {GUARD}) return 0;",
                "    return 1;",
                "}",
                *statics,
                f"const char *const tml_model_layer_names[TML_MODEL_LAYER_COUNT] = {{{names}}};",
                "int tml_model_failed_layer = -1;",
                "int tml_model_invoke(const int8_t *in, int8_t *out) {",
                "    int status;",
                "    (void)in;",
                "    tml_model_failed_layer = -1;",
                *body,
                "    return 0;",
                "}",
                "",
            ]
        )
    )
    (folder / "model_data.c").write_text("/* The cases' constants are in model.c. */\n")
    return ranges


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    return random_cases(seed=8, count=CASES)


@pytest.fixture(scope="module")
def board_runs(cases, tmp_path_factory):
    """Each board's outputs for every case, from one firmware per board (built lazily, once)."""
    from tinyml.board.project import build_firmware
    from tinyml.board.qemu import run_firmware

    runs = {}

    def run(name: str):
        if name not in runs:
            board = resolve_board(name)
            root = tmp_path_factory.mktemp(f"dsp-{name}")
            ranges = write_case_model(cases, board, root / "model")
            built = build_firmware(root / "model", board, root / "fw", np.zeros((1, 1), np.int8))
            result = run_firmware(built.out_dir, timeout=120)
            runs[name] = (result.outputs[0], ranges, built)
        return runs[name]

    return run


@pytest.mark.qemu
@pytest.mark.parametrize("board", BOARDS)
def test_kernels_on_the_board_equal_the_reference(board_runs, cases, board):
    """The DSP paths (M4, M7, M33) and the portable path (M3) give the reference's bytes for every case."""
    outputs, ranges, _ = board_runs(board)
    for i, (case, (begin, end)) in enumerate(zip(cases, ranges, strict=True)):
        expected = case.expected.reshape(-1)
        np.testing.assert_array_equal(outputs[begin:end], expected, err_msg=f"case {i}: {case.op} {case.kw}")


@pytest.mark.qemu
@pytest.mark.parametrize("board", ["cortex-m4", "cortex-m3"])
def test_dsp_objects_use_smlad_only_where_the_core_has_it(board_runs, board):
    """The DSP path is what runs on a DSP core: its firmware holds SMLAD, the Cortex-M3's does not."""
    import subprocess

    _, _, built = board_runs(board)
    listing = subprocess.run(
        ["arm-none-eabi-objdump", "-d", str(built.elf)], capture_output=True, text=True, check=True
    ).stdout
    assert ("smlad" in listing) == resolve_board(board).dsp


def test_cases_cover_the_dsp_variants(cases):
    """The generated cases reach every branch of the DSP paths: staging copy, odd channels, the 1x1 variant with
    and without a tail, whole-group weight rows, both output clamps, fc fold, max pooling, add, softmax."""
    convs = [c for c in cases if c.op == "conv2d"]
    assert any(c.x.shape[2] % 4 for c in convs) and any(c.x.shape[2] % 4 == 0 for c in convs)
    assert any(c.w.shape[0] % 2 for c in convs) and any(np.prod(c.out_shape()[:2]) % 2 for c in convs)
    pointwise = [c for c in convs if c.w.shape[1:3] == (1, 1) and c.kw["stride"] == (1, 1)
                 and c.kw["padding"] == (0, 0) and not c.no_scratch]  # fmt: skip
    assert any(c.x.shape[2] < 4 for c in pointwise) and any(c.x.shape[2] > 4 and c.x.shape[2] % 4 for c in pointwise)
    assert any(c.x.shape[2] % 4 == 0 for c in pointwise) and any(c.w.shape[0] % 2 for c in pointwise)
    pixels = [c.x.shape[0] * c.x.shape[1] for c in pointwise if c.x.shape[2] >= 4]
    chunk = CONV_SUMS // 2  # pixels the 1x1 variant sums at once
    assert any(n > chunk and n % chunk % 2 for n in pixels)  # chunks, a lone last pixel
    general = [c for c in convs if all(c is not q for q in pointwise) and not c.no_scratch]
    assert any(np.prod(c.w.shape[1:]) % 4 and c.w.shape[0] >= 3 for c in general)  # whole groups over the padding
    assert any((c.kw["act_min"], c.kw["act_max"]) == (-128, 127) for c in general + pointwise)
    assert any((c.kw["act_min"], c.kw["act_max"]) != (-128, 127) for c in general + pointwise)
    assert any(c.kw["padding"] != (0, 0) for c in convs) and any(c.no_scratch for c in convs)
    dws = [c for c in cases if c.op == "dwconv2d"]
    assert any(c.kw["depth_multiplier"] == 1 and c.x.shape[2] >= 4 for c in dws)
    assert any(c.kw["depth_multiplier"] > 1 for c in dws) and any(c.x.shape[2] % 4 for c in dws)
    maxpools = [c for c in cases if c.op == "maxpool"]
    assert any(c.x.shape[2] % 4 == 0 for c in maxpools) and any(c.x.shape[2] % 4 for c in maxpools)
    assert any(c.op == "softmax" for c in cases) and any(c.op == "add" and c.x.size >= 4 for c in cases)
    assert any(c.op == "add" and c.scratch(None) for c in cases)  # the tabled variant
    for stride in (1, 2):  # the 3x3 variants, whole blocks and single channels, both output steps
        square = [c for c in dws if c.w.shape[:2] == (3, 3) and c.kw["stride"] == (stride, stride)
                  and c.kw["depth_multiplier"] == 1]  # fmt: skip
        assert any(c.x.shape[2] >= 4 for c in square) and any(c.x.shape[2] % 4 for c in square)
        assert any(smlal_form(c) for c in square) and any(not smlal_form(c) for c in square)
        assert any(c.kw["padding"] != (0, 0) for c in square)
    general = [c for c in dws if c.kw["depth_multiplier"] == 1
               and not (c.w.shape[:2] == (3, 3) and c.kw["stride"][0] == c.kw["stride"][1] < 3)]  # fmt: skip
    assert any(c.x.shape[2] >= 4 and smlal_form(c) for c in general)
    multiplied = [c for c in dws if c.kw["depth_multiplier"] > 1]
    assert any(c.w.shape[2] >= 4 and smlal_form(c) for c in multiplied)
    assert any(c.kw["multiplier"].tolist().count(0) for c in dws if smlal_form(c))
    pools = [c for c in cases if c.op == "avgpool"]
    assert any(c.kw["kernel"][0] * c.kw["kernel"][1] > 255 for c in pools)
    assert any(c.x.shape[2] % 4 == 0 for c in pools) and any(c.x.shape[2] % 4 for c in pools)
    fcs = [c for c in cases if c.op == "fc"]
    assert any(c.fold for c in fcs) and any(not c.fold for c in fcs)
    assert any(c.w.shape[0] >= 4 for c in fcs) and any(c.w.shape[0] % 4 for c in fcs)


def test_folded_bias_gives_the_same_bytes_on_the_host(cases):
    """The portable fc with the code generator's folded bias equals the reference (and so the run-time fold)."""
    lib = host.build_kernels()
    ffi = lib.ffi
    for case in (c for c in cases if c.op == "fc"):
        kw = case.kw
        keep = [np.ascontiguousarray(a) for a in (case.x, case.w, kw["multiplier"], kw["shift"])]
        fold = np.ascontiguousarray(folded_bias(case.w, case.bias, kw["input_offset"]))
        params = ffi.new(
            "tml_fc_params *",
            {k: kw[k] for k in ("input_offset", "output_offset", "act_min", "act_max")}
            | {"folded_bias": ffi.from_buffer("int32_t[]", fold)},
        )
        quant = ffi.new(
            "tml_quant_channels *",
            {"multiplier": ffi.from_buffer("int32_t[]", keep[2]), "shift": ffi.from_buffer("int32_t[]", keep[3])},
        )
        out = np.zeros(case.w.shape[0], np.int8)
        status = lib.lib.tml_fc_s8(
            params, quant, case.x.size, ffi.from_buffer("int8_t[]", keep[0]), ffi.from_buffer("int8_t[]", keep[1]),
            ffi.NULL, case.w.shape[0], ffi.from_buffer("int8_t[]", out),
        )  # fmt: skip
        assert status == 0
        np.testing.assert_array_equal(out, case.expected)


def test_folded_bias_wraps_like_the_kernel():
    """bias + offset * sum(w) wraps around int32 as the kernels' sums do."""
    w = np.full((1, 4), 127, np.int8)
    fold = folded_bias(w, np.array([INT32_MAX], np.int32), 255)
    assert fold.dtype == np.int32
    assert int(fold[0]) == (INT32_MAX + 255 * 508 + (1 << 31)) % (1 << 32) - (1 << 31)
