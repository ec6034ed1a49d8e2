"""A build's graph as data only: every op round-trips through graph.json + graph.npz; damaged, foreign,
older and newer files give one paragraph; nothing in a build folder can make tinyml run code."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tinyml
from tinyml import graphfile
from tinyml.cli import main
from tinyml.compiler import load_graph
from tinyml.errors import BuildFolderError, GraphFileError
from tinyml.ir import OPS, Graph, Node, Tensor


class AllOps(nn.Module):
    """One model with every op of the IR: conv, depthwise, add, max and average pool, concat, flatten, fc, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU6())
        self.side = nn.Conv2d(4, 4, 1)
        self.maxpool = nn.MaxPool2d(2)
        self.avgpool = nn.AvgPool2d(2)
        self.classifier = nn.Linear(8 * 4 * 4, 5)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = torch.relu(self.depthwise(y) + self.side(y))
        y = torch.cat([self.maxpool(y), self.avgpool(y)], dim=1)
        return self.softmax(self.classifier(torch.flatten(y, 1)))


def assert_same(a: Any, b: Any, where: str) -> None:
    """Equal values of the same types all the way down (a tuple is not a list, int32 is not int64)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_graphs_equal(a: Graph, b: Graph) -> None:
    assert_same(a.inputs, b.inputs, "inputs")
    assert_same(a.outputs, b.outputs, "outputs")
    assert_same(a.tensors, b.tensors, "tensors")
    assert_same(a.nodes, b.nodes, "nodes")


@pytest.fixture(scope="module")
def all_ops_build(tmp_path_factory: pytest.TempPathFactory) -> tinyml.Build:
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    calibration = rng.normal(size=(32, 2, 8, 8)).astype(np.float32)
    validation = (rng.normal(size=(12, 2, 8, 8)).astype(np.float32), rng.integers(0, 5, 12))
    out = tmp_path_factory.mktemp("allops") / "build"
    return tinyml.compile(AllOps(), calibration, out_dir=out, validation=validation, progress=False)


@pytest.fixture
def build_dir(all_ops_build: tinyml.Build, tmp_path: Path) -> Path:
    """A private copy of the compiled build folder, free to damage."""
    return Path(shutil.copytree(all_ops_build.out_dir, tmp_path / "build"))


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def assert_one_paragraph(result: Any, *phrases: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    message = result.output.strip()
    assert message.startswith("Error: ") and "\n" not in message, message
    for phrase in phrases:
        assert phrase in message, message


def test_every_op_of_the_ir_round_trips_equal(all_ops_build: tinyml.Build) -> None:
    graph = all_ops_build.graph
    assert {node.op for node in graph.nodes} == set(OPS)
    loaded = load_graph(all_ops_build.out_dir)
    assert_graphs_equal(loaded, graph)
    # the arrays a kernel reads keep their dtypes: per-channel multipliers, shifts, the softmax table
    attrs = {node.op: node.attrs for node in loaded.nodes}
    assert attrs["conv2d"]["multiplier"].dtype == np.int32 and attrs["conv2d"]["stride"] == (1, 1)
    assert isinstance(attrs["concat"]["multipliers"], list)
    assert len(attrs["softmax"]["exp_table"]) == 256


def test_float_graph_and_odd_attribute_values_round_trip(all_ops_build: tinyml.Build, tmp_path: Path) -> None:
    graph = all_ops_build.float_graph.copy()
    graph.nodes[0].attrs.update(
        {
            "nested": {"a": [1, (2.5, None)], "b": np.arange(3, dtype=np.uint8)},
            "numpy_scalars": (np.float32(0.1), np.int64(-7), np.bool_(True)),
            "flags": [True, False],
            "empty": (),
        }
    )
    graph.tensors[graph.inputs[0]].scale = np.float64(1 / 3)
    graphfile.save_graph(graph, tmp_path)
    assert_graphs_equal(graphfile.load_graph(tmp_path), graph)


def test_an_attribute_a_build_cannot_store_is_named_when_saving(all_ops_build: tinyml.Build, tmp_path: Path) -> None:
    graph = all_ops_build.graph.copy()
    node = graph.nodes[1]
    node.attrs["callback"] = object()
    with pytest.raises(GraphFileError, match=rf"node '{node.name}' field 'attrs'\['callback'\] holds a object"):
        graphfile.save_graph(graph, tmp_path)
    node.attrs["callback"] = np.array([object()])
    with pytest.raises(GraphFileError, match="array of Python objects"):
        graphfile.save_graph(graph, tmp_path)


def test_validate_still_works_on_the_saved_graph(all_ops_build: tinyml.Build) -> None:
    result = tinyml.validate(all_ops_build.out_dir)
    assert result["c_matches_reference"] and result["samples"] == 12


def _edit_json(build_dir: Path, change: Any) -> None:
    path = build_dir / graphfile.GRAPH_JSON
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("damage", "phrases"),
    [
        (lambda d: (d / "graph.json").write_bytes((d / "graph.json").read_bytes()[:500]), ["graph.json is damaged"]),
        (lambda d: (d / "graph.json").write_bytes(b"\xff\xfe\x00garbage"), ["graph.json is damaged"]),
        (lambda d: (d / "graph.npz").write_bytes((d / "graph.npz").read_bytes()[:300]), ["graph.npz is damaged"]),
        (lambda d: (d / "graph.npz").write_bytes(b"PK\x03\x04" + bytes(100)), ["graph.npz is damaged"]),
        (lambda d: (d / "graph.npz").unlink(), ["graph.npz", "missing"]),
        (lambda d: (d / "graph.json").unlink(), ["graph.json", "missing"]),
        (lambda d: _edit_json(d, lambda doc: doc.update(format_version=1000)), ["version 1000", "Upgrade tinyml"]),
        (lambda d: _edit_json(d, lambda doc: doc.update(format_version=0)), ["version 0", "Compile the model again"]),
        (lambda d: _edit_json(d, lambda doc: doc.update(format="onnx")), ["not a tinyml graph file"]),
        (lambda d: _edit_json(d, lambda doc: doc["nodes"][0].update(colour="red")), ["does not describe a graph"]),
        (lambda d: _edit_json(d, lambda doc: doc["tensors"].pop(0)), ["does not describe a graph"]),
        (
            lambda d: _edit_json(d, lambda doc: doc["nodes"][0]["attrs"]["dict"].update(x={"array": "zz"})),
            ["not in graph.npz"],
        ),
    ],
)
def test_damaged_foreign_or_other_version_graph_is_one_paragraph(build_dir: Path, damage: Any, phrases: list) -> None:
    damage(build_dir)
    with pytest.raises(BuildFolderError):  # GraphFileError, or the manifest's "incomplete" for a missing file
        load_graph(build_dir)
    assert_one_paragraph(run("validate", str(build_dir)), str(build_dir), *phrases)


class _RunsCode:
    """A pickle payload that creates a file when unpickled: what a malicious build folder would carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "code ran"))


