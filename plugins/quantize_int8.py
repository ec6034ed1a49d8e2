"""quantize-int8: post-training int8 quantization of a float graph, TFLite's int8 scheme.

Activations are asymmetric per tensor, with ranges calibrated on representative data (min/max,
or a percentile to ignore outliers). A range the data cannot give (constant calibration data, e.g.
all zeros) is replaced and named in a `DegenerateRangeWarning`; see `guard_ranges`. Weights are
symmetric per output channel in [-127, 127]; biases int32 at scale s_in * s_w. Each node gets the
Q31 multipliers, shifts and clamps its kernel needs, computed with `tinyml.numbers` so the C
kernels and the numpy reference agree. A float weight with a `codebook` (shared by `share-weights`
listed before this technique) gets one scale for all its channels, max |codebook| -> 127, so its
codebook maps to one int8 codebook (see `tinyml_plugins.share_weights`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tinyml import numbers
from tinyml.errors import CalibrationError, RecipeError, TinymlError
from tinyml.float_eval import run_float
from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph, Node, Tensor
from tinyml.reference.elementwise import add_params, softmax_exp_table
from tinyml.technique import Context, Technique

CALIBRATION_BATCH = 256
SOFTMAX_SCALE, SOFTMAX_ZERO_POINT = 1.0 / 256.0, -128
# Ops whose output keeps the input's scale and zero point (no requantization inside the kernel).
SAME_QUANT_OPS = ("maxpool", "avgpool", "flatten")
# A calibrated range narrower than this fraction of the range its layer's weights allow (for the
# input range the layer gets) is degenerate. Real data stay far above it (the digits example's
# narrowest layer is at about 1/10 of its bound); constant calibration data fall far below.
NARROW_FRACTION = 1e-3
MIN_INPUT_HALF_WIDTH = 1.0


class DegenerateRangeWarning(UserWarning):
    """Calibration gave some tensors a range of (almost) zero width: their int8 scale had to be chosen otherwise."""


class QuantizeInt8Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    calibration: Literal["minmax", "percentile"] = Field(
        "minmax", description="how activation ranges are taken from the calibration data"
    )
    percentile: float = Field(
        99.99,
        gt=50.0,
        le=100.0,
        description="with calibration = 'percentile': the percentile of each tensor kept",
    )
    qat_epochs: int = Field(
        0,
        ge=0,
        description="epochs of quantization-aware fine-tuning on the training data (0: post-training only)",
    )
    qat_lr: float = Field(1e-4, gt=0.0, description="learning rate of the quantization-aware fine-tuning")


class QuantizeInt8(Technique):
    """Post-training int8 quantization (per-channel weights, per-tensor activations)."""

    name = "quantize-int8"
    stage = "graph"
    Options = QuantizeInt8Options

    def apply(self, graph: Graph, context: Context) -> Graph:
        if graph.is_quantized:
            return graph
        ranges = guard_ranges(graph, calibrate(graph, context, self.options))
        if self.options.qat_epochs > 0:
            shared = [n.name for n in graph.nodes if n.inputs[1:] and graph.tensors[n.inputs[1]].codebook is not None]
            if shared:
                raise RecipeError(
                    f"quantize-int8 option qat_epochs = {self.options.qat_epochs} would fine-tune every weight, "
                    f"but layers {', '.join(map(repr, shared))} share their weights (share-weights is listed before "
                    "quantize-int8) and would lose their codebooks: set qat_epochs = 0 (share-weights fine-tunes "
                    "the shared centroids itself), or list share-weights after quantize-int8."
                )
            context.require_train_data(f"{self.name} (qat_epochs = {self.options.qat_epochs})")
            from tinyml_plugins.qat import fine_tune

            graph = fine_tune(graph, ranges, context, self.options.qat_epochs, self.options.qat_lr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateRangeWarning)  # said once already
                ranges = guard_ranges(graph, calibrate(graph, context, self.options))
        return quantize(graph, ranges)


@hookimpl
def tinyml_techniques() -> list[type[Technique]]:
    return [QuantizeInt8]


def calibrate(graph: Graph, context: Context, options: QuantizeInt8Options) -> dict[str, tuple[float, float]]:
    """(min, max) of every activation tensor over the calibration data, in graph layout."""
    data = context.calibration
    if data is None or len(data) == 0:
        raise CalibrationError(
            "quantize-int8 needs calibration data to choose activation ranges: pass --calib FILE.npz "
            "(an array `x` of representative inputs) or set `[data] calibration` in the recipe."
        )
    expected = graph.tensors[graph.inputs[0]].shape[1:]
    if tuple(data.shape[1:]) != tuple(expected):
        raise CalibrationError(
            f"Calibration data has samples of shape {tuple(data.shape[1:])} but the model's input "
            f"`{graph.inputs[0]}` is {tuple(expected)} (graph layout, NHWC without batch)."
        )
    batches = [data[i : i + CALIBRATION_BATCH] for i in range(0, len(data), CALIBRATION_BATCH)]
    samples: dict[str, list[np.ndarray]] = {}
    with context.progress("calibrating int8 ranges", total=len(batches)) as advance:
        for batch in batches:
            for name, value in run_float(graph, np.asarray(batch, dtype=np.float32)).items():
                if not graph.tensors[name].is_constant:
                    samples.setdefault(name, []).append(_summary(value, options))
            advance(1)
    ranges = {}
    for name, parts in samples.items():
        stacked = np.concatenate(parts)
        if options.calibration == "percentile":
            lo = float(np.percentile(stacked, 100.0 - options.percentile))
            hi = float(np.percentile(stacked, options.percentile))
        else:
            lo, hi = float(stacked.min()), float(stacked.max())
        ranges[name] = (lo, hi)
    return ranges


def _summary(value: np.ndarray, options: QuantizeInt8Options) -> np.ndarray:
    """What a batch contributes to a range: its extremes for min/max, a sample of values for percentiles."""
    flat = np.asarray(value, dtype=np.float32).ravel()
    if options.calibration == "minmax":
        return np.array([flat.min(), flat.max()])
    if flat.size > 200_000:
        flat = np.random.default_rng(0).choice(flat, 200_000, replace=False)
    return flat


def guard_ranges(graph: Graph, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """`ranges` with every degenerate one replaced, and a `DegenerateRangeWarning` naming those tensors.

    Degenerate: zero width, or (for the output of a conv, depthwise conv, fully connected, add or concat)
    narrower than `NARROW_FRACTION` of the range its inputs' ranges and its weights allow. Constant
    calibration data do that: every sample the same makes every activation constant, and an int8
    scale from a zero-width range is ~0, so any other input saturates. The replacements:

    - the model input, seen only at one value v: v +/- max(|v|, 1) (so all-zero data give [-1, 1]);
    - a layer's output: the range its weights and bias allow for its (guarded) input range, i.e.
      bias + the sums of positive and negative weights times the input's bounds, then the fused
      activation. Wider than real data would give (coarser steps), but nothing saturates.

    Every range still contains 0 (`activation_quant` widens it), so zero-valued inputs, padding and
    ReLU's floor stay exact.
    """
    guarded = dict(ranges)
    named = []
    for name in graph.inputs:
        lo, hi = ranges[name]
        if _zero_width(lo, hi):
            half = max(abs(lo), MIN_INPUT_HALF_WIDTH)
            guarded[name] = (lo - half, hi + half)
            named.append(name)
    for node in graph.nodes:
        out = node.outputs[0]
        if node.op in SAME_QUANT_OPS or node.op == "softmax" or out not in ranges:
            continue
        lo, hi = ranges[out]
        allowed = _allowed_range(graph, node, guarded)
        if allowed is None or not (_zero_width(lo, hi) or hi - lo < NARROW_FRACTION * (allowed[1] - allowed[0])):
            continue
        if _zero_width(*allowed):
            half = max(abs(lo), MIN_INPUT_HALF_WIDTH)
            allowed = (lo - half, hi + half)
        guarded[out] = allowed
        named.append(out)
    if named:
        listed = ", ".join(f"`{n}`" for n in named[:8]) + (f" and {len(named) - 8} more" if len(named) > 8 else "")
        warnings.warn(
            f"quantize-int8: the calibration data give a degenerate range (zero width, or far narrower than the "
            f"weights allow) to {len(named)} tensor(s): {listed}. Are the calibration samples constant (e.g. all "
            "zeros)? Those tensors were quantized with a range taken from the weights instead (coarser than "
            "representative data would give); calibrate with real samples for an accurate int8 model.",
            DegenerateRangeWarning,
            stacklevel=2,
        )
    return guarded


def _zero_width(lo: float, hi: float) -> bool:
    return hi - lo <= 1e-6 * max(1.0, abs(lo), abs(hi))


def _allowed_range(graph: Graph, node: Node, ranges: dict[str, tuple[float, float]]) -> tuple[float, float] | None:
    """Interval arithmetic: the output range `node` can produce from its inputs' ranges (each widened to hold 0,
    as zero padding does); None for ops it does not cover."""
    bounds = [(min(ranges[n][0], 0.0), max(ranges[n][1], 0.0)) for n in node.inputs if n in ranges]
    if node.op in ("conv2d", "dwconv2d", "fc"):
        (a, b), w, bias = bounds[0], graph.tensors[node.inputs[1]].data, graph.tensors[node.inputs[2]].data
        w = np.asarray(w, dtype=np.float64)
        per_channel = (np.moveaxis(w, -1, 0) if node.op == "dwconv2d" else w).reshape(len(bias), -1)
        positive, negative = np.clip(per_channel, 0, None).sum(1), np.clip(per_channel, None, 0).sum(1)
        lo = float(np.min(bias + positive * a + negative * b))
        hi = float(np.max(bias + positive * b + negative * a))
    elif node.op == "add":
        lo, hi = bounds[0][0] + bounds[1][0], bounds[0][1] + bounds[1][1]
    elif node.op == "concat":
        lo, hi = min(lo for lo, _ in bounds), max(hi for _, hi in bounds)
    else:
        return None
    activation = node.attrs.get("activation", "none")
    if activation in ("relu", "relu6"):
        lo, hi = max(lo, 0.0), max(hi, 0.0)
    if activation == "relu6":
        lo, hi = min(lo, 6.0), min(hi, 6.0)
    return lo, hi


def activation_quant(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point covering [lo, hi] (widened to include 0, as TFLite requires)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-8:
        hi = lo + 1e-8
    scale = (hi - lo) / 255.0
    zero_point = int(np.clip(round(numbers.INT8_MIN - lo / scale), numbers.INT8_MIN, numbers.INT8_MAX))
    return float(scale), zero_point


def quantize(graph: Graph, ranges: dict[str, tuple[float, float]]) -> Graph:
    """A new int8 graph: quantized tensors, int32 biases and integer node attributes."""
    q = graph.copy()
    for name in q.inputs:
        _set_activation(q.tensors[name], *activation_quant(*ranges[name]))
    for node in q.nodes:
        out = q.tensors[node.outputs[0]]
        first = q.tensors[node.inputs[0]]
        if node.op in SAME_QUANT_OPS:
            _set_activation(out, float(first.scale), first.zero_point)
        elif node.op == "softmax":
            _set_activation(out, SOFTMAX_SCALE, SOFTMAX_ZERO_POINT)
        else:
            _set_activation(out, *activation_quant(*ranges[node.outputs[0]]))
        (QUANTIZERS.get(node.op) or _plugin_quantizer(node))(q, node)
    return q


def _plugin_quantizer(node: Node) -> Callable[[Graph, Node], None]:
    """The quantization of an op a plugin adds (hook `tinyml_ops`)."""
    from tinyml import plugins

    op = plugins.ops().get(node.op)
    if op is None:
        raise TinymlError(f"quantize-int8 cannot quantize op {node.op!r} (node `{node.name}`); is its plugin disabled?")
    return op.quantize


def _set_activation(t: Tensor, scale: float, zero_point: int) -> None:
    t.dtype, t.scale, t.zero_point = "int8", scale, zero_point


def _clamp(node: Node, out: Tensor) -> None:
    """Fused activation as an int8 clamp on the output."""
    activation = node.attrs.get("activation", "none")
    lo, hi = numbers.INT8_MIN, numbers.INT8_MAX
    if activation in ("relu", "relu6"):
        lo = max(lo, out.zero_point)
    if activation == "relu6":
        hi = min(hi, out.zero_point + round(6.0 / out.scale))
    node.attrs["act_min"], node.attrs["act_max"] = int(lo), int(hi)


def weight_scales(w: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric per-channel scales along `axis`: max |w| maps to 127 (an all-zero channel gets 1.0)."""
    per_channel = np.moveaxis(np.asarray(w, dtype=np.float64), axis, 0).reshape(np.shape(w)[axis], -1)
    max_abs = np.abs(per_channel).max(axis=1)
    return np.where(max_abs > 0, max_abs / 127.0, 1.0)


