"""The share-weights technique: k-means codebooks in float or in each layer's int8 quantization, centroids tuned."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from tinyml import compiler, plugins
from tinyml.errors import DataError, RecipeError
from tinyml.frontend import from_torch, nchw_to_graph
from tinyml.host import load_model
from tinyml.ir import Graph
from tinyml.recipe import load_recipe
from tinyml.reference import run_int8
from tinyml.technique import Context
from tinyml_plugins.quantize_int8 import QuantizeInt8
from tinyml_plugins.share_weights import WEIGHTED_OPS, ShareWeights, is_pruned


def small_net() -> nn.Module:
    """conv, depthwise conv and two linear layers under named modules (`features.*`, `head.*`)."""
    torch.manual_seed(0)
    features = OrderedDict(
        conv=nn.Conv2d(1, 8, 3, padding=1), relu=nn.ReLU(), dw=nn.Conv2d(8, 8, 3, padding=1, groups=8), relu2=nn.ReLU()
    )
    head = OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(8 * 6 * 6, 32), relu=nn.ReLU(), fc2=nn.Linear(32, 4))
    return nn.Sequential(OrderedDict(features=nn.Sequential(features), head=nn.Sequential(head))).eval()


def prune_smallest(model: nn.Module, sparsity: float) -> nn.Module:
    """Magnitude pruning by hand: the smallest `sparsity` of each weight set to exactly 0 (as `prune` leaves it)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                w = m.weight
                w[w.abs() <= w.abs().flatten().kthvalue(int(sparsity * w.numel())).values] = 0.0
    return model