def test_an_older_build_with_a_pickled_graph_is_refused_without_loading_it(build_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    (build_dir / graphfile.GRAPH_JSON).unlink()
    (build_dir / graphfile.GRAPH_ARRAYS).unlink()
    (build_dir / graphfile.LEGACY_PICKLE).write_bytes(pickle.dumps(_RunsCode(marker)))
    manifest = json.loads((build_dir / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if not f.startswith("graph.")]
    (build_dir / "manifest.json").write_text(json.dumps(manifest))
    assert_one_paragraph(run("validate", str(build_dir)), "older tinyml", "graph.pkl", "Compile the model again")
    # as tinyml 0.1 wrote it: a manifest without the marker
    del manifest["tinyml_build"]
    (build_dir / "manifest.json").write_text(json.dumps(manifest))
    assert_one_paragraph(run("validate", str(build_dir)), "older tinyml")
    assert not marker.exists()


def test_object_arrays_in_a_build_are_refused_not_unpickled(build_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = np.array([_RunsCode(marker)], dtype=object)
    with np.load(build_dir / graphfile.GRAPH_ARRAYS) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["a0"] = payload
    np.savez(build_dir / graphfile.GRAPH_ARRAYS, **arrays)  # numpy pickles object arrays into the npz
    assert_one_paragraph(run("validate", str(build_dir)), "graph.npz holds Python objects")
    assert not marker.exists()


def test_object_arrays_in_the_validation_data_are_refused(build_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    with np.load(build_dir / "validation.npz") as data:
        x, y = data["x"], data["y"]
    np.savez(build_dir / "validation.npz", x=x, y=y, float_pred=np.array([_RunsCode(marker)], dtype=object))
    assert_one_paragraph(run("validate", str(build_dir)), "validation.npz is damaged or not what tinyml wrote")
    assert not marker.exists()


def test_no_tinyml_module_imports_pickle() -> None:
    """Loading a build folder must not be able to run code: the package has no pickle path at all."""
    package = Path(tinyml.__file__).parent
    offenders = [str(p) for p in package.rglob("*.py") if "import pickle" in p.read_text()]
    assert offenders == []


def test_node_fields_added_later_are_saved_too(tmp_path: Path) -> None:
    """The file follows the IR's dataclasses: a node or tensor field is never dropped silently."""
    graph = Graph(
        tensors={name: Tensor(name, (1, 4), "int8", scale=0.5) for name in ("x", "y")},
        nodes=[Node("head", "softmax", ["x"], ["y"], {"exp_table": np.arange(256, dtype=np.uint32)}, "head")],
        inputs=["x"],
        outputs=["y"],
    )
    graphfile.save_graph(graph, tmp_path)
    document = json.loads((tmp_path / graphfile.GRAPH_JSON).read_text())
    assert set(document["nodes"][0]) == {f.name for f in dataclasses.fields(Node)}
    assert document["format_version"] == graphfile.FORMAT_VERSION and document["tinyml_version"] == tinyml.__version__
    assert_graphs_equal(graphfile.load_graph(tmp_path), graph)
