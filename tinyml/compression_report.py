"""How much each layer's constants shrank: parameters, nonzeros, bits per weight, bytes and ratio.

Deep Compression (Han, Mao and Dally, ICLR 2016) reports a model's weights as float32 bytes
against stored bytes. These figures are read from a `Build` only, whatever technique compressed it:

- `parameters`: the elements of the layer's constants (weights and biases), from the int8 graph;
- `nonzeros`: those elements that are not zero in the int8 graph (pruning shows here);
- `float32_bytes`: parameters x 4, the float model's storage;
- `int8_bytes`: the constants stored raw (int8 weights, int32 biases), what `quantize-int8` alone gives;
- `stored_bytes`: the flash the constants take as generated, `EncodedTensor.nbytes` summed (every
  index, value, code table and struct included);
- `bits_per_weight`: stored bits / parameters; `ratio`: float32 bytes / stored bytes;
- `encoding`: the storage of the layer's constants (`EncodedTensor.encoding`: "raw", or the name a
  plugin gave it, e.g. "huffman"), `codebook_size` the distinct values weight sharing left (or None);
- `kernel`: the C function chosen for the layer (a kernel that decodes its weights as it runs, for an
  encoded layer).

A constant read by several layers counts once, for the first layer that reads it (as the code
generator names it), so the layers add up to the totals. Layers without constants (pooling,
softmax...) have no entry. The float32 figure is of the model as exported, after any train-stage
technique that removed channels (filter pruning): it is what a float build of this model would store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from rich.table import Table

    from tinyml.compiler import Build

FLOAT32_BYTES = 4
RAW = "raw"


@dataclass(frozen=True)
class LayerCompression:
    """The storage figures of one layer's constants (or, named "total", of the whole model's)."""

    name: str
    op: str
    kernel: str
    parameters: int
    nonzeros: int
    float32_bytes: int
    int8_bytes: int
    stored_bytes: int
    encoding: str
    codebook_size: int | None = None

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.stored_bytes / self.parameters if self.parameters else 0.0

    @property
    def ratio(self) -> float:
        """float32 bytes / stored bytes: how many times smaller than the float model's constants."""
        return self.float32_bytes / self.stored_bytes if self.stored_bytes else 0.0

    @property
    def encoded(self) -> bool:
        return self.encoding != RAW

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values, the derived figures (bits per weight, ratio) included."""
        data = asdict(self)
        data.update(bits_per_weight=round(self.bits_per_weight, 4), ratio=round(self.ratio, 4))
        return data


@dataclass(frozen=True)
class CompressionReport:
    """Every layer that has constants, in execution order, and the model's totals."""

    layers: list[LayerCompression]
    total: LayerCompression

    @property
    def any_encoded(self) -> bool:
        return any(layer.encoded for layer in self.layers)

    def by_layer(self) -> dict[str, dict[str, Any]]:
        """Each layer's figures as JSON values, by layer name."""
        return {layer.name: layer.as_dict() for layer in self.layers}

    def table(self) -> Table:
        """The figures as a rich table titled "weights", one row a layer and a total row."""
        from rich.table import Table

        table = Table(title="weights", show_footer=True)
        columns = (
            ("layer", "total"),
            ("params", f"{self.total.parameters:,}"),
            ("nonzero", f"{self.total.nonzeros:,}"),
            ("bits/w", f"{self.total.bits_per_weight:.2f}"),
            ("float32 B", f"{self.total.float32_bytes:,}"),
            ("int8 B", f"{self.total.int8_bytes:,}"),
            ("stored B", f"{self.total.stored_bytes:,}"),
            ("ratio", f"{self.total.ratio:.1f}x"),
            ("encoding", self.total.encoding),
            ("kernel", ""),
        )
        for header, footer in columns:
            left = header in ("layer", "encoding", "kernel")
            table.add_column(header, footer=footer, justify="left" if left else "right", overflow="fold")
        for layer in self.layers:
            encoding = layer.encoding + (f" ({layer.codebook_size} values)" if layer.codebook_size else "")
            table.add_row(
                layer.name,
                f"{layer.parameters:,}",
                f"{layer.nonzeros:,}",
                f"{layer.bits_per_weight:.2f}",
                f"{layer.float32_bytes:,}",
                f"{layer.int8_bytes:,}",
                f"{layer.stored_bytes:,}",
                f"{layer.ratio:.1f}x",
                encoding,
                layer.kernel,
            )
        return table


def compression_report(build: Build) -> CompressionReport:
    """The figures of every layer with constants, from the build's int8 graph and generated weights."""
    graph, generated = build.graph, build.generated
    claimed: set[str] = set()
    layers = []
    for node in graph.nodes:
        names = [n for n in node.inputs if graph.tensors[n].is_constant and n not in claimed]
        if not names:
            continue
        claimed.update(names)
        tensors = [graph.tensors[n] for n in names]
        encodings = sorted({generated.weights[n].encoding for n in names} - {RAW})
        codebooks = [len(t.codebook) for t in tensors if t.codebook is not None]
        parameters = sum(t.size for t in tensors)
        layers.append(
            LayerCompression(
                name=node.name,
                op=node.op,
                kernel=generated.kernels[node.name].function,
                parameters=parameters,
                nonzeros=sum(int(np.count_nonzero(t.data)) for t in tensors),
                float32_bytes=FLOAT32_BYTES * parameters,
                int8_bytes=sum(int(t.data.nbytes) for t in tensors),
                stored_bytes=sum(generated.weights[n].nbytes for n in names),
                encoding="+".join(encodings) or RAW,
                codebook_size=max(codebooks) if codebooks else None,
            )
        )
    encodings = sorted({layer.encoding for layer in layers} - {RAW})
    total = LayerCompression(
        name="total",
        op="",
        kernel="",
        parameters=sum(layer.parameters for layer in layers),
        nonzeros=sum(layer.nonzeros for layer in layers),
        float32_bytes=sum(layer.float32_bytes for layer in layers),
        int8_bytes=sum(layer.int8_bytes for layer in layers),
        stored_bytes=sum(layer.stored_bytes for layer in layers),
        encoding="+".join(encodings) or RAW,
    )
    return CompressionReport(layers, total)


def encoded_layers(model_summary: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The layers of a compiled model's summary (its manifest.json) whose constants are not stored raw:
    name -> {"encoding", "kernel"}, the kernel being the one that decodes them as the layer runs."""
    found = {}
    for layer in model_summary.get("layers", []):
        compression = layer.get("compression") if isinstance(layer, Mapping) else None
        if isinstance(compression, Mapping) and compression.get("encoding", RAW) != RAW:
            found[str(layer["name"])] = {"encoding": str(compression["encoding"]), "kernel": str(layer.get("kernel"))}
    return found
