"""Plugin discovery: entry points found like a pip-installed plugin, failures named, autoload off."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pluggy
import pytest
import torch

from tinyml import hookspecs, plugins
from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph, Node, Tensor
from tinyml.technique import Context, Technique

FASTPOOL_PLUGIN = "tests/fixtures/fastpool-plugin"  # a plugin that brings C, relative to the source tree
FASTPOOL_FUNCTION = "fastpool_max2x2_s8"

FAULTY_PLUGIN = """
import torch
from tinyml.hookspecs import hookimpl
from tinyml.technique import Technique


class Explode(Technique):
    name = "explode"
    stage = "graph"

    def apply(self, graph, context):
        raise ValueError("the weights are on fire")


class Vanish(Technique):
    name = "vanish"
    stage = "graph"

    def apply(self, graph, context):
        graph.nodes.clear()  # works in place and forgets to return the graph


class Mistype(Technique):
    name = "mistype"
    stage = "train"

    def apply(self, model, context):
        return "a model"


@hookimpl
def tinyml_techniques():
    return [Explode, Vanish, Mistype]
"""


def _fake_distribution(target: Path, distribution: str, version: str, entry_point: str, module: str, code: str):
    """A module and the .dist-info that pip would have written for it, declaring one tinyml entry point."""
    dist_info = target / f"{distribution.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (dist_info / "entry_points.txt").write_text(f"[tinyml]\n{entry_point} = {module}\n")
    (dist_info / "RECORD").write_text(f"{module}.py,,\n")
    (target / f"{module}.py").write_text(code)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, source_tree: Path) -> Path:
    """A folder holding the example plugin and the C-carrying fastpool plugin installed by pip, a plugin
    that fails on import and one whose techniques misbehave."""
    target = tmp_path_factory.mktemp("site")
    for plugin in (source_tree / "examples" / "third-party-plugin", source_tree / FASTPOOL_PLUGIN):
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
             str(target), str(plugin)],
            check=True,
            capture_output=True,
        )  # fmt: skip
    _fake_distribution(
        target, "broken-plugin", "1.0", "broken", "broken_plugin", "raise RuntimeError('broken on purpose')\n"
    )
    _fake_distribution(target, "tinyml-faulty", "2.0", "faulty", "tinyml_faulty", FAULTY_PLUGIN)
    return target


def run_tinyml(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TINYML_")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), environ.get("PYTHONPATH")]))
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "tinyml.cli", *args], capture_output=True, text=True, env=environ, timeout=300
    )


def listed(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert result.returncode == 0, result.stderr
    return {info["name"]: info for info in json.loads(result.stdout)}


def test_installed_plugin_is_found_with_its_distribution(site: Path) -> None:
    result = run_tinyml(site, "plugins", "--json")
    found = listed(result)
    assert found["weight-clip"]["distribution"] == "tinyml-weight-clip"
    assert found["weight-clip"]["version"] == "0.1.0"
    assert found["weight-clip"]["hooks"] == ["tinyml_techniques"]
    assert found["quantize-int8"]["distribution"] == "tinyml"


def test_plugin_failing_on_import_is_named_and_others_still_load(site: Path) -> None:
    result = run_tinyml(site, "plugins", "--json")
    found = listed(result)
    assert "broken" not in found
    assert {"weight-clip", "quantize-int8"} <= found.keys()
    warning = result.stderr
    assert "broken = broken_plugin" in warning
    assert "broken-plugin 1.0" in warning
    assert "RuntimeError: broken on purpose" in warning
    assert "Traceback" not in warning


def test_disabled_autoload_loads_no_entry_points(site: Path) -> None:
    found = listed(run_tinyml(site, "plugins", "--json", TINYML_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert found, "the core plugins still load"
    assert all(info["name"] in plugins.CORE_PLUGINS for info in found.values())


def test_disabled_autoload_loads_modules_named_in_env(site: Path) -> None:
    result = run_tinyml(
        site, "plugins", "--json", TINYML_DISABLE_PLUGIN_AUTOLOAD="1", TINYML_PLUGINS="tinyml_weight_clip"
    )
    found = listed(result)
    assert found["tinyml_weight_clip"]["distribution"] == "tinyml-weight-clip"  # found from the module's package
    assert "quantize-int8" not in found
    assert "broken" not in result.stderr


def fc_graph(weights: np.ndarray) -> Graph:
    out_features, in_features = weights.shape
    tensors = {
        "x": Tensor("x", (1, in_features)),
        "w": Tensor("w", weights.shape, data=weights),
        "b": Tensor("b", (out_features,), data=np.zeros(out_features, np.float32)),
        "y": Tensor("y", (1, out_features)),
    }
    node = Node("fc", "fc", ["x", "w", "b"], ["y"], {"activation": "none"})
    return Graph(tensors, [node], ["x"], ["y"])


def test_example_technique_clips_outliers(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(site))
    from tinyml_weight_clip import ClipWeights

    rng = np.random.default_rng(0)
    weights = rng.normal(0.0, 0.1, size=(16, 64)).astype(np.float32)
    weights[3, 7] = 5.0
    graph = fc_graph(weights)
    clipped = ClipWeights(std_devs=2.0).apply(graph, Context())

    limit = weights.mean() + 2.0 * weights.std()
    result = clipped.tensors["w"].data
    assert result[3, 7] == pytest.approx(limit, rel=1e-6)
    inside = np.abs(weights - weights.mean()) <= 2.0 * weights.std()
    np.testing.assert_array_equal(result[inside], weights[inside])
    assert graph.tensors["w"].data[3, 7] == 5.0, "the input graph is left unchanged"


def test_plugin_with_misspelt_hook_is_reported_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugin_manager: None
) -> None:
    (tmp_path / "misspelt_plugin.py").write_text(
        "from tinyml.hookspecs import hookimpl\n\n@hookimpl\ndef tinyml_technique():\n    return []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.PLUGINS_ENV, "misspelt_plugin")
    with pytest.warns(plugins.TinymlPluginWarning, match=r"misspelt_plugin.*unknown hook\(s\) tinyml_technique"):
        infos = plugins.plugin_infos()
    assert "misspelt_plugin" not in {info.name for info in infos}


def manager_with(*plugin_objects: object) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for i, plugin in enumerate(plugin_objects):
        pm.register(plugin, name=f"plugin-{i}")
    return pm


def technique_plugin(technique_name: str) -> types.SimpleNamespace:
    cls = type("Made", (Technique,), {"name": technique_name, "stage": "graph"})
    return types.SimpleNamespace(tinyml_techniques=hookimpl(lambda: [cls]))


def test_techniques_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    pm = manager_with(technique_plugin("a"), technique_plugin("b"))
    monkeypatch.setattr(plugins, "plugin_manager", lambda: pm)
    assert sorted(plugins.techniques()) == ["a", "b"]


def test_duplicate_technique_names_both_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    pm = manager_with(technique_plugin("same"), technique_plugin("same"))
    monkeypatch.setattr(plugins, "plugin_manager", lambda: pm)
    with pytest.raises(plugins.PluginError, match="'same'.*'plugin-0'.*'plugin-1'"):
        plugins.techniques()


def test_non_technique_is_rejected_naming_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    pm = manager_with(types.SimpleNamespace(tinyml_techniques=hookimpl(lambda: [object])))
    monkeypatch.setattr(plugins, "plugin_manager", lambda: pm)
    with pytest.raises(plugins.PluginError, match="'plugin-0'"):
        plugins.techniques()


def test_boards_by_name_and_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    board = types.SimpleNamespace(name="stm32f405", aliases=("stm32",))
    other = types.SimpleNamespace(name="m3", aliases=())
    pm = manager_with(types.SimpleNamespace(tinyml_boards=hookimpl(lambda: [board, other])))
    monkeypatch.setattr(plugins, "plugin_manager", lambda: pm)
    assert plugins.boards() == {"stm32f405": board, "stm32": board, "m3": other}


def test_missing_core_module_is_skipped_silently(monkeypatch: pytest.MonkeyPatch, fresh_plugin_manager: None) -> None:
    monkeypatch.setattr(plugins, "CORE_PLUGINS", ("tinyml.not_written_yet",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plugins.plugin_infos() == []


def test_core_module_with_broken_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugin_manager: None
) -> None:
    (tmp_path / "core_with_bad_import.py").write_text("import a_module_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "CORE_PLUGINS", ("core_with_bad_import",))
    with pytest.warns(plugins.TinymlPluginWarning, match="core_with_bad_import.*a_module_that_is_not_there"):
        plugins.plugin_manager()


# --- a plugin that brings C: the host kernel build, a model on the host, a board project ---------------


@pytest.fixture
def fastpool(monkeypatch: pytest.MonkeyPatch, fresh_plugin_manager: None, source_tree: Path) -> Path:
    """The fastpool plugin loaded (named in TINYML_PLUGINS, from its source folder) beside the installed ones;
    its C folder."""
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    monkeypatch.syspath_prepend(str(source_tree / FASTPOOL_PLUGIN))
    monkeypatch.setenv(plugins.PLUGINS_ENV, "tinyml_fastpool")
    (c_dir,) = [d for d in plugins.kernel_source_dirs() if d.parent.name == "tinyml_fastpool"]
    return c_dir


def test_host_kernel_build_compiles_plugin_c(fastpool: Path) -> None:
    from tinyml import host
    from tinyml.reference.pool import maxpool_s8

    assert fastpool / "src" / "fastpool.c" in host.kernel_sources()
    library = host.build_kernels()
    ffi, lib = library.ffi, library.lib
    assert hasattr(lib, "tml_conv2d_s8"), "the core library is still there"
    x = np.random.default_rng(3).integers(-128, 128, size=(7, 6, 5), dtype=np.int8)
    out = np.zeros((3, 3, 5), np.int8)
    status = getattr(lib, FASTPOOL_FUNCTION)(
        ffi.from_buffer("int8_t[]", x), 7, 6, 5, -20, 90, ffi.from_buffer("int8_t[]", out)
    )
    assert status == 0
    expected = maxpool_s8(x, kernel=(2, 2), stride=(2, 2), padding=(0, 0), act_min=-20, act_max=90)
    np.testing.assert_array_equal(out, expected)


def pooled_cnn() -> torch.nn.Module:
    from torch import nn

    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(3), nn.Flatten(), nn.Linear(8, 5),
    ).eval()  # fmt: skip


@pytest.fixture
def fastpool_build(fastpool: Path, tmp_path: Path):
    from tinyml.compiler import compile as compile_model

    x = np.random.default_rng(0).normal(size=(40, 1, 8, 8)).astype(np.float32)
    return compile_model(pooled_cnn(), x, out_dir=tmp_path / "model", progress=False), x


def test_model_with_a_plugin_kernel_runs_on_the_host_equal_to_the_reference(fastpool_build) -> None:
    from tinyml.frontend import nchw_to_graph
    from tinyml.host import load_model
    from tinyml.reference import run_int8

    build, x = fastpool_build
    kernels = {node.op + str(tuple(node.attrs["kernel"])): build.generated.kernels[node.name].function
               for node in build.graph.nodes if node.op == "maxpool"}  # fmt: skip
    assert kernels == {"maxpool(2, 2)": FASTPOOL_FUNCTION, "maxpool(3, 3)": "tml_maxpool_s8"}
    model_c = (build.out_dir / "model.c").read_text()
    assert '#include "fastpool.h"' in model_c
    assert model_c.count(f"{FASTPOOL_FUNCTION}(") == 1
    model = load_model(build.out_dir)
    xq = model.quantize(nchw_to_graph(x))
    expected = run_int8(build.graph, xq)[build.graph.outputs[0]].reshape(len(x), -1)
    np.testing.assert_array_equal(model(xq), expected)


def test_board_project_gets_the_plugin_c(fastpool_build, fastpool: Path, tmp_path: Path, pio_core_dir: Path) -> None:
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import write_project

    build, _ = fastpool_build
    project = tmp_path / "project"
    write_project(project, build.out_dir, resolve_board("stm32"), np.zeros((1, 64), np.int8))
    copied = {p.relative_to(project / "lib").parts[1:]: p for p in (project / "lib").glob("*/*/*")}
    assert ("include", "tml_nn.h") in copied
    assert copied[("src", "fastpool.c")].read_bytes() == (fastpool / "src" / "fastpool.c").read_bytes()
    assert copied[("include", "fastpool.h")].read_bytes() == (fastpool / "include" / "fastpool.h").read_bytes()


@pytest.mark.qemu
def test_firmware_with_a_plugin_kernel_runs_in_qemu_like_the_host(
    fastpool_build, tmp_path: Path, pio_core_dir: Path
) -> None:
    from tinyml.board.boards import resolve_board
    from tinyml.board.project import build_firmware
    from tinyml.board.qemu import run_firmware
    from tinyml.host import load_model

    build, _ = fastpool_build
    inputs = np.random.default_rng(5).integers(-128, 128, size=(3, 64), dtype=np.int8)
    firmware = build_firmware(build.out_dir, resolve_board("stm32"), tmp_path / "fw", inputs)
    result = run_firmware(firmware.out_dir, timeout=60)
    np.testing.assert_array_equal(result.outputs, load_model(build.out_dir)(inputs))


# --- a misbehaving plugin is named, with its distribution, in one paragraph ---------------------------------

MODEL_FILE = """
from torch import nn


