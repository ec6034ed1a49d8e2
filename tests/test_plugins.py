"""Plugin discovery: entry points found like a pip-installed plugin, failures named, autoload off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pluggy
import pytest

from tinyml import hookspecs, plugins
from tinyml.hookspecs import hookimpl
from tinyml.ir import Graph, Node, Tensor
from tinyml.technique import Context, Technique

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_PLUGIN = REPO / "examples" / "third-party-plugin"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the example plugin installed by pip, and a plugin that fails on import."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(EXAMPLE_PLUGIN),
        ],
        check=True,
        capture_output=True,
    )
    dist_info = target / "broken_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text("[tinyml]\nbroken = broken_plugin\n")
    (target / "broken_plugin.py").write_text("raise RuntimeError('broken on purpose')\n")
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
    assert "tinyml_weight_clip" in found
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


@pytest.fixture
def fresh_manager(monkeypatch: pytest.MonkeyPatch):
    """`plugins.plugin_manager()` rebuilt under the test's environment, and rebuilt again afterwards."""
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    plugins.plugin_manager.cache_clear()
    yield
    plugins.plugin_manager.cache_clear()


def test_plugin_with_misspelt_hook_is_reported_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_manager: None
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


def test_missing_core_module_is_skipped_silently(monkeypatch: pytest.MonkeyPatch, fresh_manager: None) -> None:
    monkeypatch.setattr(plugins, "CORE_PLUGINS", ("tinyml.not_written_yet",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plugins.plugin_infos() == []


def test_core_module_with_broken_import_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_manager: None
) -> None:
    (tmp_path / "core_with_bad_import.py").write_text("import a_module_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins, "CORE_PLUGINS", ("core_with_bad_import",))
    with pytest.warns(plugins.TinymlPluginWarning, match="core_with_bad_import.*a_module_that_is_not_there"):
        plugins.plugin_manager()
