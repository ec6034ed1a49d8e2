"""The prune technique: the gradual schedule, the sparsity it reaches, zeros that stay zero in int8, accuracy,
determinism and its bad-input errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import tinyml
from tinyml.cli import main
from tinyml.errors import DataError, RecipeError
from tinyml.technique import Context
from tinyml_plugins.prune import Prune, polynomial_schedule, prunable_modules, sparsity

KINDS = ["conv", "depthwise", "linear"]
CHEAP = {"steps": 2, "epochs_per_step": 1}


def small_cnn() -> nn.Module:
    """conv, depthwise conv, linear: every kind of prunable layer, on 6x6x1 inputs."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
        nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4),
    ).eval()  # fmt: skip


def small_data(n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
    return x, (x[:, 0, :3].sum(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 0, 3:].sum(axis=(1, 2)) > 0)


def prune(model: nn.Module, **options) -> nn.Module:
    return Prune({**CHEAP, **options}).apply(model, Context(train_data=small_data()))


def zeros(module: nn.Module) -> int:
    return int((module.weight.detach() == 0).sum())


def test_schedule_is_zhu_and_guptas_polynomial() -> None:
    assert polynomial_schedule(0.0, 0.8, 4) == pytest.approx(
        [0.8 * (1 - 0.75**3), 0.8 * (1 - 0.5**3), 0.8 * (1 - 0.25**3), 0.8]
    )
    assert polynomial_schedule(0.2, 0.9, 2) == pytest.approx([0.9 - 0.7 * 0.125, 0.9])
    assert polynomial_schedule(0.0, 0.5, 1) == [0.5]
    steps = polynomial_schedule(0.0, 0.9, 10)
    assert all(a < b for a, b in zip(steps, steps[1:], strict=False))
    # Most of the pruning happens early, when the network is still redundant.
    assert steps[4] > 0.8 * 0.9  # half the steps, 7/8 of the sparsity


def test_global_sparsity_is_reached_over_all_layers_with_overrides_exact() -> None:
    model = prune(small_cnn(), sparsity=0.7, layers={"6": 0.5})
    layers = prunable_modules(model, KINDS)
    assert list(layers) == ["0", "2", "6"]
    assert zeros(layers["6"]) == round(0.5 * layers["6"].weight.numel())
    shared = [layers["0"], layers["2"]]
    assert sum(map(zeros, shared)) == round(0.7 * sum(m.weight.numel() for m in shared))
    assert zeros(layers["0"]) != round(0.7 * layers["0"].weight.numel())  # one threshold, not one per layer


def test_layer_scope_prunes_each_layer_to_its_target() -> None:
    model = prune(small_cnn(), sparsity=0.6, scope="layer", types=["conv", "linear"])
    layers = prunable_modules(model, KINDS)
    assert zeros(layers["0"]) == round(0.6 * 72)
    assert zeros(layers["2"]) == 0  # depthwise left out by `types`
    assert zeros(layers["6"]) == round(0.6 * layers["6"].weight.numel())
    assert sparsity(layers["6"]) == pytest.approx(0.6, abs=1 / layers["6"].weight.numel())


def test_returns_plain_modules_and_leaves_the_input_alone() -> None:
    original = small_cnn()
    before = {k: v.clone() for k, v in original.state_dict().items()}
    model = prune(original, sparsity=0.5)
    assert not model.training
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())


