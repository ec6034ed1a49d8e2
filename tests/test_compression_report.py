"""Compression figures per layer and in total: compile report, `--json`, report.json, report.html, `tinyml run`.

The figures are checked against what they describe, found independently: parameter counts and
raw bytes from the torch modules' shapes, nonzeros from the int8 graph, stored bytes from the
generated `EncodedTensor`s.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tinyml
from tinyml.compiler import Build
from tinyml.compression_report import compression_report, encoded_layers
from tinyml.manifest import read_manifest
from tinyml.report import REPORT_DATA, REPORT_HTML

FIGURES = (
    "name", "op", "kernel", "parameters", "nonzeros", "float32_bytes", "int8_bytes", "stored_bytes", "encoding",
    "codebook_size", "bits_per_weight", "ratio",
)  # fmt: skip
SHARE_BITS = 3


def mlp(hidden: int = 48, zero_fraction: float = 0.6) -> nn.Module:
    """64-hidden-10 with the first layer's smallest weights set to zero by hand, so int8 has zeros to count."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10), nn.Softmax(dim=1))
    with torch.no_grad():
        w = model[0].weight
        w[w.abs() < w.abs().flatten().quantile(zero_fraction)] = 0.0
    return model


def linear_shapes(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.out_features, m.in_features) for m in model.modules() if isinstance(m, nn.Linear)]


CALIBRATION = np.random.default_rng(0).normal(size=(32, 64)).astype(np.float32)
TECHNIQUES = {
    "huffman": ["quantize-int8", "huffman"],
    "shared": ["quantize-int8", ("share-weights", {"bits": SHARE_BITS, "epochs": 0}), "huffman"],
    "int8": ["quantize-int8"],
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Build]:
    root = tmp_path_factory.mktemp("compression")
    return {
        name: tinyml.compile(mlp(), CALIBRATION, techniques, out_dir=root / name, progress=False)
        for name, techniques in TECHNIQUES.items()
    }


@pytest.mark.parametrize("name", ["huffman", "shared"])
def test_layer_figures_are_those_of_the_build(builds, name):
    build = builds[name]
    report = compression_report(build)
    layers = report.layers
    shapes = linear_shapes(mlp())
    assert [layer.name for layer in layers] == [n.name for n in build.graph.nodes if n.op == "fc"]
    for layer, (out_f, in_f), node in zip(layers, shapes, [n for n in build.graph.nodes if n.op == "fc"], strict=True):
        weight, bias = (build.graph.tensors[t] for t in node.inputs[1:])
        assert layer.parameters == out_f * in_f + out_f
        assert layer.nonzeros == np.count_nonzero(weight.data) + np.count_nonzero(bias.data)
        assert layer.float32_bytes == 4 * layer.parameters
        assert layer.int8_bytes == out_f * in_f + 4 * out_f  # int8 weights, int32 biases
        assert layer.stored_bytes == sum(build.generated.weights[t].nbytes for t in node.inputs[1:])
        assert layer.stored_bytes == build.layer_weight_bytes()[node.name]
        assert layer.bits_per_weight == pytest.approx(8 * layer.stored_bytes / layer.parameters)
        assert layer.ratio == pytest.approx(layer.float32_bytes / layer.stored_bytes)
        assert layer.encoding == build.generated.weights[node.inputs[1]].encoding == "huffman"
        assert layer.kernel == "tml_huffman_fc_s8" == build.generated.kernels[node.name].function
    # the hand-zeroed first layer: its zeros survive quantization and are counted
    assert layers[0].nonzeros < 0.5 * layers[0].parameters
    total = report.total
    for field in ("parameters", "nonzeros", "float32_bytes", "int8_bytes", "stored_bytes"):
        assert getattr(total, field) == sum(getattr(layer, field) for layer in layers)
    assert total.stored_bytes == build.generated.weight_bytes
    assert total.ratio == pytest.approx(total.float32_bytes / total.stored_bytes)
    assert total.encoding == "huffman"


def test_shared_weights_report_their_codebook_and_shrink_below_int8(builds):
    shared, unshared = compression_report(builds["shared"]), compression_report(builds["huffman"])
    for layer, node in zip(shared.layers, [n for n in builds["shared"].graph.nodes if n.op == "fc"], strict=True):
        weight = builds["shared"].graph.tensors[node.inputs[1]]
        assert layer.codebook_size == len(weight.codebook) <= 2**SHARE_BITS
        assert len(np.unique(weight.data)) <= layer.codebook_size
    assert shared.total.stored_bytes < unshared.total.stored_bytes
    assert shared.total.stored_bytes < shared.total.int8_bytes
    assert shared.total.ratio > 4 and shared.total.bits_per_weight < 8


