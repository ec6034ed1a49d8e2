"""share-weights: weight sharing after Deep Compression (Han, Mao and Dally, ICLR 2016), float or int8.

Each layer's weights (conv, depthwise conv, fully connected) take at most 2**bits values: k-means
clusters them (scikit-learn, centroids initialised linearly over [min, max] as in the paper, one
run), every weight becomes its cluster's centroid, and the centroids are fine-tuned on the training
data with the summed gradients of their members. The tensor's `codebook` lists the values, so a
weight encoding may store an index per weight. Choosing the storage is not this technique's job:
list `huffman` after it to store the indices packed, sparse or Huffman-coded; without it the
shared weights are stored as plain int8 (same bytes, same kernels).

Per-channel scales and one codebook per layer
---------------------------------------------
quantize-int8 gives every output channel c its own scale s_c (max |w| of the channel maps to 127).
A codebook of float weights cannot survive that: s_c * round(w / s_c) puts each channel's share of
a centroid on its own grid, so one float codebook becomes a different set of integers per channel.
The technique runs wherever it is listed, and each place has its answer:

(a) after quantize-int8 (`quantize-int8, share-weights`): sharing in the integer domain. k-means
    runs over the layer's int8 values; the codebook holds integers and channel c's real weights
    are s_c * codebook[index]. The scales stay per channel, so each channel keeps its own range:
    the codebook is shared over weights normalised per channel (each channel's largest weight at
    127). Nothing outside this plugin changes.
(b) before quantize-int8 (`share-weights, quantize-int8`, the paper's order): sharing in the float
    domain. k-means runs over the float weights and the float centroids are the codebook;
    quantize-int8 then gives a layer with a codebook one scale for all its channels (max |centroid|
    maps to 127), so the float codebook maps to one int8 codebook, round(centroid / s). Per-channel
    int8 codebooks (one float codebook, a scale per channel) would keep the channels' own ranges,
    but cost out_channels x 2**bits bytes of flash (4,800 B for the MLP's 64x300 layer at 4 bits,
    as much as its whole Huffman stream) and a codebook switch per row in every decoder. The
    biases and multipliers follow from the scales as for any layer; every kernel stays
    integer-exact and the numpy reference stays the oracle.

Measured on the digits example (held-out split, 450 samples; float and plain int8 both 98.44%), no
fine-tuning, accuracy and cross-entropy of the int8 outputs:

    bits                     (a) int8 domain      (b) float, per-tensor scale
    4, classifier 2          98.22%  0.059        98.44%  0.053
    3                        98.67%  0.046        98.22%  0.059
    2                        95.78%  0.138        94.44%  0.188
    2, first conv only       99.11%               96.22%

(a) is as good at 4 bits and better where the codebook is small, most of all on the first
convolution, whose folded batch norm gives its channels very different ranges; (b) is the paper's
order and clusters the real weights. With two epochs of centroid fine-tuning, (a) at 4 bits
(classifier 2) gives 98.44%, plain int8's accuracy.

Zeros stay exact
----------------
A pruned layer gets 0 as a fixed codebook entry, and k-means clusters the nonzero values into the
other 2**bits - 1 entries, as the paper clusters the weights that survive pruning. A zero never
moves, so pruning composes and a sparse encoding keeps skipping zeros. In int8 the histogram shows
pruning (0 is more frequent than -1 and 1 together, see `is_pruned`); an unpruned layer's few
zeros (weights that round to 0) are clustered like any value: fixing 0 there would cost one of
four entries at 2 bits (relative weight error 0.39 instead of 0.29 on the digits classifier). In
float a weight is exactly 0 only where pruning set it, so any exact zero marks a pruned layer.

Fine-tuning
-----------
The graph runs in torch through `tinyml_plugins.qat.FakeQuantGraph` (activations rounded with
their int8 scales and zero points) with every weight frozen except the centroids; a shared weight
is centroid[index] (times its channel's scale s_c in int8), so each centroid's gradient is the sum
of its members' gradients. The forward pass uses the centroids rounded as the kernels will see
them (straight-through): to integers in int8, to the layer's one int8 grid in float. Assignments
of weights to centroids do not change, as in the paper. `seed` fixes the k-means and the batch
order: the same options give the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tinyml.errors import RecipeError
from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph, Node, Tensor
from tinyml.technique import Context, Technique

WEIGHTED_OPS = ("conv2d", "dwconv2d", "fc")
DEFAULT_BITS = 4
INT8_LIMIT = 127  # quantize-int8's weights are symmetric in [-127, 127]

Bits = Annotated[int, Field(ge=1, le=8)]


class ShareWeightsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bits: dict[str, Bits] = Field(
        {"*": DEFAULT_BITS},
        description=(
            "index bits per layer (at most 2**bits values), 1..8: one number for every layer, or a table by layer "
            'name or module path with "*" for the rest (layers no key covers are not shared)'
        ),
    )
    epochs: int = Field(2, ge=0, description="epochs of centroid fine-tuning on the training data (0: k-means only)")
    lr: float = Field(0.1, gt=0.0, description="learning rate of the centroid fine-tuning, in int8 steps")
    seed: int = Field(0, description="seed of the k-means and of the fine-tuning's batch order")

    @field_validator("bits", mode="before")
    @classmethod
    def _one_number_for_all(cls, value: object) -> object:
        return {"*": value} if isinstance(value, int) and not isinstance(value, bool) else value


class ShareWeights(Technique):
    """k-means weight sharing, in the float weights or in each layer's int8 quantization, centroids fine-tuned."""

    name = "share-weights"
    stage = "graph"
    Options = ShareWeightsOptions
    reduces = ("flash",)

    def apply(self, graph: Graph, context: Context) -> Graph:
        options = self.options
        bits = layer_bits(graph, options.bits)
        if options.epochs > 0:
            context.require_train_data(f"{self.name} (epochs = {options.epochs})")
        layers = {name: cluster(_weight(graph, name).data, b, options.seed) for name, b in bits.items()}
        if options.epochs > 0 and layers:
            from tinyml_plugins.share_weights.finetune import fine_tune_centroids

            layers = fine_tune_centroids(graph, layers, context, options.epochs, options.lr, options.seed)
        shared = graph.copy()
        for name, layer in layers.items():
            weight = _weight(shared, name)
            weight.data = layer.weights()
            weight.codebook = np.unique(weight.data)
        return shared