def test_same_seed_same_model_other_seed_other_model() -> None:
    a, b, c = (prune(small_cnn(), sparsity=0.6, seed=seed).state_dict() for seed in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.fixture(scope="module")
def pruned_digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[tinyml.compiler.Build, dict]:
    """The digits example pruned to 85% and quantized to int8, compiled with its held-out data."""
    from tinyml.examples import get_example

    example = get_example("digits")
    out = tmp_path_factory.mktemp("pruned") / "digits"
    build = tinyml.compile(
        example.model,
        example.calibration,
        [("prune", {"sparsity": 0.85, "steps": 2, "epochs_per_step": 2}), "quantize-int8"],
        out_dir=out,
        validation=(example.x_test, example.y_test),
        train_data=(example.x_train, example.y_train),
        progress=False,
    )
    from tinyml.examples.digits import accuracy

    return build, {"float": accuracy(example.model, example.x_test, example.y_test)}


@pytest.mark.slow
def test_pruned_weights_are_exactly_zero_in_int8(pruned_digits) -> None:
    build, _ = pruned_digits
    total = pruned = 0
    for node in build.graph.nodes:
        if node.op not in ("conv2d", "dwconv2d", "fc"):
            continue
        name = node.inputs[1]
        float_w, int8_w = build.float_graph.tensors[name].data, build.graph.tensors[name].data
        assert build.graph.tensors[name].dtype == "int8"
        np.testing.assert_array_equal(int8_w == 0, float_w == 0, err_msg=node.name)
        total += float_w.size
        pruned += int((float_w == 0).sum())
    assert pruned == round(0.85 * total)


@pytest.mark.slow
def test_digits_pruned_to_85_percent_keeps_its_accuracy(pruned_digits) -> None:
    """Measured: float 98.44%, pruned float 98.22%, int8 (C on host) 98.22%."""
    from tinyml.validation import validate

    build, accuracy = pruned_digits
    report = validate(build.out_dir)
    assert report["c_matches_reference"]
    # `float_accuracy` in the build is the pruned float model's.
    assert report["float_accuracy"] >= accuracy["float"] - 0.02
    assert report["int8_accuracy"] >= accuracy["float"] - 0.02


def cli(tmp_path: Path, options: str, *args: str) -> tuple[int, str]:
    recipe = tmp_path / "tinyml.toml"
    recipe.write_text(
        f'[[techniques]]\nname = "prune"\noptions = {{ {options} }}\n[[techniques]]\nname = "quantize-int8"\n'
    )
    result = CliRunner().invoke(main, ["compile", "--recipe", str(recipe), *args])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("value", ["1.0", "-0.1", "1.5"])
def test_sparsity_outside_zero_to_one_is_named(tmp_path: Path, value: str) -> None:
    code, err = cli(tmp_path, f"sparsity = {value}")
    assert code == 1
    assert err.startswith(f"Error: {tmp_path / 'tinyml.toml'}: techniques[0].options.sparsity: Input should be")
    assert err.count("\n") == 1


def test_override_naming_no_layer_lists_the_layers(tmp_path: Path) -> None:
    code, err = cli(tmp_path, 'layers = { "classifer" = 0.5 }, steps = 1, epochs_per_step = 0')
    assert code == 1
    assert "'classifer' names no prunable module" in err
    assert "features.conv1, features.conv2, features.conv3, classifier" in err
    assert err.count("\n") == 1
    with pytest.raises(RecipeError, match="layers.* 'features.conv9' names no prunable module"):
        prune(small_cnn(), layers={"features.conv9": 0.5})


def test_override_of_a_parent_covers_the_modules_under_it() -> None:
    model = nn.Sequential(small_cnn(), nn.Linear(4, 4))
    model = Prune(CHEAP, sparsity=0.3, scope="layer", layers={"0": 0.5, "0.6": 0.25}).apply(
        model, Context(train_data=small_data())
    )
    layers = prunable_modules(model, KINDS)
    assert [sparsity(layers[p]) for p in ("0.0", "0.6", "1")] == pytest.approx([0.5, 0.25, 0.3], abs=1 / 16)


def test_pruning_without_training_data_names_the_field(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Flatten(), nn.Linear(36, 3))\n"
    )
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(8, 1, 6, 6)).astype(np.float32))
    code, err = cli(
        tmp_path, "sparsity = 0.5", "--model", f"{tmp_path / 'net.py'}:make", "--calib", str(tmp_path / "calib.npz")
    )
    assert code == 1
    assert err.startswith("Error: Technique 'prune' fine-tunes the model and needs labelled training data")
    assert "--train FILE" in err and err.count("\n") == 1
    with pytest.raises(DataError, match="'prune' fine-tunes"):
        Prune().apply(small_cnn(), Context())


