"""Run PlatformIO offline: tinyml's own core dir, with `tool-scons` linked from PyPI's `scons`.

PlatformIO's package registry is not reachable, and `pio run` needs the `tool-scons` core package.
tinyml gives PlatformIO its own core dir and, on every run, (re)writes there a small `tool-scons`
package (a `scons.py` that starts the `scons` installed beside `platformio`) and a link file
`packages/tool-scons.pio-link` that PlatformIO treats as an external package it never updates.
Telemetry and the upgrade check are switched off, so `pio run` makes no network call.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tinyml.errors import BuildError

OFFLINE_ENV = {
    "PLATFORMIO_SETTING_ENABLE_TELEMETRY": "no",
    "PLATFORMIO_DISABLE_UPGRADE_CHECK": "true",
}

_SCONS_SCRIPT = """\
# Started by PlatformIO with its own interpreter, where PyPI's scons is installed.
import SCons.Script

SCons.Script.main()
"""


def core_dir() -> Path:
    """tinyml's PlatformIO core dir: $TINYML_PLATFORMIO_CORE_DIR, else ~/.cache/tinyml/platformio."""
    configured = os.environ.get("TINYML_PLATFORMIO_CORE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "tinyml" / "platformio"


def required_scons_version() -> str:
    """The `tool-scons` version this PlatformIO accepts, read from its own dependency rule."""
    from platformio.dependencies import get_core_dependencies

    rule = get_core_dependencies()["tool-scons"]
    match = re.search(r"\d+(\.\d+)*", rule)
    if not match:
        raise BuildError(f"Cannot read PlatformIO's tool-scons requirement {rule!r}.")
    return match.group(0)


def prepare_core_dir() -> Path:
    """Write the `tool-scons` package and its link file into the core dir; return the core dir."""
    try:
        import SCons  # noqa: F401 - the link only works if scons is importable here
    except ImportError:
        raise BuildError(
            "PlatformIO needs SCons, which is not installed beside it: run `pip install scons` in the "
            f"environment of {sys.executable}."
        ) from None
    root = core_dir()
    package = root / "tinyml-tool-scons"
    package.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": "tool-scons",
        "version": required_scons_version(),
        "description": "SCons from the Python environment that runs PlatformIO",
        "system": "*",
    }
    _write_atomic(package / "package.json", json.dumps(manifest, indent=2) + "\n")
    _write_atomic(package / "scons.py", _SCONS_SCRIPT)
    link = {
        "cwd": "/",
        "spec": {
            "owner": "platformio",
            "id": None,
            "name": "tool-scons",
            "requirements": None,
            "uri": f"symlink://{package}",
        },
    }
    packages = root / "packages"
    packages.mkdir(parents=True, exist_ok=True)
    stale = packages / "tool-scons"
    if stale.exists() and not stale.is_symlink():
        shutil.rmtree(stale)  # a copied package would be "updated" from the registry and stall
    _write_atomic(packages / "tool-scons.pio-link", json.dumps(link) + "\n")
    _disable_telemetry(root / "appstate.json")
    return root


def _disable_telemetry(appstate: Path) -> None:
    """Store the offline settings in the core dir too, for a plain `pio run` typed in a project."""
    try:
        state = json.loads(appstate.read_text()) if appstate.is_file() else {}
    except ValueError:
        state = {}
    settings = state.setdefault("settings", {})
    if settings.get("enable_telemetry") is not False:
        settings["enable_telemetry"] = False
        _write_atomic(appstate, json.dumps(state))


def _write_atomic(path: Path, text: str) -> None:
    """Replace `path` in one step: a `pio` started at the same time never reads half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)


def pio_executable() -> str:
    """The `pio` of the Python environment running tinyml, else the one on PATH."""
    beside = Path(sys.executable).with_name("pio")
    if beside.exists():
        return str(beside)
    found = shutil.which("pio") or shutil.which("platformio")
    if not found:
        raise BuildError("PlatformIO is not installed: run `pip install platformio==6.2.0`.")
    return found


def pio_env() -> dict[str, str]:
    """The environment for a `pio` process: tinyml's core dir, no telemetry, no upgrade check."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env["PLATFORMIO_CORE_DIR"] = str(prepare_core_dir())
    return env


def run_pio(project_dir: Path, *args: str, timeout: float = 600) -> str:
    """Run `pio <args>` in `project_dir`; return its output, or raise BuildError with its tail."""
    command = [pio_executable(), *args]
    try:
        result = subprocess.run(
            command,
            cwd=project_dir,
            env=pio_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"`{' '.join(command)}` in {project_dir} did not finish within {timeout:.0f} s.") from None
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise BuildError(f"`{' '.join(command)}` failed in {project_dir} (exit {result.returncode}):\n{tail}")
    return output