@hookimpl
def tinyml_techniques() -> list[type[Technique]]:
    return [ShareWeights]


def layer_bits(graph: Graph, bits: dict[str, int]) -> dict[str, int]:
    """Index bits of every layer to share, by node name: the most specific key covering it, else "*".

    A key covers a layer when it is the layer's name or module path, or a module above it (`features`
    covers `features.conv1`); the longest covering key wins. A key covering no layer with weights is a
    `RecipeError` listing them.
    """
    weighted = [n for n in graph.nodes if n.op in WEIGHTED_OPS]
    for key in bits:
        if key != "*" and not any(_covers(key, n) for n in weighted):
            names = ", ".join(_describe(n) for n in weighted) or "none"
            raise RecipeError(
                f"Technique 'share-weights' option bits names {key!r}, which is no layer with weights in this model "
                f"(nor a module holding one). Layers with weights: {names}. Use a layer name, a module path or "
                '"*" for every other layer.'
            )
    chosen = {}
    for node in weighted:
        keys = [k for k in bits if k != "*" and _covers(k, node)]
        if keys:
            chosen[node.name] = bits[max(keys, key=len)]
        elif "*" in bits:
            chosen[node.name] = bits["*"]
    return chosen


def _covers(key: str, node: Node) -> bool:
    return any(path == key or path.startswith(key + ".") for path in (node.name, node.source) if path)


def _describe(node: Node) -> str:
    return node.name if node.source in ("", node.name) else f"{node.name} (module {node.source})"


def _weight(graph: Graph, layer: str) -> Tensor:
    return graph.tensors[next(n for n in graph.nodes if n.name == layer).inputs[1]]


@dataclass
class SharedLayer:
    """One layer's clustering: each weight's entry in `centroids`; entry 0 is a fixed zero when `zero_fixed`.

    `integer`: the centroids are in int8 steps (clustered after quantization), else float weights.
    """

    index: np.ndarray  # int64, shaped like the weight
    centroids: np.ndarray  # float64
    zero_fixed: bool
    integer: bool = True

    def weights(self) -> np.ndarray:
        """The shared weights: int8, each its centroid rounded to an integer; or float32 centroids."""
        if not self.integer:
            return self.centroids[self.index].astype(np.float32)
        values = np.clip(np.round(self.centroids), -INT8_LIMIT, INT8_LIMIT)
        return values[self.index].astype(np.int8)


def is_pruned(values: np.ndarray, counts: np.ndarray) -> bool:
    """Whether a layer's int8 histogram (distinct `values`, their `counts`) shows pruning: 0 is more frequent
    than -1 and 1 together. Rounding a smooth distribution gives 0 about half as often as its two neighbours;
    magnitude pruning piles the pruned weights on 0 and empties the values around it."""
    frequency = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return frequency.get(0, 0) > frequency.get(-1, 0) + frequency.get(1, 0)


def cluster(weights: np.ndarray, bits: int, seed: int) -> SharedLayer:
    """k-means of one layer's weights (int8, or float) into at most 2**bits values, 0 a fixed entry when pruned.

    Clustered as a histogram (each distinct value weighted by its count), which is the same k-means
    as over every weight and costs at most 255 points in int8; a layer with no more distinct values
    than entries keeps them all. A float layer is pruned when any weight is exactly 0.
    """
    from sklearn.cluster import KMeans

    weights = np.asarray(weights)
    integer = weights.dtype == np.int8
    flat = weights.astype(np.int64 if integer else np.float64)
    values, counts = np.unique(flat, return_counts=True)
    zero_fixed = is_pruned(values, counts) if integer else bool((values == 0).any())
    free = values != 0 if zero_fixed else np.ones(len(values), bool)
    entries = 2**bits - int(zero_fixed)
    points = values[free].astype(np.float64)
    if len(points) <= entries:
        centroids, labels = points, np.arange(len(points))
    else:
        init = np.linspace(points.min(), points.max(), entries).reshape(-1, 1)
        kmeans = KMeans(entries, init=init, n_init=1, random_state=seed)
        kmeans.fit(points.reshape(-1, 1), sample_weight=counts[free])
        centroids, labels = kmeans.cluster_centers_.ravel(), kmeans.labels_
    entry_of_value = np.zeros(len(values), np.int64)  # the fixed zero is entry 0
    entry_of_value[free] = labels + int(zero_fixed)
    if zero_fixed:
        centroids = np.concatenate([[0.0], centroids])
    index = entry_of_value[np.searchsorted(values, flat)]
    return SharedLayer(index, np.asarray(centroids, np.float64), zero_fixed, integer)
