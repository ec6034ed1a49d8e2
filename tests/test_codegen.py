"""The generated C as a firmware engineer reads it: layer names, symbols, comments, memory plan, errors."""

from __future__ import annotations

import re
import shutil
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch
from torch import nn

import tinyml.compiler as compiler
from tinyml import hookspecs, kernels, plugins, weights
from tinyml.board.size import _layer_of
from tinyml.codegen import c_string, fit_lines, generate
from tinyml.errors import KernelError, ModelInputError, TinymlError
from tinyml.frontend import nchw_to_graph
from tinyml.hookspecs import hookimpl
from tinyml.host import load_model
from tinyml.reference import run_int8
from tinyml.weights import LINE_WIDTH, MAX_C_NAME, layer_c_names

DIGITS_LAYERS = ["features.conv1", "features.pool1", "features.conv2", "features.conv3", "flatten", "classifier"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> compiler.Build:
    """The bundled example compiled into a build directory."""
    from tinyml.recipe import load_recipe

    out = tmp_path_factory.mktemp("digits") / "build"
    return compiler.compile_from_recipe(load_recipe(None, {"model": {"example": "digits"}}), out, progress=False)


def call_comments(model_c: str) -> dict[int, str]:
    """The comment block above each `TML_LAYER_BEGIN(i)` in tml_model_invoke, by layer index."""
    blocks = re.findall(r"    /\*\n((?:     \*.*\n)+)     \*/\n    TML_LAYER_BEGIN\((\d+)\);", model_c)
    return {int(i): block for block, i in blocks}


def test_example_layers_are_named_by_module_path(digits):
    assert [node.name for node in digits.graph.nodes] == DIGITS_LAYERS
    conv1 = digits.graph.nodes[0]
    assert conv1.attrs["fused"] == [
        {"module": "features.bn1", "type": "torch.nn.BatchNorm2d"},
        {"module": "features.relu1", "type": "torch.nn.ReLU"},
    ]
    model_c = digits.generated.files["model.c"]
    table = re.search(r"tml_model_layer_names\[TML_MODEL_LAYER_COUNT\] = \{\n(.*?)\n\};", model_c, re.S).group(1)
    assert re.findall(r'"([^"]*)"', table) == DIGITS_LAYERS
    assert load_model(digits.out_dir).layer_names == DIGITS_LAYERS
    report = (digits.out_dir / "report.txt").read_text()
    assert "features.bn1 (BatchNorm2d)" in report and "features.conv1" in report


def test_every_call_has_a_comment_with_geometry_fusion_and_arena_ranges(digits):
    graph, plan = digits.graph, digits.plan
    comments = call_comments(digits.generated.files["model.c"])
    assert sorted(comments) == list(range(len(graph.nodes)))
    conv1 = comments[0]
    assert "0 features.conv1: conv2d, tml_conv2d_s8" in conv1
    assert "kernel 3x3, stride 1, padding 1: 8x8x1 -> 8x8x16" in conv1
    assert "activation relu, output clamped to [" in conv1
    assert "fused: features.bn1 (BatchNorm2d), features.relu1 (ReLU)" in conv1
    assert "in: input, `in` (the caller's input)" in conv1
    assert "kernel 3x3, stride 2, padding 1: 4x4x32 -> 2x2x32" in comments[2 + 1]
    assert "kernel 2x2, stride 2, padding 0: 8x8x16 -> 4x4x16" in comments[1]
    assert "out: classifier, `out` (the caller's output)" in comments[5]
    for i, node in enumerate(graph.nodes):
        out = node.outputs[0]
        if out not in graph.outputs:
            offset = plan.offsets[out]
            assert f"out: {out}, arena [{offset}, {offset + graph.tensors[out].nbytes})" in comments[i]
        source = node.inputs[0]
        if source not in graph.inputs:
            offset = plan.offsets[source]
            assert f"in: {source}, arena [{offset}, {offset + graph.tensors[source].nbytes})" in comments[i]


def test_memory_plan_table_sits_above_the_arena(digits):
    model_c = digits.generated.files["model.c"]
    plan_text = model_c[model_c.index(" * Memory plan:") : model_c.index("static int32_t tml_arena_words")]
    assert f"an arena of {digits.plan.arena_bytes:,} bytes" in plan_text
    names = [node.name for node in digits.graph.nodes]
    for name, first, last, offset, size in digits.plan.timeline():
        row = re.search(
            rf"^ \* [A-Za-z0-9*]  {re.escape(name)} +{size:,}  \[{offset}, {offset + size}\) .*$", plan_text, re.M
        )
        assert row, name
        assert f"{first} {names[first]}" in row.group(0) and row.group(0).endswith(f"{last} {names[last]}")
    # one timeline row per layer, as wide as the arena
    assert len(re.findall(r"^ \* \d+ \S+ +\|[A-Za-z0-9*.]{64}\|$", plan_text, re.M)) == len(names)


def test_no_line_of_generated_c_is_longer_than_120(digits):
    for name, text in digits.generated.files.items():
        long_lines = [line for line in text.splitlines() if len(line) > LINE_WIDTH]
        assert not long_lines, (name, long_lines[:3])
    assert "static const uint32_t" not in digits.generated.files["model.c"]  # no softmax here: see below


def test_symbols_follow_one_scheme_per_layer(digits):
    files = digits.generated.files
    defined = re.findall(
        r"^(?:static )?const [\w ]+? (tml_\w+)(?:\[\d*\])? =", files["model.c"] + files["model_data.c"], re.M
    )
    assert len(defined) == len(set(defined)) > 20
    owners = {symbol: _layer_of(symbol, DIGITS_LAYERS) for symbol in defined}
    assert _layer_of("tml_model_layer_names", DIGITS_LAYERS) is None
    assert None not in owners.values(), owners
    for layer, c_name in zip(DIGITS_LAYERS, layer_c_names(DIGITS_LAYERS), strict=True):
        assert all(symbol.startswith(f"tml_{c_name}_") for symbol, owner in owners.items() if owner == layer)
    for symbol in ("weight", "bias", "params", "multiplier", "shift", "quant", "filter_shape", "input_shape"):
        assert f"tml_features_conv2_{symbol}" in owners
    assert owners["tml_classifier_weight"] == "classifier"


def test_generated_c_is_the_same_every_time(digits):
    again = generate(digits.graph, None, plugins.plugin_manager())
    assert again.files == digits.generated.files


class Awkward(nn.Module):
    """Layer names that are hard on C: quotes, comment ends, trigraphs, UTF-8, names of library types,
    names equal after punctuation, a 150-character name, a softmax (its 256-entry table)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict({'a"b*/c ??/ \\é': nn.Conv2d(1, 4, 3, padding=1), "fc": nn.Linear(4 * 6 * 6, 5)})
        self.a_b = nn.Conv2d(4, 4, 1)
        self.a = nn.ModuleDict({"b": nn.Conv2d(4, 4, 1)})
        self.fc = nn.Linear(5, 3)
        setattr(self, "L" * 150, nn.Linear(3, 3))
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.blocks['a"b*/c ??/ \\é'](x))
        y = self.a["b"](self.a_b(y))
        y = self.fc(self.blocks["fc"](torch.flatten(y, 1)))
        return self.softmax(getattr(self, "L" * 150)(y))


def test_awkward_layer_names_give_valid_short_c_equal_to_the_reference(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    calib = rng.normal(size=(32, 1, 6, 6)).astype(np.float32)
    build = compiler.compile(Awkward().eval(), calib, out_dir=tmp_path / "m", progress=False)
    names = [node.name for node in build.graph.nodes]
    assert names[:3] == ['blocks.a"b*/c ??/ \\é', "a_b", "a.b"]
    c_names = layer_c_names(names)
    assert c_names[1:3] == ["a_b", "a_b_2"] and c_names[names.index("fc")] == "fc_layer"
    assert max(len(c) for c in c_names) <= MAX_C_NAME and len(set(c_names)) == len(c_names)
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", c) for c in c_names)
    for name, text in build.generated.files.items():
        assert all(len(line) <= LINE_WIDTH for line in text.splitlines()), name
    assert "static const uint32_t tml_softmax_exp_table[256] = {\n" in build.generated.files["model.c"]

    host = load_model(tmp_path / "m")  # compiles: every name is a valid, unique symbol or an escaped string
    assert host.layer_names == names
    xq = host.quantize(nchw_to_graph(rng.normal(size=(10, 1, 6, 6)).astype(np.float32)))
    np.testing.assert_array_equal(host(xq), run_int8(build.graph, xq)[build.graph.outputs[0]].reshape(10, -1))


def test_long_lines_break_after_commas_outside_strings():
    call = "    status = f(" + ", ".join(f"argument_{i}" for i in range(30)) + ', "a, b, c, d");'
    wrapped = fit_lines(call)
    lines = wrapped.splitlines()
    assert len(lines) > 1 and all(len(line) <= LINE_WIDTH for line in lines)
    assert lines[1].startswith(" " * len("    status = f(")) and '"a, b, c, d"' in wrapped
    assert " ".join(wrapped.split()) == " ".join(call.split())
    assert fit_lines("#define X " + "1 + " * 40 + "1") == "#define X " + "1 + " * 40 + "1"  # never a directive


def test_c_string_escapes_what_c_would_read_otherwise():
    assert c_string('a"b\\c') == r'"a\"b\\c"'
    assert c_string("??=") == r'"\?\?="'
    assert c_string("é\n") == r'"\303\251\012"'


def named_conv_model() -> nn.Module:
    return nn.Sequential(
        OrderedDict(stem=nn.Conv2d(1, 4, 3), act=nn.ReLU(), flat=nn.Flatten(), head=nn.Linear(4 * 4 * 4, 3))
    )


@pytest.fixture
def conv_build(tmp_path: Path) -> tuple[compiler.Build, np.ndarray]:
    torch.manual_seed(0)
    calib = np.random.default_rng(0).normal(size=(16, 1, 6, 6)).astype(np.float32)
    return compiler.compile(named_conv_model().eval(), calib, out_dir=tmp_path / "m", progress=False), calib


def test_a_failing_kernel_is_named_with_its_layer_and_sample(conv_build, tmp_path):
    build, calib = conv_build
    broken = tmp_path / "broken"
    shutil.copytree(build.out_dir, broken)
    model_c = (broken / "model.c").read_text()
    params = re.search(r"static const tml_conv_params tml_stem_params = \{.stride_h = 1,", model_c)
    assert params, model_c[:3000]
    (broken / "model.c").write_text(model_c.replace(params.group(0), params.group(0).replace("= 1,", "= 0,", 1)))
    host = load_model(broken)
    with pytest.raises(KernelError, match=r"returned -1 in layer 0 `stem` on sample 0") as err:
        host(host.quantize(nchw_to_graph(calib[:3])))
    assert (err.value.layer, err.value.layer_index, err.value.sample, err.value.status) == ("stem", 0, 0, -1)
    assert load_model(build.out_dir)(host.quantize(nchw_to_graph(calib[:3]))).shape == (3, 3)  # the intact one runs


def test_inputs_that_do_not_fit_the_model_are_named(conv_build):
    build, calib = conv_build
    host = load_model(build.out_dir)
    with pytest.raises(ModelInputError, match="quantize float data first"):
        host(nchw_to_graph(calib[:2]))
    with pytest.raises(ModelInputError, match=r"samples of 36 int8 values.*shape \(2, 35\)"):
        host(np.zeros((2, 35), np.int8))
    with pytest.raises(ModelInputError, match=r"values in \[-5, 300\]"):
        host(np.linspace(-5, 300, 36).astype(np.int32).reshape(1, 36))
    assert host(np.zeros((2, 6, 6, 1), np.int64)).shape == (2, 3)


def plugin_manager_with(plugin: object) -> pluggy.PluginManager:
    """The core's kernels and weight storage, with `plugin` asked first."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(kernels)
    pm.register(weights)
    pm.register(plugin)
    return pm


class FailingHead:
    """A plugin whose kernel for the layer `head` returns an error status."""

    @hookimpl
    def tinyml_select_kernel(self, node, graph, board):
        if node.name == "head":
            return kernels.Kernel(function="tml_failing_fc", emit=lambda call: "status = -3;")
        return None


class ClashingStatic:
    """A plugin whose kernel declares a static named like the layer's weights."""

    @hookimpl
    def tinyml_select_kernel(self, node, graph, board):
        if node.name == "head":

            def emit(call: kernels.CallSite) -> str:
                call.add_static("int32_t", "weight", "0")
                return "status = 0;"

            return kernels.Kernel(function="tml_clashing_fc", emit=emit)
        return None


def test_a_plugin_kernel_that_fails_is_named_on_the_host(conv_build, tmp_path):
    build, calib = conv_build
    generated = generate(build.graph, None, plugin_manager_with(FailingHead()))
    out = tmp_path / "failing"
    out.mkdir()
    for name, text in generated.files.items():
        (out / name).write_text(text)
    host = load_model(out)
    with pytest.raises(KernelError, match=r"returned -3 in layer 2 `head` on sample 0") as err:
        host(host.quantize(nchw_to_graph(calib[:2])))
    assert (err.value.layer, err.value.layer_index, err.value.status) == ("head", 2, -3)


def test_two_definitions_of_one_symbol_are_refused_before_any_c_is_compiled(conv_build):
    with pytest.raises(TinymlError, match=r"`head` \(tml_clashing_fc\) and constant `head.weight` both define"):
        generate(conv_build[0].graph, None, plugin_manager_with(ClashingStatic()))
