"""Fixtures shared by the test modules, and the skip rule for tests that need the ARM toolchain.

A test marked `qemu` (it builds firmware with arm-none-eabi-gcc or runs it in qemu-system-arm)
is skipped, with the reason, on a machine without those tools; `make setup` installs them.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tinyml.compiler import Build
    from tinyml.host import HostLibrary

SOURCE_TREE = Path(__file__).resolve().parent.parent
ARM_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("qemu") is not None:
        missing = [tool for tool in ARM_TOOLS if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"needs {' and '.join(missing)} on PATH (`make toolchain` installs them)")


@pytest.fixture(scope="session")
def source_tree() -> Path:
    """The checkout the tests run from."""
    return SOURCE_TREE


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A hand-written generated model (model.h/.c/_data.c, 16 int8 in, 4 out) needing only the kernel library."""
    return SOURCE_TREE / "tests" / "fixtures" / "tiny_model"


@pytest.fixture(scope="session")
def lib() -> HostLibrary:
    """The kernel library (core and plugin C) compiled for this machine, callable through cffi."""
    from tinyml import host

    return host.build_kernels()


@pytest.fixture
def pio_core_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PlatformIO core dir of the test's own (through TINYML_PLATFORMIO_CORE_DIR), not the user's."""
    monkeypatch.setenv("TINYML_PLATFORMIO_CORE_DIR", str(tmp_path / "pio-core"))
    return tmp_path / "pio-core"


@pytest.fixture(scope="session")
def digits_build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """The bundled digits example compiled once per session (`tinyml compile --example digits`).

    Tests read it and never write into its folder (`digits_build.out_dir`).
    """
    from tinyml.compiler import compile_from_recipe
    from tinyml.recipe import load_recipe

    out = tmp_path_factory.mktemp("digits") / "model"
    return compile_from_recipe(load_recipe(None, {"model": {"example": "digits"}}), out, progress=False)


@pytest.fixture
def fresh_plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`plugins.plugin_manager()` rebuilt under the test's environment (no entry points autoloaded), and
    rebuilt again afterwards; set TINYML_PLUGINS with `monkeypatch` to load modules."""
    from tinyml import plugins

    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    plugins.plugin_manager.cache_clear()
    yield
    plugins.plugin_manager.cache_clear()


@pytest.fixture(scope="session")
def load_bench_script() -> Callable[[str], ModuleType]:
    """A loader of bench/<name>.py as the module `<name>_bench` (bench/ holds scripts, not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(f"{name}_bench", SOURCE_TREE / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    return load