def make_model():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
"""


@pytest.fixture
def user_project(tmp_path: Path) -> Path:
    """A user's folder with a model factory and calibration data."""
    (tmp_path / "net.py").write_text(MODEL_FILE)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(16, 1, 6, 6)).astype(np.float32))
    return tmp_path


def recipe_with(folder: Path, *techniques: str) -> Path:
    entries = "".join(f'\n[[techniques]]\nname = "{name}"\n' for name in techniques)
    path = folder / "tinyml.toml"
    path.write_text(f'[model]\nfactory = "net.py:make_model"\n\n[data]\ncalibration = "calib.npz"\n{entries}')
    return path


def test_technique_that_raises_is_named_with_its_distribution(site: Path, user_project: Path) -> None:
    recipe = recipe_with(user_project, "explode", "quantize-int8")
    result = run_tinyml(site, "compile", "--recipe", str(recipe), "--out", str(user_project / "out"))
    assert result.returncode == 1, result.stdout + result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert result.stderr.rstrip().endswith(error) and "Traceback" not in result.stderr
    assert "technique 'explode' (plugin 'faulty' from distribution tinyml-faulty 2.0) failed" in error
    assert "ValueError: the weights are on fire" in error
    assert not (user_project / "out").exists()
    debug = run_tinyml(site, "--debug", "compile", "--recipe", str(recipe), "--out", str(user_project / "out"))
    assert "Traceback" in debug.stderr and "the weights are on fire" in debug.stderr