def setup(model: nn.Module, n: int = 128) -> tuple[Graph, Context, np.ndarray]:
    """The model's int8 graph, a context with training data labelled by the float model, and the inputs (NCHW)."""
    x = np.random.default_rng(0).normal(size=(n, 1, 6, 6)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    graph = from_torch(model, torch.from_numpy(x[:1]))
    context = Context(calibration=nchw_to_graph(x), train_data=(x, labels))
    return QuantizeInt8().apply(graph, context), context, x


def weights(graph: Graph) -> dict[str, np.ndarray]:
    return {n.name: graph.tensors[n.inputs[1]] for n in graph.nodes if n.op in WEIGHTED_OPS}


def top1(q: Graph, x_nchw: np.ndarray) -> np.ndarray:
    t = q.tensors[q.inputs[0]]
    xq = np.clip(np.round(nchw_to_graph(x_nchw) / t.scale) + t.zero_point, -128, 127).astype(np.int8)
    return run_int8(q, xq)[q.outputs[0]].reshape(len(x_nchw), -1).argmax(1)


@pytest.mark.parametrize("epochs", [0, 1])
def test_every_weight_is_in_its_codebook_of_at_most_2_to_the_bits_values(epochs: int) -> None:
    q, context, _ = setup(small_net())
    bits = {"*": 3, "features": 4, "head.fc2": 1}
    shared = ShareWeights(bits=bits, epochs=epochs).apply(q, context)
    expected_bits = {"features.conv": 4, "features.dw": 4, "head.fc1": 3, "head.fc2": 1}
    for name, w in weights(shared).items():
        assert w.dtype == "int8" and w.codebook.dtype == np.int8
        assert len(w.codebook) <= 2 ** expected_bits[name], name
        assert np.array_equal(w.codebook, np.unique(w.data)), "the codebook is the sorted distinct values"
        assert w.encoding == "raw", "the storage is the huffman technique's choice"
    # Only weight values change: scales, biases and the integer attributes stay those of quantize-int8.
    before = weights(q)
    for name, w in weights(shared).items():
        np.testing.assert_array_equal(w.scale, before[name].scale)
        assert len(np.unique(before[name].data)) > 2 ** expected_bits[name], "sharing had something to do"
    for a, b in zip(q.nodes, shared.nodes, strict=True):
        assert a.attrs.keys() == b.attrs.keys()
        for key, value in a.attrs.items():
            np.testing.assert_array_equal(b.attrs[key], value)
        for name in a.inputs[2:]:
            np.testing.assert_array_equal(shared.tensors[name].data, q.tensors[name].data)


def test_a_layer_no_key_covers_is_left_as_it_was() -> None:
    q, context, _ = setup(small_net())
    shared = ShareWeights(bits={"head.fc1": 2}, epochs=0).apply(q, context)
    for name, w in weights(shared).items():
        if name == "head.fc1":
            assert len(w.codebook) <= 4
        else:
            assert w.codebook is None and w.encoding == "raw"
            np.testing.assert_array_equal(w.data, weights(q)[name].data)


def test_one_number_shares_every_layer() -> None:
    q, context, _ = setup(small_net())
    shared = ShareWeights(bits=2, epochs=0).apply(q, context)
    assert all(len(w.codebook) <= 4 for w in weights(shared).values())


@pytest.mark.parametrize("epochs", [0, 2])
def test_pruned_zeros_stay_zero_and_take_one_entry(epochs: int) -> None:
    q, context, _ = setup(prune_smallest(small_net(), 0.7))
    shared = ShareWeights(bits=2, epochs=epochs, lr=1.0).apply(q, context)
    for name, w in weights(shared).items():
        zeros = weights(q)[name].data == 0
        assert zeros.mean() >= 0.69
        assert np.all(w.data[zeros] == 0), name
        assert 0 in w.codebook and len(w.codebook) <= 4
        assert np.count_nonzero(w.data[~zeros] == 0) <= 0.05 * np.count_nonzero(~zeros), "nonzeros have 3 values"


def test_zero_is_a_fixed_entry_only_where_the_histogram_shows_pruning() -> None:
    rng = np.random.default_rng(0)
    smooth = np.clip(np.round(rng.normal(scale=40, size=5000)), -127, 127)
    pruned = np.where(np.abs(smooth) < 30, 0, smooth)
    assert not is_pruned(*np.unique(smooth, return_counts=True))
    assert is_pruned(*np.unique(pruned, return_counts=True))


def test_fine_tuning_moves_centroids_and_is_repeatable() -> None:
    q, context, x = setup(small_net(), n=256)
    before = ShareWeights(bits=2, epochs=0).apply(q, context)
    after = [ShareWeights(bits=2, epochs=2, lr=1.0, seed=3).apply(q, context) for _ in range(2)]
    changed = [name for name, w in weights(after[0]).items() if not np.array_equal(w.data, weights(before)[name].data)]
    assert changed, "fine-tuning left every centroid where k-means put it"
    for name, w in weights(after[0]).items():
        np.testing.assert_array_equal(w.data, weights(after[1])[name].data)
        # Assignments hold: weights that shared a centroid still share one.
        _, old = np.unique(weights(before)[name].data, return_inverse=True)
        for k in np.unique(old):
            assert len(np.unique(w.data.ravel()[old.ravel() == k])) == 1
    labels = context.train_data[1]
    assert np.mean(top1(after[0], x) == labels) >= np.mean(top1(before, x) == labels)


def test_generated_c_equals_the_reference_on_the_host(tmp_path) -> None:
    model = prune_smallest(small_net(), 0.5)
    x = np.random.default_rng(1).normal(size=(64, 1, 6, 6)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    techniques = ["quantize-int8", ("share-weights", {"bits": {"*": 3, "head.fc2": 2}, "epochs": 1})]
    build = compiler.compile(model, x, techniques, out_dir=tmp_path / "m", train_data=(x, labels), progress=False)
    assert all(w.codebook is not None for w in weights(build.graph).values())
    host = load_model(tmp_path / "m")
    xq = host.quantize(nchw_to_graph(x))
    np.testing.assert_array_equal(host(xq), run_int8(build.graph, xq)[build.graph.outputs[0]].reshape(len(x), -1))


def test_digits_keeps_int8_accuracy_within_one_point() -> None:
    """Held-out digits (450 samples): float 98.44%, int8 98.44%; 4 bits with 2 for the classifier, 98.22% after
    k-means alone and 98.44% after two epochs of centroid fine-tuning."""
    from tinyml.examples import get_example

    example = get_example("digits")
    graph = from_torch(example.model, example.example_input)
    context = Context(calibration=nchw_to_graph(example.calibration), train_data=(example.x_train, example.y_train))
    q = QuantizeInt8().apply(graph, context)
    bits = {"*": 4, "classifier": 2}
    int8 = np.mean(top1(q, example.x_test) == example.y_test)
    for epochs in (0, 2):
        shared = ShareWeights(bits=bits, epochs=epochs).apply(q, context)
        assert len(weights(shared)["classifier"].codebook) <= 4
        assert np.mean(top1(shared, example.x_test) == example.y_test) >= int8 - 0.01, f"epochs = {epochs}"


def test_the_technique_is_a_registered_plugin_that_reduces_flash() -> None:
    technique = plugins.techniques()["share-weights"]
    assert technique is ShareWeights and technique.reduces == ("flash",)


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [0, 9, {"*": 4, "classifier": 12}])
def test_bits_outside_1_to_8_are_named(bits) -> None:
    with pytest.raises(RecipeError, match=r"share-weights.*bits.*(greater|less) than or equal to") as caught:
        ShareWeights(bits=bits)
    assert "\n" not in str(caught.value)


def test_bits_outside_1_to_8_in_a_recipe_name_the_field() -> None:
    technique = {"name": "share-weights", "options": {"bits": {"*": 4, "classifier": 0}}}
    with pytest.raises(RecipeError, match=r"techniques\[1\]\.options\.bits\.classifier"):
        load_recipe(None, {"techniques": [{"name": "quantize-int8"}, technique]})


def test_a_key_naming_no_layer_is_one_paragraph_listing_the_layers() -> None:
    q, context, _ = setup(small_net())
    with pytest.raises(RecipeError, match=r"'classifer'.*no layer with weights.*features\.conv.*head\.fc2") as caught:
        ShareWeights(bits={"*": 4, "classifer": 2}).apply(q, context)
    assert "\n" not in str(caught.value)
    with pytest.raises(RecipeError, match="'features.relu'"):  # a layer, but none with weights
        ShareWeights(bits={"features.relu": 2}).apply(q, context)


@pytest.mark.parametrize("epochs", [0, 1])
def test_listed_before_quantize_int8_it_shares_float_weights_and_int8_keeps_one_codebook(epochs: int) -> None:
    model = prune_smallest(small_net(), 0.6)
    _, context, x = setup(model)
    float_graph = from_torch(model, torch.from_numpy(x[:1]))
    shared = ShareWeights(bits={"*": 3, "head.fc2": 2}, epochs=epochs, lr=0.01).apply(float_graph, context)
    q = QuantizeInt8().apply(shared, context)
    for name, w in weights(q).items():
        f = weights(float_graph)[name].data
        assert w.dtype == "int8" and len(np.unique(w.scale)) == 1, name  # one scale: one int8 codebook
        assert len(w.codebook) <= (4 if name == "head.fc2" else 8)
        assert set(np.unique(w.data)) <= set(w.codebook.tolist())
        assert np.all(w.data[f == 0] == 0), name  # pruned weights stay exactly zero
        assert 0 in w.codebook
    # The shared int8 model still mostly agrees with the float model it came from.
    assert np.mean(top1(q, x) == context.train_data[1]) >= 0.8


def test_the_papers_order_compiles_to_c_equal_to_the_reference(tmp_path) -> None:
    model = prune_smallest(small_net(), 0.5)
    x = np.random.default_rng(1).normal(size=(64, 1, 6, 6)).astype(np.float32)
    with torch.no_grad():
        labels = model(torch.from_numpy(x)).argmax(1).numpy()
    techniques = [("share-weights", {"bits": 3, "epochs": 1}), "quantize-int8", ("huffman", {"encoding": "huffman"})]
    build = compiler.compile(model, x, techniques, out_dir=tmp_path / "m", train_data=(x, labels), progress=False)
    encoded = [n.inputs[1] for n in build.graph.nodes if n.op in ("fc", "conv2d")]
    assert all(build.graph.tensors[w].encoding == "huffman" for w in encoded)
    assert all(len(build.graph.tensors[w].codebook) <= 8 for w in encoded)
    host = load_model(tmp_path / "m")
    xq = host.quantize(nchw_to_graph(x))
    np.testing.assert_array_equal(host(xq), run_int8(build.graph, xq)[build.graph.outputs[0]].reshape(len(x), -1))


def test_qat_after_float_sharing_is_refused_naming_both_fixes() -> None:
    _, context, x = setup(small_net())
    shared = ShareWeights(bits=3, epochs=0).apply(from_torch(small_net(), torch.from_numpy(x[:1])), context)
    with pytest.raises(RecipeError, match=r"qat_epochs = 1.*share-weights.*qat_epochs = 0.*after quantize-int8") as e:
        QuantizeInt8(qat_epochs=1).apply(shared, context)
    assert "\n" not in str(e.value)


def test_fine_tuning_without_training_data_names_the_field() -> None:
    q, context, _ = setup(small_net())
    with pytest.raises(DataError, match=r"'share-weights \(epochs = 2\)'.*\[data\] train"):
        ShareWeights(epochs=2).apply(q, Context(calibration=context.calibration))
    ShareWeights(epochs=0).apply(q, Context(calibration=context.calibration))  # k-means alone needs no labels