def test_a_model_with_nothing_to_prune_is_named() -> None:
    x, y = small_data()
    with pytest.raises(RecipeError, match="'prune' finds nothing to prune: the model has no Conv2d or depthwise"):
        tinyml.compile(nn.Sequential(nn.MaxPool2d(2), nn.Flatten()), x, ["prune"], train_data=(x, y), progress=False)
    with pytest.raises(RecipeError, match="no Linear layer"):
        Prune(types=["linear"]).apply(nn.Sequential(nn.Conv2d(1, 2, 3)), Context(train_data=(x, y)))


def test_cli_compiles_a_pruned_example(tmp_path: Path) -> None:
    code, err = cli(
        tmp_path, "sparsity = 0.5, steps = 1, epochs_per_step = 0", "--out", str(tmp_path / "out"), "--json"
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert "prune" in json.dumps(manifest)


# Structured pruning (mode = "filters").


class ResidualDepthwise(nn.Module):
    """stem -> [expand 1x1 -> bn -> relu -> depthwise -> bn -> relu -> project 1x1 -> bn] + skip -> head -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.expand, self.bn1 = nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16)
        self.dw, self.bn2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16)
        self.project, self.bn3 = nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 12, 3, padding=1, stride=2)
        self.fc = nn.Linear(12 * 3 * 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn2(self.dw(nn.functional.relu(self.bn1(self.expand(x))))))
        x = nn.functional.relu(x + self.bn3(self.project(y)))
        return self.fc(torch.flatten(torch.relu(self.head(x)), 1))


def residual_depthwise() -> nn.Module:
    torch.manual_seed(0)
    model = ResidualDepthwise()
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_channel_groups_cross_depthwise_flatten_and_both_sides_of_a_residual_add() -> None:
    from tinyml_plugins.prune_filters import channel_groups

    groups = channel_groups(residual_depthwise(), torch.zeros(1, 1, 6, 6), ["stem", "expand", "project", "head"])
    assert list(groups) == ["stem", "expand", "head"]
    residual = groups["stem"]  # stem and project feed the add: their channels go together
    assert (residual.producers, residual.members, residual.convs) == (
        ["stem", "project"],
        ["bn0", "bn3"],
        ["expand", "head"],
    )
    assert (groups["expand"].members, groups["expand"].convs) == (["bn1", "dw", "bn2"], ["project"])
    assert groups["head"].linears == [("fc", 9)] and not groups["head"].convs
    # A producer left out (by `types`) keeps the whole group: its channels cannot go on one side only.
    assert list(channel_groups(residual_depthwise(), torch.zeros(1, 1, 6, 6), ["stem", "head"])) == ["head"]


def test_channels_reaching_a_concatenation_or_the_output_are_left_alone() -> None:
    from tinyml_plugins.prune_filters import channel_groups

    class Concat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 4, 3), nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(torch.cat([self.a(x), self.b(x)], 1))

    assert channel_groups(Concat(), torch.zeros(1, 1, 6, 6), ["a", "b", "c"]) == {}


def zeroed_at_readers(model: nn.Module, readers: dict[str, tuple[torch.Tensor, int]]) -> nn.Module:
    """`model` with the removed channels set to 0 where they are read (conv inputs, linear column blocks)."""

    def hook(removed: torch.Tensor, spatial: int):
        def zero(module: nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
            x = args[0].clone()
            if x.dim() == 4:
                x[:, removed] = 0.0
            else:
                x.view(len(x), -1, spatial)[:, removed] = 0.0
            return (x,)

        return zero

    for name, (removed, spatial) in readers.items():
        model.get_submodule(name).register_forward_pre_hook(hook(removed, spatial))
    return model


def test_removing_filters_computes_what_zeroing_those_channels_computes() -> None:
    from tinyml_plugins.prune_filters import choose_channels, filter_norms

    original = residual_depthwise()
    x = torch.from_numpy(small_data()[0])
    pruned = Prune(mode="filters", sparsity=0.5, steps=1, epochs_per_step=0).apply(
        original, Context(train_data=small_data(), example_input=x[:1])
    )
    assert (pruned.expand.out_channels, pruned.dw.in_channels, pruned.dw.groups, pruned.bn2.num_features) == (8,) * 4
    assert (pruned.project.in_channels, pruned.head.out_channels, pruned.fc.in_features) == (8, 6, 6 * 9)
    assert (pruned.stem.out_channels, pruned.bn0.num_features, pruned.project.out_channels) == (4, 4, 4)
    assert (pruned.bn3.num_features, pruned.expand.in_channels, pruned.head.in_channels) == (4, 4, 4)
    chosen = {"residual": (["stem", "project"], 4), "expand": (["expand"], 8), "head": (["head"], 6)}
    removed = {name: ~choose_channels(filter_norms(original, p, "l1"), n, None) for name, (p, n) in chosen.items()}
    readers = {"expand": (removed["residual"], 1), "head": (removed["residual"], 1)}
    readers |= {"project": (removed["expand"], 1), "fc": (removed["head"], 9)}
    reference = zeroed_at_readers(residual_depthwise(), readers)
    with torch.no_grad():
        expected, got = reference(x), pruned(x)
        assert not torch.allclose(expected, original(x), atol=1e-3)  # the removed channels mattered
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_removing_every_channel_of_a_layer_is_named() -> None:
    x, y = small_data()
    with pytest.raises(RecipeError, match="would remove every one of the 16 output channels of 'expand' .* 0.99"):
        tinyml.compile(
            residual_depthwise(), x, [("prune", {"mode": "filters", "layers": {"expand": 0.99}})], train_data=(x, y)
        )
    # Convs joined by an add are named together.
    with pytest.raises(RecipeError, match="of the 8 output channels of 'stem' and 'project'"):
        Prune(mode="filters", layers={"stem": 0.95, "project": 0.95}).apply(
            residual_depthwise(), Context(train_data=(x, y))
        )


def test_filter_pruning_is_deterministic_for_a_seed() -> None:
    a, b = (Prune(mode="filters", sparsity=0.5, **CHEAP).apply(residual_depthwise(), Context(train_data=small_data()))
            for _ in range(2))  # fmt: skip
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_filters_with_no_removable_conv_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(RecipeError, match=r"finds no conv or linear layer whose outputs can be removed .*\(0\)"):
        Prune(mode="filters", **CHEAP).apply(model, Context(train_data=small_data()))


def test_linear_outputs_are_removed_with_the_columns_that_read_them() -> None:
    """An MLP: hidden neurons go, through BatchNorm1d and ReLU; the output layer keeps its outputs."""
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Flatten(), nn.Linear(36, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 4)
    ).eval()  # fmt: skip
    x = torch.from_numpy(small_data()[0])
    pruned = Prune(mode="filters", sparsity=0.5, steps=1, epochs_per_step=0).apply(
        mlp, Context(train_data=small_data())
    )
    assert [(m.in_features, m.out_features) for m in pruned if isinstance(m, nn.Linear)] == [(36, 10), (10, 5), (5, 4)]
    assert pruned[2].num_features == 10
    from tinyml_plugins.prune_filters import choose_channels, filter_norms

    removed = {i: ~choose_channels(filter_norms(mlp, [str(i)], "l1"), n, None) for i, n in ((1, 10), (4, 5))}
    reference = zeroed_at_readers(copy.deepcopy(mlp), {"4": (removed[1], 1), "6": (removed[4], 1)})
    with torch.no_grad():
        assert not torch.allclose(reference(x), mlp(x), atol=1e-3)  # the removed neurons mattered
        torch.testing.assert_close(pruned(x), reference(x), atol=1e-5, rtol=1e-5)


def test_a_model_fx_cannot_trace_is_named_for_filter_pruning() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(64, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv(x)
            if x.sum() > 0:  # control flow on a tensor's value
                x = -x
            return self.fc(x.flatten(1))

    with pytest.raises(RecipeError, match="traces the model with torch.fx .* tracing failed: TraceError"):
        Prune(mode="filters", **CHEAP).apply(Branchy(), Context(train_data=small_data()))


def macs(graph: tinyml.ir.Graph) -> int:
    """Multiply-accumulates of the convolutions and fully connected layers of an IR graph (NHWC shapes)."""
    total = 0
    for node in graph.nodes:
        out = graph.tensors[node.outputs[0]].shape
        weight = graph.tensors[node.inputs[1]].shape if len(node.inputs) > 1 else None
        if node.op == "conv2d":  # OHWI
            total += int(np.prod(out[1:])) * int(np.prod(weight[1:]))
        elif node.op == "dwconv2d":  # [1, KH, KW, C]
            total += int(np.prod(out[1:])) * weight[1] * weight[2]
        elif node.op == "fc":
            total += weight[0] * weight[1]
    return total


@pytest.mark.slow
def test_digits_with_half_the_filters_removed_is_smaller_and_cheaper(digits_build, tmp_path: Path) -> None:
    """Measured: float 98.44%; half the filters removed: float 96.67%, int8 (C on host) 96.67%; MACs 121088 ->
    32896, weights 15608 -> 4368 bytes."""
    from tinyml.examples import get_example
    from tinyml.examples.digits import accuracy
    from tinyml.validation import validate

    example = get_example("digits")
    build = tinyml.compile(
        example.model,
        example.calibration,
        [("prune", {"mode": "filters", "sparsity": 0.5, "steps": 2, "epochs_per_step": 2}), "quantize-int8"],
        out_dir=tmp_path / "out",
        validation=(example.x_test, example.y_test),
        train_data=(example.x_train, example.y_train),
        progress=False,
    )
    assert macs(build.graph) <= 0.6 * macs(digits_build.graph)
    assert build.generated.weight_bytes <= 0.6 * digits_build.generated.weight_bytes
    assert sum(map(len, build.generated.files.values())) < sum(map(len, digits_build.generated.files.values()))
    report = validate(build.out_dir)
    assert report["c_matches_reference"]
    assert report["int8_accuracy"] >= accuracy(example.model, example.x_test, example.y_test) - 0.04


def test_fit_check_advises_prune_when_weights_do_not_fit() -> None:
    from tinyml.board import fit
    from tinyml.board.boards import resolve_board
    from tinyml.errors import FitError

    board = resolve_board("stm32")
    with pytest.raises(FitError, match="installed techniques that make weights smaller: [^;]*'prune'"):
        fit.check_fit(board, 1000, {"fc": board.flash_bytes})


@pytest.mark.parametrize("mode", ["unstructured", "filters"])
def test_progress_is_reported_to_the_end(mode: str) -> None:
    from contextlib import contextmanager

    seen: list[tuple[str, int]] = []
    done = []

    @contextmanager
    def progress(description: str, total: int):
        seen.append((description, total))
        yield done.append

    x, y = small_data(70)  # two batches of 64 per epoch
    context = Context(train_data=(x, y), progress=progress)
    Prune(mode=mode, sparsity=0.5, steps=3, epochs_per_step=2).apply(residual_depthwise(), context)
    assert len(seen) == 1 and seen[0][1] == 3 * 2 * 2 == sum(done)
    assert "50%" in seen[0][0]