def test_a_plain_int8_model_is_raw_at_about_4x(tmp_path):
    model = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    build = tinyml.compile(model, CALIBRATION, ["quantize-int8"], progress=False)
    report = compression_report(build)
    assert {layer.encoding for layer in report.layers} == {"raw"} and report.total.encoding == "raw"
    assert not report.any_encoded
    assert all(layer.stored_bytes == layer.int8_bytes for layer in report.layers)
    assert all(layer.codebook_size is None for layer in report.layers)
    assert 3.9 <= report.total.ratio <= 4.0
    assert report.total.bits_per_weight == pytest.approx(32 / report.total.ratio)


def test_summary_and_manifest_hold_the_figures(builds):
    build = builds["shared"]
    summary = build.summary()
    report = compression_report(build)
    for layer in summary["layers"]:
        if layer["op"] == "fc":
            assert set(layer["compression"]) == set(FIGURES)
            assert layer["compression"] == report.by_layer()[layer["name"]]
        else:
            assert layer["compression"] is None  # softmax: no constants
    assert set(summary["compression_total"]) == set(FIGURES)
    assert summary["compression_total"]["stored_bytes"] == build.generated.weight_bytes
    manifest = read_manifest(build.out_dir, "model")
    assert manifest["compression_total"] == json.loads(json.dumps(summary["compression_total"]))
    assert encoded_layers(manifest) == {
        n.name: {"encoding": "huffman", "kernel": "tml_huffman_fc_s8"} for n in build.graph.nodes if n.op == "fc"
    }
    assert encoded_layers(read_manifest(builds["int8"].out_dir, "model")) == {}


def test_compile_report_prints_the_weights_table(builds):
    build = builds["shared"]
    text = build.report()
    assert all(len(line) <= 120 for line in text.splitlines())
    total = compression_report(build).total
    assert "weights" in text
    footer = next(line for line in text.splitlines() if re.match(r"^\W*total\b", line))
    cells = [c.strip() for c in re.split(r"[│|]", footer) if c.strip()]
    assert cells == [
        "total", f"{total.parameters:,}", f"{total.nonzeros:,}", f"{total.bits_per_weight:.2f}",
        f"{total.float32_bytes:,}", f"{total.int8_bytes:,}", f"{total.stored_bytes:,}", f"{total.ratio:.1f}x",
        "huffman",
    ]  # fmt: skip
    assert footer in (build.out_dir / "report.txt").read_text()


@pytest.mark.parametrize("name", ["shared", "int8"])
def test_html_report_has_a_self_contained_compression_section(builds, name):
    build = builds[name]
    data = json.loads((build.out_dir / REPORT_DATA).read_text())
    assert data["compression_total"] == json.loads(json.dumps(compression_report(build).total.as_dict()))
    page = (build.out_dir / REPORT_HTML).read_text()
    match = re.search(r'<section id="compression">(.*?)</section>', page, re.S)
    assert match, "no Compression section"
    section = match.group(1)
    assert not re.search(r"https?://|<script|url\(|@import", page)
    images = re.findall(r'<img [^>]*src="([^"]+)"', section)
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")
    total = compression_report(build).total
    assert f"<td colspan=2>total</td><td class=num>{total.parameters:,}</td>" in section
    assert f"<td class=num>{total.stored_bytes:,}</td><td class=num>{total.ratio:.1f}&times;</td>" in section
    encoding = "huffman" if name == "shared" else "raw"
    assert section.count(f"<td>{encoding}") == len(compression_report(build).layers) + 1


def test_a_model_without_constants_has_no_table_and_no_section(tmp_path):
    calibration = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    build = tinyml.compile(nn.Sequential(nn.MaxPool2d(2)), calibration, out_dir=tmp_path / "pool", progress=False)
    assert compression_report(build).layers == []
    assert build.summary()["compression_total"]["stored_bytes"] == 0
    assert build.summary()["layers"][0]["compression"] is None
    assert "stored B" not in build.report()
    assert 'id="compression"' not in (build.out_dir / REPORT_HTML).read_text()


