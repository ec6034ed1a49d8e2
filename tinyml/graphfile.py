"""A build's int8 graph as data only: `graph.json` (structure) and `graph.npz` (arrays).

Build folders travel (a colleague sends one, CI archives one), and `tinyml validate` or
`tinyml build` loads the graph from them, so loading must never run code: no pickle anywhere.
`graph.json` holds the format name and version, the tinyml version that wrote it, the graph's
inputs and outputs, every tensor's metadata and every node with its attributes. Each numpy array
(constants, per-channel scales, multipliers and shifts, softmax exp tables) is a member of
`graph.npz`, referenced from the JSON by key and read with `allow_pickle=False`, so an object
array in a tampered file is refused instead of unpickled.

Values in the JSON: null, booleans, numbers, strings and lists are themselves; a tuple is
`{"tuple": [...]}`, a dict `{"dict": {...}}`, a numpy array `{"array": KEY}` and a numpy scalar
`{"scalar": KEY}` (a 0-d array in the npz), so a graph loads back equal, types included.
`FORMAT_VERSION` changes whenever a file written by one version cannot be read right by another.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tinyml.errors import GraphFileError
from tinyml.ir import Graph, Node, Tensor

FORMAT = "tinyml-graph"
FORMAT_VERSION = 1
GRAPH_JSON = "graph.json"
GRAPH_ARRAYS = "graph.npz"
LEGACY_PICKLE = "graph.pkl"  # what tinyml 0.1 wrote; never read, only recognised for the error message

_TAGS = ("tuple", "dict", "array", "scalar")
_RECOMPILE = "Compile the model again with this tinyml (`tinyml compile`) to get a build folder it can read."


class _Encoder:
    """Turns attribute values into JSON values, collecting arrays for the npz."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array_key(self, value: np.ndarray, where: str) -> str:
        if value.dtype.hasobject:
            raise GraphFileError(f"{where} is an array of Python objects, which a build cannot store; use numbers.")
        key = f"a{len(self.arrays)}"
        self.arrays[key] = value
        return key

    def encode(self, value: Any, where: str) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.ndarray):
            return {"array": self.array_key(value, where)}
        if isinstance(value, np.generic):  # before float: np.float64 is a float
            return {"scalar": self.array_key(np.asarray(value), where)}
        if isinstance(value, (int, float)):
            return value
        if isinstance(value, list):
            return [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, tuple):
            return {"tuple": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, dict):
            if not all(isinstance(k, str) for k in value):
                raise GraphFileError(f"{where} is a dict with keys that are not strings, which a build cannot store.")
            return {"dict": {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
        raise GraphFileError(
            f"{where} holds a {type(value).__name__}, which a build cannot store: graph attributes must be "
            "numbers, strings, lists, tuples, dicts or numpy arrays (the technique that set it must change)."
        )

    def record(self, obj: Tensor | Node, kind: str) -> dict[str, Any]:
        return {
            f.name: self.encode(getattr(obj, f.name), f"{kind} {obj.name!r} field {f.name!r}")
            for f in dataclasses.fields(obj)
        }


def graph_to_data(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON document and the arrays that together hold `graph`."""
    from tinyml import __version__

    encoder = _Encoder()
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tinyml_version": __version__,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "tensors": [encoder.record(t, "tensor") for t in graph.tensors.values()],
        "nodes": [encoder.record(n, "node") for n in graph.nodes],
    }
    return document, encoder.arrays


def save_graph(graph: Graph, folder: str | Path) -> None:
    """Write `graph` as `folder/graph.json` and `folder/graph.npz`."""
    folder = Path(folder)
    document, arrays = graph_to_data(graph)
    np.savez_compressed(folder / GRAPH_ARRAYS, **arrays)
    (folder / GRAPH_JSON).write_text(_dumps(document))


def _dumps(document: dict[str, Any]) -> str:
    """JSON with one line per tensor and per node, so the file reads (and diffs) layer by layer."""
    parts = [f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in document.items() if k not in ("tensors", "nodes")]
    for key in ("tensors", "nodes"):
        items = ",\n".join(f"    {json.dumps(item)}" for item in document[key])
        parts.append(f"  {json.dumps(key)}: [\n{items}\n  ]")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def has_graph(folder: str | Path) -> bool:
    """Whether `folder` holds a graph file (of any version) or the pickle older versions wrote."""
    return (Path(folder) / GRAPH_JSON).is_file() or (Path(folder) / LEGACY_PICKLE).is_file()


def load_graph(folder: str | Path) -> Graph:
    """The graph saved in `folder`; a GraphFileError naming the file and what to do when it cannot be read."""
    folder = Path(folder)
    path = folder / GRAPH_JSON
    if not path.is_file():
        if (folder / LEGACY_PICKLE).is_file():
            raise GraphFileError(
                f"{folder} was compiled by an older tinyml, which stored the graph as a pickle ({LEGACY_PICKLE}); "
                f"this version does not load pickles, since loading one can run any code. {_RECOMPILE}"
            )
        raise GraphFileError(f"{folder} holds no {GRAPH_JSON}, so it is not a compiled model. {_RECOMPILE}")
    document = _read_document(path)
    return graph_from_data(document, _read_arrays(folder / GRAPH_ARRAYS), path)


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise GraphFileError(
            f"{path} is damaged (truncated or edited): it is not valid JSON ({err}). {_RECOMPILE}"
        ) from err
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise GraphFileError(f"{path} is not a tinyml graph file (its format is not {FORMAT!r}). {_RECOMPILE}")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        writer = document.get("tinyml_version", "an unknown version")
        newer = isinstance(version, int) and version > FORMAT_VERSION
        advice = "Upgrade tinyml to read it, or compile the model again with this version." if newer else _RECOMPILE
        raise GraphFileError(
            f"{path} is graph format version {version!r}, written by tinyml {writer}; this tinyml reads version "
            f"{FORMAT_VERSION} only. {advice}"
        )
    return document


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise GraphFileError(
            f"{path} is missing: the graph's arrays (weights, multipliers) are kept there. {_RECOMPILE}"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        refused = "Object arrays cannot be loaded" in str(err)
        problem = "holds Python objects, which tinyml refuses to load" if refused else f"is damaged ({err})"
        raise GraphFileError(f"{path} {problem}. {_RECOMPILE}") from err


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1 or next(iter(value)) not in _TAGS:
            raise ValueError(f"unknown value {str(value)[:80]}")
        tag, inner = next(iter(value.items()))
        if tag == "tuple":
            return tuple(self.decode(v) for v in inner)
        if tag == "dict":
            return {str(k): self.decode(v) for k, v in inner.items()}
        if inner not in self.arrays:
            raise ValueError(f"array {inner!r} is not in {GRAPH_ARRAYS}")
        return self.arrays[inner] if tag == "array" else self.arrays[inner][()]

    def record(self, cls: type, data: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
        return cls(**{k: self.decode(v) for k, v in data.items()})


def graph_from_data(document: dict[str, Any], arrays: dict[str, np.ndarray], path: Path | str = GRAPH_JSON) -> Graph:
    """The graph a JSON document and its arrays describe; GraphFileError when they do not describe one."""
    decoder = _Decoder(arrays)
    try:
        tensors = [decoder.record(Tensor, t) for t in document["tensors"]]
        graph = Graph(
            tensors={t.name: t for t in tensors},
            nodes=[decoder.record(Node, n) for n in document["nodes"]],
            inputs=[str(n) for n in document["inputs"]],
            outputs=[str(n) for n in document["outputs"]],
        )
        named = [*graph.inputs, *graph.outputs, *(n for node in graph.nodes for n in node.inputs + node.outputs)]
        missing = sorted({n for n in named if n not in graph.tensors})
        if missing:
            raise ValueError(f"tensors {missing} are used but not described")
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise GraphFileError(
            f"{path} does not describe a graph ({err}); it was edited or damaged. {_RECOMPILE}"
        ) from err
    return graph