def _quantize_weighted(graph: Graph, node: Node) -> None:
    """conv2d, dwconv2d, fc: per-output-channel weights, int32 bias, one multiplier per channel."""
    x, w, b = (graph.tensors[n] for n in node.inputs)
    out = graph.tensors[node.outputs[0]]
    channel_axis = w.data.ndim - 1 if node.op == "dwconv2d" else 0
    wf = np.moveaxis(np.asarray(w.data, dtype=np.float64), channel_axis, 0)
    w_scale = weight_scales(w.data, channel_axis)
    if w.codebook is not None:  # shared weights: one scale, so the float codebook is one int8 codebook
        w_scale = np.full_like(w_scale, weight_scales(np.reshape(w.codebook, (1, -1)), 0)[0])
        w.codebook = np.unique(np.clip(np.round(np.asarray(w.codebook, np.float64) / w_scale[0]), -127, 127)).astype(
            np.int8
        )
    wq = np.clip(np.round(wf / w_scale.reshape(-1, *([1] * (wf.ndim - 1)))), -127, 127).astype(np.int8)
    w.data, w.dtype, w.scale, w.zero_point = np.moveaxis(wq, 0, channel_axis).copy(), "int8", w_scale, 0
    bias_scale = float(x.scale) * w_scale
    bq = np.round(np.asarray(b.data, dtype=np.float64) / bias_scale)
    b.data = np.clip(bq, -(2**31), 2**31 - 1).astype(np.int32)
    b.dtype, b.scale, b.zero_point = "int32", bias_scale, 0
    node.attrs["multiplier"], node.attrs["shift"] = numbers.quantize_multipliers(bias_scale / out.scale)
    _clamp(node, out)


