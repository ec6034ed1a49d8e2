"""The prune technique: the gradual schedule, the sparsity it reaches, zeros that stay zero in int8, accuracy,
determinism and its bad-input errors."""

from __future__ import annotations

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
