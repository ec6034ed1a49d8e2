"""tinyml as a user gets it: a wheel installed into a fresh virtualenv outside the source tree.

The wheel is built from a copy of the source tree, installed with its dependencies into a new
virtualenv (torch pinned first, so pip takes the CPU wheel on the machine rather than a CUDA
build), and its `tinyml` command compiles, validates, builds and runs the bundled example from a
folder that knows nothing of the source tree. Everything comes from pip's configured indexes and
cache: nothing is downloaded when they are local.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

TORCH_PIN = "torch==2.13.0"  # the Makefile's TORCH_VERSION: the CPU wheel the machine has
# What the package reads at run time, as globs relative to the source tree: all must be in the wheel.
RUNTIME_FILES = (
    "tinyml/**/*.py",
    "plugins/**/*.py",
    "firmware/include/*.h",
    "firmware/src/*.c",
    "firmware/harness/*",
    "boards/*.toml",
    "boards/runtime/*",
    "boards/qemu-plugin/*.c",
    "boards/platform/**/*",
    "plugins/*/c/include/*.h",
    "plugins/*/c/src/*.c",
)
SKIPPED_IN_COPY = shutil.ignore_patterns(
    ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis", ".ruff_cache", ".pio"
)


def _wheel_name(source_path: str) -> str:
    """Where a source file lands in the wheel: firmware/ and boards/ under tinyml/data, plugins/ as tinyml_plugins."""
    top, _, rest = source_path.partition("/")
    if top in ("firmware", "boards"):
        return f"tinyml/data/{source_path}"
    if top == "plugins":
        return f"tinyml_plugins/{rest}"
    return source_path


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _clean_env(source_tree: Path) -> dict[str, str]:
    """This process's environment without the source tree: no PYTHONPATH, no virtualenv of the checkout."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("TINYML_")
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(source_tree))
    )
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, source_tree: Path) -> Path:
    """The wheel, built from a copy of the source tree (a build never writes into the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(source_tree, source, symlinks=True, ignore=SKIPPED_IN_COPY)
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", str(source), "-w",
         str(root / "dist")],
        cwd=root,
        env=_clean_env(source_tree),
    )  # fmt: skip
    (built,) = (root / "dist").glob("tinyml-*.whl")
    return built


def test_wheel_holds_everything_the_package_reads_at_run_time(wheel: Path, source_tree: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        _wheel_name(path.relative_to(source_tree).as_posix())
        for pattern in RUNTIME_FILES
        for path in source_tree.glob(pattern)
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {"tinyml/data/firmware/include/tml_nn.h", "tinyml/data/boards/stm32f405.toml"} <= expected
    assert sorted(expected - names) == []


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory, source_tree: Path) -> Path:
    """A fresh virtualenv outside the source tree with the wheel and its dependencies installed."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    env = _clean_env(source_tree)
    _run([sys.executable, "-m", "venv", str(root)], cwd=root.parent, env=env)
    pip = [str(root / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, TORCH_PIN], cwd=root.parent, env=env)
    _run([*pip, str(wheel)], cwd=root.parent, env=env)
    return root


@pytest.mark.qemu
def test_installed_wheel_compiles_builds_and_runs_the_example(venv: Path, tmp_path: Path, source_tree: Path) -> None:
    user = tmp_path / "user"
    home = tmp_path / "home"
    user.mkdir()
    home.mkdir()
    env = _clean_env(source_tree)
    # A fresh home and cache: nothing from the developer's earlier runs (the example trains in seconds).
    env.update(
        HOME=str(home), TINYML_CACHE_DIR=str(tmp_path / "cache"), PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    )
    tinyml = str(venv / "bin" / "tinyml")

    probe = "import json, sys, tinyml; print(json.dumps([tinyml.__file__, sys.path]))"
    where = json.loads(_run([str(venv / "bin" / "python"), "-c", probe], cwd=user, env=env).stdout)
    package = Path(where[0]).parent
    assert package.is_relative_to(venv), where[0]
    assert not any(entry and Path(entry).resolve().is_relative_to(source_tree) for entry in where[1]), where[1]

    _run([tinyml, "compile", "--example", "digits", "--out", "build/digits"], cwd=user, env=env)
    validated = json.loads(_run([tinyml, "validate", "build/digits", "--json"], cwd=user, env=env).stdout)
    assert validated["c_matches_reference"] is True
    _run([tinyml, "build", "--board", "stm32"], cwd=user, env=env)
    ran = json.loads(_run([tinyml, "run", "build/stm32", "--json"], cwd=user, env=env).stdout)
    assert ran["board"] == "stm32f405" and len(ran["outputs"]) == ran["inputs"] > 0

    # The firmware was built from the installed package: its platform, runtime and kernel C.
    project = user / "build" / "stm32" / "project"
    data = package / "data"
    assert f"platform = symlink://{data / 'boards' / 'platform'}" in (project / "platformio.ini").read_text()
    libraries = [data / "firmware", *sorted((package.parent / "tinyml_plugins").glob("*/c"))]  # core, plugins' C
    copied = sorted(p for p in (project / "lib").glob("*/*/*") if p.is_file())
    assert {p.name for p in copied} >= {"tml_nn.h", "tml_conv2d_s8.c", "tml_huffman.h"}
    for path in copied:
        originals = [lib / path.parent.name / path.name for lib in libraries]
        original = next((o for o in originals if o.is_file()), None)
        assert original is not None, f"{path} is in no installed kernel library"
        assert original.read_bytes() == path.read_bytes(), f"{path} is not a copy of {original}"
    assert (project / "src" / "startup.c").read_bytes() == (data / "boards" / "runtime" / "startup.c").read_bytes()