def _quantize_pool(graph: Graph, node: Node) -> None:
    _clamp(node, graph.tensors[node.outputs[0]])


def _quantize_add(graph: Graph, node: Node) -> None:
    a, b = (graph.tensors[n] for n in node.inputs)
    out = graph.tensors[node.outputs[0]]
    node.attrs.update(
        add_params(float(a.scale), a.zero_point, float(b.scale), b.zero_point, float(out.scale), out.zero_point)
    )
    _clamp(node, out)


def _quantize_softmax(graph: Graph, node: Node) -> None:
    node.attrs["exp_table"] = softmax_exp_table(float(graph.tensors[node.inputs[0]].scale))


def _quantize_concat(graph: Graph, node: Node) -> None:
    out = graph.tensors[node.outputs[0]]
    pairs = [numbers.quantize_multiplier(float(graph.tensors[n].scale) / out.scale) for n in node.inputs]
    node.attrs["multipliers"] = [m for m, _ in pairs]
    node.attrs["shifts"] = [s for _, s in pairs]


def _nothing(graph: Graph, node: Node) -> None:
    """flatten moves bytes and keeps the quantization of its input."""


QUANTIZERS = {
    "conv2d": _quantize_weighted,
    "dwconv2d": _quantize_weighted,
    "fc": _quantize_weighted,
    "maxpool": _quantize_pool,
    "avgpool": _quantize_pool,
    "add": _quantize_add,
    "softmax": _quantize_softmax,
    "concat": _quantize_concat,
    "flatten": _nothing,
}