@pytest.mark.parametrize(
    ("technique", "expected"),
    [
        ("vanish", "technique 'vanish' (plugin 'tinyml_faulty' from distribution tinyml-faulty 2.0) returned NoneType"),
        ("mistype", "technique 'mistype' (plugin 'tinyml_faulty' from distribution tinyml-faulty 2.0) returned str"),
    ],
)
def test_technique_returning_the_wrong_thing_is_named(
    site: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugin_manager: None, technique: str, expected: str
) -> None:
    from tinyml.compiler import compile as compile_model
    from tinyml.errors import PluginError

    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(plugins.PLUGINS_ENV, "tinyml_faulty")
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with pytest.raises(PluginError, match=re.escape(expected)):
        compile_model(model, np.ones((2, 4), np.float32), techniques=[technique], progress=False)


BAD_HOOKS = """
from tinyml.hookspecs import hookimpl


@hookimpl
def tinyml_select_kernel(node, graph, board):
    if node.op == "fc":
        return {select!r}
    if node.op == "conv2d" and {raise_on_conv}:
        raise KeyError("stride")
    return None


@hookimpl
def tinyml_encode_weights(tensor, board):
    return {encode!r} if tensor.dtype == "int32" else None
"""


@pytest.mark.parametrize(
    ("hooks", "expected"),
    [
        (
            {"select": "tml_fc_s8", "encode": None, "raise_on_conv": False},
            r"plugin 'bad_hooks' \(not from an installed distribution\) answered tinyml_select_kernel for node "
            r"`\S+` \(fc\) with 'tml_fc_s8' \(a str\); the hook must return a tinyml\.kernels\.Kernel or None",
        ),
        (
            {"select": None, "encode": "raw", "raise_on_conv": False},
            r"plugin 'bad_hooks' .* answered tinyml_encode_weights for tensor `\S+` with 'raw' \(a str\); "
            r"the hook must return a tinyml\.weights\.EncodedTensor or None",
        ),
        (
            {"select": None, "encode": None, "raise_on_conv": True},
            r"plugin 'bad_hooks' .* failed in tinyml_select_kernel for node `\S+` \(conv2d\): KeyError: 'stride'",
        ),
    ],
)
def test_kernel_and_weight_hooks_answering_wrongly_are_named(
    user_project: Path, monkeypatch: pytest.MonkeyPatch, fresh_plugin_manager: None, hooks: dict, expected: str
) -> None:
    from click.testing import CliRunner

    from tinyml.cli import main

    (user_project / "bad_hooks.py").write_text(BAD_HOOKS.format(**hooks))
    monkeypatch.delitem(sys.modules, "bad_hooks", raising=False)  # each case imports its own version
    monkeypatch.syspath_prepend(str(user_project))
    monkeypatch.delenv(plugins.DISABLE_AUTOLOAD_ENV)
    monkeypatch.setenv(plugins.PLUGINS_ENV, "bad_hooks")
    monkeypatch.chdir(user_project)
    plugins.plugin_manager.cache_clear()  # importing tinyml.cli may have built it before the environment changed
    result = CliRunner().invoke(main, ["compile", "--out", "out"])
    assert result.exit_code == 1, result.output
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert result.stderr.rstrip().endswith(error) and "Traceback" not in result.output
    assert re.search(expected, error), error
    assert not (user_project / "out").exists()