def test_an_older_report_data_without_figures_has_no_compression_section(builds, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(builds["int8"].out_dir, folder)
    data = json.loads((folder / REPORT_DATA).read_text())
    del data["compression_total"]
    (folder / REPORT_DATA).write_text(json.dumps(data))
    from tinyml.report import write_report

    assert 'id="compression"' not in write_report(folder).read_text()


RECIPE = """
[model]
factory = "net.py:make_model"
[data]
calibration = "calib.npz"
[[techniques]]
name = "quantize-int8"
[[techniques]]
name = "huffman"
"""
NET = """
import torch
from torch import nn

def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    (tmp_path / "net.py").write_text(NET)
    np.savez(tmp_path / "calib.npz", x=CALIBRATION)
    (tmp_path / "tinyml.toml").write_text(RECIPE)
    return tmp_path / "tinyml.toml"


def test_compile_json_and_text_hold_the_figures(recipe, tmp_path):
    from tinyml.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["compile", "--recipe", str(recipe), "--out", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert [layer["compression"]["encoding"] for layer in summary["layers"]] == ["huffman", "huffman"]
    assert summary["compression_total"]["stored_bytes"] == summary["weight_bytes"]
    assert summary["compression_total"]["parameters"] == 64 * 24 + 24 + 24 * 10 + 10
    result = runner.invoke(main, ["compile", "--recipe", str(recipe), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 120 for line in result.output.splitlines())
    assert re.search(r"\W0\W.*tml_huffman_fc_s8", result.output) and "weights" in result.output


@pytest.mark.qemu
def test_build_prints_and_gives_the_figures(recipe, tmp_path):
    from tinyml.cli import main

    runner = CliRunner()
    args = ["build", "--board", "cortex-m3", "--recipe", str(recipe), "--inputs", "1"]
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "fw"), "--json"])
    assert result.exit_code == 0, result.output
    compression = json.loads(result.output)["compression"]
    assert set(compression["layers"]) == {"0", "2"}
    assert compression["total"]["parameters"] == 64 * 24 + 24 + 24 * 10 + 10
    assert compression["total"]["encoding"] == "huffman"
    result = runner.invoke(main, [*args, "--out", str(tmp_path / "fw2")])
    assert result.exit_code == 0, result.output
    total = next(line for line in result.output.splitlines() if re.match(r"^\W*total\b", line))
    assert f"{compression['total']['stored_bytes']:,}" in total and "huffman" in total


@pytest.mark.qemu
def test_run_marks_the_layers_that_decode(builds, tmp_path: Path, monkeypatch):
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import build_firmware
    from tinyml.cli import main

    build = builds["huffman"]
    inputs = np.random.default_rng(1).integers(-128, 128, size=(2, 64), dtype=np.int8)
    firmware = build_firmware(build.out_dir, resolve_board("cortex-m3"), tmp_path / "fw", inputs)
    runner = CliRunner()
    result = runner.invoke(main, ["run", str(firmware.out_dir)])
    assert result.exit_code == 0, result.output
    fc = [n.name for n in build.graph.nodes if n.op == "fc"]
    for i, node in enumerate(build.graph.nodes):
        row = next(
            line for line in result.output.splitlines() if re.match(rf"^\W*{i}\W+{re.escape(node.name)}\W", line)
        )
        assert ("huffman: tml_huffman_fc_s8" in row) == (node.name in fc)
    result = runner.invoke(main, ["run", "--json", str(firmware.out_dir)])
    assert result.exit_code == 0, result.output
    layers = {layer["name"]: layer for layer in json.loads(result.output)["layers"]}
    for name, layer in layers.items():
        assert layer.get("encoding") == ("huffman" if name in fc else None)
        assert layer.get("kernel") == ("tml_huffman_fc_s8" if name in fc else None)
        assert sum(layer["instructions"]) > 0
    saved = json.loads((firmware.out_dir / "run.json").read_text())
    assert {layer["name"]: layer.get("encoding") for layer in saved["layers"]} == {
        name: layer.get("encoding") for name, layer in layers.items()
    }
    page = (firmware.out_dir / REPORT_HTML).read_text()
    section = re.search(r'<section id="compression">(.*?)</section>', page, re.S).group(1)
    assert "<th class=num>instructions</th>" in section
    for name in fc:
        mean = np.mean(layers[name]["instructions"])
        assert re.search(rf"<code>{re.escape(name)}</code>.*?<td class=num>{mean:,.0f}</td></tr>", section)
