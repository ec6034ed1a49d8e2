"""tinyml: take a PyTorch model onto a Cortex-M microcontroller.

From Python::

    import tinyml
    build = tinyml.compile(model, calibration_batch, ["quantize-int8"], out_dir="build/net")
    print(tinyml.validate("build/net"))
    host_model = tinyml.load_model("build/net")   # the generated C, compiled for this PC

Heavy modules (torch) load on first use, so `import tinyml` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "compile": "tinyml.compiler",
    "compile_from_recipe": "tinyml.compiler",
    "Build": "tinyml.compiler",
    "load_recipe": "tinyml.recipe",
    "load_model": "tinyml.host",
    "validate": "tinyml.validation",
    "Technique": "tinyml.technique",
    "Context": "tinyml.technique",
    "Graph": "tinyml.ir",
    "TinymlError": "tinyml.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tinyml' has no attribute {name!r}")