def _command_plugin(name: str) -> types.SimpleNamespace:
    def register(cli):
        @cli.command(name)
        def hello() -> None:
            """Say hello."""
            print("hello from a plugin")

    return types.SimpleNamespace(tinyml_register_commands=hookimpl(register))


def _fresh_group():
    import click

    @click.group()
    def group() -> None:
        pass

    @group.command("compile")
    def compile_() -> None:
        pass

    return group


def test_plugin_command_is_added_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    pm = manager_with(_command_plugin("hello"))
    monkeypatch.setattr(plugins, "plugin_manager", lambda: pm)
    group = _fresh_group()
    plugins.register_commands(group)
    result = CliRunner().invoke(group, ["hello"])
    assert result.exit_code == 0 and "hello from a plugin" in result.output


def test_plugin_command_taking_a_builtin_name_is_left_out_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    pm = manager_with(_command_plugin("compile"))
    monkeypatch.setattr(plugins, "plugin_manager", lambda: pm)
    group = _fresh_group()
    builtin = group.commands["compile"]
    with pytest.warns(plugins.TinymlPluginWarning, match="'plugin-0'.*compile.*already exist"):
        plugins.register_commands(group)
    assert group.commands["compile"] is builtin


def test_plugin_failing_to_add_commands_is_named_and_leaves_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    def register(cli):
        cli.add_command(cli.commands["compile"], "half-added")
        raise RuntimeError("no commands today")

    pm = manager_with(types.SimpleNamespace(tinyml_register_commands=hookimpl(register)))
    monkeypatch.setattr(plugins, "plugin_manager", lambda: pm)
    group = _fresh_group()
    with pytest.warns(plugins.TinymlPluginWarning, match="'plugin-0'.*RuntimeError: no commands today"):
        plugins.register_commands(group)
    assert sorted(group.commands) == ["compile"]
